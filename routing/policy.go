package routing

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v4/api"
)

// GoBGP form of the policies: the import policy compiled from the rule
// table (rules.go), and the export policy, which is short and written
// here by hand.

const (
	importPolicyName = "opencen-import"
	exportPolicyName = "opencen-export"
)

// buildPolicies compiles d's import table and export rules into one
// SetPolicies request. It is deterministic, so two calls on equal Desired
// values give equal requests and Set can skip an unchanged policy.
func buildPolicies(d *Desired) *api.SetPoliciesRequest {
	b := &policyBuilder{setNames: map[string]string{}}
	b.importStatements(importRules(d), d.InstanceASN, d.VBRs)
	importStmts := b.stmts
	b.stmts = nil
	b.exportStatements(d)
	return &api.SetPoliciesRequest{
		DefinedSets: b.sets,
		Policies: []*api.Policy{
			{Name: importPolicyName, Statements: importStmts},
			{Name: exportPolicyName, Statements: b.stmts},
		},
	}
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

// policyBuilder accumulates GoBGP defined sets and statements.
type policyBuilder struct {
	sets  []*api.DefinedSet
	stmts []*api.Statement
	// setNames maps a set's type and content to the name it is defined
	// under, so rules with equal prefixes or peers share one set.
	setNames map[string]string
}

var (
	accept = &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
	reject = &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
)

// importStatements compiles the import table, in order, after one
// statement accepting what this gateway originates (the global import
// policy sees local paths too; the table is about what peers send). A
// rule becomes one statement per run of entries of one address family
// (GoBGP sets hold one family), and for a retagging rule of one origin.
// A rule that applies to no session, or has no entries, compiles to
// nothing, as it matches nothing.
func (b *policyBuilder) importStatements(rules []rule, asn uint32, vbrs []VBRSession) {
	b.stmt("local", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, accept)
	for i, v := range vbrs {
		b.firstAS(i, v)
	}
	for _, r := range rules {
		if !r.everyPeer && len(r.peers) == 0 {
			continue
		}
		for _, g := range groupEntries(r) {
			c := &api.Conditions{PrefixSet: b.prefixSet(g.name, g.prefixes)}
			if !r.everyPeer {
				c.NeighborSet = b.neighborSet(r.name+"-peers", r.peers...)
			}
			b.stmt(g.name, c, ruleActions(r, asn, g.first))
		}
	}
}

// firstAS refuses what the i-th VBR's router sends unless its AS path
// starts with the router's AS (RFC 4271 section 6.3; routers enforce it by
// default): an eBGP speaker puts its own AS first, so an empty path or
// another AS there is a fault or a forgery. A refused announcement
// replaces the route it updates, a withdrawal as RFC 7606 asks of a
// malformed AS_PATH. filter.firstASOK says the same for observability.
func (b *policyBuilder) firstAS(i int, v VBRSession) {
	name := fmt.Sprintf("vbr%d-first-as", i)
	set := b.defineSet(api.DefinedType_DEFINED_TYPE_AS_PATH, name, []string{fmt.Sprintf("^%d_", v.PeerASN)}, nil)
	b.stmt(name, &api.Conditions{
		NeighborSet: b.neighborSet(fmt.Sprintf("vbr%d-peers", i), v.Neighbor),
		AsPathSet:   &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: set},
	}, reject)
}

// entryGroup is the part of a rule's entries compiled into one statement.
type entryGroup struct {
	name     string
	first    ruleEntry // its first entry, whose origin a retag applies
	prefixes []*api.Prefix
}

// groupEntries splits r's entries into runs of one family (and, for a
// retagging rule, one origin), in order, and lists each run's GoBGP
// prefixes. Runs keep the entries' order, so the statements match what
// classify, taking the first matching entry, says.
func groupEntries(r rule) []*entryGroup {
	var groups []*entryGroup
	prev := ""
	for _, e := range r.entries {
		key := "v4"
		if !e.prefix.Addr().Is4() {
			key = "v6"
		}
		if r.action == actionAcceptRetag {
			key += "|" + e.region + "|" + e.network
		}
		if len(groups) == 0 || key != prev {
			g := &entryGroup{name: r.name, first: e}
			if len(groups) > 0 {
				g.name = fmt.Sprintf("%s-%d", r.name, len(groups))
			}
			groups = append(groups, g)
			prev = key
		}
		g := groups[len(groups)-1]
		g.prefixes = append(g.prefixes, matchPrefixes(r.match, e.prefix)...)
	}
	return groups
}

// matchPrefixes lists the prefix-set entries that match what m matches
// of e.
func matchPrefixes(m match, e netip.Prefix) []*api.Prefix {
	bits, max := uint32(e.Bits()), uint32(e.Addr().BitLen())
	span := func(p netip.Prefix, lo, hi uint32) *api.Prefix {
		return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: lo, MaskLengthMax: hi}
	}
	switch m {
	case matchExact:
		return []*api.Prefix{span(e, bits, bits)}
	case matchOrLonger:
		return []*api.Prefix{span(e, bits, max)}
	case matchHostsIn:
		return []*api.Prefix{span(e, max, max)}
	case matchOverlapping:
		// e and its more-specifics, and each of its supernets exactly.
		out := []*api.Prefix{span(e, bits, max)}
		for l := e.Bits() - 1; l >= 0; l-- {
			out = append(out, span(netip.PrefixFrom(e.Addr(), l).Masked(), uint32(l), uint32(l)))
		}
		return out
	}
	return nil
}

// ruleActions is what r's statement does; a retag applies the origin of
// entry e.
func ruleActions(r rule, asn uint32, e ruleEntry) *api.Actions {
	switch r.action {
	case actionAccept:
		return accept
	case actionAcceptRetag:
		return &api.Actions{
			RouteAction:    api.RouteAction_ROUTE_ACTION_ACCEPT,
			LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_REPLACE, Communities: tagCommunities(asn, e.region, e.network)},
		}
	}
	return reject
}

// exportStatements: gateways get everything (iBGP rules already stop
// re-advertising iBGP routes); VBR routers get only tagged CEN routes
// (default deny beyond what the config allows), each family with a next
// hop of its own family; handoff addresses go to the gateways of this
// region only. GoBGP never sends a route back to the
// session it came from.
func (b *policyBuilder) exportStatements(d *Desired) {
	_, vbrs := sessionAddrs(d)
	if len(vbrs) > 0 {
		tagged := b.largeCommunitySet("cen-tag", fmt.Sprintf("^%d:%d:[0-9]+$", d.InstanceASN, tagRegion))
		b.stmt("vbr-untagged", &api.Conditions{
			NeighborSet:       b.neighborSet("vbrs", vbrs...),
			LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: tagged},
		}, reject)
	}
	// Handoff addresses (ours, and those twins sent) are refused to every
	// session but the gateways of this region.
	var twins []netip.Addr
	for _, g := range d.Gateways {
		if g.Region == d.Region {
			twins = append(twins, g.Address)
		}
	}
	handoff := b.largeCommunitySet("handoff-tag", fmt.Sprintf("^%d:%d:[0-9]+$", d.InstanceASN, tagHandoff))
	c := &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: handoff}}
	if len(twins) > 0 {
		c.NeighborSet = &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: b.neighborSet("twins", twins...).Name}
	}
	b.stmt("handoff-twins-only", c, reject)
	for i, v := range d.VBRs {
		b.vbrNexthops(i, v)
	}
}

// vbrNexthops sets the next hop of the family v's session does not run
// in to the gateway's address of that family on v's link (GoBGP would
// name its session address, of the wrong family), or, with no such
// address, announces nothing of that family to v. The session's own
// family keeps GoBGP's next-hop-self.
func (b *policyBuilder) vbrNexthops(i int, v VBRSession) {
	other, fam := families[0], "v4"
	if v.Neighbor.Is4() {
		other, fam = families[1], "v6"
	}
	c := &api.Conditions{NeighborSet: b.neighborSet(fmt.Sprintf("vbr%d", i), v.Neighbor), AfiSafiIn: []*api.Family{other}}
	for _, l := range v.LinkAddresses {
		if l.Addr().Is4() != v.Neighbor.Is4() {
			b.stmt(fmt.Sprintf("vbr%d-nexthop-%s", i, fam), c, &api.Actions{
				RouteAction: api.RouteAction_ROUTE_ACTION_UNSPECIFIED,
				Nexthop:     &api.NexthopAction{Address: l.Addr().String()},
			})
			return
		}
	}
	b.stmt(fmt.Sprintf("vbr%d-no-%s", i, fam), c, reject)
}

func (b *policyBuilder) stmt(name string, c *api.Conditions, a *api.Actions) {
	b.stmts = append(b.stmts, &api.Statement{Name: name, Conditions: c, Actions: a})
}

// defineSet adds a set of type t under name unless one with the same
// content exists, and returns the name the set is known by.
func (b *policyBuilder) defineSet(t api.DefinedType, name string, list []string, prefixes []*api.Prefix) string {
	key := t.String() + "\x00" + strings.Join(list, ",")
	for _, p := range prefixes {
		key += "," + prefixKey(p)
	}
	if prev, ok := b.setNames[key]; ok {
		return prev
	}
	b.setNames[key] = name
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: t, Name: name, List: list, Prefixes: prefixes})
	return name
}

func (b *policyBuilder) prefixSet(name string, ps []*api.Prefix) *api.MatchSet {
	// Dedup so the set does not grow with repeated supernets.
	seen := map[string]bool{}
	var list []*api.Prefix
	for _, p := range ps {
		if k := prefixKey(p); !seen[k] {
			seen[k] = true
			list = append(list, p)
		}
	}
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: b.defineSet(api.DefinedType_DEFINED_TYPE_PREFIX, name, nil, list)}
}

func prefixKey(p *api.Prefix) string {
	return p.IpPrefix + "/" + strconv.Itoa(int(p.MaskLengthMin)) + "-" + strconv.Itoa(int(p.MaskLengthMax))
}

func (b *policyBuilder) neighborSet(name string, addrs ...netip.Addr) *api.MatchSet {
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: b.defineSet(api.DefinedType_DEFINED_TYPE_NEIGHBOR, name, list, nil)}
}

func (b *policyBuilder) largeCommunitySet(name, regexp string) string {
	return b.defineSet(api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY, name, []string{regexp}, nil)
}
