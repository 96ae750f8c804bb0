package dataplane

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/internal/wgdev"
)

// RouteProtocol is the rtnetlink protocol number that marks every route and
// policy rule opencen installs ("proto 79" in `ip route`). iproute2
// reserves nothing at 79; add "79 opencen" to /etc/iproute2/rt_protos to
// see it by name.
const RouteProtocol = 79

// Metrics of the routes opencen installs, so that a connected or an
// operator's route for the same prefix keeps winning: IPv4 routes of the
// kernel and of `ip route add` have metric 0, so ours take 20 (as FRR's
// do); IPv6 connected routes have 256 and `ip -6 route add` gives 1024, so
// ours take 1044.
const (
	RouteMetric4 = 20
	RouteMetric6 = 1044
)

// DeviceGroup is the interface group of the WireGuard device. The policy
// rule that keeps local destinations local ("lookup main suppress_ifgroup
// 79", see the package docs) recognises routes into the tunnel by it.
const DeviceGroup = 79

// DefaultKeepalive is the persistent keepalive used when Peer.Keepalive is
// zero: it keeps NAT mappings open and lets both ends notice a dead peer.
const DefaultKeepalive = 25 * time.Second

// wireguardOverhead is subtracted from the underlay MTU (IPv6 outer header
// 40 + UDP 8 + WireGuard 32).
const wireguardOverhead = 80

// defaultMTU is used when no underlay interface can be found.
const defaultMTU = 1500 - wireguardOverhead

// Desired is everything one gateway's dataplane should have. It is plain
// data; the agent computes it from the config and the learned routes. The
// zero value means "nothing": Set(ctx, Desired{}) tears the dataplane down.
//
// Desired holds a private key: it never formats it (String and GoString
// redact it), and neither must callers.
type Desired struct {
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
	Peers []Peer
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
	// both gateways share (see the package docs).
	Handoffs []Handoff
}

// Peer is one remote gateway.
type Peer struct {
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
	// this peer. They get no kernel route of their own (Routes does that).
	// A prefix may be allowed to one peer only.
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval; 0 means
	// DefaultKeepalive, a negative value turns it off.
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

// String describes d without its private key.
func (d Desired) String() string {
	return fmt.Sprintf("dataplane.Desired{PrivateKey:<redacted> ListenPort:%d Addresses:%v MTU:%d Peers:%d Routes:%d DirectRoutes:%d Handoffs:%d}",
		d.ListenPort, d.Addresses, d.MTU, len(d.Peers), len(d.Routes), len(d.DirectRoutes), len(d.Handoffs))
}

// GoString is String: %#v must not print the key either.
func (d Desired) GoString() string { return d.String() }

// IsZero reports whether d is the empty desired state (tear down).
func (d Desired) IsZero() bool {
	return d.PrivateKey == (wgtypes.Key{}) && d.ListenPort == 0 && len(d.Addresses) == 0 && d.MTU == 0 &&
		len(d.Peers) == 0 && len(d.Routes) == 0 && len(d.DirectRoutes) == 0 && len(d.Handoffs) == 0
}

// DeviceName derives a host-unique interface name (15 characters, the
// kernel's limit) from id, e.g. "cen-demo/gw-beijing-1". Device names must
// be unique across all namespaces of a host because WireGuard's UAPI
// sockets share one folder.
func DeviceName(id string) string { return wgdev.Name(id) }

// validDeviceName checks an interface name the kernel and the UAPI socket
// path both accept.
func validDeviceName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("device name %q: must be 1 to 15 characters", name)
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c > '~' {
			return fmt.Errorf("device name %q: character %q not allowed", name, c)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("device name %q: not allowed", name)
	}
	return nil
}

func keepalive(p Peer) time.Duration {
	switch {
	case p.Keepalive == 0:
		return DefaultKeepalive
	case p.Keepalive < 0:
		return 0
	}
	return p.Keepalive
}

// routeMetric is the metric of our routes of p's family.
func routeMetric(p netip.Prefix) int {
	if p.Addr().Is4() {
		return RouteMetric4
	}
	return RouteMetric6
}
