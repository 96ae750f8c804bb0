package routing

import (
	"net/netip"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// filter is the Go form of the import table (rules.go): the rules of each
// configured session, in table order, plus the sessions themselves. It
// classifies what peers send, ahead of policy, for observability (reasons,
// counters, logs); GoBGP's policy, compiled from the same table, enforces.
type filter struct {
	region   string
	gateways map[netip.Addr]*GatewayPeer
	vbrs     map[netip.Addr]*VBRSession
	// rules holds, per session, the rules that apply to it, in order.
	rules map[netip.Addr][]*rule
}

func newFilter(d *Desired) *filter {
	f := &filter{
		region:   d.Region,
		gateways: map[netip.Addr]*GatewayPeer{},
		vbrs:     map[netip.Addr]*VBRSession{},
		rules:    map[netip.Addr][]*rule{},
	}
	for i := range d.Gateways {
		f.gateways[d.Gateways[i].Address] = &d.Gateways[i]
		f.rules[d.Gateways[i].Address] = nil
	}
	for i := range d.VBRs {
		f.vbrs[d.VBRs[i].Neighbor] = &d.VBRs[i]
		f.rules[d.VBRs[i].Neighbor] = nil
	}
	table := importRules(d)
	for i := range table {
		r := &table[i]
		if r.everyPeer {
			for addr := range f.rules {
				f.rules[addr] = append(f.rules[addr], r)
			}
			continue
		}
		for _, addr := range r.peers {
			if _, ok := f.rules[addr]; ok {
				f.rules[addr] = append(f.rules[addr], r)
			}
		}
	}
	return f
}

// verdict is the outcome for one received prefix.
type verdict struct {
	reason Reason // empty: accepted
	// region, network and kind name the origin of an accepted prefix.
	region, network string
	kind            NetworkKind
	// with names what a refused prefix collided with.
	with string
	// handoff: a twin's handoff address, not a route.
	handoff bool
}

// classify applies the import table to prefix p from peer: the first rule
// of peer's that matches decides.
func (f *filter) classify(peer netip.Addr, p netip.Prefix) verdict {
	p = p.Masked()
	rules, ok := f.rules[peer]
	if !ok {
		return verdict{reason: ReasonUnknownPeer}
	}
	for _, r := range rules {
		for _, e := range r.entries {
			if !r.match.matches(e.prefix, p) {
				continue
			}
			if r.action == actionReject {
				return verdict{reason: r.reason, with: e.with}
			}
			return verdict{region: e.region, network: e.network, kind: r.kind, handoff: r.handoff}
		}
	}
	// The table ends in a default deny for every session; this is its
	// backstop.
	return verdict{reason: ReasonNotAccepted}
}

// isTwin reports whether peer is another gateway of this region.
func (f *filter) isTwin(peer netip.Addr) bool {
	g := f.gateways[peer]
	return g != nil && g.Region == f.region
}

// firstASOK reports whether attrs, received from peer, pass the first-AS
// check of a VBR session (policy.go, firstAS): an AS path whose first AS
// is the router's. Other sessions are not checked.
func (f *filter) firstASOK(peer netip.Addr, attrs []bgp.PathAttributeInterface) bool {
	v := f.vbrs[peer]
	if v == nil {
		return true
	}
	for _, a := range attrs {
		if p, ok := a.(*bgp.PathAttributeAsPath); ok {
			return len(p.Value) > 0 && len(p.Value[0].GetAS()) > 0 && p.Value[0].GetAS()[0] == v.PeerASN
		}
	}
	return false
}
