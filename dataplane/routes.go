package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkOps is the rtnetlink surface the dataplane uses, by concern;
// *netlink.Handle implements it (opened with netlink.NewHandleAt for the
// target namespace), the tests' fakeKernel too.
type netlinkOps interface {
	linkOps
	addrOps
	routeOps
	ruleOps
}

// linkOps finds, creates and configures links.
type linkOps interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetGroup(link netlink.Link, group int) error
}

// addrOps lists and changes addresses.
type addrOps interface {
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

// routeOps reads routes (routeWriter writes them).
type routeOps interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteGet(destination net.IP) ([]netlink.Route, error)
}

// ruleOps lists and changes policy rules.
type ruleOps interface {
	RuleList(family int) ([]netlink.Rule, error)
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
}

// routeWriter writes routes many to a netlink message (routeSocket in
// production, the fakes in tests: both take this one path). Several are
// used in parallel for large route sets, each its own netlink socket.
type routeWriter interface {
	// writeRoutes replaces (or with del deletes) routes, calling fail for
	// each one the kernel refused.
	writeRoutes(del bool, routes []netlink.Route, fail func(i int, err error))
}

// dumpRetries bounds retries of a dump the kernel interrupted because the
// table changed underneath it.
const dumpRetries = 5

func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpRetries {
		var out []T
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, fmt.Errorf("dump still interrupted after %d tries: %w", dumpRetries, err)
}

// gone reports errors that mean "already not there", which a delete counts
// as success.
func gone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENODEV)
}

// routeSpec is one table's wanted routes, described cheaply and built on
// demand: a Set usually changes few of up to 100,000 routes, so the route
// cache compares fingerprints and only the routes written are built.
type routeSpec struct {
	n   int
	key func(i int) netip.Prefix
	// fp hashes everything sameRoute compares of route i.
	fp    func(i int) uint64
	build func(i int, arena *ipArena) netlink.Route
}

// all builds every route.
func (s routeSpec) all() []netlink.Route {
	out := make([]netlink.Route, 0, s.n) // a route is large: no regrowth
	arena := newIPArena(s.n)
	for i := range s.n {
		out = append(out, s.build(i, arena))
	}
	return out
}

// routes builds the routes at idx.
func (s routeSpec) routes(idx []int) []netlink.Route {
	out := make([]netlink.Route, 0, len(idx))
	arena := newIPArena(len(idx))
	for _, i := range idx {
		out = append(out, s.build(i, arena))
	}
	return out
}

// routeHash builds a route fingerprint: 64 bits mixed word by word
// (splitmix64's finaliser), on the stack. A collision would leave one
// changed route unwritten until the next resync; at 64 bits over 100,000
// routes it does not happen.
type routeHash uint64

func newRouteHash(kind byte) routeHash {
	var h routeHash
	h.word(uint64(kind))
	return h
}

func (h *routeHash) word(v uint64) {
	x := uint64(*h) ^ v
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	*h = routeHash(x ^ x>>31)
}

func (h *routeHash) addr(a netip.Addr) {
	b := a.As16()
	h.word(binary.BigEndian.Uint64(b[:8]))
	h.word(binary.BigEndian.Uint64(b[8:]))
}

func (h *routeHash) int(v int) { h.word(uint64(v)) }

func (h routeHash) Sum64() uint64 { return uint64(h) }

// mainSpec is the main table's routes of a plan: the peers' tunnel
// addresses and the CEN routes on the WireGuard device (link index idx),
// sourced from the gateway's tunnel address of their family, and the
// direct routes via their routers; each with our protocol and metric.
func mainSpec(p plan, idx, table int) routeSpec {
	src := func(a netip.Addr) net.IP {
		if a.IsValid() {
			return a.AsSlice()
		}
		return nil
	}
	src4, src6 := src(p.own4), src(p.own6)
	return routeSpec{
		n:   len(p.routes),
		key: func(i int) netip.Prefix { return p.routes[i].prefix },
		fp: func(i int) uint64 {
			r := &p.routes[i]
			if len(r.direct) > 0 {
				h := newRouteHash('d')
				for _, v := range r.direct {
					h.addr(v)
				}
				return h.Sum64()
			}
			h := newRouteHash('w')
			h.int(idx)
			if r.prefix.Addr().Is4() {
				h.addr(p.own4)
			} else {
				h.addr(p.own6)
			}
			return h.Sum64()
		},
		build: func(i int, arena *ipArena) netlink.Route {
			r := &p.routes[i]
			dst := arena.ipnet(r.prefix)
			if len(r.direct) > 0 {
				return directRoute(dst, r.direct, table, arena)
			}
			rt := netlink.Route{LinkIndex: idx, Dst: dst, Protocol: RouteProtocol, Table: table, Type: unix.RTN_UNICAST,
				Priority: routeMetric(r.prefix)}
			if r.prefix.Addr().Is4() {
				rt.Family, rt.Scope, rt.Src = netlink.FAMILY_V4, netlink.SCOPE_LINK, src4
			} else {
				rt.Family, rt.Scope, rt.Src = netlink.FAMILY_V6, netlink.SCOPE_UNIVERSE, src6
			}
			return rt
		},
	}
}

// directRoute is a route via routers on a connected network; the kernel
// picks the interface for each.
func directRoute(dst *net.IPNet, via []netip.Addr, table int, arena *ipArena) netlink.Route {
	rt := netlink.Route{Dst: dst, Protocol: RouteProtocol, Table: table, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_UNIVERSE,
		Family: netlink.FAMILY_V4, Priority: RouteMetric4}
	if via[0].Is6() {
		rt.Family, rt.Priority = netlink.FAMILY_V6, RouteMetric6
	}
	if len(via) == 1 {
		rt.Gw = arena.ip(via[0])
		return rt
	}
	for _, v := range via {
		rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{Gw: arena.ip(v)})
	}
	return rt
}

// routeKey identifies a route for diffing: its destination (the table and
// protocol are fixed by the listing filter).
func routeKey(r *netlink.Route) netip.Prefix {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	p, _ := ipNetToPrefix(*r.Dst)
	return p
}

// sameRoute compares the attributes opencen sets: source, scope, type and
// the nexthops (gateway, device, onlink). A wanted nexthop without a
// device (a direct route's router) matches whatever device the kernel
// resolved.
func sameRoute(have, want *netlink.Route) bool {
	if !have.Src.Equal(want.Src) || have.Scope != want.Scope || (have.Type != want.Type && have.Type != 0) {
		return false
	}
	h, w := nexthops(have), nexthops(want)
	if len(h) != len(w) {
		return false
	}
	for i := range w {
		if h[i].gw != w[i].gw || h[i].onlink != w[i].onlink || (w[i].link != 0 && h[i].link != w[i].link) {
			return false
		}
	}
	return true
}

type nexthop struct {
	gw     netip.Addr
	link   int
	onlink bool
}

// nexthops lists a route's nexthops sorted by gateway, then device.
func nexthops(r *netlink.Route) []nexthop {
	const onlink = int(netlink.FLAG_ONLINK)
	if len(r.MultiPath) == 0 {
		return []nexthop{{ipAddr(r.Gw), r.LinkIndex, r.Flags&onlink != 0}}
	}
	out := make([]nexthop, 0, len(r.MultiPath))
	for _, nh := range r.MultiPath {
		out = append(out, nexthop{ipAddr(nh.Gw), nh.LinkIndex, nh.Flags&onlink != 0})
	}
	slices.SortFunc(out, func(a, b nexthop) int {
		if c := a.gw.Compare(b.gw); c != 0 {
			return c
		}
		return a.link - b.link
	})
	return out
}

// diffRoutes returns which of want to write (new or changed), by index,
// and what to delete (ours, in the table, and not wanted as it is: a
// route for a wanted prefix with another metric goes too).
func diffRoutes(have, want []netlink.Route) (add []int, del []netlink.Route) {
	type key struct {
		p      netip.Prefix
		metric int
	}
	cur := make(map[key]*netlink.Route, len(have))
	for i := range have {
		cur[key{routeKey(&have[i]), have[i].Priority}] = &have[i]
	}
	keep := make(map[key]bool, len(want))
	if len(have) == 0 {
		add = make([]int, 0, len(want))
	}
	for i := range want {
		k := key{routeKey(&want[i]), want[i].Priority}
		keep[k] = true
		if h, ok := cur[k]; !ok || !sameRoute(h, &want[i]) {
			add = append(add, i)
		}
	}
	for i := range have {
		if !keep[key{routeKey(&have[i]), have[i].Priority}] {
			del = append(del, have[i])
		}
	}
	return add, del
}

// parallelThreshold is the route count above which writes are spread over
// several netlink sockets.
const parallelThreshold = 512

// applyRoutes writes adds first, then deletes (so
// traffic never falls through a gap), keeps going past failures and
// returns them joined. Deleting an absent route is success.
func applyRoutes(writers []routeWriter, add, del []netlink.Route) error {
	return errors.Join(forEachRoute(writers, add, false), forEachRoute(writers, del, true))
}

// maxReportedErrors caps the errors kept from one batch so a failure on
// 100,000 routes does not build a 100,000-line error.
const maxReportedErrors = 20

// forEachRoute replaces (or with del deletes) routes, spread over the
// writers when there are many.
func forEachRoute(writers []routeWriter, routes []netlink.Route, del bool) error {
	n := len(writers)
	if len(routes) < parallelThreshold || n > len(routes) {
		n = 1
	}
	var (
		mu      sync.Mutex
		errs    []error
		dropped int
		wg      sync.WaitGroup
	)
	report := func(r *netlink.Route, err error) {
		if del && gone(err) {
			return
		}
		what := "install"
		if del {
			what = "delete"
		}
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < maxReportedErrors {
			errs = append(errs, fmt.Errorf("%s route %s: %w", what, routeKey(r), err))
		} else {
			dropped++
		}
	}
	chunk := (len(routes) + n - 1) / n
	for w := range n {
		lo, hi := w*chunk, min((w+1)*chunk, len(routes))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(wr routeWriter, part []netlink.Route) {
			defer wg.Done()
			wr.writeRoutes(del, part, func(i int, err error) { report(&part[i], err) })
		}(writers[w], routes[lo:hi])
	}
	wg.Wait()
	if dropped > 0 {
		errs = append(errs, fmt.Errorf("and %d more route errors", dropped))
	}
	return errors.Join(errs...)
}

// syncAddrs puts the wanted addresses on link (first) and removes the
// others, except IPv6 link-local ones the kernel manages.
func syncAddrs(nl netlinkOps, link netlink.Link, want []netip.Prefix) error {
	have, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	cur := map[netip.Prefix]bool{}
	for _, a := range have {
		if a.IPNet == nil {
			continue
		}
		p, ok := ipNetToPrefix(*a.IPNet)
		if !ok {
			continue
		}
		cur[netip.PrefixFrom(ipAddr(a.IP), p.Bits())] = true
	}
	var errs []error
	wanted := map[netip.Prefix]bool{}
	for _, w := range want {
		wanted[w] = true
		if cur[w] {
			continue
		}
		n := prefixToIPNetHost(w)
		a := &netlink.Addr{IPNet: &n}
		if w.Addr().Is6() {
			// No duplicate address detection on a point-to-point tunnel:
			// a tentative address could not be the routes' source yet.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(link, a); err != nil && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("add address %s: %w", w, err))
		}
	}
	for p := range cur {
		if wanted[p] || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		n := prefixToIPNetHost(p)
		if err := nl.AddrDel(link, &netlink.Addr{IPNet: &n}); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete address %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func ipAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// prefixToIPNetHost keeps the host bits (an interface address).
func prefixToIPNetHost(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ipArena hands out the IPs and *net.IPNet of many routes from a few large
// allocations: building the 100,000 routes of a Set cost three or four
// small allocations each, and the garbage collector's time with them,
// while BGP and BFD wait for the CPU. Nothing handed out is ever moved
// (a full chunk is replaced, not grown).
type ipArena struct {
	nets  []net.IPNet
	bytes []byte
}

func newIPArena(n int) *ipArena {
	return &ipArena{nets: make([]net.IPNet, 0, n), bytes: make([]byte, 0, 12*n)}
}

func (a *ipArena) take(n int) []byte {
	if cap(a.bytes)-len(a.bytes) < n {
		a.bytes = make([]byte, 0, max(64<<10, n))
	}
	start := len(a.bytes)
	a.bytes = a.bytes[:start+n]
	return a.bytes[start : start+n : start+n]
}

// ip is addr as a net.IP (4 or 16 bytes).
func (a *ipArena) ip(addr netip.Addr) net.IP {
	if addr.Is4() {
		b := addr.As4()
		ip := a.take(4)
		copy(ip, b[:])
		return ip
	}
	b := addr.As16()
	ip := a.take(16)
	copy(ip, b[:])
	return ip
}

// ipnet is p as a *net.IPNet.
func (a *ipArena) ipnet(p netip.Prefix) *net.IPNet {
	ip := a.ip(p.Addr())
	mask := net.IPMask(a.take(len(ip)))
	for i, bits := 0, p.Bits(); i < len(mask); i, bits = i+1, bits-8 {
		switch {
		case bits >= 8:
			mask[i] = 0xff
		case bits > 0:
			mask[i] = ^byte(0xff >> bits)
		default:
			mask[i] = 0
		}
	}
	if len(a.nets) == cap(a.nets) {
		a.nets = make([]net.IPNet, 0, 4096)
	}
	a.nets = append(a.nets, net.IPNet{IP: ip, Mask: mask})
	return &a.nets[len(a.nets)-1]
}
