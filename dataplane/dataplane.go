package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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
	// HelperCommand is the argv prefix that runs the helper (cend's
	// wireguard-device subcommand); the dataplane appends "--device NAME
	// --mtu N". Default
	// [/proc/self/exe wireguard-device].
	HelperCommand []string
	// Mode picks kernel or userspace WireGuard; default auto-detect.
	Mode Mode
	// Table is the routing table for the routes; default main (254).
	Table int
	// FastTable is the routing table of the fast path (plain WireGuard
	// for Desired.Sources); default DefaultFastTable. Its policy rules
	// have priority FastRulePriority.
	FastTable int
	// RouteWorkers is the number of netlink sockets that write large route
	// sets in parallel; default 4.
	RouteWorkers int
	// ResyncInterval re-applies the desired state periodically in addition
	// to netlink events; default 30s, negative turns it off.
	ResyncInterval time.Duration
}

// Dataplane owns one WireGuard device, its addresses and its routes in
// one network namespace. Its methods are safe for concurrent use.
type Dataplane struct {
	log     *slog.Logger
	name    string
	ovlName string // the VXLAN overlay device
	opts    Options
	nl      netlinkOps
	writers []routeWriter
	wg      wgOps
	host    hostOps
	guard   guardOps
	closers []func() error

	mu        sync.Mutex // serialises reconciles, guards the fields below
	desired   Desired
	have      bool
	lastErr   error
	mode      Mode // detected: ModeKernel or ModeUserspace
	helperPID int
	closed    bool

	// The installed routes of the main (Options.Table) and fast tables,
	// trusted while drift has not moved (see routeCache).
	mainCache, fastCache routeCache
	drift                atomic.Uint64
	scratch              planScratch // for resolve, under mu

	linkIndex atomic.Int32
	ovlIndex  atomic.Int32
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
		opts: opts, name: opts.Device, ovlName: OverlayName(opts.Device),
		log:  opts.Logger.With("device", opts.Device),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
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
	if o.FastTable == 0 {
		o.FastTable = DefaultFastTable
	}
	if o.FastTable == o.Table {
		return fmt.Errorf("options: fast table %d is the route table", o.FastTable)
	}
	if o.RouteWorkers <= 0 {
		o.RouteWorkers = 4
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 30 * time.Second
	}
	return nil
}

func nsName(p string) string {
	if p == "" {
		return "current netns"
	}
	return p
}

// Device returns the name of the WireGuard device.
func (d *Dataplane) Device() string { return d.name }

// Overlay returns the name of the VXLAN overlay device ([OverlayName] of
// the device). IPv4 CEN traffic to and from other regions crosses it with
// its real (inner) addresses, in Ethernet frames, so it is where a shaper
// that classifies by destination attaches. It exists once Set has run
// with an IPv4 tunnel address.
func (d *Dataplane) Overlay() string { return d.ovlName }

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
	if want.IsZero() {
		d.desired, d.have = Desired{}, false
		err := d.teardown()
		d.lastErr = err
		return err
	}
	p, err := resolveWith(want, &d.scratch)
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
		out.Peers[i].AllowedIPs = slices.Clone(in.Peers[i].AllowedIPs)
		out.Peers[i].HomeRanges = slices.Clone(in.Peers[i].HomeRanges)
	}
	// One backing array for all the Via lists: 100,000 routes are not
	// 100,000 allocations.
	n := 0
	for _, r := range in.Routes {
		n += len(r.Via)
	}
	for _, r := range in.DirectRoutes {
		n += len(r.Via)
	}
	vias := make([]netip.Addr, 0, n)
	cloneVia := func(v []netip.Addr) []netip.Addr {
		if v == nil {
			return nil
		}
		start := len(vias)
		vias = append(vias, v...)
		return vias[start:len(vias):len(vias)]
	}
	out.Routes = slices.Clone(in.Routes)
	for i := range out.Routes {
		out.Routes[i].Via = cloneVia(in.Routes[i].Via)
	}
	out.Sources = slices.Clone(in.Sources)
	out.DirectRoutes = slices.Clone(in.DirectRoutes)
	for i := range out.DirectRoutes {
		out.DirectRoutes[i].Via = cloneVia(in.DirectRoutes[i].Via)
	}
	return out
}

// reconcile applies p; d.mu is held.
func (d *Dataplane) reconcile(ctx context.Context, want Desired, p plan) error {
	var errs []error
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.fib_multipath_hash_policy", "1"}} {
		if err := d.host.setSysctl(kv[0], kv[1]); err != nil {
			errs = append(errs, err)
		}
	}
	mtu := want.MTU
	if mtu == 0 {
		mtu = d.underlayMTU(want) - wireguardOverhead
	}
	link, err := d.ensureDevice(mtu)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	d.linkIndex.Store(int32(link.Attrs().Index))
	if link.Attrs().MTU != mtu {
		if err := d.nl.LinkSetMTU(link, mtu); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d: %w", mtu, err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		d.log.Info("bringing device up")
		if err := d.nl.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set link up: %w", err))
		}
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := d.syncPeers(want, p); err != nil {
		errs = append(errs, err)
	}
	addrs := want.Addresses
	if p.own4.IsValid() {
		addrs = append(slices.Clone(addrs), netip.PrefixFrom(vtepAddr(p.own4), 128))
	}
	if err := syncAddrs(d.nl, link, addrs); err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	ovl := 0
	if p.own4.IsValid() {
		// The guard first: the overlay's socket never listens unguarded.
		if wrote, err := d.guard.ensureGuard(guardTable(d.name), d.name); err != nil {
			return errors.Join(append(errs, err)...)
		} else if wrote {
			d.log.Info("installed overlay guard", "table", guardTable(d.name))
		}
		olink, err := d.ensureOverlay(p.own4, mtu-overlayOverhead)
		if olink == nil {
			return errors.Join(append(errs, err)...)
		}
		if err != nil {
			errs = append(errs, err)
		}
		ovl = olink.Attrs().Index
		d.ovlIndex.Store(int32(ovl))
		// Packets from one remote prefix arrive plain on the WireGuard
		// device (from its home) and in the overlay (from the home's
		// twins), whatever way the route back points: strict reverse-path
		// filtering would drop one of the two. Loose (2) still drops
		// sources with no route at all; the kernel uses the larger of
		// "all" and the device's value, so this wins over all=1. Loose
		// mode also refuses every packet arriving on a device without an
		// IPv4 address, so the overlay carries the tunnel address too.
		if err := syncAddrs(d.nl, olink, []netip.Prefix{netip.PrefixFrom(p.own4, 32)}); err != nil {
			errs = append(errs, fmt.Errorf("overlay: %w", err))
		}
		for _, dev := range []string{d.name, d.ovlName} {
			if err := d.host.setSysctl("net.ipv4.conf."+dev+".rp_filter", "2"); err != nil {
				errs = append(errs, err)
			}
		}
		if err := syncOverlayNeighbours(d.nl, olink, p.neighbours); err != nil {
			errs = append(errs, err)
		}
	} else {
		if err := d.removeOverlay(); err != nil {
			errs = append(errs, err)
		}
		if err := d.guard.removeGuard(guardTable(d.name)); err != nil {
			errs = append(errs, err)
		}
		d.ovlIndex.Store(0)
	}
	if err := d.syncRoutes(p, link.Attrs().Index, ovl, want.Addresses); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncFast(p, link.Attrs().Index); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (d *Dataplane) syncPeers(want Desired, p plan) error {
	dev, err := d.wg.Device(d.name)
	if err != nil {
		return fmt.Errorf("read wireguard device: %w", err)
	}
	cfg, changed := planPeers(dev, want, p)
	if !changed {
		return nil
	}
	d.log.Info("configuring wireguard", "peers_written", len(cfg.Peers), "key_or_port", cfg.PrivateKey != nil || cfg.ListenPort != nil)
	if err := d.wg.ConfigureDevice(d.name, cfg); err != nil {
		return fmt.Errorf("configure wireguard: %w", err)
	}
	return nil
}

func (d *Dataplane) ownedRoutes() ([]netlink.Route, error) {
	filter := &netlink.Route{Table: d.opts.Table, Protocol: RouteProtocol}
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

func (d *Dataplane) syncRoutes(p plan, idx, ovl int, addrs []netip.Prefix) error {
	want := mainSpec(p, idx, ovl, d.opts.Table, addrs)
	add, del, gen, err := d.mainCache.diff(d.drift.Load(), d.opts.Table, want, d.ownedRoutes)
	if err != nil {
		return err
	}
	if len(add)+len(del) > 0 {
		d.log.Info("syncing routes", "install", len(add), "delete", len(del))
		err = applyRoutes(d.writers, want.routes(add), del)
	}
	d.mainCache.applied(gen, want, add, del, err)
	return err
}

// underlayMTU is the MTU of the interface that reaches the first peer
// endpoint, or 1500.
func (d *Dataplane) underlayMTU(want Desired) int {
	for _, p := range want.Peers {
		if !p.Endpoint.IsValid() {
			continue
		}
		rs, err := d.nl.RouteGet(p.Endpoint.Addr().AsSlice())
		if err != nil || len(rs) == 0 {
			continue
		}
		if rs[0].MTU > 0 {
			return rs[0].MTU
		}
		if l, err := d.nl.LinkByIndex(rs[0].LinkIndex); err == nil {
			return l.Attrs().MTU
		}
	}
	return 1500
}

// Close stops watching. With cleanup false the device, its helper, its
// addresses and routes, the overlay device with its FDB and neighbour
// entries and the nftables guard stay and keep forwarding for the next
// Dataplane to adopt; with cleanup true everything this package created is
// removed: routes, addresses, the overlay and WireGuard links, the guard
// table, the helper process, its UAPI socket and its state files. Sysctls
// are left as they are (other parts of the gateway may rely on
// forwarding).
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

// teardown removes what the dataplane owns; d.mu is held.
func (d *Dataplane) teardown() error {
	var errs []error
	d.mainCache.invalidate()
	d.fastCache.invalidate()
	link, err := d.nl.LinkByName(d.name)
	switch {
	case linkMissing(err):
		link = nil
	case err != nil:
		return fmt.Errorf("find device: %w", err)
	}
	if link != nil && !ownedLinkType(link.Type()) {
		return fmt.Errorf("device %s is a %s link, not wireguard: not touching it", d.name, link.Type())
	}
	ovl := 0
	if olink, err := d.nl.LinkByName(d.ovlName); err == nil && olink.Type() == "vxlan" {
		ovl = olink.Attrs().Index
	}
	if err := d.removeFast(); err != nil {
		errs = append(errs, err)
	}
	if link != nil || ovl != 0 {
		if rs, err := d.ownedRoutes(); err != nil {
			errs = append(errs, err)
		} else {
			var mine []netlink.Route
			for _, r := range rs {
				if onLinks(&r, link, ovl) {
					mine = append(mine, r)
				}
			}
			errs = append(errs, applyRoutes(d.writers, nil, mine))
		}
	}
	if err := d.removeOverlay(); err != nil {
		errs = append(errs, err)
	}
	if pid := d.host.findHelper(d.name); pid != 0 {
		if err := d.host.stopHelper(d.name, pid); err != nil {
			errs = append(errs, err)
		}
	}
	if link != nil {
		if err := d.nl.LinkDel(link); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete device: %w", err))
		}
	}
	if err := d.host.removeSocket(d.name); err != nil {
		errs = append(errs, err)
	}
	if err := d.host.removeState(d.name); err != nil {
		errs = append(errs, err)
	}
	if err := d.guard.removeGuard(guardTable(d.name)); err != nil {
		errs = append(errs, err)
	}
	d.helperPID, d.mode = 0, ""
	d.linkIndex.Store(0)
	d.ovlIndex.Store(0)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.log.Info("dataplane removed")
	return nil
}

// onLinks reports whether r leaves through the WireGuard link or the
// overlay (index ovl, 0 for none).
func onLinks(r *netlink.Route, link netlink.Link, ovl int) bool {
	if link != nil && r.LinkIndex == link.Attrs().Index {
		return true
	}
	if ovl == 0 {
		return false
	}
	if r.LinkIndex == ovl {
		return true
	}
	for _, nh := range r.MultiPath {
		if nh.LinkIndex == ovl {
			return true
		}
	}
	return false
}

func ownedLinkType(t string) bool { return t == "wireguard" || t == "tuntap" || t == "tun" }

// Status is a snapshot of the dataplane for cenctl and metrics.
type Status struct {
	Device    string
	Mode      Mode // kernel or userspace; empty when no device exists
	HelperPID int  // userspace helper, 0 otherwise
	Up        bool
	MTU       int
	// ListenPort and PublicKey are the device's; the private key is never
	// part of Status.
	ListenPort int
	PublicKey  wgtypes.Key
	Peers      []PeerStatus
	Routes     []RouteStatus
	// LastError is the error of the last Set or repair, "" if it succeeded.
	LastError string
}

// PeerStatus is one WireGuard peer as the device sees it.
type PeerStatus struct {
	Name          string // from Desired; empty for a peer not in it
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort // current (possibly roamed) endpoint
	LastHandshake time.Time      // zero if never
	ReceiveBytes  int64
	TransmitBytes int64
	AllowedIPs    []netip.Prefix
}

// RouteStatus is one desired kernel route.
type RouteStatus struct {
	Prefix    netip.Prefix
	Peer      string     // the peer of Via (for an IPv4 overlay route, of its first gateway); empty for a direct route
	Via       netip.Addr // the chosen gateway (IPv6), the first gateway in address order (IPv4 overlay route) or the first router of a direct route; invalid for a peer's own prefix
	Installed bool       // present in the kernel as opencen installs it
}

// Status reads the device and the kernel now.
func (d *Dataplane) Status() (Status, error) {
	d.mu.Lock()
	want, have, lastErr := d.desired, d.have, d.lastErr
	d.mu.Unlock()
	st := Status{Device: d.name}
	if lastErr != nil {
		st.LastError = lastErr.Error()
	}
	link, err := d.nl.LinkByName(d.name)
	if linkMissing(err) {
		return st, nil
	} else if err != nil {
		return st, fmt.Errorf("find device: %w", err)
	}
	st.Up = link.Attrs().Flags&net.FlagUp != 0
	st.MTU = link.Attrs().MTU
	st.Mode = ModeUserspace
	if link.Type() == "wireguard" {
		st.Mode = ModeKernel
	} else {
		st.HelperPID = d.host.findHelper(d.name)
	}
	var p plan
	if have {
		p, _ = resolve(want)
	}
	names := map[wgtypes.Key]string{}
	for _, pp := range p.peers {
		names[pp.PublicKey] = pp.Name
	}
	var errs []error
	if dev, err := d.wg.Device(d.name); err != nil {
		errs = append(errs, fmt.Errorf("read wireguard device: %w", err))
	} else {
		st.ListenPort, st.PublicKey = dev.ListenPort, dev.PublicKey
		for _, peer := range dev.Peers {
			st.Peers = append(st.Peers, PeerStatus{
				Name: names[peer.PublicKey], PublicKey: peer.PublicKey, Endpoint: udpAddrPort(peer.Endpoint),
				LastHandshake: peer.LastHandshakeTime, ReceiveBytes: peer.ReceiveBytes, TransmitBytes: peer.TransmitBytes,
				AllowedIPs: ipNetsToPrefixes(peer.AllowedIPs),
			})
		}
	}
	rs, err := d.ownedRoutes()
	if err != nil {
		errs = append(errs, err)
	}
	installed := map[netip.Prefix]*netlink.Route{}
	for i := range rs {
		installed[routeKey(&rs[i])] = &rs[i]
	}
	ovl := 0
	if olink, err := d.nl.LinkByName(d.ovlName); err == nil {
		ovl = olink.Attrs().Index
	}
	wantRs := wantRoutes(p, link.Attrs().Index, ovl, d.opts.Table, want.Addresses)
	for i, r := range p.routes {
		h, ok := installed[r.prefix]
		st.Routes = append(st.Routes, RouteStatus{Prefix: r.prefix, Peer: r.peer, Via: r.via, Installed: ok && sameRoute(h, &wantRs[i])})
	}
	return st, errors.Join(errs...)
}
