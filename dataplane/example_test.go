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
	peerKey, _ := wgtypes.GeneratePrivateKey()
	dp, err := dataplane.New(dataplane.Options{
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
		ID:       "cen-demo/gw-beijing-1",
		StateDir: "/run/opencen/dataplane",
	})
	if err != nil {
		return
	}
	_ = dp.Set(context.Background(), dataplane.Desired{
		PrivateKey: key,
		ListenPort: 51820,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []dataplane.Peer{{
			Name:       "gw-us-west-1",
			PublicKey:  peerKey.PublicKey(),
			Endpoint:   netip.MustParseAddrPort("192.0.2.21:51820"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		}},
		Routes: []dataplane.Route{{
			Prefix: netip.MustParsePrefix("10.20.0.0/16"),
			Via:    []netip.Addr{netip.MustParseAddr("100.64.0.2")},
		}},
	})
	st, _ := dp.Status()
	_ = st.Peers // endpoint, last handshake, bytes per peer
	// IPv4 CEN traffic crosses the VXLAN overlay with its real addresses:
	// the shaper attaches there.
	_ = dp.Overlay()
	_ = dp.Close(false)
}
