package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/protobuf/proto"
)

// Speaker is one gateway's embedded BGP speaker.
type Speaker struct {
	opts   Options
	log    *slog.Logger
	redact *redactor // the secrets every log line is cleaned of
	state  *state    // what GoBGP's events report; guarded by its own lock

	mu sync.Mutex // serialises Start, Set and Close; guards life and bgp

	// life is the speaker's own: its goroutines (state.run and
	// state.runSessions) and whether it runs.
	life struct {
		ctx             context.Context // ends with Close; bounds every server's watch
		cancel          context.CancelFunc
		wg              sync.WaitGroup
		started, closed bool
	}

	// bgp is the running BGP server and what has been configured in it.
	bgp bgpServer
}

// bgpServer is a running GoBGP server and what Set configured in it; the
// zero value (with empty maps) means no server.
type bgpServer struct {
	srv         *server.BgpServer
	global      globalKey
	cancelWatch context.CancelFunc // ends the event watch
	gwBFD       *gatewayBFD        // nil with BFD disabled
	policy      *api.SetPoliciesRequest
	peers       map[netip.Addr]peerSpec
	// held are the sessions max_prefixes shut down, taken out of GoBGP
	// (so the router cannot even connect) until reset or restarted.
	held  map[netip.Addr]peerSpec
	paths map[netip.Prefix]originRec // what this gateway originates
}

func noServer() bgpServer {
	return bgpServer{peers: map[netip.Addr]peerSpec{}, held: map[netip.Addr]peerSpec{}, paths: map[netip.Prefix]originRec{}}
}

// globalKey is what cannot change without restarting the BGP server.
type globalKey struct {
	routerID, local netip.Addr
	asn             uint32
}

// New checks opts and returns a speaker that does nothing until Start.
func New(opts Options) (*Speaker, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	// Every log line, ours and GoBGP's, goes through a handler that blanks
	// the configured TCP-MD5 passwords, whatever formats them.
	red := &redactor{}
	log := slog.New(&redactHandler{next: opts.Logger.Handler(), r: red})
	opts.Logger = log
	s := &Speaker{opts: opts, log: log, redact: red, bgp: noServer()}
	s.state = newState(s.log, opts)
	s.state.trip = s.tripMaxPrefixes
	return s, nil
}

// Start starts the batching loop. The BGP server itself starts with the
// first Set, which carries the ASN and router id. ctx bounds the speaker's
// life; cancelling it is not a substitute for Close.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.started {
		return errors.New("routing: speaker already started")
	}
	if s.life.closed {
		return errors.New("routing: speaker is closed")
	}
	s.life.started = true
	s.life.ctx, s.life.cancel = context.WithCancel(ctx)
	s.life.wg.Add(2)
	go func() {
		defer s.life.wg.Done()
		s.state.run(s.life.ctx)
	}()
	go func() {
		defer s.life.wg.Done()
		s.state.runSessions(s.life.ctx)
	}()
	return nil
}

// Set makes the speaker match d: sessions added, removed or replaced where
// they changed (unchanged ones are not touched), policies recompiled, VPC
// CIDRs announced or withdrawn. Calling it twice with the same value does
// nothing. It keeps going past individual failures and returns them joined.
//
// The zero Desired tears everything down: sessions are closed (peers
// withdraw our routes) and the next batch withdraws every learned route.
func (s *Speaker) Set(ctx context.Context, d Desired) error {
	empty := !d.RouterID.IsValid() && !d.LocalAddress.IsValid() && len(d.Gateways) == 0 && len(d.VBRs) == 0 && len(d.Originate) == 0
	if !empty {
		if err := Validate(&d); err != nil {
			return err
		}
	}
	d = cloneDesired(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.life.started || s.life.closed {
		return errors.New("routing: set on a speaker that is not running")
	}
	if empty {
		if s.bgp.srv != nil {
			s.log.Info("empty routing state: stopping the bgp speaker")
			s.stopServer(false)
		}
		s.state.setDesired(nil, nil)
		s.redact.set(nil)
		return nil
	}
	s.redact.set(&d)
	if err := s.ensureServer(ctx, &d); err != nil {
		return err
	}
	policyChanged, err := s.setPolicy(ctx, &d)
	if err != nil {
		// Without a valid policy nothing may be learned: stop here.
		return err
	}
	// Sessions added or replaced and origins set first, then sessions
	// removed, so a session moving between two configs is never missing.
	want := s.peerSpecs(&d)
	errs := s.addPeers(ctx, want)
	errs = append(errs, s.setOrigins(&d)...)
	errs = append(errs, s.removePeers(ctx, want)...)
	s.setGatewayBFDPeers()
	if policyChanged {
		// Re-run import and export policies over what peers already sent.
		if err := s.bgp.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_BOTH}); err != nil {
			errs = append(errs, fmt.Errorf("routing: re-apply policies: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ensureServer hands the state d, and makes a server run with d's router
// id, tunnel address and ASN: what a running server cannot change
// restarts it.
func (s *Speaker) ensureServer(ctx context.Context, d *Desired) error {
	gk := globalKey{routerID: d.RouterID, local: d.LocalAddress, asn: d.InstanceASN}
	if s.bgp.srv != nil && gk != s.bgp.global {
		s.log.Warn("router id, tunnel address or instance asn changed: restarting the bgp speaker",
			"router_id", d.RouterID, "local_address", d.LocalAddress, "asn", d.InstanceASN)
		s.stopServer(false)
	}
	s.state.setDesired(d, newFilter(d))
	if s.bgp.srv != nil {
		return nil
	}
	if err := s.startServer(ctx, d); err != nil {
		return err
	}
	s.bgp.global = gk
	return nil
}

// setPolicy installs d's policies unless they are installed already, and
// reports whether it replaced others.
func (s *Speaker) setPolicy(ctx context.Context, d *Desired) (changed bool, err error) {
	pol := buildPolicies(d)
	if s.bgp.policy != nil && proto.Equal(s.bgp.policy, pol) {
		return false, nil
	}
	if err := s.bgp.srv.SetPolicies(ctx, pol); err != nil {
		return false, fmt.Errorf("routing: set bgp policies: %w", err)
	}
	changed = s.bgp.policy != nil
	s.bgp.policy = pol
	return changed, nil
}

func (s *Speaker) startServer(ctx context.Context, d *Desired) error {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelInfo)
	srv := server.NewBgpServer(server.LoggerOption(s.log.With("component", "gobgp"), lv))
	go srv.Serve()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:              d.InstanceASN,
		RouterId:         d.RouterID.String(),
		ListenPort:       s.opts.Port,
		ListenAddresses:  []string{d.LocalAddress.String()},
		UseMultiplePaths: true,
		GracefulRestart: &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(secs(s.opts.GracefulRestartTime)),
		},
	}})
	if err != nil {
		srv.Stop()
		return fmt.Errorf("routing: start bgp on %s port %d: %w", d.LocalAddress, s.opts.Port, err)
	}
	fail := func(err error) error {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("routing: %w", err)
	}
	pol := buildPolicies(d)
	if err := srv.SetPolicies(ctx, pol); err != nil {
		return fail(fmt.Errorf("set bgp policies: %w", err))
	}
	for _, a := range policyAssignments() {
		if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fail(fmt.Errorf("assign bgp policies: %w", err))
		}
	}
	wctx, cancel := context.WithCancel(s.life.ctx)
	if err := srv.WatchEvent(wctx, s.state.callbacks(), server.WatchBestPath(true), server.WatchUpdate(false, "", ""),
		server.WatchPeer(), server.WatchEor(true)); err != nil {
		cancel()
		return fail(fmt.Errorf("watch bgp events: %w", err))
	}
	var gw *gatewayBFD
	if !s.opts.BFD.Disable {
		if gw, err = s.startGatewayBFD(srv, d.LocalAddress); err != nil {
			cancel()
			return fail(err)
		}
	}
	s.bgp.srv, s.bgp.cancelWatch, s.bgp.policy, s.bgp.gwBFD = srv, cancel, pol, gw
	s.state.attach(srv)
	s.log.Info("bgp speaker started", "router_id", d.RouterID, "asn", d.InstanceASN, "listen", d.LocalAddress, "port", s.opts.Port)
	return nil
}

// startGatewayBFD runs BFD on the gateway sessions of srv, from local,
// through Options.TunnelDevice.
func (s *Speaker) startGatewayBFD(srv *server.BgpServer, local netip.Addr) (*gatewayBFD, error) {
	return newGatewayBFD(s.log.With("component", "bfd"), bfdConfig{
		Local: local, Device: s.opts.TunnelDevice, Port: GatewayBFDPort,
		Interval: s.opts.BFD.Interval, Mult: s.opts.BFD.Multiplier,
		OnDown: func(peer netip.Addr) {
			// As GoBGP's BFD does: close the session now rather than
			// after the hold time; it reconnects when the peer answers.
			// Only an established session: one already closed is
			// either connecting, or kept by graceful restart because
			// the peer's agent closed it to restart (its tunnels and
			// routes still forward), and GoBGP would hold the reset
			// and apply it to the next session that comes up.
			if !s.state.established(peer) {
				s.log.Info("bfd down on a session that is not established: nothing to reset", "neighbor", peer)
				return
			}
			if err := srv.ResetPeer(context.Background(), &api.ResetPeerRequest{Address: peer.String(), Communication: "BFD is down"}); err != nil {
				s.log.Warn("bfd down: resetting the bgp session", "neighbor", peer, "error", err)
			}
		},
	})
}

// stopServer cancels the watches first, then stops GoBGP.
func (s *Speaker) stopServer(graceful bool) {
	if s.bgp.srv == nil {
		return
	}
	s.bgp.cancelWatch()
	if s.bgp.gwBFD != nil {
		s.bgp.gwBFD.close()
	}
	s.state.detach()
	if err := s.bgp.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Warn("stopping bgp", "error", err)
	}
	s.bgp = noServer()
}

// Close stops the speaker. With gracefulRestart, peers are not sent a
// NOTIFICATION, so those with graceful restart keep our routes (and traffic
// keeps flowing on the kernel routes the agent leaves in place) until a new
// speaker started with Options.Restarting re-announces them. Without it,
// sessions are closed and peers withdraw our routes at once.
func (s *Speaker) Close(gracefulRestart bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.closed {
		return nil
	}
	s.life.closed = true
	s.stopServer(gracefulRestart)
	if s.life.cancel != nil {
		s.life.cancel()
	}
	s.life.wg.Wait()
	s.log.Info("bgp speaker stopped", "graceful_restart", gracefulRestart)
	return nil
}
