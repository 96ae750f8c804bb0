// Package agent is the gateway agent that cend runs: it loads the config,
// computes the gateway's desired state from it and from the routes BGP
// learns, applies it to the dataplane (WireGuard and kernel routes), the
// BGP speaker and the shaper, repairs drift, reloads on request, and serves
// the control socket and metrics.
//
// One reconcile loop drives all three subsystems. Each is applied on its
// own and its error recorded on its own, so a failing shaper never hides a
// failing dataplane. Stopping without cleanup leaves tunnels, routes and
// shapers in place and tells BGP peers to keep this gateway's routes
// (graceful restart); the next agent adopts them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an Agent; ConfigPath, Gateway and Logger are required.
type Options struct {
	ConfigPath string
	Gateway    string
	// StateDir holds what must outlive one agent process: the dataplane
	// helper's pid and log, the graceful-restart marker, the last learned
	// routes. Default /var/lib/opencen/GATEWAY.
	StateDir string
	// Cleanup makes Close remove everything this gateway installed instead
	// of leaving it forwarding for the next agent.
	Cleanup bool
	Logger  *slog.Logger
	// Registerer receives the agent's metrics; nil registers none.
	Registerer prometheus.Registerer
	// HelperCommand runs the userspace WireGuard helper (see
	// dataplane.Options.HelperCommand).
	HelperCommand []string
	// BGPPort is the port BGP listens on and dials; default 179.
	BGPPort int32
	// PinPath is the bpffs folder for the shaper's pinned objects; default
	// /sys/fs/bpf/opencen/DEVICE.
	PinPath string
	// WireGuardMode forces kernel or userspace WireGuard; default detect
	// (userspace whenever Shaper is).
	WireGuardMode dataplane.Mode
	// Shaper is how the gateway shapes (cend --shaper): shaping.PathTCX,
	// PathTC, PathUserspace, or PathAuto (default), which takes the first
	// of those the host supports. Prepare refuses a path the host lacks.
	Shaper shaping.Path
}

// Agent runs one gateway.
type Agent struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // guards everything below
	cfg      *config.Config
	desired  *config.Desired
	gen      int
	loadedAt time.Time
	sec      secrets
	routes   learned
	handoffs learned // the twins' handoff addresses (LearnedRoute.Handoff)
	stale    learned // routes kept from before a restart until BGP is synced
	// staleHandoffs are the handoff addresses kept from before a restart,
	// used until BGP is synced.
	staleHandoffs learned
	held          map[netip.Prefix]heldRoute
	synced        bool
	down          map[string]bool
	subsys        map[string]*api.SubsystemStatus
	started       time.Time
	rates         *rateTracker

	applyMu sync.Mutex // serialises reconciles
	dpBuf   desiredBuf // under applyMu
	dp      *dataplane.Dataplane
	rt      *routing.Speaker
	sh      shaper
	// shPath is the shaping path Prepare chose, shDevices where the
	// shaper acts once started (both set under mu); bpffsMounted whether
	// this agent mounted /sys/fs/bpf.
	shPath       shaping.Path
	shDevices    []string
	bpffsMounted bool
	kick         chan struct{}
	// grow asks for a reconcile that only adds routes: paced, so that
	// a burst of learned routes is taken in few large reconciles.
	grow     chan struct{}
	lastGrow atomic.Int64 // when growReconcile was last called, unix ns
	metrics  *metrics
	// probe finds what the host supports for shaping (probeHost; tests
	// replace it).
	probe func(device string) hostSupport
}

// Subsystem names, as status and metrics label them.
const (
	subDataplane = "dataplane"
	subRouting   = "routing"
	subShaping   = "shaping"
)

// New loads and checks the config and this gateway's secrets. It touches
// no kernel state: a config that does not validate, an unknown gateway or
// an unsafe key file stop the agent before anything is changed.
func New(opts Options) (*Agent, error) {
	if opts.Logger == nil {
		return nil, errors.New("agent: logger is required")
	}
	if opts.ConfigPath == "" || opts.Gateway == "" {
		return nil, errors.New("agent: --config and --gateway are required")
	}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	d, err := cfg.Desired(opts.Gateway, config.DesiredOptions{})
	if err != nil {
		return nil, err
	}
	sec, err := readSecrets(cfg, d)
	if err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join("/var/lib/opencen", opts.Gateway)
	}
	if opts.BGPPort == 0 {
		opts.BGPPort = 179
	}
	a := &Agent{
		opts:          opts,
		log:           opts.Logger.With("gateway", opts.Gateway),
		cfg:           cfg,
		desired:       d,
		gen:           1,
		loadedAt:      time.Now(),
		sec:           sec,
		routes:        learned{},
		handoffs:      learned{},
		staleHandoffs: learned{},
		held:          map[netip.Prefix]heldRoute{},
		down:          map[string]bool{},
		subsys:        map[string]*api.SubsystemStatus{},
		kick:          make(chan struct{}, 1),
		grow:          make(chan struct{}, 1),
		rates:         newRateTracker(),
	}
	a.probe = a.probeHost
	for _, name := range []string{subDataplane, subRouting, subShaping} {
		a.subsys[name] = &api.SubsystemStatus{Name: name}
	}
	if opts.Registerer != nil {
		a.metrics = newMetrics(a)
		if err := opts.Registerer.Register(a.metrics); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return a, nil
}

// readSecrets reads the gateway's private key and the TCP-MD5 passwords of
// the VBR sessions it holds, refusing files open to group or others.
func readSecrets(cfg *config.Config, d *config.Desired) (secrets, error) {
	var sec secrets
	var errs []error
	key, err := readPrivateKey(d.PrivateKeyFile)
	if err != nil {
		errs = append(errs, err)
	}
	sec.privateKey = key
	if g, ok := cfg.Gateway(d.Gateway); ok && err == nil && config.Key(key.PublicKey()) != g.PublicKey {
		errs = append(errs, fmt.Errorf("private key file %s does not match gateway %s's public_key in %s", d.PrivateKeyFile, d.Gateway, cfg.File))
	}
	sec.passwords = map[string]string{}
	for _, v := range d.VBRs {
		if v.PasswordFile == "" {
			continue
		}
		pw, err := readSecretFile(v.PasswordFile, "password file of "+v.Network)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sec.passwords[v.Network] = pw
	}
	return sec, errors.Join(errs...)
}

// gracefulMarker is written when an agent stops leaving its state in place,
// so the next one tells BGP peers it is restarting.
func (a *Agent) gracefulMarker() string { return filepath.Join(a.opts.StateDir, "graceful-restart") }

// Run brings the gateway up and keeps it reconciled until ctx is done, then
// stops it (keeping or removing its state as Options.Cleanup says).
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now()
	if err := a.Prepare(); err != nil {
		return err
	}
	if err := os.MkdirAll(a.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	restarting := false
	if _, err := os.Stat(a.gracefulMarker()); err == nil {
		restarting = true
		os.Remove(a.gracefulMarker())
	}
	a.stale = loadRoutes(a.routesFile(), a.log)
	for p, r := range a.stale {
		if r.Handoff {
			a.staleHandoffs[p] = r
			delete(a.stale, p)
		}
	}
	up := false
	defer func() {
		if err != nil && !up {
			a.logLeftInPlace(err)
		}
		err = errors.Join(err, a.close())
	}()

	if err := a.mountBPFFS(); err != nil {
		return err
	}
	cfg := a.snapshotConfig()
	a.dp, err = dataplane.New(dataplane.Options{
		Logger:        a.log.With("subsystem", subDataplane),
		ID:            cfg.Instance.Name + "/" + a.opts.Gateway,
		StateDir:      filepath.Join(a.opts.StateDir, "dataplane"),
		HelperCommand: a.opts.HelperCommand,
		Mode:          a.wireGuardMode(),
	})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	// The tunnel comes first: BGP rides inside it, and the shaper attaches
	// to it. Without a device nothing else can start: say why and stop.
	firstErr := a.reconcile(ctx)
	st, _ := a.dp.Status()
	if st.Mode == "" {
		return fmt.Errorf("no tunnel device: %w", firstErr)
	}
	if firstErr != nil {
		a.log.Error("first reconcile incomplete; retrying in the loop", "err", firstErr)
	}
	a.log.Info("wireguard path", "mode", st.Mode, "device", st.Device)

	if err := a.startShaper(st.Mode == dataplane.ModeUserspace); err != nil {
		return fmt.Errorf("shaping: %w", err)
	}
	if err := a.startRouting(ctx, restarting); err != nil {
		return err
	}
	if err := a.reconcile(ctx); err != nil {
		a.log.Error("reconcile incomplete; retrying in the loop", "err", err)
	}
	a.log.Info("gateway up", "instance", cfg.Instance.Name, "region", a.snapshotDesired().Region, "restarting", restarting)
	up = true
	return a.loop(ctx)
}

// startRouting starts the BGP speaker.
func (a *Agent) startRouting(ctx context.Context, restarting bool) (err error) {
	a.rt, err = routing.New(routing.Options{
		Logger:     a.log.With("subsystem", subRouting),
		Port:       a.opts.BGPPort,
		OnRoutes:   a.onRoutes,
		OnSessions: a.onSessions,
		Restarting: restarting,
	})
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	if err := a.rt.Start(ctx); err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	if a.opts.Registerer != nil {
		if err := a.opts.Registerer.Register(routing.NewCollector(a.rt)); err != nil {
			return fmt.Errorf("register routing metrics: %w", err)
		}
	}
	return nil
}

// loop keeps the gateway reconciled until ctx is done.
func (a *Agent) loop(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.sampleRates(ctx) }()
	defer wg.Wait()

	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	// A reconcile costs time in proportion to the whole table (it computes
	// and diffs the complete desired state). While a burst of new routes
	// pours in, one that only adds routes waits as long as the last one
	// took (at least minPace, at most maxPace), so that the agent spends
	// at most about half its time reconciling and each reconcile takes a
	// large batch:
	// 100,000 routes arriving in thousands of small batches would
	// otherwise cost a reconcile of the growing table per batch, starving
	// BGP and BFD of CPU. Withdrawals, session changes and reloads (kick)
	// never wait.
	// A burst has ended when no new routes came for quietAfter (the
	// speaker hands over a batch every 100 ms while they pour in): then
	// the pace has nothing left to protect and the last routes are
	// installed at once.
	const minPace, maxPace = 250 * time.Millisecond, 500 * time.Millisecond
	const quietAfter = 200 * time.Millisecond
	var paceUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-a.grow:
			if !a.paceGrowth(ctx, paceUntil, quietAfter) {
				return nil
			}
		case <-resync.C:
		}
		// This reconcile takes in everything asked for so far.
		select {
		case <-a.grow:
		default:
		}
		start := time.Now()
		if err := a.reconcile(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("reconcile incomplete", "err", err)
		}
		paceUntil = time.Now().Add(min(max(time.Since(start), minPace), maxPace))
	}
}

// paceGrowth waits before a reconcile that only adds routes: until
// paceUntil, or until the routes stopped coming for quiet, or a kick. It
// returns false when ctx ended.
func (a *Agent) paceGrowth(ctx context.Context, paceUntil time.Time, quiet time.Duration) bool {
	quietAt := func() time.Time { return time.Unix(0, a.lastGrow.Load()).Add(quiet) }
	for {
		until := paceUntil
		if q := quietAt(); q.Before(until) {
			until = q
		}
		wait := time.Until(until)
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-a.kick:
			t.Stop()
			return true
		case <-t.C:
			// The quiet deadline may have moved: more routes came.
		}
	}
}

// growReconcile asks the loop for a paced reconcile: only routes were
// added.
func (a *Agent) growReconcile() {
	a.lastGrow.Store(time.Now().UnixNano())
	select {
	case a.grow <- struct{}{}:
	default:
	}
}

// kickReconcile asks the loop for a reconcile without waiting.
func (a *Agent) kickReconcile() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) snapshotConfig() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) snapshotDesired() *config.Desired {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired
}

// reconcile computes the desired state now and applies it to every
// subsystem that exists, recording each one's outcome.
func (a *Agent) reconcile(ctx context.Context) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()

	a.mu.Lock()
	cfg, sec := a.cfg, a.sec
	d, err := cfg.Desired(a.opts.Gateway, config.DesiredOptions{Down: a.down})
	if err != nil {
		a.mu.Unlock()
		return err
	}
	a.desired = d
	now := time.Now()
	a.expireHeld(now)
	routes := a.routes
	if (!a.synced && len(a.stale) > 0) || len(a.held) > 0 {
		// After a restart or a failover: the learned routes with those
		// kept or held. Otherwise the learned routes are used as they
		// are, under a.mu (a copy of 100,000 routes per reconcile cost
		// more than building the desired state from them).
		routes = make(learned, len(a.routes)+len(a.stale))
		if !a.synced {
			for p, r := range a.stale {
				routes[p] = r
			}
		}
		for p, r := range a.routes {
			if kept, ok := routes[p]; ok && !a.synced {
				// A route relearned from some of its gateways, before
				// the others' sessions are back: keep those too until
				// BGP has synced, so their prefixes keep their homes.
				r = withHopsOf(r, kept)
			}
			routes[p] = r
		}
		a.addHeld(routes, now)
	}
	v := view{routes: routes, down: a.down, lan: a.lanAddrs()}
	dpWant := dataplaneDesiredInto(cfg, d, sec, v, &a.dpBuf)
	shWant := shapingDesired(cfg, d, routes)
	missing := missingHandoffs(d, v)
	a.mu.Unlock()
	rtWant := routingDesired(cfg, d, sec)
	if a.dp != nil {
		local, err := a.dp.LocalAddresses()
		if err != nil {
			a.log.Warn("reading the gateway's addresses", "err", err)
		}
		rtWant.Connected, rtWant.HandoffAddresses = connectedAndHandoff(d, local)
	}
	if len(missing) > 0 {
		a.log.Warn("twin gateways up but with no LAN address known: they cannot be handed traffic, so they are home of nothing here",
			"twins", missing)
	}

	var errs []error
	apply := func(name string, fn func() error) {
		err := fn()
		a.mu.Lock()
		s := a.subsys[name]
		s.LastApplied = time.Now()
		s.OK, s.Error = err == nil, ""
		if err != nil {
			s.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		a.mu.Unlock()
		if err != nil && a.metrics != nil {
			a.metrics.reconcileErrors.WithLabelValues(name).Inc()
		}
	}
	if a.dp != nil {
		apply(subDataplane, func() error { return a.dp.Set(ctx, dpWant) })
	}
	if a.rt != nil {
		apply(subRouting, func() error { return a.rt.Set(ctx, rtWant) })
	}
	if a.sh != nil {
		apply(subShaping, func() error { return a.sh.Set(shWant) })
	}
	return errors.Join(errs...)
}

// onRoutes receives the routing layer's coalesced batches.
func (a *Agent) onRoutes(b routing.RouteBatch) {
	// The speaker's in-memory session states, not a GoBGP query: GoBGP
	// applies a dead peer's withdrawals and then its state change before
	// this batch is built, so a route whose every gateway went down is seen
	// as such here and held.
	established := establishedGateways(a.rt.Sessions())
	now := time.Now()
	a.mu.Lock()
	gone := map[netip.Prefix]routing.LearnedRoute{}
	if b.Full {
		for p, r := range a.routes {
			gone[p] = r
		}
		a.routes = learned{}
		a.handoffs = learned{}
	}
	for _, p := range b.Withdraw {
		if r, ok := a.routes[p]; ok {
			gone[p] = r
		}
		delete(a.routes, p)
		delete(a.handoffs, p)
	}
	onlyNew := a.onlyNewPrefixes(b)
	for _, r := range b.Upsert {
		if r.Handoff {
			a.handoffs[r.Prefix] = r
			delete(a.routes, r.Prefix)
			continue
		}
		delete(a.handoffs, r.Prefix)
		a.routes[r.Prefix] = r
		delete(gone, r.Prefix)
		delete(a.held, r.Prefix)
	}
	for p, r := range gone {
		if holdable(r, established) {
			a.held[p] = heldRoute{route: r, until: now.Add(holdTime)}
		}
	}
	if b.Synced && !a.synced {
		a.synced = true
		a.log.Info("bgp synced: sweeping routes kept from before the restart", "kept", len(a.stale))
		a.stale, a.staleHandoffs = nil, nil
	}
	a.mu.Unlock()
	if onlyNew {
		a.growReconcile()
	} else {
		a.kickReconcile()
	}
}

// onlyNewPrefixes reports whether b only adds prefixes the agent does not
// have (learned, held or kept from before a restart): its reconcile may be
// paced. A withdrawal or a changed route (a gateway gone from its next
// hops) is a failover and never waits. a.mu is held.
func (a *Agent) onlyNewPrefixes(b routing.RouteBatch) bool {
	if b.Full || len(b.Withdraw) > 0 || (b.Synced && !a.synced) {
		return false
	}
	for _, r := range b.Upsert {
		_, learned := a.routes[r.Prefix]
		_, held := a.held[r.Prefix]
		_, kept := a.stale[r.Prefix]
		if learned || held || (kept && !a.synced) {
			return false
		}
	}
	return true
}

// establishedGateways returns the tunnel addresses of the gateway peers
// whose BGP session is up.
func establishedGateways(ss []routing.SessionUp) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range ss {
		if s.Kind == "gateway" && s.Up {
			out[s.Neighbor] = true
		}
	}
	return out
}

// onSessions receives the speaker's session changes as they happen (GoBGP
// peer-state events, BFD's detection included; nothing is polled), so the
// region's bandwidth is re-split among the gateways that are up.
func (a *Agent) onSessions(ss []routing.SessionUp) {
	down := map[string]bool{}
	for _, s := range ss {
		if s.Kind == "gateway" && !s.Up {
			down[s.Name] = true
		}
	}
	a.mu.Lock()
	changed := !sameSet(down, a.down)
	a.down = down
	a.mu.Unlock()
	if changed {
		a.kickReconcile()
	}
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// close stops the subsystems in the reverse order of their start.
func (a *Agent) close() error {
	var errs []error
	graceful := !a.opts.Cleanup
	if a.rt != nil {
		errs = append(errs, a.rt.Close(graceful))
	}
	if a.sh != nil {
		errs = append(errs, a.sh.Close(a.opts.Cleanup))
	} else if a.opts.Cleanup {
		errs = append(errs, a.removeShaper())
	}
	if a.opts.Cleanup && a.opts.PinPath == "" && a.dp != nil {
		// The default pin folder's parent is ours too; leave it if
		// another gateway's shaper still pins there.
		_ = os.Remove(filepath.Dir(a.pinPath()))
		errs = append(errs, a.releaseBPFFS())
	}
	if a.dp != nil {
		errs = append(errs, a.dp.Close(a.opts.Cleanup))
	}
	if graceful {
		a.mu.Lock()
		routes := make(learned, len(a.routes)+len(a.handoffs))
		for p, r := range a.routes {
			routes[p] = r
		}
		for p, r := range a.handoffs {
			routes[p] = r
		}
		a.mu.Unlock()
		errs = append(errs, saveRoutes(a.routesFile(), routes))
		errs = append(errs, os.WriteFile(a.gracefulMarker(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600))
	} else {
		// Only what the agent wrote: the folder may hold an operator's or
		// a lab's files too.
		for _, p := range []string{a.routesFile(), a.gracefulMarker(), filepath.Join(a.opts.StateDir, "dataplane")} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(a.opts.StateDir) // if it is now empty
	}
	return errors.Join(errs...)
}

func (a *Agent) routesFile() string { return filepath.Join(a.opts.StateDir, "learned-routes.json") }
