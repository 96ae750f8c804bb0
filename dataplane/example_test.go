package dataplane_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"

	"github.com/opencen/opencen/dataplane"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// How the agent wires the dataplane: one Dataplane per gateway, Set on
// every config or route change, Close(false) on a plain stop so traffic
// keeps flowing, Close(true) for --cleanup. The hidden subcommand
// `cend wireguard-device --device NAME --mtu N` parses its flags and calls
// dataplane.ServeUserspaceDevice.
func Example() {
	key, _ := wgtypes.GeneratePrivateKey() // the gateway's private_key_file
	twinKey, _ := wgtypes.GeneratePrivateKey()
	dp, err := dataplane.New(dataplane.Options{
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
		ID:       "cen-demo/gw-beijing-1",
		StateDir: "/run/opencen/dataplane",
	})
	if err != nil {
		return
	}
	// This gateway's twin in the region is the home of the second half of
	// the region's VPC: a packet from there that reaches this gateway is
	// handed to the twin over the LAN, and enters the tunnel there.
	twinHalf := netip.MustParsePrefix("10.10.128.0/17")
	_ = dp.Set(context.Background(), dataplane.Desired{
		PrivateKey: key,
		ListenPort: 51820,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []dataplane.Peer{{
			Name:            "gw-beijing-2",
			PublicKey:       twinKey.PublicKey(),
			Endpoint:        netip.MustParseAddrPort("192.0.2.21:51820"),
			TunnelAddresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
			AllowedIPs:      []netip.Prefix{twinHalf},
		}},
		Handoffs: []dataplane.Handoff{{
			Twin:    "gw-beijing-2",
			Via:     []netip.Addr{netip.MustParseAddr("10.10.0.3")},
			Sources: []netip.Prefix{twinHalf},
		}},
	})
	st, _ := dp.Status()
	_ = st.Peers // endpoint, last handshake, bytes per peer
	// CEN traffic leaves through the WireGuard device with its real
	// addresses visible: the shaper attaches there.
	_ = dp.Device()
	_ = dp.Close(false)
}
