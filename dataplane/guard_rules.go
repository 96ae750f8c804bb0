package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardSpec is what one device's guard holds: the addresses and links it
// tells apart, resolved from the desired state and the kernel's links.
type guardSpec struct {
	dev      string
	gateways []netip.Addr // every gateway's tunnel address, this one's too
	self     []netip.Addr // this gateway's tunnel addresses
	// attached are the LAN and VBR links, sorted: with dev, the links
	// forwarding may join.
	attached []string
	// underlay are the links toward the peers' endpoints that are not
	// attached, sorted: nothing arriving there is forwarded.
	underlay []string
	vbrs     []vbrLink // sorted by neighbor
}

// vbrLink is a VBR's router and the link it is reached through.
type vbrLink struct {
	neighbor netip.Addr
	link     string
}

// The guard's chains: prerouting at raw priority (-300), ahead of
// routing, conntrack and any filter a host has; forward at filter
// priority, where the outgoing interface is known.
const (
	guardChain   = "prerouting"
	forwardChain = "forward"
)

// The guard's named sets.
const (
	guardSet4   = "gateways4" // every gateway's tunnel addresses
	guardSet6   = "gateways6"
	selfSet4    = "self4" // this gateway's
	selfSet6    = "self6"
	attachedSet = "attached" // ifnames: dev, LANs and VBR links
	underlaySet = "underlay" // ifnames
)

// guardRule is one rule of the guard: its chain, the tag in its user data
// that names everything it matches (so a rule that differs in any of them
// is seen as changed), and its expressions.
type guardRule struct {
	chain string
	tag   []byte
	exprs []expr.Any
}

// controlMatch is one kind of BGP or BFD packet: a layer 4 protocol and a
// port at an offset of the transport header (0 source, 2 destination).
type controlMatch struct {
	proto  byte
	offset uint32
	port   uint16
	name   string
}

// controlMatches are BGP (TCP 179, either way) and BFD (UDP 3784 single
// hop, toward VBR routers, and 4784, between gateways).
var controlMatches = []controlMatch{
	{unix.IPPROTO_TCP, 2, 179, "tcp dport 179"},
	{unix.IPPROTO_TCP, 0, 179, "tcp sport 179"},
	{unix.IPPROTO_UDP, 2, 3784, "udp dport 3784"},
	{unix.IPPROTO_UDP, 2, 4784, "udp dport 4784"},
}

func (m controlMatch) exprs() []expr.Any {
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, m.port)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: m.offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
	}
}

func ifname(dev string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, dev)
	return b
}

// addrField is the offset and length of a family's source (dst false) or
// destination address in the network header.
func addrField(family byte, dst bool) (off, n uint32) {
	if family == unix.NFPROTO_IPV6 {
		off, n = 8, 16
	} else {
		off, n = 12, 4
	}
	if dst {
		off += n
	}
	return off, n
}

func nfproto(family byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
}

// notFrom matches a packet that arrived on none of devs.
func notFrom(devs ...string) []expr.Any {
	out := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}}
	for _, d := range devs {
		out = append(out, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(d)})
	}
	return out
}

func addrIn(family byte, dst bool, set *nftables.Set) []expr.Any {
	off, n := addrField(family, dst)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func countDrop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// guardSets are the named sets the rules look up, by name.
type guardSets map[string]*nftables.Set

// guardRules are the guard's rules for g, in order:
//
//   - prerouting: a packet whose source is a gateway's tunnel address
//     arriving on neither dev nor lo (a tenant forging a gateway, whose
//     traffic escapes shaping);
//   - prerouting: BGP or BFD toward this gateway's tunnel address
//     arriving on neither dev nor lo;
//   - prerouting: BGP or BFD from a VBR's router arriving on any link but
//     its own;
//   - forward: anything arriving on the underlay;
//   - forward: anything toward dev, a LAN or a VBR link that arrived on
//     none of them.
//
// Each drops and counts.
func guardRules(g guardSpec, sets guardSets) []guardRule {
	var out []guardRule
	add := func(chain, tag string, exprs ...[]expr.Any) {
		out = append(out, guardRule{chain: chain, tag: []byte("opencen guard v3: " + tag), exprs: concat(append(exprs, countDrop())...)})
	}
	families := []struct {
		family     byte
		gws, self  string
		familyName string
	}{{unix.NFPROTO_IPV4, guardSet4, selfSet4, "ip"}, {unix.NFPROTO_IPV6, guardSet6, selfSet6, "ip6"}}
	for _, f := range families {
		add(guardChain, fmt.Sprintf("iifname != { %s, lo } %s saddr @%s drop", g.dev, f.familyName, f.gws),
			nfproto(f.family), notFrom(g.dev, "lo"), addrIn(f.family, false, sets[f.gws]))
	}
	for _, f := range families {
		for _, m := range controlMatches {
			add(guardChain, fmt.Sprintf("iifname != { %s, lo } %s daddr @%s %s drop", g.dev, f.familyName, f.self, m.name),
				nfproto(f.family), notFrom(g.dev, "lo"), addrIn(f.family, true, sets[f.self]), m.exprs())
		}
	}
	for _, v := range g.vbrs {
		family, name := byte(unix.NFPROTO_IPV4), "ip"
		if !v.neighbor.Is4() {
			family, name = unix.NFPROTO_IPV6, "ip6"
		}
		off, n := addrField(family, false)
		src := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v.neighbor.AsSlice()},
		}
		for _, m := range controlMatches {
			add(guardChain, fmt.Sprintf("iifname != %s %s saddr %s %s drop", v.link, name, v.neighbor, m.name),
				nfproto(family), notFrom(v.link), src, m.exprs())
		}
	}
	add(forwardChain, "iifname @underlay drop",
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Lookup{SourceRegister: 1, SetName: sets[underlaySet].Name, SetID: sets[underlaySet].ID}})
	add(forwardChain, "iifname != @attached oifname @attached drop", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: sets[attachedSet].Name, SetID: sets[attachedSet].ID, Invert: true},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: sets[attachedSet].Name, SetID: sets[attachedSet].ID},
	})
	return out
}

// setSpec is one named set and what it holds, as element keys.
type setSpec struct {
	name string
	typ  nftables.SetDatatype
	keys [][]byte
}

// guardSetSpecs are the named sets of g.
func guardSetSpecs(g guardSpec) []setSpec {
	gw4, gw6 := splitFamilies(g.gateways)
	self4, self6 := splitFamilies(g.self)
	addrKeys := func(addrs []netip.Addr) [][]byte {
		out := make([][]byte, 0, len(addrs))
		for _, a := range addrs {
			out = append(out, a.AsSlice())
		}
		return out
	}
	nameKeys := func(names []string) [][]byte {
		out := make([][]byte, 0, len(names))
		for _, n := range names {
			out = append(out, ifname(n))
		}
		return out
	}
	return []setSpec{
		{guardSet4, nftables.TypeIPAddr, addrKeys(gw4)},
		{guardSet6, nftables.TypeIP6Addr, addrKeys(gw6)},
		{selfSet4, nftables.TypeIPAddr, addrKeys(self4)},
		{selfSet6, nftables.TypeIP6Addr, addrKeys(self6)},
		{attachedSet, nftables.TypeIFName, nameKeys(append([]string{g.dev}, g.attached...))},
		{underlaySet, nftables.TypeIFName, nameKeys(g.underlay)},
	}
}
