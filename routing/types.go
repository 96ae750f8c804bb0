package routing

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// NetworkKind says what sort of network a prefix belongs to.
type NetworkKind uint8

const (
	// KindVPC is a cloud network with static CIDRs: a gateway originates
	// exactly those CIDRs.
	KindVPC NetworkKind = iota + 1
	// KindVBR is an on-premises attachment: its router announces prefixes
	// over eBGP, limited by an accept list.
	KindVBR
)

func (k NetworkKind) String() string {
	switch k {
	case KindVPC:
		return "vpc"
	case KindVBR:
		return "vbr"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Desired is everything one gateway's BGP speaker should do. It is plain
// data computed from the config by the agent; Speaker.Set applies it.
// All addresses are IPv4 for now (see doc.go).
type Desired struct {
	// RouterID is the BGP identifier; usually the tunnel address.
	RouterID netip.Addr
	// LocalAddress is this gateway's tunnel (overlay) address: the speaker
	// listens on it and gateway sessions are sourced from it, so BGP rides
	// inside WireGuard.
	LocalAddress netip.Addr
	// Region is this gateway's region id.
	Region string
	// InstanceASN is the single ASN of the whole CEN instance (SPEC
	// instance.asn). Gateways speak iBGP in it; VBR routers see it.
	InstanceASN uint32
	// Gateways are the other gateways of the instance (full mesh).
	Gateways []GatewayPeer
	// Originate are the VPC CIDRs of this gateway's region.
	Originate []Origin
	// VBRs are the on-premises sessions this gateway holds.
	VBRs []VBRSession
	// InstanceCIDRs are all static VPC CIDRs of the instance, every region.
	// A VBR prefix equal to or overlapping one of them is a route conflict.
	InstanceCIDRs []NamedPrefix
	// ProtectedPrefixes are never learned from anyone, nor anything that
	// overlaps them: tunnel addresses and underlay endpoints.
	ProtectedPrefixes []netip.Prefix
	// Connected are the subnets connected to this gateway (its LANs, VBR
	// links, underlay): a learned prefix overlapping one would take over
	// the link's own route, so it is refused (ReasonConnected).
	Connected []netip.Prefix
	// HandoffAddresses are this gateway's addresses on its region's LANs
	// (inside the region's VPC CIDRs). They are announced as host routes
	// to the gateways of the region only, which hand it the packets of
	// the prefixes it is the home of (see package dataplane).
	HandoffAddresses []netip.Addr
}

// GatewayPeer is another gateway of the instance.
type GatewayPeer struct {
	Name   string
	Region string
	// Address is the peer's tunnel address; the session runs to it.
	Address netip.Addr
	// Entitled lists what this peer may originate. Anything else it sends
	// is a hijack: ignored, logged and counted.
	Entitled []Entitlement
}

// Entitlement is one network a gateway peer may announce routes for.
type Entitlement struct {
	Network string
	Region  string
	Kind    NetworkKind
	// Prefixes: for KindVPC the exact CIDRs; for KindVBR the accept list,
	// each entry admitting itself and its more-specifics, nil meaning any
	// prefix that is not a conflict, protected or a default route.
	Prefixes []netip.Prefix
}

// Origin is a VPC CIDR this gateway announces.
type Origin struct {
	Prefix  netip.Prefix
	Region  string
	Network string
}

// NamedPrefix is a prefix with the network and region it belongs to.
type NamedPrefix struct {
	Prefix  netip.Prefix
	Region  string
	Network string
}

// VBRSession is an eBGP session with an on-premises router.
type VBRSession struct {
	Network  string
	Region   string
	Neighbor netip.Addr
	// LocalAddress optionally sources the session; the kernel picks one
	// when it is not set.
	LocalAddress netip.Addr
	// Port is the router's BGP port; 0 means 179.
	Port    uint16
	PeerASN uint32
	// Accept lists what the router may announce, each entry admitting its
	// more-specifics; nil admits any prefix (but never a conflict, a
	// protected prefix or a default route).
	Accept []netip.Prefix
	// MaxPrefixes shuts the session down when the router sends more
	// prefixes than this (0: no limit).
	MaxPrefixes uint32
	// Password enables TCP-MD5. It is never logged nor put in errors.
	Password string
	// BFD enables BFD on the session.
	BFD bool
}

// String leaves the password out, so a %v of a session is safe to log.
func (v VBRSession) String() string {
	return fmt.Sprintf("vbr %s (%s) neighbor %s as %d", v.Network, v.Region, v.Neighbor, v.PeerASN)
}

// GoString leaves the password out of %#v too.
func (v VBRSession) GoString() string { return v.String() }

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid routing desired state")

// Validate reports every problem of d, each naming the offending value.
func (d *Desired) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	v4 := func(what string, a netip.Addr) {
		if !a.IsValid() {
			bad("%s is not set", what)
		} else if !a.Is4() {
			bad("%s %s: only IPv4 is supported", what, a)
		}
	}
	pfx := func(what string, p netip.Prefix) {
		if !p.IsValid() {
			bad("%s: invalid prefix", what)
			return
		}
		if !p.Addr().Is4() {
			bad("%s %s: only IPv4 prefixes are supported", what, p)
		}
		if p.Masked() != p {
			bad("%s %s: host bits set, want %s", what, p, p.Masked())
		}
	}
	v4("router id", d.RouterID)
	v4("local address", d.LocalAddress)
	if d.Region == "" {
		bad("region is empty")
	}
	if d.InstanceASN == 0 {
		bad("instance asn is 0, want 1 to 4294967295")
	}
	seen := map[netip.Addr]string{}
	addr := func(what string, a netip.Addr) {
		if prev, ok := seen[a]; ok {
			bad("%s address %s already used by %s", what, a, prev)
		}
		seen[a] = what
	}
	if d.LocalAddress.IsValid() {
		seen[d.LocalAddress] = "local address"
	}
	for _, g := range d.Gateways {
		what := fmt.Sprintf("gateway %q", g.Name)
		if g.Name == "" {
			bad("gateway with address %s has no name", g.Address)
		}
		if g.Region == "" {
			bad("%s has no region", what)
		}
		v4(what+" address", g.Address)
		addr(what, g.Address)
		for _, e := range g.Entitled {
			if e.Network == "" || e.Region == "" {
				bad("%s entitlement without network or region", what)
			}
			if e.Kind != KindVPC && e.Kind != KindVBR {
				bad("%s entitlement %q: kind %v, want vpc or vbr", what, e.Network, e.Kind)
			}
			if e.Kind == KindVPC && len(e.Prefixes) == 0 {
				bad("%s vpc entitlement %q has no prefixes", what, e.Network)
			}
			for _, p := range e.Prefixes {
				pfx(fmt.Sprintf("%s entitlement %q prefix", what, e.Network), p)
			}
		}
	}
	for _, o := range d.Originate {
		pfx(fmt.Sprintf("originated network %q", o.Network), o.Prefix)
		if o.Network == "" || o.Region == "" {
			bad("originated prefix %s without network or region", o.Prefix)
		}
	}
	for _, v := range d.VBRs {
		what := fmt.Sprintf("vbr %q", v.Network)
		if v.Network == "" || v.Region == "" {
			bad("vbr session to %s without network or region", v.Neighbor)
		}
		v4(what+" neighbor", v.Neighbor)
		addr(what, v.Neighbor)
		if v.LocalAddress.IsValid() && !v.LocalAddress.Is4() {
			bad("%s local address %s: only IPv4 is supported", what, v.LocalAddress)
		}
		if v.PeerASN == 0 {
			bad("%s peer asn is 0, want 1 to 4294967295", what)
		}
		if v.PeerASN == d.InstanceASN && d.InstanceASN != 0 {
			bad("%s peer asn %d equals the instance asn; vbr sessions are eBGP", what, v.PeerASN)
		}
		for _, p := range v.Accept {
			pfx(what+" accept", p)
		}
	}
	for _, n := range d.InstanceCIDRs {
		pfx(fmt.Sprintf("instance cidr of %q", n.Network), n.Prefix)
	}
	for _, p := range d.ProtectedPrefixes {
		pfx("protected prefix", p)
	}
	for _, p := range d.Connected {
		pfx("connected subnet", p)
	}
	for _, a := range d.HandoffAddresses {
		v4("handoff address", a)
	}
	if len(errs) == 0 {
		if _, err := newNameTable(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Tags: every CEN route carries two BGP large communities,
// INSTANCE_ASN:1:hash(region) and INSTANCE_ASN:2:hash(network), so any
// gateway (and cenctl, and the on-prem router) can tell where it came from.
// A third, INSTANCE_ASN:3:0, marks a gateway's handoff address (a host
// route only its region's gateways receive).
const (
	tagRegion  uint32 = 1
	tagNetwork uint32 = 2
	tagHandoff uint32 = 3
)

// nameID hashes a region or network name into a large community value.
// Every gateway reads the same config, so every gateway can map it back.
func nameID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	if v := h.Sum32(); v != 0 {
		return v
	}
	return 1
}

// nameTable maps tag values back to names.
type nameTable struct {
	regions  map[uint32]string
	networks map[uint32]string
}

func newNameTable(d *Desired) (*nameTable, error) {
	t := &nameTable{regions: map[uint32]string{}, networks: map[uint32]string{}}
	var errs []error
	add := func(m map[uint32]string, kind, name string) {
		if name == "" {
			return
		}
		id := nameID(name)
		if prev, ok := m[id]; ok && prev != name {
			errs = append(errs, fmt.Errorf("%w: %s names %q and %q hash to the same tag %d; rename one", ErrInvalid, kind, prev, name, id))
			return
		}
		m[id] = name
	}
	add(t.regions, "region", d.Region)
	for _, g := range d.Gateways {
		add(t.regions, "region", g.Region)
		for _, e := range g.Entitled {
			add(t.regions, "region", e.Region)
			add(t.networks, "network", e.Network)
		}
	}
	for _, o := range d.Originate {
		add(t.regions, "region", o.Region)
		add(t.networks, "network", o.Network)
	}
	for _, v := range d.VBRs {
		add(t.regions, "region", v.Region)
		add(t.networks, "network", v.Network)
	}
	for _, n := range d.InstanceCIDRs {
		add(t.regions, "region", n.Region)
		add(t.networks, "network", n.Network)
	}
	return t, errors.Join(errs...)
}

// clone deep-copies d so the caller may reuse its slices.
func (d Desired) clone() Desired {
	c := d
	c.Gateways = make([]GatewayPeer, len(d.Gateways))
	for i, g := range d.Gateways {
		g.Entitled = slices.Clone(g.Entitled)
		for j := range g.Entitled {
			g.Entitled[j].Prefixes = slices.Clone(g.Entitled[j].Prefixes)
		}
		c.Gateways[i] = g
	}
	c.Originate = slices.Clone(d.Originate)
	c.VBRs = make([]VBRSession, len(d.VBRs))
	for i, v := range d.VBRs {
		v.Accept = slices.Clone(v.Accept)
		c.VBRs[i] = v
	}
	c.InstanceCIDRs = slices.Clone(d.InstanceCIDRs)
	c.ProtectedPrefixes = slices.Clone(d.ProtectedPrefixes)
	c.Connected = slices.Clone(d.Connected)
	c.HandoffAddresses = slices.Clone(d.HandoffAddresses)
	return c
}

func prefixesString(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
