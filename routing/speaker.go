package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/protobuf/proto"
)

// Options configure a Speaker. Zero values take the documented defaults.
type Options struct {
	// Logger receives the speaker's logs and GoBGP's own (under
	// component=gobgp). Required.
	Logger *slog.Logger
	// Port is the BGP port listened on (on Desired.LocalAddress) and dialled
	// on gateway peers. Default 179; tests use random high ports.
	Port int32
	// OnRoutes receives learned routes in coalesced batches, from one
	// goroutine, never concurrently. It may be slow: changes made while it
	// runs are merged into the next batch.
	OnRoutes func(RouteBatch)
	// OnSessions receives every configured session and whether it is
	// established, each time that changes: a session coming up or going
	// down (BFD's detection included), one added or removed by Set, the BGP
	// server restarting. It is driven by GoBGP's peer-state events, not
	// polled, and called at once (not coalesced like OnRoutes), from one
	// goroutine, never concurrently; the slice is the callee's. The first
	// call follows the first Set.
	OnSessions func([]SessionUp)
	// Coalesce is how long changes are gathered before a batch is built.
	// Default 100ms.
	Coalesce time.Duration
	// HoldTime and Keepalive for BGP sessions. Defaults 9s and 3s: BFD does
	// the fast detection, so BGP timers stay conservative.
	HoldTime, Keepalive time.Duration
	// ConnectRetry is the delay between connection attempts. Default 2s.
	ConnectRetry time.Duration
	// GracefulRestartTime is how long peers keep our routes while the agent
	// restarts (RFC 4724). Default 120s.
	GracefulRestartTime time.Duration
	// Restarting tells peers (the R bit) that this is a restart after a
	// graceful Close, so they keep our routes until we resend them.
	Restarting bool
	// SyncTimeout bounds how long the first Synced batch waits for End-of-RIB
	// from every gateway peer. Default 60s.
	SyncTimeout time.Duration
	// BFD settings for gateway sessions and VBR sessions with BFD set.
	BFD BFDOptions
}

// BFDOptions tune BFD (RFC 5880). Detection time is Interval*Multiplier.
// Gateway sessions run the speaker's own batched BFD (gatewayBFD, on
// Desired.LocalAddress port GatewayBFDPort); VBR sessions with BFD run
// GoBGP's.
type BFDOptions struct {
	// Disable turns BFD off everywhere. GoBGP's BFD listens on the fixed
	// UDP port 3784 (RFC 5881) of every address, so several speakers in one
	// network namespace, as in unit tests, cannot all run it.
	Disable bool
	// Interval between BFD packets; default 100ms.
	Interval time.Duration
	// Multiplier: missed packets before the peer is declared down; default 3.
	Multiplier uint32
}

func (o *Options) defaults() error {
	if o.Logger == nil {
		return errors.New("routing options: logger is required")
	}
	if o.Port == 0 {
		o.Port = 179
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("routing options: port %d out of range 1-65535", o.Port)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Coalesce, 100*time.Millisecond)
	def(&o.HoldTime, 9*time.Second)
	def(&o.Keepalive, 3*time.Second)
	def(&o.ConnectRetry, 2*time.Second)
	def(&o.GracefulRestartTime, 120*time.Second)
	def(&o.SyncTimeout, 60*time.Second)
	def(&o.BFD.Interval, 100*time.Millisecond)
	if o.BFD.Multiplier == 0 {
		o.BFD.Multiplier = 3
	}
	return nil
}

// Speaker is one gateway's embedded BGP speaker.
type Speaker struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // serialises Start, Set and Close
	ctx      context.Context
	started  bool
	closed   bool
	startAt  time.Time
	srv      *server.BgpServer
	gwBFD    *gatewayBFD // nil with BFD disabled or no server
	cancelW  context.CancelFunc
	global   globalKey
	policy   *api.SetPoliciesRequest
	peers    map[netip.Addr]peerSpec
	paths    map[netip.Prefix]originRec
	flushed  chan struct{}
	state    *state
	redact   *redactor
	flushWG  sync.WaitGroup
	stopFlsh context.CancelFunc
}

// globalKey is what cannot change without restarting the BGP server.
type globalKey struct {
	routerID, local netip.Addr
	asn             uint32
}

type originRec struct {
	id  uuid.UUID
	key string
}

// peerSpec is everything that defines one session; a change in it means
// the session is replaced, any other Set leaves it untouched.
type peerSpec struct {
	kind        SessionKind
	name        string
	addr, local netip.Addr
	peerASN     uint32
	password    string
	bfd         bool
	maxPrefixes uint32
	port        uint16
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
	s := &Speaker{
		opts:   opts,
		log:    log,
		redact: red,
		peers:  map[netip.Addr]peerSpec{},
		paths:  map[netip.Prefix]originRec{},
	}
	s.state = newState(s.log, opts)
	return s, nil
}

// Start starts the batching loop. The BGP server itself starts with the
// first Set, which carries the ASN and router id. ctx bounds the speaker's
// life; cancelling it is not a substitute for Close.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("routing: speaker already started")
	}
	if s.closed {
		return errors.New("routing: speaker is closed")
	}
	s.started = true
	s.startAt = time.Now()
	fctx, cancel := context.WithCancel(ctx)
	s.ctx = fctx
	s.stopFlsh = cancel
	s.flushWG.Add(2)
	go func() {
		defer s.flushWG.Done()
		s.state.run(fctx, s.startAt)
	}()
	go func() {
		defer s.flushWG.Done()
		s.state.runSessions(fctx)
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
		if err := d.Validate(); err != nil {
			return err
		}
	}
	d = d.clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closed {
		return errors.New("routing: set on a speaker that is not running")
	}
	if empty {
		if s.srv != nil {
			s.log.Info("empty routing state: stopping the bgp speaker")
			s.stopServer(false)
		}
		s.state.setDesired(nil, nil, nil)
		s.redact.set(nil)
		return nil
	}
	s.redact.set(&d)
	gk := globalKey{routerID: d.RouterID, local: d.LocalAddress, asn: d.InstanceASN}
	if s.srv != nil && gk != s.global {
		s.log.Warn("router id, tunnel address or instance asn changed: restarting the bgp speaker",
			"router_id", d.RouterID, "local_address", d.LocalAddress, "asn", d.InstanceASN)
		s.stopServer(false)
	}
	names, _ := newNameTable(&d) // Validate checked it
	s.state.setDesired(&d, newFilter(&d), names)
	if s.srv == nil {
		if err := s.startServer(ctx, &d); err != nil {
			return err
		}
		s.global = gk
	}
	var errs []error

	policyChanged := false
	pol := buildPolicies(&d)
	if s.policy == nil || !proto.Equal(s.policy, pol) {
		if err := s.srv.SetPolicies(ctx, pol); err != nil {
			// Without a valid policy nothing may be learned: stop here.
			return fmt.Errorf("routing: set bgp policies: %w", err)
		}
		policyChanged = s.policy != nil
		s.policy = pol
	}

	// Add before delete.
	want := s.peerSpecs(&d)
	for addr, spec := range want {
		old, ok := s.peers[addr]
		if ok && old == spec {
			continue
		}
		if ok {
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
				errs = append(errs, fmt.Errorf("routing: replace session %s: %w", spec.name, err))
				continue
			}
			delete(s.peers, addr)
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(spec)}); err != nil {
			errs = append(errs, fmt.Errorf("routing: add session %s (%s): %w", spec.name, addr, err))
			continue
		}
		s.peers[addr] = spec
		s.log.Info("bgp session configured", "session", spec.name, "neighbor", addr, "kind", string(spec.kind))
	}
	errs = append(errs, s.setOrigins(&d)...)
	for addr, spec := range s.peers {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("routing: remove session %s: %w", spec.name, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp session removed", "session", spec.name, "neighbor", addr)
	}
	if s.gwBFD != nil {
		var bfdPeers []netip.Addr
		for addr, spec := range s.peers {
			if spec.kind == SessionGateway && spec.bfd {
				bfdPeers = append(bfdPeers, addr)
			}
		}
		s.gwBFD.setPeers(bfdPeers)
	}
	if policyChanged {
		// Re-run import and export policies over what peers already sent.
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_BOTH}); err != nil {
			errs = append(errs, fmt.Errorf("routing: re-apply policies: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) peerSpecs(d *Desired) map[netip.Addr]peerSpec {
	m := make(map[netip.Addr]peerSpec, len(d.Gateways)+len(d.VBRs))
	for _, g := range d.Gateways {
		m[g.Address] = peerSpec{kind: SessionGateway, name: g.Name, addr: g.Address, local: d.LocalAddress,
			peerASN: d.InstanceASN, bfd: !s.opts.BFD.Disable}
	}
	for _, v := range d.VBRs {
		m[v.Neighbor] = peerSpec{kind: SessionVBR, name: v.Network, addr: v.Neighbor, local: v.LocalAddress,
			peerASN: v.PeerASN, password: v.Password, bfd: v.BFD && !s.opts.BFD.Disable, maxPrefixes: v.MaxPrefixes, port: v.Port}
	}
	return m
}

var familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

func secs(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

func (s *Speaker) apiPeer(p peerSpec) *api.Peer {
	af := &api.AfiSafi{
		Config:            &api.AfiSafiConfig{Family: familyV4, Enabled: true},
		MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.addr.String(),
			PeerAsn:         p.peerASN,
			Description:     p.name,
			AuthPassword:    p.password,
		},
		Transport: &api.Transport{},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           secs(s.opts.ConnectRetry),
			HoldTime:               secs(s.opts.HoldTime),
			KeepaliveInterval:      secs(s.opts.Keepalive),
			IdleHoldTimeAfterReset: 1,
		}},
		GracefulRestart: &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(secs(s.opts.GracefulRestartTime)),
			// Only sessions opened while recovering from our own restart
			// carry the R bit; one added by a reload hours later must not.
			LocalRestarting: s.opts.Restarting && !s.state.isSynced(),
		},
		AfiSafis: []*api.AfiSafi{af},
	}
	if p.local.IsValid() {
		peer.Transport.LocalAddress = p.local.String()
	}
	if p.kind == SessionGateway {
		peer.Transport.RemotePort = uint32(s.opts.Port)
		// Between gateways only the lower address dials: when both dial
		// at once (both agents starting, or both resetting on a BFD
		// event) GoBGP's collision handling could cycle through
		// OpenConfirm for tens of seconds (seen in CI between twins).
		if p.local.IsValid() && p.local.Compare(p.addr) > 0 {
			peer.Transport.PassiveMode = true
		}
	} else if p.port != 0 {
		peer.Transport.RemotePort = uint32(p.port)
	}
	if p.bfd && p.kind != SessionGateway { // gateway sessions: gatewayBFD
		us := uint32(s.opts.BFD.Interval / time.Microsecond)
		peer.Bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: s.opts.BFD.Multiplier}
	}
	return peer
}

// originPath builds the announcement of one VPC CIDR, tagged with its
// region and network, or with o.Network empty, of one handoff address,
// tagged with its region and as a handoff.
func originPath(d *Desired, o Origin) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(o.Prefix)
	if err != nil {
		return nil, err
	}
	// An unspecified next hop makes GoBGP use each session's own local
	// address: the tunnel address toward gateways (next-hop-self), the
	// VBR link address toward the on-prem router.
	nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
	if err != nil {
		return nil, err
	}
	second := bgp.NewLargeCommunity(d.InstanceASN, tagNetwork, nameID(o.Network))
	if o.Network == "" {
		second = bgp.NewLargeCommunity(d.InstanceASN, tagHandoff, 0)
	}
	lc := bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{
		bgp.NewLargeCommunity(d.InstanceASN, tagRegion, nameID(o.Region)), second,
	})
	return &apiutil.Path{
		Family: bgp.RF_IPv4_UC,
		Nlri:   nlri,
		Attrs:  []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh, lc},
	}, nil
}

func (s *Speaker) setOrigins(d *Desired) []error {
	var errs []error
	want := map[netip.Prefix]Origin{}
	for _, o := range d.Originate {
		want[o.Prefix] = o
	}
	for _, a := range d.HandoffAddresses {
		want[netip.PrefixFrom(a, a.BitLen())] = Origin{Prefix: netip.PrefixFrom(a, a.BitLen()), Region: d.Region}
	}
	for p, o := range want {
		key := fmt.Sprintf("%s|%s|%s", o.Region, o.Network, d.LocalAddress)
		if rec, ok := s.paths[p]; ok && rec.key == key {
			continue
		}
		path, err := originPath(d, o)
		if err != nil {
			errs = append(errs, fmt.Errorf("routing: originate %s: %w", p, err))
			continue
		}
		// Adding the same prefix again replaces the old path in place, so
		// peers see one update, not a withdraw and an announce.
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err == nil && len(res) == 1 && res[0].Error != nil {
			err = res[0].Error
		}
		if err != nil || len(res) != 1 {
			errs = append(errs, fmt.Errorf("routing: originate %s: %w", p, errors.Join(err, errors.New("no path id returned"))))
			continue
		}
		s.paths[p] = originRec{id: res[0].UUID, key: key}
	}
	for p, rec := range s.paths {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{rec.id}}); err != nil {
			errs = append(errs, fmt.Errorf("routing: withdraw %s: %w", p, err))
			continue
		}
		delete(s.paths, p)
	}
	return errs
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
	pol := buildPolicies(d)
	if err := srv.SetPolicies(ctx, pol); err != nil {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("routing: set bgp policies: %w", err)
	}
	for _, a := range policyAssignments() {
		if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
			return fmt.Errorf("routing: assign bgp policies: %w", err)
		}
	}
	wctx, cancel := context.WithCancel(s.ctx)
	if err := srv.WatchEvent(wctx, s.state.callbacks(), server.WatchBestPath(true), server.WatchUpdate(false, "", ""),
		server.WatchPeer(), server.WatchEor(true)); err != nil {
		cancel()
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("routing: watch bgp events: %w", err)
	}
	if !s.opts.BFD.Disable {
		gw, err := newGatewayBFD(s.log.With("component", "bfd"), d.LocalAddress, GatewayBFDPort, s.opts.BFD.Interval, s.opts.BFD.Multiplier,
			func(peer netip.Addr) {
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
			})
		if err != nil {
			cancel()
			_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
			return fmt.Errorf("routing: %w", err)
		}
		s.gwBFD = gw
	}
	s.srv, s.cancelW, s.policy = srv, cancel, pol
	s.state.attach(srv)
	s.log.Info("bgp speaker started", "router_id", d.RouterID, "asn", d.InstanceASN, "listen", d.LocalAddress, "port", s.opts.Port)
	return nil
}

// stopServer cancels the watches first, then stops GoBGP.
func (s *Speaker) stopServer(graceful bool) {
	if s.srv == nil {
		return
	}
	s.cancelW()
	if s.gwBFD != nil {
		s.gwBFD.close()
		s.gwBFD = nil
	}
	s.state.detach()
	if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Warn("stopping bgp", "error", err)
	}
	s.srv = nil
	s.policy = nil
	s.peers = map[netip.Addr]peerSpec{}
	s.paths = map[netip.Prefix]originRec{}
}

// Close stops the speaker. With gracefulRestart, peers are not sent a
// NOTIFICATION, so those with graceful restart keep our routes (and traffic
// keeps flowing on the kernel routes the agent leaves in place) until a new
// speaker started with Options.Restarting re-announces them. Without it,
// sessions are closed and peers withdraw our routes at once.
func (s *Speaker) Close(gracefulRestart bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopServer(gracefulRestart)
	if s.stopFlsh != nil {
		s.stopFlsh()
	}
	s.flushWG.Wait()
	s.log.Info("bgp speaker stopped", "graceful_restart", gracefulRestart)
	return nil
}
