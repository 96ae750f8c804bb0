package dataplane

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
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

// Desired is everything one gateway's dataplane should have: plain data
// the desired package computes from the config and the learned routes.
// The zero value means "nothing": Set(ctx, Desired{}) tears the dataplane
// down. It holds a private key and prints without it.
type Desired = config.TunnelState

// Peer is one remote gateway.
type Peer = config.TunnelPeer

// DirectRoute is a prefix behind a directly connected router.
type DirectRoute = config.DirectRoute

// Handoff hands packets of prefixes homed at a twin gateway to it.
type Handoff = config.Handoff

// isZero reports whether d is the empty desired state (tear down).
func isZero(d Desired) bool {
	return d.PrivateKey == (wgtypes.Key{}) && d.ListenPort == 0 && len(d.Addresses) == 0 && d.MTU == 0 &&
		len(d.Peers) == 0 && len(d.Routes) == 0 && len(d.DirectRoutes) == 0 && len(d.Handoffs) == 0 &&
		len(d.LANPrefixes) == 0 && len(d.VBRNeighbors) == 0
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
