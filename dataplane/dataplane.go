package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// Mode chooses the WireGuard implementation.
type Mode string

const (
	// ModeAuto uses the kernel module when a wireguard link can be
	// created in the target namespace, else userspace.
	ModeAuto Mode = ""
	// ModeKernel requires the kernel module.
	ModeKernel Mode = "kernel"
	// ModeUserspace always runs wireguard-go in a helper process.
	ModeUserspace Mode = "userspace"
)

// Options configure a Dataplane. Only ID (or Device) is required.
type Options struct {
	// Logger receives reconcile and repair events; nil discards.
	Logger *slog.Logger
	// ID is a host-unique id of this gateway (e.g. "cen-demo/gw-1"); the
	// device name is DeviceName(ID) unless Device is set.
	ID string
	// Device overrides the device name (at most 15 characters). It must be
	// unique on the host, across namespaces.
	Device string
	// NetNS is the path of the network namespace to manage (e.g.
	// /run/netns/gw1); empty means the calling process's own.
	NetNS string
	// StateDir holds the helper's pid and log files. Default
	// /run/opencen/dataplane.
	StateDir string
	// HelperCommand is the argv prefix that runs the userspace device
	// helper; the dataplane appends "--device NAME --mtu N". Default
	// [/proc/self/exe wireguard-device].
	HelperCommand []string
	// Mode picks kernel or userspace WireGuard; default auto-detect.
	Mode Mode
	// Table is the routing table of the routes; default main (254).
	Table int
	// HandoffTableBase numbers the handoff tables (base+1, base+2, ...);
	// default DefaultHandoffTableBase.
	HandoffTableBase int
	// RouteWorkers is the number of netlink sockets that write large route
	// sets in parallel; default 4.
	RouteWorkers int
	// ResyncInterval re-applies the desired state periodically in addition
	// to netlink events; default 30s, negative turns it off.
	ResyncInterval time.Duration
}

func (o *Options) defaults() error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Device == "" {
		if o.ID == "" {
			return errors.New("options: ID or Device is required")
		}
		o.Device = DeviceName(o.ID)
	}
	if err := validDeviceName(o.Device); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	if o.StateDir == "" {
		o.StateDir = "/run/opencen/dataplane"
	}
	if len(o.HelperCommand) == 0 {
		o.HelperCommand = []string{"/proc/self/exe", "wireguard-device"}
	}
	switch o.Mode {
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		return fmt.Errorf("options: mode %q: must be kernel, userspace or empty", o.Mode)
	}
	if o.Table == 0 {
		o.Table = syscall.RT_TABLE_MAIN
	}
	if o.HandoffTableBase == 0 {
		o.HandoffTableBase = DefaultHandoffTableBase
	}
	if o.Table > o.HandoffTableBase && o.Table <= o.HandoffTableBase+1024 {
		return fmt.Errorf("options: table %d lies among the handoff tables above %d", o.Table, o.HandoffTableBase)
	}
	if o.RouteWorkers <= 0 {
		o.RouteWorkers = 4
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 30 * time.Second
	}
	return nil
}

// Dataplane owns one WireGuard device, its addresses, its routes and
// policy rules, and its guard in one network namespace. Its methods are
// safe for concurrent use.
type Dataplane struct {
	log  *slog.Logger
	name string
	opts Options

	// Kernel access, fixed after New.
	nl      netlinkOps
	writers []routeWriter
	wg      wgOps
	host    hostOps
	guard   guardOps
	closers []func() error

	// mu serialises reconciles and guards the state below.
	mu        sync.Mutex
	desired   Desired
	have      bool
	lastErr   error
	mode      Mode // detected: ModeKernel or ModeUserspace
	helperPID int
	closed    bool
	swept     bool        // tables of an older layout removed (once per Dataplane)
	scratch   planScratch // for resolve
	// The installed routes of the main (Options.Table) and handoff
	// tables, trusted while drift has not moved (see routeCache).
	mainCache     routeCache
	handoffCaches map[int]*routeCache

	// Watchers and repair, lock-free.
	drift     atomic.Uint64
	linkIndex atomic.Int32
	kick      chan struct{}
	stop      chan struct{}
	loops     sync.WaitGroup
}

// New opens a Dataplane. It changes nothing until Set; a device, helper
// and routes left by a previous instance are adopted by the first Set.
func New(opts Options) (*Dataplane, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	d := newDataplane(opts)
	d.host = &host{nsPath: opts.NetNS, stateDir: opts.StateDir, helperCmd: opts.HelperCommand, log: opts.Logger}
	ns := netns.None()
	if opts.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(opts.NetNS); err != nil {
			return nil, fmt.Errorf("open netns %s: %w", opts.NetNS, err)
		}
		d.closers = append(d.closers, ns.Close)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		d.closeAll()
		return nil, fmt.Errorf("open netlink in %s: %w", nsName(opts.NetNS), err)
	}
	d.closers = append(d.closers, func() error { h.Close(); return nil })
	d.nl = h
	for range opts.RouteWorkers {
		s, err := openRouteSocket(opts.NetNS)
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("open netlink in %s: %w", nsName(opts.NetNS), err)
		}
		d.closers = append(d.closers, s.Close)
		d.writers = append(d.writers, s)
	}
	// wgctrl's generic netlink socket must live in the namespace for the
	// kernel module; the UAPI path is the same from everywhere.
	var wc *wgctrl.Client
	if err := inNetNS(opts.NetNS, func() (err error) { wc, err = wgctrl.New(); return err }); err != nil {
		d.closeAll()
		return nil, fmt.Errorf("open wireguard control: %w", err)
	}
	d.closers = append(d.closers, wc.Close)
	d.wg = wc
	g, err := newNFTGuard(int(ns))
	if err != nil {
		d.closeAll()
		return nil, err
	}
	d.guard = g
	d.start(ns)
	return d, nil
}

// newDataplane builds a Dataplane without kernel access; New and the unit
// tests' fakes fill in the interfaces.
func newDataplane(opts Options) *Dataplane {
	return &Dataplane{
		opts: opts, name: opts.Device,
		log:           opts.Logger.With("device", opts.Device),
		handoffCaches: map[int]*routeCache{},
		kick:          make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

func nsName(p string) string {
	if p == "" {
		return "current netns"
	}
	return p
}

// Device returns the name of the WireGuard device: CEN traffic leaves
// through it with its real addresses visible, so it is where the shaper
// attaches.
func (d *Dataplane) Device() string { return d.name }

// Set makes the dataplane equal to want and remembers it for drift repair.
// It writes only what differs. A zero want tears everything down (like
// Close(true) but the Dataplane stays usable). An invalid want changes
// nothing and returns every problem found. Errors from individual writes
// do not stop the others; they are returned joined.
func (d *Dataplane) Set(ctx context.Context, want Desired) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("dataplane closed")
	}
	if isZero(want) {
		d.desired, d.have = Desired{}, false
		err := d.teardown()
		d.lastErr = err
		return err
	}
	p, err := resolveWith(want, d.opts.HandoffTableBase, &d.scratch)
	if err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	d.desired, d.have = cloneDesired(want), true
	err = d.reconcile(ctx, want, p)
	d.lastErr = err
	return err
}

func cloneDesired(in Desired) Desired {
	out := in
	out.Addresses = slices.Clone(in.Addresses)
	out.Peers = slices.Clone(in.Peers)
	for i := range out.Peers {
		out.Peers[i].TunnelAddresses = slices.Clone(in.Peers[i].TunnelAddresses)
		out.Peers[i].AllowedIPs = slices.Clone(in.Peers[i].AllowedIPs)
	}
	out.Routes = slices.Clone(in.Routes)
	// One backing array for all the Via lists: 100,000 routes are not
	// 100,000 allocations.
	n := 0
	for _, r := range in.DirectRoutes {
		n += len(r.Via)
	}
	vias := make([]netip.Addr, 0, n)
	out.DirectRoutes = slices.Clone(in.DirectRoutes)
	for i, r := range in.DirectRoutes {
		start := len(vias)
		vias = append(vias, r.Via...)
		out.DirectRoutes[i].Via = vias[start:len(vias):len(vias)]
	}
	out.LANPrefixes = slices.Clone(in.LANPrefixes)
	out.VBRNeighbors = slices.Clone(in.VBRNeighbors)
	out.Handoffs = slices.Clone(in.Handoffs)
	for i := range out.Handoffs {
		out.Handoffs[i].Via = slices.Clone(in.Handoffs[i].Via)
		out.Handoffs[i].Sources = slices.Clone(in.Handoffs[i].Sources)
	}
	return out
}

// Close stops watching. With cleanup false the device, its helper, its
// addresses, routes, rules and guard stay and keep forwarding for the next
// Dataplane to adopt; with cleanup true everything this package created is
// removed: routes and rules in every table, addresses, the WireGuard link,
// the guard table, the helper process, its UAPI socket and its state
// files. Sysctls are left as they are (other parts of the gateway may rely
// on forwarding).
func (d *Dataplane) Close(cleanup bool) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	close(d.stop)
	d.loops.Wait()
	var err error
	if cleanup {
		d.mu.Lock()
		err = d.teardown()
		d.mu.Unlock()
	}
	return errors.Join(err, d.closeAll())
}

func (d *Dataplane) closeAll() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	d.closers = nil
	return errors.Join(errs...)
}
