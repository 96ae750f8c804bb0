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
	HeapStart uint64    // live heap and RSS before any route
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
	var st helperState
	st.HeapStart, st.RSSStart = heapBytes(), rssBytes()
	batches := make(chan helperBatch, 1024)
	sessions := make(chan helperSessions, 1024)
	s, err := New(Options{
		Logger: log, Port: cfg.Port, Restarting: cfg.Restarting, Coalesce: 20 * time.Millisecond,
		ConnectRetry: time.Second, GracefulRestartTime: 30 * time.Second, SyncTimeout: 10 * time.Second,
		BFD: BFDOptions{Interval: cfg.BFDInterval},
		OnRoutes: func(b RouteBatch) {
			hb := helperBatch{At: time.Now(), Full: b.Full, Synced: b.Synced, Upsert: b.Upsert}
			for _, p := range b.Withdraw {
				hb.Withdraw = append(hb.Withdraw, p.String())
			}
			batches <- hb
		},
		OnSessions: func(ss []SessionUp) {
			hs := helperSessions{At: time.Now()}
			for _, s := range ss {
				if !s.Up {
					hs.Down = append(hs.Down, s.Name)
				}
			}
			sessions <- hs
		},
	})
	if err != nil {
		log.Error("new", "error", err)
		return 2
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		log.Error("start", "error", err)
		return 2
	}
	if err := s.Set(ctx, cfg.Desired); err != nil {
		log.Error("set", "error", err)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGHUP)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	write := func() {
		if cfg.Summary && st.UpAt.IsZero() {
			s.state.mu.Lock()
			for _, si := range s.state.sessions.byAddr {
				if si.state == bgp.BGP_FSM_ESTABLISHED {
					st.UpAt = si.since
				}
			}
			s.state.mu.Unlock()
		}
		st.Status, _ = s.Status(ctx)
		if cfg.Summary {
			st.Status.Routes = nil
		}
		b, _ := json.Marshal(st)
		tmp := filepath.Join(dir, "state.json.tmp")
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, filepath.Join(dir, "state.json"))
		}
	}
	for {
		select {
		case b := <-batches:
			if !cfg.Summary {
				st.Batches = append(st.Batches, b)
				continue
			}
			if b.Full {
				st.Count = 0
			}
			st.Count += len(b.Upsert) - len(b.Withdraw)
			st.LastAt = b.At
			if st.Count >= cfg.Expect && cfg.Expect > 0 && st.HeapNow == 0 {
				st.HeapNow, st.RSSNow = heapBytes(), rssBytes()
			}
		case hs := <-sessions:
			st.Sessions = append(st.Sessions, hs)
		case <-tick.C:
			write()
		case sg := <-sig:
			if sg == syscall.SIGHUP {
				c, err := readHelperConfig(dir)
				if err == nil {
					err = s.Set(ctx, c.Desired)
				}
				if err != nil {
					log.Error("reload", "error", err)
				}
				write()
				continue
			}
			s.Close(cfg.Graceful)
			write()
			return 0
		}
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
	peer := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: v.Neighbor.String(), PeerAsn: v.PeerASN, AuthPassword: v.Password},
		Transport: &api.Transport{},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1}},
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
				r, err := srv.GetTable(ctx, &api.GetTableRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL,
					Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}})
				if err == nil && int(r.NumDestination) != st.Count {
					st.Count, st.LastAt = int(r.NumDestination), now
					if st.Count >= cfg.Expect {
						st.HeapNow, st.RSSNow = heapBytes(), rssBytes()
					}
				}
			}
			if now.Sub(lastWrite) >= 100*time.Millisecond {
				lastWrite = now
				b, _ := json.Marshal(st)
				tmp := filepath.Join(dir, "state.json.tmp")
				if os.WriteFile(tmp, b, 0o600) == nil {
					os.Rename(tmp, filepath.Join(dir, "state.json"))
				}
			}
		}
	}
}
