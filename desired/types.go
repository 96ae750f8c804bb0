package desired

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Route is a prefix the gateway learned over BGP (the same fields as the
// routing package's learned route, so the agent converts one into the
// other as it is).
type Route struct {
	Prefix        netip.Prefix
	OriginRegion  string
	OriginNetwork string
	// NextHops are the tunnel addresses of the gateways announcing the
	// prefix, or, for a prefix learned from a local VBR (Direct), its
	// router's address.
	NextHops []netip.Addr
	Direct   bool
	// Gateways, for a Direct prefix, are the gateways of this region that
	// announce it too.
	Gateways []netip.Addr
	// Handoff marks a twin's LAN address (Prefix, a host route), not a
	// route; NextHops is the twin.
	Handoff bool
}

// Routes are learned routes by prefix.
type Routes map[netip.Prefix]Route

// View is what a gateway knows at a reconcile besides the config.
type View struct {
	// Routes are the routes to install (learned, and those kept across a
	// restart or held after a failure).
	Routes Routes
	// Down names the gateways whose BGP session is down.
	Down map[string]bool
	// LAN are the twins' LAN addresses by their tunnel address (from
	// their handoff announcements): a twin with none is home of nothing.
	LAN map[netip.Addr][]netip.Addr
}

// Secrets are what the agent read from key and password files; they are
// never formatted.
type Secrets struct {
	PrivateKey wgtypes.Key
	Passwords  map[string]string // VBR network -> TCP-MD5 password
}

// Tunnel is the dataplane's desired state (the fields of
// dataplane.Desired).
type Tunnel struct {
	PrivateKey   wgtypes.Key
	ListenPort   int
	Addresses    []netip.Prefix
	Peers        []Peer
	Routes       []netip.Prefix
	DirectRoutes []DirectRoute
	Handoffs     []Handoff
}

// String leaves the private key out.
func (t Tunnel) String() string {
	return fmt.Sprintf("desired.Tunnel{PrivateKey:<redacted> ListenPort:%d Addresses:%v Peers:%d Routes:%d DirectRoutes:%d Handoffs:%d}",
		t.ListenPort, t.Addresses, len(t.Peers), len(t.Routes), len(t.DirectRoutes), len(t.Handoffs))
}

// GoString is String: %#v must not print the key either.
func (t Tunnel) GoString() string { return t.String() }

// Peer is another gateway as the tunnel sees it (the fields of
// dataplane.Peer).
type Peer struct {
	Name            string
	PublicKey       wgtypes.Key
	Endpoint        netip.AddrPort
	TunnelAddresses []netip.Prefix
	// AllowedIPs are the prefixes homed at the peer.
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
}

// DirectRoute is a prefix behind a directly connected router (the fields
// of dataplane.DirectRoute).
type DirectRoute struct {
	Prefix netip.Prefix
	Via    []netip.Addr
}

// Handoff is the local prefixes homed at a twin and its LAN addresses
// (the fields of dataplane.Handoff).
type Handoff struct {
	Twin    string
	Via     []netip.Addr
	Sources []netip.Prefix
}

// Routing is the BGP speaker's desired state (the fields of
// routing.Desired).
type Routing struct {
	RouterID          netip.Addr
	LocalAddress      netip.Addr
	Region            string
	InstanceASN       uint32
	Gateways          []GatewayPeer
	Originate         []Origin
	VBRs              []VBRSession
	InstanceCIDRs     []NamedPrefix
	ProtectedPrefixes []netip.Prefix
	Connected         []netip.Prefix
	HandoffAddresses  []netip.Addr
}

// GatewayPeer is another gateway and what it may announce.
type GatewayPeer struct {
	Name     string
	Region   string
	Address  netip.Addr
	Entitled []Entitlement
}

// Entitlement is one network a gateway may announce routes for.
type Entitlement struct {
	Network string
	Region  string
	// VBR is false for a VPC (exact CIDRs), true for a VBR (an accept
	// list, nil for any prefix).
	VBR      bool
	Prefixes []netip.Prefix
}

// Origin is a VPC CIDR the gateway announces (the fields of
// routing.Origin).
type Origin struct {
	Prefix  netip.Prefix
	Region  string
	Network string
}

// NamedPrefix is a prefix with its network and region (the fields of
// routing.NamedPrefix).
type NamedPrefix struct {
	Prefix  netip.Prefix
	Region  string
	Network string
}

// VBRSession is an eBGP session with an on-premises router (the fields of
// routing.VBRSession). It holds a password: never format it.
type VBRSession struct {
	Network      string
	Region       string
	Neighbor     netip.Addr
	LocalAddress netip.Addr
	Port         uint16
	PeerASN      uint32
	Accept       []netip.Prefix
	MaxPrefixes  uint32
	Password     string
	BFD          bool
}

// Shaping is what the shaper enforces: the gateway's rate in bits per
// second toward every other region (0 unlimited), which prefix lives in
// which region, and the gateways' addresses whose traffic between them is
// exempt.
type Shaping struct {
	Regions      map[string]uint64
	Prefixes     map[netip.Prefix]string
	ControlAddrs []netip.Addr
}
