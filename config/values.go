package config

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The types below are values the desired package derives and a subsystem
// takes (or, for LearnedRoute, gives back). They are declared here, in the
// one package every subsystem imports, so each is written once; the
// subsystems name them through aliases (routing.LearnedRoute,
// dataplane.Peer, ...).

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

// SpeakerState is everything one gateway's BGP speaker should do
// (routing.Desired). All addresses are IPv4.
type SpeakerState struct {
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
	Originate []NamedPrefix
	// VBRs are the on-premises sessions this gateway holds.
	VBRs []VBRPeer
	// InstanceCIDRs are all static VPC CIDRs of the instance, every region.
	// A VBR prefix equal to or overlapping one of them is a route conflict.
	InstanceCIDRs []NamedPrefix
	// ProtectedPrefixes are never learned from anyone, nor anything that
	// overlaps them: tunnel addresses and underlay endpoints.
	ProtectedPrefixes []netip.Prefix
	// RouterAddresses are the on-premises routers of every VBR of the
	// instance, as host prefixes: never learned from anyone, nor anything
	// more specific (a route to a router would carry its own session),
	// while a range that holds one, as a data centre's often does, is.
	RouterAddresses []netip.Prefix
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
	Entitled []NetworkEntitlement
	// MaxPrefixes bounds what the peer may send in each family, derived
	// from its entitlements (GatewayMaxPrefixes): past it the session is
	// shut down like a VBR's, and restarts after the default time.
	MaxPrefixes uint32
}

// NetworkEntitlement is one network a gateway peer may announce routes
// for.
type NetworkEntitlement struct {
	Network string
	Region  string
	Kind    NetworkKind
	// Prefixes: for KindVPC the exact CIDRs; for KindVBR the accept list,
	// each entry admitting itself and its more-specifics, nil meaning any
	// prefix that is not a conflict, protected or a default route.
	Prefixes []netip.Prefix
}

// LearnedRoute is one prefix the gateway should route toward the CEN.
type LearnedRoute struct {
	Prefix        netip.Prefix
	OriginRegion  string
	OriginNetwork string
	// NextHops are the tunnel addresses of the gateways announcing the
	// prefix. For a prefix learned straight from a local VBR they are the
	// on-prem router's address, and Direct is true.
	NextHops []netip.Addr
	Direct   bool
	// Gateways, for a Direct prefix, are the gateways of this region that
	// announce it too (their own VBRs learned it): the candidates, with
	// this gateway, for its home.
	Gateways []netip.Addr
	// Handoff marks not a route but a gateway of this region telling its
	// address on a LAN (Prefix, a host route): where to hand it the
	// packets of the prefixes it is the home of. NextHops is that gateway.
	Handoff bool
}

// NamedPrefix is a prefix with the network and region it belongs to.
type NamedPrefix struct {
	Prefix  netip.Prefix
	Region  string
	Network string
}

// VBRPeer is an eBGP session with an on-premises router as the BGP speaker
// runs it: the VBR's session from the file, with its region, its password
// read and its addresses resolved.
type VBRPeer struct {
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
	// prefixes than this (0: no limit); MaxPrefixesRestart brings it back
	// after that long (0: only cenctl peers reset does).
	MaxPrefixes        uint32
	MaxPrefixesRestart time.Duration
	// TTLSecurity is GTSM (RFC 5082, one hop): sent with TTL 255, and
	// nothing received with less.
	TTLSecurity bool
	// Password enables TCP-MD5. It is never logged nor put in errors.
	Password string
	// BFD enables BFD on the session.
	BFD bool
	// LinkAddresses are the gateway's addresses on the link to Neighbor
	// (with their prefix length), at most one per family: the next hop
	// announced to the router in that family, and the subnet the router's
	// next hops must lie in. A family with none is not announced to the
	// router, and of what it announces only the session's own family is
	// installed (via the neighbor).
	LinkAddresses []netip.Prefix
}

// String leaves the password out, so a %v of a session is safe to log.
func (v VBRPeer) String() string {
	return fmt.Sprintf("vbr %s (%s) neighbor %s as %d", v.Network, v.Region, v.Neighbor, v.PeerASN)
}

// GoString leaves the password out of %#v too.
func (v VBRPeer) GoString() string { return v.String() }

// TunnelState is everything one gateway's dataplane should have
// (dataplane.Desired): the WireGuard device, its peers and the routes and
// rules around it.
//
// It holds a private key: it never formats it (String and GoString redact
// it), and neither must callers.
type TunnelState struct {
	// PrivateKey is this gateway's WireGuard private key.
	PrivateKey wgtypes.Key
	// ListenPort is the UDP port the device listens on (the port of the
	// gateway's endpoint in the config). 1 to 65535.
	ListenPort int
	// Addresses are the gateway's own tunnel addresses, put on the device,
	// e.g. 100.64.0.1/32 and fd00:cen::1/128. The first of each family is
	// the source of the routes of that family.
	Addresses []netip.Prefix
	// MTU of the device; 0 means the underlay MTU minus 80.
	MTU int
	// Peers are the other gateways of the instance.
	Peers []TunnelPeer
	// Routes are the CEN prefixes reached through the tunnel (other
	// regions' VPC CIDRs, on-premises prefixes learned by other gateways):
	// each is one kernel route on the WireGuard device, and WireGuard hands
	// a packet to the peer whose AllowedIPs hold its destination, so every
	// route should lie inside the AllowedIPs of the peers.
	Routes []netip.Prefix
	// DirectRoutes are prefixes reached without the tunnel, through a
	// router on a directly connected network: the on-premises prefixes a
	// VBR's router announces to this gateway.
	DirectRoutes []DirectRoute
	// Handoffs send the packets of local prefixes homed at a twin gateway
	// of the region, which reach this gateway, to that twin over a LAN
	// both gateways share (see package dataplane).
	Handoffs []Handoff
	// LANPrefixes are the region's VPC CIDRs: a link holding an address
	// inside one is a LAN of the gateway. VBRNeighbors are the routers of
	// the VBRs this gateway holds, each on the link the kernel reaches it
	// through. With the device, those links are the only ones the
	// dataplane's guard forwards between, and a VBR's router is heard on
	// BGP and BFD only on its own link.
	LANPrefixes  []netip.Prefix
	VBRNeighbors []netip.Addr
}

// String describes t without its private key.
func (t TunnelState) String() string {
	return fmt.Sprintf("dataplane.Desired{PrivateKey:<redacted> ListenPort:%d Addresses:%v MTU:%d Peers:%d Routes:%d DirectRoutes:%d Handoffs:%d}",
		t.ListenPort, t.Addresses, t.MTU, len(t.Peers), len(t.Routes), len(t.DirectRoutes), len(t.Handoffs))
}

// GoString is String: %#v must not print the key either.
func (t TunnelState) GoString() string { return t.String() }

// LinkAddresses are the addresses of one of the gateway's links outside
// its tunnel (host bits kept, with their prefix length; IPv6 link-local
// ones left out).
type LinkAddresses struct {
	Link  string
	Addrs []netip.Prefix
}

// TunnelPeer is one remote gateway as the WireGuard device sees it.
type TunnelPeer struct {
	// Name identifies the peer in status and errors (the gateway name).
	Name string
	// PublicKey is the peer's WireGuard public key; unique among peers.
	PublicKey wgtypes.Key
	// Endpoint is the underlay address:port the peer listens on. A zero
	// value leaves the endpoint to be learned from the peer's packets.
	Endpoint netip.AddrPort
	// TunnelAddresses are the peer's own addresses (host prefixes): they
	// go into its AllowedIPs and each gets a kernel route on the device.
	TunnelAddresses []netip.Prefix
	// AllowedIPs are the prefixes homed at the peer: WireGuard sends
	// packets to them to this peer and accepts packets from them only from
	// this peer. They get no kernel route of their own (the tunnel's
	// routes do that). A prefix may be allowed to one peer only.
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval; 0 means the
	// dataplane's default, a negative value turns it off.
	Keepalive time.Duration
}

// DirectRoute is a prefix behind a directly connected router. The kernel
// resolves the outgoing interface from Via; several are a multipath route.
type DirectRoute struct {
	Prefix netip.Prefix
	Via    []netip.Addr
}

// Handoff hands packets from Sources to a twin gateway, their home: a
// policy rule per source sends whatever the tunnel would carry to Via on
// a shared LAN, so the packet enters WireGuard at the one gateway every
// receiver accepts it from.
type Handoff struct {
	// Twin is the name of the peer that is the sources' home.
	Twin string
	// Via are the twin's addresses on its LANs. For each family, the first
	// one on a subnet connected to this gateway is the next hop.
	Via []netip.Addr
	// Sources are the prefixes homed at the twin (no overlaps).
	Sources []netip.Prefix
}
