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
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
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
	// Ready, when set, is called once the gateway is up: tunnel, shaper
	// and BGP started (cend tells systemd READY=1 then).
	Ready func()
	// Build is the binary's identity, for the opencen_build_info metric.
	Build BuildInfo
}

// BuildInfo is a binary's version and the commit it is built from.
type BuildInfo struct{ Version, Commit string }

// Agent runs one gateway. Its fields are grouped by what guards them.
type Agent struct {
	opts  Options
	log   *slog.Logger
	probe func(device string) hostSupport // what the host supports for shaping (probeHost; tests replace it)

	// mu guards the config, what BGP taught, and the status: everything
	// the callbacks, the control socket and the loop share.
	mu       sync.Mutex
	cfg      *config.Config
	desired  *config.Desired
	gen      int
	loadedAt time.Time
	sec      desired.Secrets
	learn    learnedState
	down     map[string]bool
	subsys   map[string]*api.SubsystemStatus
	started  time.Time
	rates    *rateTracker
	// shPath is the shaping path Prepare chose, shDevices where the
	// shaper acts once started.
	shPath    shaping.Path
	shDevices []string

	// life is Run's context (nil before Run): a reload, detached from its
	// caller, still ends when the agent stops. Guarded by mu.
	life context.Context

	// reloadMu serialises reloads: SIGHUP's and the control socket's take
	// the one path, Reload, one at a time.
	reloadMu sync.Mutex

	// applyMu serialises reconciles and guards the subsystems' buffers.
	applyMu sync.Mutex
	buf     desired.Buffers

	// The subsystems, each set once by Run as it starts, under applyMu and
	// mu (setSubsystem): the loop reads them under applyMu, everything else
	// through subsystems(), under mu. closed (under applyMu) says close has
	// stopped them: no reconcile touches them after.
	dp           *dataplane.Dataplane
	rt           *routing.Speaker
	sh           shaper
	closed       bool
	bpffsMounted bool // this agent mounted /sys/fs/bpf

	// The loop's wake-ups: kick for a reconcile now, grow for a paced
	// one that only adds routes (a burst of learned routes is taken in
	// few large reconciles).
	kick     chan struct{}
	grow     chan struct{}
	lastGrow atomic.Int64 // the last call of growReconcile, unix ns
	metrics  *metrics
	// snap is the loop's latest reading of the subsystems for the
	// metrics; snapKick asks the loop for a new one.
	snap     atomic.Pointer[snapshot]
	snapKick chan struct{}
}

// learnedState is what BGP taught the agent, under Agent.mu.
type learnedState struct {
	routes   desired.Routes
	handoffs desired.Routes // the twins' handoff addresses (Route.Handoff)
	// stale and staleHandoffs are what the last agent saved at a graceful
	// stop, used until
	// BGP is synced.
	stale         desired.Routes
	staleHandoffs desired.Routes
	held          map[netip.Prefix]heldRoute
	synced        bool
}

// Subsystem names, as status and metrics label them.
const (
	subDataplane = "dataplane"
	subRouting   = "routing"
	subShaping   = "shaping"
)

// setSubsystem runs set, which assigns a subsystem, under applyMu and mu.
func (a *Agent) setSubsystem(set func()) {
	a.applyMu.Lock()
	a.mu.Lock()
	set()
	a.mu.Unlock()
	a.applyMu.Unlock()
}

// subsystems returns the subsystems started so far (nil for the others),
// for readers outside the loop.
func (a *Agent) subsystems() (*dataplane.Dataplane, *routing.Speaker, shaper) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dp, a.rt, a.sh
}

// New loads and checks the config and this gateway's secrets. It touches
// no kernel state: a config that does not validate, an unknown gateway or
// an unsafe key file stop the agent while nothing is changed yet.
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
		opts:     opts,
		log:      opts.Logger.With("gateway", opts.Gateway),
		cfg:      cfg,
		desired:  d,
		gen:      1,
		loadedAt: time.Now(),
		sec:      sec,
		learn:    learnedState{routes: desired.Routes{}, handoffs: desired.Routes{}, staleHandoffs: desired.Routes{}, held: map[netip.Prefix]heldRoute{}},
		down:     map[string]bool{},
		subsys:   map[string]*api.SubsystemStatus{},
		kick:     make(chan struct{}, 1),
		grow:     make(chan struct{}, 1),
		snapKick: make(chan struct{}, 1),
		rates:    newRateTracker(),
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
