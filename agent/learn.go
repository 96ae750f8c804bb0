package agent

import (
	"net/netip"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
)

// onRoutes receives the routing layer's coalesced batches.
func (a *Agent) onRoutes(b routing.RouteBatch) {
	// The speaker's in-memory session states, not a GoBGP query: GoBGP
	// applies a dead peer's withdrawals, then its state change, and then
	// this batch is built, so a route whose every gateway went down is seen
	// as such here and held.
	established := establishedGateways(a.rt.Sessions())
	now := time.Now()
	a.mu.Lock()
	l := &a.learn
	gone := map[netip.Prefix]config.LearnedRoute{}
	if b.Full {
		for p, r := range l.routes {
			gone[p] = r
		}
		l.routes, l.handoffs = desired.Routes{}, desired.Routes{}
	}
	for _, p := range b.Withdraw {
		if r, ok := l.routes[p]; ok {
			gone[p] = r
		}
		delete(l.routes, p)
		delete(l.handoffs, p)
	}
	onlyNew := l.onlyNewPrefixes(b)
	for _, lr := range b.Upsert {
		r := lr
		if r.Handoff {
			l.handoffs[r.Prefix] = r
			delete(l.routes, r.Prefix)
			continue
		}
		delete(l.handoffs, r.Prefix)
		l.routes[r.Prefix] = r
		delete(gone, r.Prefix)
		delete(l.held, r.Prefix)
	}
	for p, r := range gone {
		if holdable(r, established) {
			l.held[p] = heldRoute{route: r, until: now.Add(holdTime)}
		}
	}
	if b.Synced && !l.synced {
		l.synced = true
		a.log.Info("bgp synced: sweeping the routes the last agent saved", "kept", len(l.stale))
		l.stale, l.staleHandoffs = nil, nil
	}
	a.mu.Unlock()
	if onlyNew {
		a.growReconcile()
	} else {
		a.kickReconcile()
	}
}

// onlyNewPrefixes reports whether b only adds prefixes the agent does not
// have (learned, held or saved by the last agent): its reconcile may be
// paced. A withdrawal or a changed route (a gateway gone from its next
// hops) is a failover and never waits. Agent.mu is held.
func (l *learnedState) onlyNewPrefixes(b routing.RouteBatch) bool {
	if b.Full || len(b.Withdraw) > 0 || (b.Synced && !l.synced) {
		return false
	}
	for _, r := range b.Upsert {
		_, learned := l.routes[r.Prefix]
		_, held := l.held[r.Prefix]
		_, kept := l.stale[r.Prefix]
		if learned || held || (kept && !l.synced) {
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

// routesNow are the routes to install: the learned ones, with, after a
// restart or a failover, those kept or held. Otherwise the learned routes
// are used as they are (a copy of 100,000 routes per reconcile costs more
// than building the desired state from them). a.mu is held.
func (a *Agent) routesNow(now time.Time) desired.Routes {
	l := &a.learn
	l.expireHeld(now)
	if (l.synced || len(l.stale) == 0) && len(l.held) == 0 {
		return l.routes
	}
	routes := make(desired.Routes, len(l.routes)+len(l.stale))
	if !l.synced {
		for p, r := range l.stale {
			routes[p] = r
		}
	}
	for p, r := range l.routes {
		if kept, ok := routes[p]; ok && !l.synced {
			// A route relearned from some of its gateways, ahead of the
			// others' sessions: keep those too until BGP has synced, so
			// their prefixes keep their homes.
			r = withHopsOf(r, kept)
		}
		routes[p] = r
	}
	l.addHeld(routes, now)
	return routes
}

// lanAddrs are the twins' LAN addresses by their tunnel address; after a
// restart, with those kept until BGP has them again, so the handoffs in
// place stay. a.mu is held.
func (a *Agent) lanAddrs() map[netip.Addr][]netip.Addr {
	if a.learn.synced {
		return desired.LANAddresses(a.learn.handoffs)
	}
	return desired.LANAddresses(a.learn.handoffs, a.learn.staleHandoffs)
}
