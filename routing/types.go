package routing

import (
	"fmt"
	"net/netip"
	"slices"
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
// All addresses are IPv4 (see doc.go, Address families).
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
