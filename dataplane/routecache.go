package dataplane

import (
	"hash/maphash"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// routeCache remembers, for one routing table, which wanted routes the
// kernel holds, so that a Set diffs against memory instead of dumping
// the table: with 100,000 learned routes, a dump per BGP batch cost more
// than the writes. The kernel stays the truth: anything that may mean
// drift (one of our routes or rules deleted, by hand or by the kernel, a
// link or address change, a missed notification, the periodic resync)
// bumps Dataplane.drift, and the next reconcile dumps the table again.
//
// It holds a fingerprint of each route as it was wanted, not the route:
// a dumped route differs in form from the wanted one (a direct route's
// device resolved, a type filled in) even when sameRoute says they match.
type routeCache struct {
	valid bool
	gen   uint64 // Dataplane.drift when the cache was last known right
	fp    map[netip.Prefix]uint64
}

var fingerprintSeed = maphash.MakeSeed()

// fingerprint hashes what sameRoute compares.
func fingerprint(r *netlink.Route) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	// Only wanted routes are hashed, all built alike: raw bytes will do.
	h.Write(r.Src)
	h.WriteByte(0xfe)
	h.WriteByte(byte(r.Scope))
	h.WriteByte(byte(r.Type))
	nexthop := func(gw net.IP, link int, onlink bool) {
		h.Write(gw)
		h.WriteByte(byte(link))
		h.WriteByte(byte(link >> 8))
		h.WriteByte(byte(link >> 16))
		if onlink {
			h.WriteByte(1)
		}
		h.WriteByte(0xff)
	}
	const onlink = int(netlink.FLAG_ONLINK)
	if len(r.MultiPath) == 0 {
		nexthop(r.Gw, r.LinkIndex, r.Flags&onlink != 0)
		return h.Sum64()
	}
	for _, nh := range nexthops(r) { // sorted
		nexthop(nh.gw.AsSlice(), nh.link, nh.onlink)
	}
	return h.Sum64()
}

// diff returns what to write and delete for want. It dumps the table
// only when the cache is not known right; gen is the drift generation the
// result is valid for, to pass to applied.
func (c *routeCache) diff(drift uint64, table int, want []netlink.Route, dump func() ([]netlink.Route, error)) (add, del []netlink.Route, gen uint64, err error) {
	if c.valid && c.gen == drift {
		// want has unique prefixes: when every cached one is among them,
		// nothing is to be deleted and no set of want is needed.
		found := 0
		for i := range want {
			fp, ok := c.fp[routeKey(&want[i])]
			if ok {
				found++
			}
			if !ok || fp != fingerprint(&want[i]) {
				add = append(add, want[i])
			}
		}
		if found < len(c.fp) {
			keep := make(map[netip.Prefix]bool, len(want))
			for i := range want {
				keep[routeKey(&want[i])] = true
			}
			for k := range c.fp {
				if !keep[k] {
					del = append(del, ownedRoute(k, table))
				}
			}
		}
		return add, del, drift, nil
	}
	have, err := dump()
	if err != nil {
		return nil, nil, 0, err
	}
	add, del = diffRoutes(have, want)
	return add, del, drift, nil
}

// ownedRoute is enough of one of our routes to delete it.
func ownedRoute(p netip.Prefix, table int) netlink.Route {
	dst := prefixToIPNet(p)
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	return netlink.Route{Dst: &net.IPNet{IP: dst.IP, Mask: dst.Mask}, Table: table, Protocol: RouteProtocol, Family: fam}
}

// applied records the outcome of writing add and deleting del. After a
// failure nothing is assumed: the next diff dumps.
func (c *routeCache) applied(gen uint64, want, add, del []netlink.Route, err error) {
	if err != nil {
		c.invalidate()
		return
	}
	if !c.valid || c.gen != gen {
		// Filled from a dump: the kernel now matches want.
		c.fp = make(map[netip.Prefix]uint64, len(want))
		for i := range want {
			c.fp[routeKey(&want[i])] = fingerprint(&want[i])
		}
		c.valid, c.gen = true, gen
		return
	}
	for i := range add {
		c.fp[routeKey(&add[i])] = fingerprint(&add[i])
	}
	for i := range del {
		delete(c.fp, routeKey(&del[i]))
	}
}

func (c *routeCache) invalidate() {
	c.valid, c.fp = false, nil
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
