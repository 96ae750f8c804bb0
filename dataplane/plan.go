package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/opencen/opencen/internal/netipx"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// plan is Desired resolved: the peers with their final AllowedIPs, the
// main table's routes and the handoffs with their tables. It is built
// anew by every Set from scratch memory (see planScratch).
type plan struct {
	peers  []plannedPeer
	routes []plannedRoute
	// own4 and own6 are the sources of the routes on the device: the
	// first tunnel address of each family.
	own4, own6 netip.Addr
	handoffs   []plannedHandoff // sorted by twin
}

type plannedPeer struct {
	Peer
	allowed []netip.Prefix // TunnelAddresses and AllowedIPs, sorted
}

// plannedRoute is one route of the main table.
type plannedRoute struct {
	prefix netip.Prefix
	// peer names the peer whose tunnel address this is; empty for a CEN
	// route or a direct route.
	peer string
	// direct holds the routers of a DirectRoute (sorted); empty for a
	// route on the device.
	direct []netip.Addr
}

// plannedHandoff is one twin's handoff: its table and rules.
type plannedHandoff struct {
	twin    string
	table   int
	via     []netip.Addr
	sources []netip.Prefix // sorted
}

// planScratch keeps a plan's largest parts between reconciles, for the
// next resolve to fill again: the agent calls Set for every batch of
// learned routes, and a planned route and an owner entry per route, built
// anew each time, are among the largest allocations of the routing
// pipeline. The plan resolved with it is valid until the next use.
type planScratch struct {
	routes []plannedRoute
	owner  map[netip.Prefix]string
}

// resolve validates d and computes the plan. Every problem is reported,
// each naming the offending value.
func resolve(d Desired, handoffTableBase int) (plan, error) {
	return resolveWith(d, handoffTableBase, nil)
}

// resolveWith is resolve, filling scratch's memory when it is not nil.
func resolveWith(d Desired, handoffTableBase int, scratch *planScratch) (plan, error) {
	r := resolver{d: &d}
	r.start(scratch)
	if scratch != nil {
		defer func() { scratch.routes, scratch.owner = r.p.routes, r.owner }()
	}
	r.device()
	r.peers()
	r.tunnelRoutes()
	r.directRoutes()
	r.handoffs(handoffTableBase)
	return r.p, errors.Join(r.errs...)
}

// resolver accumulates a plan and the problems found on the way.
type resolver struct {
	d     *Desired
	p     plan
	errs  []error
	owner map[netip.Prefix]string // routed prefix -> what routes it
}

func (r *resolver) bad(format string, a ...any) { r.errs = append(r.errs, fmt.Errorf(format, a...)) }

func (r *resolver) start(scratch *planScratch) {
	n := len(r.d.Routes) + len(r.d.DirectRoutes)
	for _, peer := range r.d.Peers {
		n += len(peer.TunnelAddresses)
	}
	if scratch != nil && scratch.owner != nil {
		r.owner = scratch.owner
		clear(r.owner)
	} else {
		r.owner = make(map[netip.Prefix]string, n)
	}
	if scratch != nil && cap(scratch.routes) >= n {
		clear(scratch.routes[:cap(scratch.routes)]) // drop the old plan's references
		r.p.routes = scratch.routes[:0]
	} else {
		r.p.routes = make([]plannedRoute, 0, n)
	}
}

func (r *resolver) device() {
	d := r.d
	if d.PrivateKey == (wgtypes.Key{}) {
		r.bad("private key: missing")
	}
	if d.ListenPort < 1 || d.ListenPort > 65535 {
		r.bad("listen port %d: must be 1 to 65535", d.ListenPort)
	}
	if d.MTU != 0 && (d.MTU < 1280 || d.MTU > 65535) {
		r.bad("mtu %d: must be 0 (automatic) or 1280 to 65535", d.MTU)
	}
	for _, a := range d.Addresses {
		switch {
		case !a.IsValid():
			r.bad("address: invalid prefix")
		case a.Addr().Is4() && !r.p.own4.IsValid():
			r.p.own4 = a.Addr()
		case a.Addr().Is6() && !r.p.own6.IsValid():
			r.p.own6 = a.Addr()
		}
	}
}

// routable checks a prefix that becomes a kernel route and claims it for
// what; it reports whether the prefix is usable.
func (r *resolver) routable(p netip.Prefix, what string) bool {
	if !p.IsValid() || p != p.Masked() {
		r.bad("%s %s: invalid prefix or host bits set", what, p)
		return false
	}
	if other, ok := r.owner[p]; ok {
		r.bad("%s %s: already routed as %s", what, p, other)
		return false
	}
	r.owner[p] = what
	return true
}

func (r *resolver) peers() {
	keys := map[wgtypes.Key]string{}
	allowedBy := map[netip.Prefix]string{}
	own := r.d.PrivateKey.PublicKey()
	for i, peer := range r.d.Peers {
		name := peer.Name
		if name == "" {
			name = fmt.Sprintf("peers[%d]", i)
			r.bad("peer %s: missing name", name)
		}
		switch other, dup := keys[peer.PublicKey]; {
		case peer.PublicKey == (wgtypes.Key{}):
			r.bad("peer %s: missing public key", name)
		case dup:
			r.bad("peer %s: public key already used by peer %s", name, other)
		case peer.PublicKey == own:
			r.bad("peer %s: public key is this gateway's own", name)
		}
		keys[peer.PublicKey] = name
		if peer.Endpoint.IsValid() && peer.Endpoint.Port() == 0 {
			r.bad("peer %s: endpoint %s: port 0", name, peer.Endpoint)
		}
		pp := plannedPeer{Peer: peer, allowed: make([]netip.Prefix, 0, len(peer.TunnelAddresses)+len(peer.AllowedIPs))}
		for _, a := range peer.TunnelAddresses {
			if !a.IsValid() || !a.IsSingleIP() {
				r.bad("peer %s: tunnel address %s: want a host prefix (/32 or /128)", name, a)
				continue
			}
			pp.allowed = append(pp.allowed, a)
		}
		for _, a := range peer.AllowedIPs {
			if !a.IsValid() || a != a.Masked() {
				r.bad("peer %s: allowed ip %s: invalid or has host bits set", name, a)
				continue
			}
			pp.allowed = append(pp.allowed, a)
		}
		for _, a := range pp.allowed {
			// WireGuard gives one prefix to one peer: the last one
			// configured would take it from the other.
			if other, ok := allowedBy[a]; ok {
				r.bad("peer %s: allowed ip %s: already allowed for peer %s", name, a, other)
			}
			allowedBy[a] = name
		}
		slices.SortFunc(pp.allowed, netipx.ComparePrefix)
		r.p.peers = append(r.p.peers, pp)
	}
}

// tunnelRoutes are the peers' tunnel addresses and Desired.Routes, all on
// the device.
func (r *resolver) tunnelRoutes() {
	for _, peer := range r.p.peers {
		for _, a := range peer.TunnelAddresses {
			if a.IsValid() && a.IsSingleIP() && r.routable(a, "tunnel address of peer "+peer.Name) {
				r.p.routes = append(r.p.routes, plannedRoute{prefix: a, peer: peer.Name})
			}
		}
	}
	for _, p := range r.d.Routes {
		if !r.routable(p, "route") {
			continue
		}
		if (p.Addr().Is4() && !r.p.own4.IsValid()) || (p.Addr().Is6() && !r.p.own6.IsValid()) {
			r.bad("route %s: no tunnel address of its family in addresses", p)
			continue
		}
		r.p.routes = append(r.p.routes, plannedRoute{prefix: p})
	}
}

func (r *resolver) directRoutes() {
	for _, dr := range r.d.DirectRoutes {
		vias := sortedUnique(dr.Via)
		ok := len(vias) > 0
		for _, v := range vias {
			if !v.IsValid() || v.BitLen() != dr.Prefix.Addr().BitLen() {
				ok = false
			}
		}
		if !ok {
			r.bad("direct route %s: via %v: need routers of the prefix's address family", dr.Prefix, dr.Via)
			continue
		}
		if r.routable(dr.Prefix, "direct route via "+vias[0].String()) {
			r.p.routes = append(r.p.routes, plannedRoute{prefix: dr.Prefix, direct: vias})
		}
	}
}

func (r *resolver) handoffs(tableBase int) {
	names := map[string]bool{}
	for _, peer := range r.p.peers {
		names[peer.Name] = true
	}
	sourceOf := map[netip.Prefix]string{}
	for _, h := range r.d.Handoffs {
		if !names[h.Twin] {
			r.bad("handoff to %q: no such peer", h.Twin)
			continue
		}
		ph := plannedHandoff{twin: h.Twin, via: sortedUnique(h.Via), sources: slices.Clone(h.Sources)}
		for _, v := range ph.via {
			if !v.IsValid() || v.IsUnspecified() {
				r.bad("handoff to %s: via %s: not an address", h.Twin, v)
			}
		}
		if len(ph.via) == 0 && len(ph.sources) > 0 {
			r.bad("handoff to %s: no address to hand off to", h.Twin)
		}
		for _, s := range ph.sources {
			if !s.IsValid() || s != s.Masked() {
				r.bad("handoff to %s: source %s: invalid prefix or host bits set", h.Twin, s)
				continue
			}
			if other, ok := sourceOf[s]; ok {
				r.bad("handoff to %s: source %s: already handed off to %s", h.Twin, s, other)
			}
			sourceOf[s] = h.Twin
		}
		slices.SortFunc(ph.sources, netipx.ComparePrefix)
		r.p.handoffs = append(r.p.handoffs, ph)
	}
	slices.SortFunc(r.p.handoffs, func(a, b plannedHandoff) int { return strings.Compare(a.twin, b.twin) })
	for i := range r.p.handoffs {
		if i > 0 && r.p.handoffs[i].twin == r.p.handoffs[i-1].twin {
			r.bad("handoff to %s: listed twice", r.p.handoffs[i].twin)
		}
		r.p.handoffs[i].table = tableBase + 1 + i
	}
}

// sortedUnique returns addrs sorted without duplicates: addrs itself when
// it already is (one router, the usual case, costs no allocation), else a
// sorted copy. The plan never modifies it.
func sortedUnique(addrs []netip.Addr) []netip.Addr {
	for i := 1; i < len(addrs); i++ {
		if addrs[i-1].Compare(addrs[i]) >= 0 {
			out := slices.Clone(addrs)
			slices.SortFunc(out, netip.Addr.Compare)
			return slices.Compact(out)
		}
	}
	return addrs
}
