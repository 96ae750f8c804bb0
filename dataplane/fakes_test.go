package dataplane

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeKernel is a stateful stand-in for rtnetlink, WireGuard, nftables
// and the host in one namespace: links, addresses, routes in every table,
// policy rules, devices, helpers, sockets, sysctls and guard tables. It
// answers as the kernel does where the dataplane relies on it (a route
// keyed by table, prefix and metric; a router resolved to the link of its
// connected subnet; routes flushed with their link) and counts every write
// so tests can assert that nothing is written.
type fakeKernel struct {
	mu        sync.Mutex
	kernelWG  bool // LinkAdd of a wireguard link succeeds
	nextIndex int
	nextPID   int
	links     map[string]netlink.Link
	addrs     map[int][]netip.Prefix // link index -> addresses, host bits kept
	routes    map[routeID]netlink.Route
	rules     []netlink.Rule
	devices   map[string]*wgtypes.Device
	sockets   map[string]sockState
	helpers   map[string]int
	sysctls   map[string]string
	guards    map[string]fakeGuard // nftables table -> its guard

	failRoute      map[netip.Prefix]error // installing these fails
	failGuard      error                  // ensureGuard fails with it
	dumpInterrupts int                    // next route dumps to interrupt
	ruleInterrupts int                    // next rule dumps to interrupt
	routeDumps     int                    // route dumps served

	writes     int      // any state change
	ops        []string // route and rule writes in order
	configured []wgtypes.Config
	started    int
}

// routeID is what the kernel tells routes of one table apart by (the
// type of service aside).
type routeID struct {
	table  int
	dst    netip.Prefix
	metric int
}

// fakeGuard is one guard table: the device it exempts and the gateway
// addresses it drops from elsewhere (as splitFamilies orders them).
type fakeGuard struct {
	dev   string
	addrs []netip.Addr
	spec  guardSpec
}

// The fake's fixed links: lo, and the underlay eth0 (192.0.2.1/24, the
// peers' endpoints, default route via 192.0.2.254).
const (
	fakeLo      = 1
	fakeEth0    = 2
	fakeMainTab = unix.RT_TABLE_MAIN
)

func newFakeKernel() *fakeKernel {
	k := &fakeKernel{
		nextIndex: 10, nextPID: 1000,
		links: map[string]netlink.Link{}, addrs: map[int][]netip.Prefix{}, routes: map[routeID]netlink.Route{},
		devices: map[string]*wgtypes.Device{}, sockets: map[string]sockState{}, helpers: map[string]int{},
		sysctls: map[string]string{}, guards: map[string]fakeGuard{}, failRoute: map[netip.Prefix]error{},
	}
	k.links["lo"] = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: fakeLo, MTU: 65536, Flags: net.FlagUp | net.FlagLoopback}}
	k.links["eth0"] = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: fakeEth0, MTU: 1500, Flags: net.FlagUp}}
	k.addrs[fakeLo] = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}
	k.addrs[fakeEth0] = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}
	def := netlink.Route{Dst: ipnetOf("0.0.0.0/0"), Gw: net.ParseIP("192.0.2.254").To4(), LinkIndex: fakeEth0,
		Table: fakeMainTab, Protocol: unix.RTPROT_BOOT, Family: netlink.FAMILY_V4}
	k.routes[routeID{fakeMainTab, netip.MustParsePrefix("0.0.0.0/0"), 0}] = def
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, r := range [][2]int{{0, unix.RT_TABLE_LOCAL}, {32766, unix.RT_TABLE_MAIN}, {32767, unix.RT_TABLE_DEFAULT}} {
			if fam == netlink.FAMILY_V6 && r[1] == unix.RT_TABLE_DEFAULT {
				continue
			}
			rule := netlink.NewRule()
			rule.Family, rule.Priority, rule.Table, rule.Protocol = fam, r[0], r[1], unix.RTPROT_KERNEL
			k.rules = append(k.rules, *rule)
		}
	}
	return k
}

// newFakeDataplane builds a Dataplane on k without watchers.
func newFakeDataplane(k *fakeKernel, device string) *Dataplane {
	opts := Options{Device: device, ResyncInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	if err := opts.defaults(); err != nil {
		panic(err)
	}
	d := newDataplane(opts)
	d.nl, d.wg, d.host, d.guard = k, k, k, k
	d.writers = []routeWriter{k, k, k}
	return d
}

// addLink adds an up veth with addresses, as a LAN or VBR link.
func (k *fakeKernel) addLink(name string, addrs ...string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.addLinkLocked(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1500, Flags: net.FlagUp}})
	idx := k.links[name].Attrs().Index
	for _, a := range addrs {
		k.addrs[idx] = append(k.addrs[idx], netip.MustParsePrefix(a))
	}
	return idx
}

func ipnetOf(s string) *net.IPNet { n := prefixToIPNet(netip.MustParsePrefix(s)); return &n }

// --- netlinkOps: links ---

func (k *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.links[name]
	if !ok {
		return nil, errNoLink
	}
	return l, nil
}

func (k *fakeKernel) LinkByIndex(idx int) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l := k.linkLocked(idx); l != nil {
		return l, nil
	}
	return nil, errNoLink
}

func (k *fakeKernel) linkLocked(idx int) netlink.Link {
	for _, l := range k.links {
		if l.Attrs().Index == idx {
			return l
		}
	}
	return nil
}

func (k *fakeKernel) addLinkLocked(l netlink.Link) {
	k.nextIndex++
	l.Attrs().Index = k.nextIndex
	k.links[l.Attrs().Name] = l
	k.writes++
}

func (k *fakeKernel) LinkAdd(l netlink.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := l.(*netlink.Wireguard); ok && !k.kernelWG {
		return syscall.EOPNOTSUPP
	}
	if _, ok := k.links[l.Attrs().Name]; ok {
		return syscall.EEXIST
	}
	k.addLinkLocked(l)
	if _, ok := l.(*netlink.Wireguard); ok {
		k.devices[l.Attrs().Name] = &wgtypes.Device{Name: l.Attrs().Name, Type: wgtypes.LinuxKernel}
	}
	return nil
}

func (k *fakeKernel) delLinkLocked(name string) {
	l, ok := k.links[name]
	if !ok {
		return
	}
	idx := l.Attrs().Index
	delete(k.links, name)
	delete(k.addrs, idx)
	delete(k.devices, name)
	k.flushRoutesLocked(idx)
	k.writes++
}

// flushRoutesLocked drops the routes through link idx in every table, as
// the kernel does when a link goes down or away.
func (k *fakeKernel) flushRoutesLocked(idx int) {
	for id, r := range k.routes {
		on := r.LinkIndex == idx
		for _, nh := range r.MultiPath {
			on = on || nh.LinkIndex == idx
		}
		if on {
			delete(k.routes, id)
		}
	}
}

func (k *fakeKernel) LinkDel(l netlink.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.links[l.Attrs().Name]; !ok {
		return syscall.ENODEV
	}
	k.delLinkLocked(l.Attrs().Name)
	return nil
}

// setLink applies fn to link l's attributes as one write.
func (k *fakeKernel) setLink(l netlink.Link, fn func(*netlink.LinkAttrs)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.links[l.Attrs().Name]
	if !ok {
		return syscall.ENODEV
	}
	fn(cur.Attrs())
	k.writes++
	return nil
}

func (k *fakeKernel) LinkSetUp(l netlink.Link) error {
	return k.setLink(l, func(a *netlink.LinkAttrs) { a.Flags |= net.FlagUp })
}

func (k *fakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	return k.setLink(l, func(a *netlink.LinkAttrs) { a.MTU = mtu })
}

func (k *fakeKernel) LinkSetGroup(l netlink.Link, group int) error {
	return k.setLink(l, func(a *netlink.LinkAttrs) { a.Group = uint32(group) })
}

// setDown is "ip link set down": the kernel flushes the link's routes.
func (k *fakeKernel) setDown(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.links[name]
	l.Attrs().Flags &^= net.FlagUp
	k.flushRoutesLocked(l.Attrs().Index)
}

// --- netlinkOps: addresses ---

// AddrList lists link's addresses, or every link's for a nil link.
func (k *fakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Addr
	for idx, ps := range k.addrs {
		if l != nil && l.Attrs().Index != idx {
			continue
		}
		for _, p := range ps {
			if family == netlink.FAMILY_ALL || family == familyOf(p.Addr()) {
				n := prefixToIPNetHost(p)
				out = append(out, netlink.Addr{IPNet: &n, LinkIndex: idx})
			}
		}
	}
	return out, nil
}

func addrOf(a *netlink.Addr) netip.Prefix {
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ipAddr(a.IP), ones)
}

func (k *fakeKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, idx := addrOf(a), l.Attrs().Index
	if slices.Contains(k.addrs[idx], p) {
		return syscall.EEXIST
	}
	k.addrs[idx] = append(k.addrs[idx], p)
	k.writes++
	return nil
}

func (k *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, idx := addrOf(a), l.Attrs().Index
	i := slices.Index(k.addrs[idx], p)
	if i < 0 {
		return syscall.EADDRNOTAVAIL
	}
	k.addrs[idx] = slices.Delete(k.addrs[idx], i, i+1)
	k.writes++
	return nil
}

// --- netlinkOps: routes ---

func (k *fakeKernel) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dumpInterrupts > 0 {
		k.dumpInterrupts--
		return nil, netlink.ErrDumpInterrupted
	}
	k.routeDumps++
	var out []netlink.Route
	for _, r := range k.routes {
		switch {
		case family != netlink.FAMILY_ALL && r.Family != family:
		case mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != unix.RT_TABLE_UNSPEC && r.Table != filter.Table:
		case mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
		default:
			out = append(out, r)
		}
	}
	return out, nil
}

// RouteGet answers as `ip route get`: a local address, else the longest
// match among the connected subnets of the links that are up and the main
// table's routes (the lowest metric of a prefix).
func (k *fakeKernel) RouteGet(dst net.IP) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := ipAddr(dst)
	best, bits := netlink.Route{}, -1
	for idx, ps := range k.addrs {
		for _, p := range ps {
			switch {
			case p.Addr() == a:
				return []netlink.Route{{LinkIndex: fakeLo, Dst: ipnetOf(netip.PrefixFrom(a, a.BitLen()).String()), Type: unix.RTN_LOCAL}}, nil
			case k.upLocked(idx) && p.Bits() < a.BitLen() && p.Contains(a) && p.Bits() > bits:
				best, bits = netlink.Route{LinkIndex: idx, Type: unix.RTN_UNICAST}, p.Bits()
			}
		}
	}
	for id, r := range k.routes {
		if id.table != fakeMainTab || !id.dst.Contains(a) || id.dst.Bits() < bits {
			continue
		}
		if id.dst.Bits() > bits || r.Priority < best.Priority {
			best, bits = r, id.dst.Bits()
		}
	}
	if bits < 0 {
		return nil, syscall.ENETUNREACH
	}
	best.Dst = ipnetOf(netip.PrefixFrom(a, a.BitLen()).String())
	return []netlink.Route{best}, nil
}

func (k *fakeKernel) upLocked(idx int) bool {
	l := k.linkLocked(idx)
	return l != nil && l.Attrs().Flags&net.FlagUp != 0
}

// resolveLocked gives a router without a device the link of its connected
// subnet, as the kernel does; a router on none is unreachable.
func (k *fakeKernel) resolveLocked(gw net.IP) (int, error) {
	a := ipAddr(gw)
	for idx, ps := range k.addrs {
		for _, p := range ps {
			if k.upLocked(idx) && p.Bits() < a.BitLen() && p.Contains(a) {
				return idx, nil
			}
		}
	}
	return 0, syscall.ENETUNREACH
}

// writeRoutes is routeWriter: the path production takes, one route at a
// time.
func (k *fakeKernel) writeRoutes(del bool, routes []netlink.Route, fail func(i int, err error)) {
	for i := range routes {
		var err error
		if del {
			err = k.routeDel(&routes[i])
		} else {
			err = k.routeReplace(&routes[i])
		}
		if err != nil {
			fail(i, err)
		}
	}
}

func tableOf(r *netlink.Route) int {
	if r.Table == 0 {
		return fakeMainTab
	}
	return r.Table
}

func (k *fakeKernel) routeReplace(r *netlink.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := routeKey(r)
	k.ops = append(k.ops, fmt.Sprintf("route add %d %s %d", tableOf(r), key, r.Priority))
	if err := k.failRoute[key]; err != nil {
		return err
	}
	c := *r
	c.Table, c.Dst, c.Src, c.Gw = tableOf(r), ipnetOf(key.String()), slices.Clone(r.Src), slices.Clone(r.Gw)
	c.MultiPath = nil
	var err error
	if c.Gw != nil && c.LinkIndex == 0 {
		c.LinkIndex, err = k.resolveLocked(c.Gw)
	}
	for _, nh := range r.MultiPath {
		n := *nh
		if n.LinkIndex == 0 && err == nil {
			n.LinkIndex, err = k.resolveLocked(n.Gw)
		}
		c.MultiPath = append(c.MultiPath, &n)
	}
	if err != nil {
		return err
	}
	k.routes[routeID{c.Table, key, r.Priority}] = c
	k.writes++
	return nil
}

// routeDel deletes the first match as the kernel does: a metric or a
// protocol of zero matches any, and the lowest metric comes first.
func (k *fakeKernel) routeDel(r *netlink.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := routeKey(r)
	k.ops = append(k.ops, fmt.Sprintf("route del %d %s %d", tableOf(r), key, r.Priority))
	var found *routeID
	for id, have := range k.routes {
		if id.table != tableOf(r) || id.dst != key || (r.Priority != 0 && id.metric != r.Priority) ||
			(r.Protocol != 0 && have.Protocol != r.Protocol) {
			continue
		}
		if found == nil || id.metric < found.metric {
			found = &id
		}
	}
	if found == nil {
		return syscall.ESRCH
	}
	delete(k.routes, *found)
	k.writes++
	return nil
}

// --- netlinkOps: rules ---

func (k *fakeKernel) RuleList(family int) ([]netlink.Rule, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ruleInterrupts > 0 {
		k.ruleInterrupts--
		return nil, netlink.ErrDumpInterrupted
	}
	var out []netlink.Rule
	for _, r := range k.rules {
		if family == netlink.FAMILY_ALL || r.Family == family {
			out = append(out, r)
		}
	}
	return out, nil
}

// sameRule compares what tells two rules apart, as the kernel's rule
// lookup does.
func sameRule(a, b *netlink.Rule) bool {
	return a.Family == b.Family && a.Protocol == b.Protocol && ruleKey(a) == ruleKey(b)
}

func (k *fakeKernel) RuleAdd(r *netlink.Rule) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.rules {
		if sameRule(&k.rules[i], r) {
			return syscall.EEXIST
		}
	}
	k.ops = append(k.ops, "rule add "+fmtRule(r))
	c := *r
	if r.Src != nil {
		c.Src = &net.IPNet{IP: slices.Clone(r.Src.IP), Mask: slices.Clone(r.Src.Mask)}
	}
	k.rules = append(k.rules, c)
	k.writes++
	return nil
}

func (k *fakeKernel) RuleDel(r *netlink.Rule) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.rules {
		if sameRule(&k.rules[i], r) {
			k.ops = append(k.ops, "rule del "+fmtRule(r))
			k.rules = slices.Delete(k.rules, i, i+1)
			k.writes++
			return nil
		}
	}
	return syscall.ENOENT
}
