package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The privileged tests run each gateway's speaker in its own network
// namespace. GoBGP opens its sockets from its own goroutines, on whatever
// thread, so a speaker cannot be pinned to a namespace inside this process:
// the test binary re-executes itself under `ip netns exec` as a helper.

const helperEnv = "OCRT_ROUTING_HELPER"

// helperConfig is what a helper process runs.
type helperConfig struct {
	Desired     Desired
	Port        int32
	Restarting  bool
	Graceful    bool // Close(true) on SIGTERM
	BFDInterval time.Duration
	// TunnelDevice is Options.TunnelDevice.
	TunnelDevice string
	// Expect is the route count at which memory is measured.
	Expect int
	// Summary keeps counts instead of every batch (benchmarks).
	Summary bool
	// Plain runs bare GoBGP peering with Desired.VBRs[0] (a baseline).
	Plain bool
}

// helperState is what a helper publishes, rewritten atomically.
type helperState struct {
	Status  Status
	Batches []helperBatch
	// Summary mode:
	UpAt      time.Time // first session established
	Count     int       // routes held
	LastAt    time.Time // when Count last changed
	HeapStart uint64    // live heap and RSS with no route yet
	RSSStart  uint64
	HeapNow   uint64 // measured when Count reaches Expect
	RSSNow    uint64
	// Sessions records every OnSessions call, in order.
	Sessions []helperSessions
}

// helperSessions is one OnSessions call: when, and the sessions not up.
type helperSessions struct {
	At   time.Time
	Down []string
}

type helperBatch struct {
	At       time.Time
	Full     bool
	Synced   bool
	Upsert   []LearnedRoute
	Withdraw []string
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(helperMain(dir))
	}
	os.Exit(m.Run())
}

func readHelperConfig(dir string) (helperConfig, error) {
	var c helperConfig
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// helperMain runs one speaker until SIGTERM; SIGHUP re-reads the desired
// state. It writes state.json every 50ms and logs to log.txt.
func helperMain(dir string) int {
	lf, err := os.Create(filepath.Join(dir, "log.txt"))
	if err != nil {
		return 2
	}
	defer lf.Close()
	log := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := readHelperConfig(dir)
	if err != nil {
		log.Error("read config", "error", err)
		return 2
	}
	if cfg.Plain {
		return plainMain(dir, cfg, log)
	}
	h := &helperRun{dir: dir, cfg: cfg, log: log, batches: make(chan helperBatch, 1024), sessions: make(chan helperSessions, 1024)}
	h.st.HeapStart, h.st.RSSStart = heapBytes(), rssBytes()
	if err := h.start(); err != nil {
		log.Error("start the speaker", "error", err)
		return 2
	}
	return h.loop()
}

// helperRun is a helper process's speaker and what it publishes.
type helperRun struct {
	dir      string
	cfg      helperConfig
	log      *slog.Logger
	s        *Speaker
	st       helperState
	batches  chan helperBatch
	sessions chan helperSessions
}

func (h *helperRun) start() error {
	s, err := New(Options{
		Logger: h.log, Port: h.cfg.Port, Restarting: h.cfg.Restarting, Coalesce: 20 * time.Millisecond,
		ConnectRetry: time.Second, GracefulRestartTime: 30 * time.Second, SyncTimeout: 10 * time.Second,
		BFD: BFDOptions{Interval: h.cfg.BFDInterval}, TunnelDevice: h.cfg.TunnelDevice,
		OnRoutes: func(b RouteBatch) {
			hb := helperBatch{At: time.Now(), Full: b.Full, Synced: b.Synced, Upsert: b.Upsert}
			for _, p := range b.Withdraw {
				hb.Withdraw = append(hb.Withdraw, p.String())
			}
			h.batches <- hb
		},
		OnSessions: func(ss []SessionUp) {
			hs := helperSessions{At: time.Now()}
			for _, s := range ss {
				if !s.Up {
					hs.Down = append(hs.Down, s.Name)
				}
			}
			h.sessions <- hs
		},
	})
	if err != nil {
		return fmt.Errorf("new: %w", err)
	}
	h.s = s
	if err := s.Start(context.Background()); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if err := s.Set(context.Background(), h.cfg.Desired); err != nil {
		h.log.Error("set", "error", err)
	}
	return nil
}

// loop publishes until SIGTERM, which closes the speaker.
func (h *helperRun) loop() int {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGHUP)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case b := <-h.batches:
			h.add(b)
		case hs := <-h.sessions:
			h.st.Sessions = append(h.st.Sessions, hs)
		case <-tick.C:
			h.write()
		case sg := <-sig:
			if sg == syscall.SIGHUP {
				c, err := readHelperConfig(h.dir)
				if err == nil {
					err = h.s.Set(context.Background(), c.Desired)
				}
				if err != nil {
					h.log.Error("reload", "error", err)
				}
				h.write()
				continue
			}
			h.s.Close(h.cfg.Graceful)
			h.write()
			return 0
		}
	}
}

// add records a batch, or in summary mode counts it.
func (h *helperRun) add(b helperBatch) {
	if !h.cfg.Summary {
		h.st.Batches = append(h.st.Batches, b)
		return
	}
	if b.Full {
		h.st.Count = 0
	}
	h.st.Count += len(b.Upsert) - len(b.Withdraw)
	h.st.LastAt = b.At
	if h.st.Count >= h.cfg.Expect && h.cfg.Expect > 0 && h.st.HeapNow == 0 {
		h.st.HeapNow, h.st.RSSNow = heapBytes(), rssBytes()
	}
}

func (h *helperRun) write() {
	if h.cfg.Summary && h.st.UpAt.IsZero() {
		h.s.state.mu.Lock()
		for _, si := range h.s.state.sessions.byAddr {
			if si.state == bgp.BGP_FSM_ESTABLISHED {
				h.st.UpAt = si.since
			}
		}
		h.s.state.mu.Unlock()
	}
	h.st.Status, _ = h.s.Status(context.Background())
	if h.cfg.Summary {
		h.st.Status.Routes = nil
	}
	publish(h.dir, h.st)
}

// publish replaces dir's state.json with st, atomically.
func publish(dir string, st helperState) {
	b, _ := json.Marshal(st)
	tmp := filepath.Join(dir, "state.json.tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, filepath.Join(dir, "state.json"))
	}
}

func writeHelperConfig(t testing.TB, dir string, c helperConfig) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readHelperState(dir string) (helperState, error) {
	var st helperState
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse helper state: %w", err)
	}
	return st, nil
}

// routes folds a helper's batches into the table an agent would hold.
func (h helperState) routes() map[string]LearnedRoute {
	m := map[string]LearnedRoute{}
	for _, b := range h.Batches {
		if b.Full {
			clear(m)
		}
		for _, p := range b.Withdraw {
			delete(m, p)
		}
		for _, r := range b.Upsert {
			m[r.Prefix.String()] = r
		}
	}
	return m
}

func (h helperState) session(name string) SessionStatus {
	for _, s := range h.Status.Sessions {
		if s.Name == name {
			return s
		}
	}
	return SessionStatus{}
}

// plainMain runs bare GoBGP as a baseline receiver: same peer, no policy,
// no watch. It reports when its RIB holds cfg.Expect destinations.
func plainMain(dir string, cfg helperConfig, log *slog.Logger) int {
	ctx := context.Background()
	d := cfg.Desired
	v := d.VBRs[0]
	var st helperState
	st.HeapStart, st.RSSStart = heapBytes(), rssBytes()
	srv := server.NewBgpServer(server.LoggerOption(log, new(slog.LevelVar)))
	go srv.Serve()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: d.InstanceASN, RouterId: d.RouterID.String(), ListenPort: cfg.Port, ListenAddresses: []string{d.LocalAddress.String()},
	}}); err != nil {
		log.Error("start", "error", err)
		return 2
	}
	// The baseline carries the one family of its session, as the
	// benchmark's BIRD announces only that.
	fam := families[family(v.Neighbor)]
	peer := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: v.Neighbor.String(), PeerAsn: v.PeerASN, AuthPassword: v.Password},
		Transport: &api.Transport{},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1}},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}
	if v.LocalAddress.IsValid() {
		peer.Transport.LocalAddress = v.LocalAddress.String()
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		log.Error("add peer", "error", err)
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	// Counting walks the whole table, so poll every 50ms, not faster: the
	// baseline must not be slowed by its own measurement.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		select {
		case <-sig:
			srv.StopBgp(ctx, &api.StopBgpRequest{})
			return 0
		case now := <-tick.C:
			if st.UpAt.IsZero() {
				srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
					if p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED {
						st.UpAt = now
					}
				})
			} else if st.Count < cfg.Expect {
				r, err := srv.GetTable(ctx, &api.GetTableRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam})
				if err == nil && int(r.NumDestination) != st.Count {
					st.Count, st.LastAt = int(r.NumDestination), now
					if st.Count >= cfg.Expect {
						st.HeapNow, st.RSSNow = heapBytes(), rssBytes()
					}
				}
			}
			if now.Sub(lastWrite) >= 100*time.Millisecond {
				lastWrite = now
				publish(dir, st)
			}
		}
	}
}
