package routing

import (
	"fmt"
	"net/netip"
)

// The import policy is one table: importRules turns a Desired into an
// ordered list of rules, and the first rule that applies to a session and
// matches a prefix decides. Two things are generated from the table and
// from nothing else:
//
//   - newFilter indexes it by session for filter.classify, which names
//     the reason of every refusal for status, logs and counters;
//   - importStatements (policy.go) compiles it into GoBGP defined sets and
//     statements, which enforce it: a refused prefix never enters the
//     Loc-RIB, so it is neither installed nor passed on.
//
// A new import feature is a new rule (or a new match), written once.
// TestPolicyMatchesFilter checks that the two generated forms agree.

// Reason says why a received prefix is not learned.
type Reason string

// Rejection reasons. Each is a label in Status and in logs.
const (
	ReasonDefaultRoute Reason = "default-route" // a default route is never learned
	ReasonProtected    Reason = "protected"     // overlaps a tunnel address or underlay endpoint, or is a VBR router's address
	ReasonConflict     Reason = "conflict"      // a VBR prefix overlapping an instance CIDR (SPEC rule 6)
	ReasonHijack       Reason = "hijack"        // a gateway announcing what it is not entitled to
	ReasonNotAccepted  Reason = "not-accepted"  // outside the VBR's accept list
	ReasonUnknownPeer  Reason = "unknown-peer"  // from a session that is not configured
	ReasonConnected    Reason = "connected"     // overlaps a subnet connected to this gateway
	ReasonFirstAS      Reason = "first-as"      // from a VBR, an AS path not starting with its router's AS
)

// match says how a rule's prefixes match a received prefix p.
type match uint8

const (
	matchExact       match = iota + 1 // p is one of them
	matchOrLonger                     // p is one of them or a more-specific of one
	matchOverlapping                  // p is one of them, a more-specific or a supernet of one
	matchHostsIn                      // p is a host route inside one of them
)

// matches reports whether p (masked) matches the rule prefix e.
func (m match) matches(e, p netip.Prefix) bool {
	switch m {
	case matchExact:
		return e == p
	case matchOrLonger:
		return e.Bits() <= p.Bits() && e.Contains(p.Addr())
	case matchOverlapping:
		return e.Overlaps(p)
	case matchHostsIn:
		return p.IsSingleIP() && e.Contains(p.Addr())
	}
	return false
}

// action is what a rule does with a prefix it matches.
type action uint8

const (
	actionAccept action = iota + 1
	// actionAcceptRetag accepts and replaces the route's large communities
	// with the origin tags of the entry's network, so an on-premises router
	// cannot forge another network's origin.
	actionAcceptRetag
	actionReject
)

// rule is one row of the import table.
type rule struct {
	// name names the rule's GoBGP statements and sets.
	name string
	// everyPeer applies the rule to every configured session; without
	// it, the rule applies to the sessions in peers only.
	everyPeer bool
	peers     []netip.Addr
	// match and entries say which prefixes the rule matches.
	match   match
	entries []ruleEntry
	action  action
	// reason is why actionReject refuses.
	reason Reason
	// kind is the sort of network an accepting rule admits prefixes of.
	kind NetworkKind
	// handoff: what the rule accepts are handoff addresses of gateways
	// of this region, not routes.
	handoff bool
}

// ruleEntry is one prefix of a rule and what a verdict names for it.
type ruleEntry struct {
	prefix netip.Prefix
	// region and network are the origin of a prefix an accepting rule
	// admits through this entry.
	region, network string
	// with names what a refused prefix collided with.
	with string
}

// allPrefixes are the roots of the address families the speaker carries
// (IPv4 and IPv6 unicast): a default route is one of them exactly, and
// "any prefix" is any of them or longer. The policy compiler keeps each
// family in sets of its own, as GoBGP requires.
var allPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// anyPrefix lists entries matching every prefix with matchOrLonger, each
// naming the given origin and collision.
func anyPrefix(region, network, with string) []ruleEntry {
	out := make([]ruleEntry, len(allPrefixes))
	for i, p := range allPrefixes {
		out[i] = ruleEntry{prefix: p, region: region, network: network, with: with}
	}
	return out
}

// importRules is the import table of d, in the order the rules apply:
//
//  1. a gateway's exact VPC CIDRs: accept;
//  2. from a gateway of this region, a host route inside one of its VPC
//     CIDRs: accept, as its handoff address;
//  3. a default route, a prefix overlapping a protected prefix, a
//     connected subnet or an instance CIDR, or a VBR router's address or
//     a more-specific of it: reject (an instance CIDR offered by a VBR is
//     a conflict, by a gateway a hijack);
//  4. a gateway's VBR entitlements, each entry with its more-specifics:
//     accept;
//  5. a VBR's accept list, each entry with its more-specifics (no list:
//     any prefix): accept, the origin tags replaced;
//  6. anything else: reject (RFC 8212 default deny).
//
// Sessions that are not configured match no rule (ReasonUnknownPeer).
func importRules(d *Desired) []rule {
	var rules []rule
	for i, g := range d.Gateways {
		rules = append(rules, gatewayVPCRules(i, g, d.Region)...)
	}
	rules = append(rules, guardRules(d)...)
	for i, g := range d.Gateways {
		if r, ok := gatewayVBRRule(i, g); ok {
			rules = append(rules, r)
		}
	}
	for i, v := range d.VBRs {
		rules = append(rules, vbrRule(i, v))
	}
	return append(rules, defaultDenyRules(d)...)
}

// gatewayVPCRules are rules 1 and 2 for gateway g, the i-th.
func gatewayVPCRules(i int, g GatewayPeer, region string) []rule {
	var vpc []ruleEntry
	for _, e := range g.Entitled {
		if e.Kind != KindVPC {
			continue
		}
		for _, p := range e.Prefixes {
			vpc = append(vpc, ruleEntry{prefix: p, region: e.Region, network: e.Network})
		}
	}
	if len(vpc) == 0 {
		return nil
	}
	peers := []netip.Addr{g.Address}
	rules := []rule{{name: fmt.Sprintf("gw%d-vpc", i), peers: peers, match: matchExact, entries: vpc,
		action: actionAccept, kind: KindVPC}}
	if g.Region == region {
		rules = append(rules, rule{name: fmt.Sprintf("gw%d-handoff", i), peers: peers, match: matchHostsIn, entries: vpc,
			action: actionAccept, kind: KindVPC, handoff: true})
	}
	return rules
}

// guardRules are rule 3: what nobody may announce.
func guardRules(d *Desired) []rule {
	var dflt, prot, routers, conn, inst []ruleEntry
	for _, p := range allPrefixes {
		dflt = append(dflt, ruleEntry{prefix: p})
	}
	for _, p := range d.ProtectedPrefixes {
		prot = append(prot, ruleEntry{prefix: p, with: p.String()})
	}
	for _, p := range d.RouterAddresses {
		routers = append(routers, ruleEntry{prefix: p, with: "VBR router " + p.Addr().String()})
	}
	for _, p := range d.Connected {
		conn = append(conn, ruleEntry{prefix: p, with: p.String()})
	}
	for _, c := range d.InstanceCIDRs {
		inst = append(inst, ruleEntry{prefix: c.Prefix, with: c.Network + " " + c.Prefix.String()})
	}
	gateways, vbrs := sessionAddrs(d)
	return []rule{
		{name: "default-route", everyPeer: true, match: matchExact, entries: dflt, action: actionReject, reason: ReasonDefaultRoute},
		{name: "protected", everyPeer: true, match: matchOverlapping, entries: prot, action: actionReject, reason: ReasonProtected},
		{name: "vbr-routers", everyPeer: true, match: matchOrLonger, entries: routers, action: actionReject, reason: ReasonProtected},
		{name: "connected", everyPeer: true, match: matchOverlapping, entries: conn, action: actionReject, reason: ReasonConnected},
		{name: "instance-gw", peers: gateways, match: matchOverlapping, entries: inst, action: actionReject, reason: ReasonHijack},
		{name: "instance-vbr", peers: vbrs, match: matchOverlapping, entries: inst, action: actionReject, reason: ReasonConflict},
	}
}

// gatewayVBRRule is rule 4 for gateway g, the i-th, if it holds VBRs.
func gatewayVBRRule(i int, g GatewayPeer) (rule, bool) {
	var vbr []ruleEntry
	for _, e := range g.Entitled {
		if e.Kind != KindVBR {
			continue
		}
		if e.Prefixes == nil {
			vbr = append(vbr, anyPrefix(e.Region, e.Network, "")...)
		}
		for _, p := range e.Prefixes {
			vbr = append(vbr, ruleEntry{prefix: p, region: e.Region, network: e.Network})
		}
	}
	return rule{name: fmt.Sprintf("gw%d-vbr", i), peers: []netip.Addr{g.Address}, match: matchOrLonger, entries: vbr,
		action: actionAccept, kind: KindVBR}, len(vbr) > 0
}

// vbrRule is rule 5 for v, the i-th VBR. An empty, non-nil accept list
// gives a rule without entries, which admits nothing.
func vbrRule(i int, v VBRSession) rule {
	acc := anyPrefix(v.Region, v.Network, "")
	if v.Accept != nil {
		acc = make([]ruleEntry, len(v.Accept))
		for j, p := range v.Accept {
			acc[j] = ruleEntry{prefix: p, region: v.Region, network: v.Network}
		}
	}
	return rule{name: fmt.Sprintf("vbr%d", i), peers: []netip.Addr{v.Neighbor}, match: matchOrLonger, entries: acc,
		action: actionAcceptRetag, kind: KindVBR}
}

// defaultDenyRules are rule 6, one per gateway (the refusal names it) and
// one for every VBR.
func defaultDenyRules(d *Desired) []rule {
	_, vbrs := sessionAddrs(d)
	var rules []rule
	for i, g := range d.Gateways {
		rules = append(rules, rule{name: fmt.Sprintf("gw%d-deny", i), peers: []netip.Addr{g.Address}, match: matchOrLonger,
			entries: anyPrefix("", "", "no entitlement of "+g.Name), action: actionReject, reason: ReasonHijack})
	}
	return append(rules, rule{name: "vbr-deny", peers: vbrs, match: matchOrLonger,
		entries: anyPrefix("", "", ""), action: actionReject, reason: ReasonNotAccepted})
}

// sessionAddrs lists the addresses of d's gateway and VBR sessions.
func sessionAddrs(d *Desired) (gateways, vbrs []netip.Addr) {
	for _, g := range d.Gateways {
		gateways = append(gateways, g.Address)
	}
	for _, v := range d.VBRs {
		vbrs = append(vbrs, v.Neighbor)
	}
	return gateways, vbrs
}
