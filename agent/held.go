package agent

import (
	"net/netip"
	"slices"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
)

// holdTime is how long a route stays installed after the BGP session of
// every gateway that carried it went down, when nothing else covers its
// prefix. It matches the routing layer's graceful-restart time.
//
// Why: BFD runs inside the agent, so a peer's agent that restarts looks
// dead to BFD and its routes are withdrawn at once, though its tunnel and
// kernel routes keep forwarding. Where the prefix has another path (a twin
// gateway), traffic moves there; where it has none, the last path is kept:
// if the gateway is really gone, the traffic is lost either way; if it is
// restarting, nothing is lost. A route the peer withdraws itself while its
// session stays up is removed at once, and a less-specific learned route
// always wins over a held one.
const holdTime = 120 * time.Second

type heldRoute struct {
	route config.LearnedRoute
	until time.Time
}

// holdable reports whether a withdrawn route may be held: learned from
// gateways (not straight from a VBR), none of which still has a session.
func holdable(r config.LearnedRoute, established map[netip.Addr]bool) bool {
	if r.Direct || len(r.NextHops) == 0 {
		return false
	}
	for _, nh := range r.NextHops {
		if established[nh] {
			return false
		}
	}
	return true
}

// expireHeld forgets the held routes past their time; Agent.mu is held.
func (l *learnedState) expireHeld(now time.Time) {
	for p, h := range l.held {
		if now.After(h.until) {
			delete(l.held, p)
		}
	}
}

// addHeld adds the held routes to routes, unless a learned route covers
// them; Agent.mu is held.
func (l *learnedState) addHeld(routes desired.Routes, now time.Time) {
	l.expireHeld(now)
	for p, h := range l.held {
		if _, ok := routes[p]; ok || covered(routes, p) {
			continue
		}
		routes[p] = h.route
	}
}

// covered reports whether a less-specific route in routes contains p: at
// most one map look-up per shorter prefix length.
func covered(routes desired.Routes, p netip.Prefix) bool {
	for bits := p.Bits() - 1; bits >= 0; bits-- {
		q, _ := p.Addr().Prefix(bits)
		if _, ok := routes[q]; ok {
			return true
		}
	}
	return false
}

// withHopsOf is r with the next hops and gateways of kept added (a
// gateway route the last agent saved, while BGP resyncs).
func withHopsOf(r, kept config.LearnedRoute) config.LearnedRoute {
	if r.Direct != kept.Direct {
		return r
	}
	union := func(a, b []netip.Addr) []netip.Addr {
		out := slices.Clone(a)
		for _, x := range b {
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	r.NextHops = union(r.NextHops, kept.NextHops)
	r.Gateways = union(r.Gateways, kept.Gateways)
	return r
}
