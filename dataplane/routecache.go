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
