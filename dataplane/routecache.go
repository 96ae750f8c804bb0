package dataplane

import (
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
// It holds a fingerprint of each route as wanted (routeSpec.fp),
// not the route: a dumped route differs in form from the wanted one (a
// direct route's device resolved, a type filled in) even when sameRoute
// says they match, and building 100,000 routes to compare them cost more
// than hashing what they are built from.
type routeCache struct {
	valid bool
	gen   uint64 // Dataplane.drift when the cache is known right
	fp    map[netip.Prefix]uint64
}

// diff returns which routes of want to write, by index, and what to
// delete. It dumps the table only when the cache is not known right; gen
// is the drift generation the result is valid for, to pass to applied.
func (c *routeCache) diff(drift uint64, table int, want routeSpec, dump func() ([]netlink.Route, error)) (add []int, del []netlink.Route, gen uint64, err error) {
	if c.valid && c.gen == drift {
		// want has unique prefixes: when every cached one is among them,
		// nothing is to be deleted and no set of want is needed.
		found := 0
		for i := range want.n {
			fp, ok := c.fp[want.key(i)]
			if ok {
				found++
			}
			if !ok || fp != want.fp(i) {
				add = append(add, i)
			}
		}
		if found < len(c.fp) {
			keep := make(map[netip.Prefix]bool, want.n)
			for i := range want.n {
				keep[want.key(i)] = true
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
	add, del = diffRoutes(have, want.all())
	return add, del, drift, nil
}

// ownedRoute is enough of one of our routes to delete it.
func ownedRoute(p netip.Prefix, table int) netlink.Route {
	dst := prefixToIPNet(p)
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	// Any scope: the kernel matches a deletion's scope unless it is
	// "nowhere", and a route on the WireGuard device is link-scoped.
	return netlink.Route{Dst: &net.IPNet{IP: dst.IP, Mask: dst.Mask}, Table: table, Protocol: RouteProtocol, Family: fam,
		Scope: netlink.SCOPE_NOWHERE, Priority: routeMetric(p)}
}

// applied records the outcome of writing the routes of want at add and
// deleting del. After a failure nothing is assumed: the next diff dumps.
func (c *routeCache) applied(gen uint64, want routeSpec, add []int, del []netlink.Route, err error) {
	if err != nil {
		c.invalidate()
		return
	}
	if !c.valid || c.gen != gen {
		// Filled from a dump: the kernel now matches want.
		c.fp = make(map[netip.Prefix]uint64, want.n)
		for i := range want.n {
			c.fp[want.key(i)] = want.fp(i)
		}
		c.valid, c.gen = true, gen
		return
	}
	for _, i := range add {
		c.fp[want.key(i)] = want.fp(i)
	}
	for i := range del {
		delete(c.fp, routeKey(&del[i]))
	}
}

func (c *routeCache) invalidate() {
	c.valid, c.fp = false, nil
}
