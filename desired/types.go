package desired

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
)

// Routes are learned routes by prefix.
type Routes map[netip.Prefix]config.LearnedRoute

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

// Shaping is what the shaper enforces: the gateway's rate in bits per
// second toward every other region (0 unlimited), which prefix lives in
// which region, and the gateways' addresses whose traffic between them is
// exempt.
type Shaping struct {
	Regions      map[string]uint64
	Prefixes     map[netip.Prefix]string
	ControlAddrs []netip.Addr
}
