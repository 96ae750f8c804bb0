package routing

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	api "github.com/osrg/gobgp/v4/api"
)

// Reason says why a received prefix was not learned.
type Reason string

// Rejection reasons. Each is a label in Status and in logs.
const (
	ReasonDefaultRoute Reason = "default-route" // 0.0.0.0/0 is never learned
	ReasonProtected    Reason = "protected"     // overlaps a tunnel address or underlay endpoint
	ReasonConflict     Reason = "conflict"      // a VBR prefix overlapping an instance CIDR (SPEC rule 6)
	ReasonHijack       Reason = "hijack"        // a gateway announcing what it is not entitled to
	ReasonNotAccepted  Reason = "not-accepted"  // outside the VBR's accept list
	ReasonUnknownPeer  Reason = "unknown-peer"  // from a session no longer configured
	ReasonConnected    Reason = "connected"     // overlaps a subnet connected to this gateway
)

// filter is the import rule set. The same rules are compiled into GoBGP
// policies (enforcement: a rejected prefix never enters the Loc-RIB, so it is
// neither installed nor re-advertised) and evaluated here on the pre-policy
// stream (observability: reasons, counters, logs). TestPolicyMatchesFilter
// checks that both agree.
//
// Order, for a prefix p from peer n:
//  1. n is a gateway and p is exactly one of its VPC CIDRs: accept.
//  2. n is a gateway of this region and p is a host route inside one of
//     its VPC CIDRs: accept, as its handoff address.
//  3. p is a default route, overlaps a protected prefix, a connected
//     subnet or an instance CIDR: reject.
//  4. n is a gateway and p is inside one of its VBR entitlements: accept.
//  5. n is a VBR and p is inside its accept list (or it has none): accept.
//  6. reject (RFC 8212 default deny).
type filter struct {
	region    string
	gateways  map[netip.Addr]*GatewayPeer
	vbrs      map[netip.Addr]*VBRSession
	instance  []NamedPrefix
	protected []netip.Prefix
	connected []netip.Prefix
}

func newFilter(d *Desired) *filter {
	f := &filter{
		region:    d.Region,
		gateways:  map[netip.Addr]*GatewayPeer{},
		vbrs:      map[netip.Addr]*VBRSession{},
		instance:  d.InstanceCIDRs,
		protected: d.ProtectedPrefixes,
		connected: d.Connected,
	}
	for i := range d.Gateways {
		f.gateways[d.Gateways[i].Address] = &d.Gateways[i]
	}
	for i := range d.VBRs {
		f.vbrs[d.VBRs[i].Neighbor] = &d.VBRs[i]
	}
	return f
}

// verdict is the outcome for one received prefix.
type verdict struct {
	reason  Reason // empty: accepted
	region  string // origin, when accepted
	network string
	// with names what the prefix collided with, for conflicts and hijacks.
	with string
	// handoff: a twin's handoff address, not a route.
	handoff bool
}

func within(p netip.Prefix, list []netip.Prefix) bool {
	for _, a := range list {
		if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func (f *filter) classify(peer netip.Addr, p netip.Prefix) verdict {
	p = p.Masked()
	g := f.gateways[peer]
	if g != nil {
		for _, e := range g.Entitled {
			if e.Kind != KindVPC {
				continue
			}
			for _, c := range e.Prefixes {
				if c == p {
					return verdict{region: e.Region, network: e.Network}
				}
				if g.Region == f.region && p.IsSingleIP() && c.Contains(p.Addr()) {
					return verdict{region: e.Region, network: e.Network, handoff: true}
				}
			}
		}
	}
	v := f.vbrs[peer]
	if g == nil && v == nil {
		return verdict{reason: ReasonUnknownPeer}
	}
	if p.Bits() == 0 {
		return verdict{reason: ReasonDefaultRoute}
	}
	for _, pp := range f.protected {
		if pp.Overlaps(p) {
			return verdict{reason: ReasonProtected, with: pp.String()}
		}
	}
	for _, c := range f.connected {
		if c.Overlaps(p) {
			return verdict{reason: ReasonConnected, with: c.String()}
		}
	}
	for _, c := range f.instance {
		if c.Prefix.Overlaps(p) {
			r := ReasonConflict
			if g != nil {
				r = ReasonHijack
			}
			return verdict{reason: r, with: c.Network + " " + c.Prefix.String()}
		}
	}
	if g != nil {
		for _, e := range g.Entitled {
			if e.Kind == KindVBR && (e.Prefixes == nil || within(p, e.Prefixes)) {
				return verdict{region: e.Region, network: e.Network}
			}
		}
		return verdict{reason: ReasonHijack, with: "no entitlement of " + g.Name}
	}
	if v.Accept == nil || within(p, v.Accept) {
		return verdict{region: v.Region, network: v.Network}
	}
	return verdict{reason: ReasonNotAccepted}
}

// isTwinVBRPrefix reports whether peer is a gateway of this region and p
// an on-premises prefix (not one of its VPC CIDRs).
func (f *filter) isTwinVBRPrefix(peer netip.Addr, p netip.Prefix) bool {
	g := f.gateways[peer]
	if g == nil || g.Region != f.region {
		return false
	}
	for _, e := range g.Entitled {
		if e.Kind == KindVPC && slices.Contains(e.Prefixes, p) {
			return false
		}
	}
	return true
}

const (
	importPolicyName = "opencen-import"
	exportPolicyName = "opencen-export"
)

// policyBuilder accumulates GoBGP defined sets and statements.
type policyBuilder struct {
	sets  []*api.DefinedSet
	stmts []*api.Statement
}

func exact(p netip.Prefix) *api.Prefix {
	return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())}
}

// hostsIn matches the host routes inside p.
func hostsIn(p netip.Prefix) *api.Prefix {
	n := uint32(p.Addr().BitLen())
	return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: n, MaskLengthMax: n}
}

func orLonger(p netip.Prefix) *api.Prefix {
	return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen())}
}

// overlapping lists prefix-set entries that match every prefix overlapping
// p: p and its more-specifics, and each of its supernets exactly.
func overlapping(p netip.Prefix) []*api.Prefix {
	out := []*api.Prefix{orLonger(p)}
	for l := p.Bits() - 1; l >= 0; l-- {
		out = append(out, exact(netip.PrefixFrom(p.Addr(), l).Masked()))
	}
	return out
}

func (b *policyBuilder) prefixSet(name string, ps []*api.Prefix) *api.MatchSet {
	// Dedup so the set does not grow with repeated supernets.
	seen := map[string]bool{}
	var list []*api.Prefix
	for _, p := range ps {
		k := p.IpPrefix + "/" + strconv.Itoa(int(p.MaskLengthMin)) + "-" + strconv.Itoa(int(p.MaskLengthMax))
		if !seen[k] {
			seen[k] = true
			list = append(list, p)
		}
	}
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name, Prefixes: list})
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
}

func (b *policyBuilder) neighborSet(name string, addrs ...netip.Addr) *api.MatchSet {
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name, List: list})
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
}

func (b *policyBuilder) stmt(name string, c *api.Conditions, a *api.Actions) {
	b.stmts = append(b.stmts, &api.Statement{Name: name, Conditions: c, Actions: a})
}

var (
	accept = &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
	reject = &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
)

// tagCommunities are the large communities marking a route's origin.
func tagCommunities(asn uint32, region, network string) []string {
	return []string{
		fmt.Sprintf("%d:%d:%d", asn, tagRegion, nameID(region)),
		fmt.Sprintf("%d:%d:%d", asn, tagNetwork, nameID(network)),
	}
}

// buildPolicies compiles d's import and export rules (see filter) into one
// SetPolicies request. It is deterministic, so two calls on equal Desired
// values give equal requests and Set can skip an unchanged policy.
func buildPolicies(d *Desired) *api.SetPoliciesRequest {
	b := &policyBuilder{}
	b.stmt("local", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, accept)
	gwSets := make([]*api.MatchSet, len(d.Gateways))
	for i, g := range d.Gateways {
		gwSets[i] = b.neighborSet(fmt.Sprintf("gw%d", i), g.Address)
	}
	for i, g := range d.Gateways {
		var vpc, hosts []*api.Prefix
		for _, e := range g.Entitled {
			if e.Kind == KindVPC {
				for _, p := range e.Prefixes {
					vpc = append(vpc, exact(p))
					hosts = append(hosts, hostsIn(p))
				}
			}
		}
		if len(vpc) > 0 {
			b.stmt(fmt.Sprintf("gw%d-vpc", i), &api.Conditions{
				NeighborSet: gwSets[i],
				PrefixSet:   b.prefixSet(fmt.Sprintf("gw%d-vpc", i), vpc),
			}, accept)
		}
		if len(hosts) > 0 && g.Region == d.Region {
			b.stmt(fmt.Sprintf("gw%d-handoff", i), &api.Conditions{
				NeighborSet: gwSets[i],
				PrefixSet:   b.prefixSet(fmt.Sprintf("gw%d-handoff", i), hosts),
			}, accept)
		}
	}
	deny := []*api.Prefix{exact(netip.MustParsePrefix("0.0.0.0/0"))}
	for _, p := range d.ProtectedPrefixes {
		deny = append(deny, overlapping(p)...)
	}
	for _, p := range d.Connected {
		deny = append(deny, overlapping(p)...)
	}
	for _, c := range d.InstanceCIDRs {
		deny = append(deny, overlapping(c.Prefix)...)
	}
	b.stmt("deny", &api.Conditions{PrefixSet: b.prefixSet("deny", deny)}, reject)
	for i, g := range d.Gateways {
		var vbr []*api.Prefix
		for _, e := range g.Entitled {
			if e.Kind != KindVBR {
				continue
			}
			if e.Prefixes == nil {
				vbr = append(vbr, orLonger(netip.MustParsePrefix("0.0.0.0/0")))
			}
			for _, p := range e.Prefixes {
				vbr = append(vbr, orLonger(p))
			}
		}
		if len(vbr) > 0 {
			b.stmt(fmt.Sprintf("gw%d-vbr", i), &api.Conditions{
				NeighborSet: gwSets[i],
				PrefixSet:   b.prefixSet(fmt.Sprintf("gw%d-vbr", i), vbr),
			}, accept)
		}
	}
	for i, v := range d.VBRs {
		acc := []*api.Prefix{orLonger(netip.MustParsePrefix("0.0.0.0/0"))}
		if v.Accept != nil {
			acc = acc[:0]
			for _, p := range v.Accept {
				acc = append(acc, orLonger(p))
			}
		}
		if len(acc) == 0 {
			continue // an empty, non-nil accept list admits nothing
		}
		// REPLACE drops whatever large communities the on-prem router sent,
		// so it cannot forge another network's origin tag.
		b.stmt(fmt.Sprintf("vbr%d", i), &api.Conditions{
			NeighborSet: b.neighborSet(fmt.Sprintf("vbr%d", i), v.Neighbor),
			PrefixSet:   b.prefixSet(fmt.Sprintf("vbr%d-accept", i), acc),
		}, &api.Actions{
			RouteAction:    api.RouteAction_ROUTE_ACTION_ACCEPT,
			LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_REPLACE, Communities: tagCommunities(d.InstanceASN, v.Region, v.Network)},
		})
	}
	importStmts := b.stmts

	// Export: gateways get everything (iBGP rules already stop re-advertising
	// iBGP routes); VBR routers get only tagged CEN routes (default deny
	// beyond what the config allows). GoBGP never sends a route back to the
	// session it came from.
	b.stmts = nil
	if len(d.VBRs) > 0 {
		nbrs := make([]netip.Addr, len(d.VBRs))
		for i, v := range d.VBRs {
			nbrs[i] = v.Neighbor
		}
		b.sets = append(b.sets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY,
			Name:        "cen-tag",
			List:        []string{fmt.Sprintf("^%d:%d:[0-9]+$", d.InstanceASN, tagRegion)},
		})
		b.stmt("vbr-untagged", &api.Conditions{
			NeighborSet:       b.neighborSet("vbrs", nbrs...),
			LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: "cen-tag"},
		}, reject)
	}
	b.handoffExport(d)
	exportStmts := b.stmts

	return &api.SetPoliciesRequest{
		DefinedSets: b.sets,
		Policies: []*api.Policy{
			{Name: importPolicyName, Statements: importStmts},
			{Name: exportPolicyName, Statements: exportStmts},
		},
	}
}

// handoffExport keeps handoff addresses (ours, and those twins sent) for
// the gateways of this region: every other session is refused them.
func (b *policyBuilder) handoffExport(d *Desired) {
	var twins []netip.Addr
	for _, g := range d.Gateways {
		if g.Region == d.Region {
			twins = append(twins, g.Address)
		}
	}
	b.sets = append(b.sets, &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY,
		Name:        "handoff-tag",
		List:        []string{fmt.Sprintf("^%d:%d:[0-9]+$", d.InstanceASN, tagHandoff)},
	})
	c := &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: "handoff-tag"}}
	if len(twins) > 0 {
		c.NeighborSet = &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: b.neighborSet("twins", twins...).Name}
	}
	b.stmt("handoff-twins-only", c, reject)
}

// policyAssignments binds the two policies to the global RIB. GoBGP's
// SetPolicies keeps existing assignments, so this is done once per server.
func policyAssignments() []*api.PolicyAssignment {
	return []*api.PolicyAssignment{{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: importPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}, {
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      []*api.Policy{{Name: exportPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}}
}
