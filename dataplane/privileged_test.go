package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestTwoGatewaysPing(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	st, err := l.gws[0].dp.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode == "" || !st.Up || st.MTU != 1500-80 || st.ListenPort != labPort {
		t.Errorf("status: mode %q up %v mtu %d port %d; want a device up with mtu 1420 on %d", st.Mode, st.Up, st.MTU, st.ListenPort, labPort)
	}
	if len(st.Peers) != 1 || st.Peers[0].Name != "gw1" || st.Peers[0].LastHandshake.IsZero() ||
		st.Peers[0].ReceiveBytes == 0 || st.Peers[0].TransmitBytes == 0 ||
		st.Peers[0].Endpoint != netip.AddrPortFrom(l.gws[1].underlay, labPort) {
		t.Errorf("peer status after ping: %+v", st.Peers)
	}
	for _, r := range st.Routes {
		if !r.Installed {
			t.Errorf("route %s reported not installed", r.Prefix)
		}
	}
	if len(st.Routes) != 3 {
		t.Errorf("got %d routes in status, want 3 (peer tunnel address, its VTEP address and its VPC)", len(st.Routes))
	}
	if out := run(t, "ip", "-n", l.gws[0].ns, "-d", "link", "show", "dev", l.gws[0].dp.Overlay()); !strings.Contains(out, "vxlan id 7344") ||
		!strings.Contains(out, "local fd4f:6365:6e00::6440:1") || !strings.Contains(out, "dstport 4789") || !strings.Contains(out, "nolearning") ||
		!strings.Contains(out, "mtu 1350") || !strings.Contains(out, "02:4f:64:40:00:01") {
		t.Errorf("overlay device:\n%s", out)
	}
	if out := run(t, "ip", "-n", l.gws[0].ns, "route", "show", l.gws[1].lan.String()); !strings.Contains(out, "via 100.64.0.2 dev "+l.gws[0].dp.Overlay()) ||
		!strings.Contains(out, "onlink") || !strings.Contains(out, "src 100.64.0.1") {
		t.Errorf("vpc route: %s", out)
	}
	if !slices.Contains(nftTables(t, l.gws[0].ns), guardTable(l.device(0))) {
		t.Errorf("guard table %s missing", guardTable(l.device(0)))
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if v := readSysctl(t, l.gws[0].ns, k); v != "1" {
			t.Errorf("%s = %q in the gateway namespace, want 1", k, v)
		}
	}
}

func readSysctl(t *testing.T, ns, key string) string {
	var v []byte
	if err := inNetNS(nsPath(ns), func() (err error) { v, err = os.ReadFile("/proc/sys/" + key); return err }); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// sharedVPC gives the lab a VPC 10.99.0.0/16 attached to two gateways
// (gw1 and gw2, "twins" in one region): a host namespace with 10.99.0.10
// on a bridge, each twin with an address and a port on it. It returns the
// host's namespace.
func sharedVPC(t *testing.T, l *lab, twins ...int) string {
	host := newNetNS(t)
	run(t, "ip", "-n", host, "link", "add", "ocdpbr9", "type", "bridge")
	run(t, "ip", "-n", host, "addr", "add", "10.99.0.10/16", "dev", "ocdpbr9")
	run(t, "ip", "-n", host, "link", "set", "ocdpbr9", "up")
	for n, i := range twins {
		port := fmt.Sprintf("ocdph%d", n)
		run(t, "ip", "-n", l.gws[i].ns, "link", "add", "ocdpv99", "type", "veth", "peer", "name", port, "netns", host)
		run(t, "ip", "-n", host, "link", "set", port, "master", "ocdpbr9", "up")
		run(t, "ip", "-n", l.gws[i].ns, "addr", "add", fmt.Sprintf("10.99.0.%d/16", n+1), "dev", "ocdpv99")
		run(t, "ip", "-n", l.gws[i].ns, "link", "set", "ocdpv99", "up")
	}
	return host
}

// TestThreeGatewaysPing carries a VPC through two gateways (the overlay's
// ECMP) and IPv6 tunnel addresses and routes. The shared VPC's host sends
// through each twin in turn and every echo must be answered: with the
// prefix in one twin's WireGuard AllowedIPs (the design before the
// overlay), the far gateway drops everything the other twin sends.
func TestThreeGatewaysPing(t *testing.T) {
	l := newLab(t, 3)
	ctx := context.Background()
	shared := netip.MustParsePrefix("10.99.0.0/16")
	host := sharedVPC(t, l, 1, 2)
	for i := range l.gws {
		run(t, "ip", "-n", l.gws[i].ns, "addr", "add", fmt.Sprintf("fd00:%d::1/128", i+1), "dev", "lo")
	}
	for i := range l.gws {
		d := l.desired(i)
		d.Addresses = append(d.Addresses, netip.MustParsePrefix("fd00:64::"+string(rune('1'+i))+"/128"))
		for j := range d.Peers {
			idx := int(d.Peers[j].Name[2] - '0')
			d.Peers[j].AllowedIPs = append(d.Peers[j].AllowedIPs, netip.MustParsePrefix("fd00:64::"+string(rune('1'+idx))+"/128"))
			d.Routes = append(d.Routes, Route{Prefix: netip.MustParsePrefix("fd00:" + string(rune('1'+idx)) + "::/64"),
				Via: []netip.Addr{netip.MustParseAddr("fd00:64::" + string(rune('1'+idx)))}})
		}
		if i == 0 {
			d.Routes = append(d.Routes, Route{Prefix: shared, Via: []netip.Addr{l.gws[2].tunnel, l.gws[1].tunnel}})
		}
		if err := l.open(i).Set(ctx, d); err != nil {
			t.Fatalf("gw%d: Set: %v", i, err)
		}
	}
	l.pingMesh()
	// The host behind the twins reaches gw0's VPC through each twin, and
	// gw0 reaches the host (through whichever twin its ECMP hash picks).
	for n, via := range []string{"10.99.0.1", "10.99.0.2"} {
		run(t, "ip", "-n", host, "route", "replace", l.gws[0].lan.String(), "via", via)
		run(t, "ip", "-n", host, "route", "replace", "100.64.0.0/16", "via", via)
		p := newPinger(t, host)
		const count = 20
		got, err := p.ping(lanHost(l.gws[0]), count, 10*time.Millisecond, time.Second)
		if err != nil || got != count {
			t.Errorf("shared VPC host -> %s through twin gw%d: %d of %d answered (%v)", lanHost(l.gws[0]), n+1, got, count, err)
		}
	}
	waitPing(t, l.gws[0].ns, netip.MustParseAddr("10.99.0.10"), 5*time.Second)
	if out := run(t, "ip", "-n", l.gws[0].ns, "route", "show", shared.String()); strings.Count(out, "nexthop via") != 2 ||
		!strings.Contains(out, "via 100.64.0.2 dev "+l.gws[0].dp.Overlay()) || !strings.Contains(out, "via 100.64.0.3 dev "+l.gws[0].dp.Overlay()) {
		t.Errorf("shared prefix is not one route with a nexthop per twin:\n%s", out)
	}
	// IPv6 across the same tunnels: tunnel addresses and VPC prefixes.
	for i, g := range l.gws {
		for j := range l.gws {
			if i != j {
				waitPing(t, g.ns, netip.MustParseAddr(fmt.Sprintf("fd00:64::%d", j+1)), 5*time.Second)
				waitPing(t, g.ns, netip.MustParseAddr(fmt.Sprintf("fd00:%d::1", j+1)), 5*time.Second)
			}
		}
	}
	st, err := l.gws[0].dp.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Routes) != 11 {
		t.Errorf("gw0 has %d routes in status, want 11 (2 peers x v4/v6 tunnel address, VTEP address and VPC, and the shared prefix): %+v", len(st.Routes), st.Routes)
	}
	for _, r := range st.Routes {
		if !r.Installed {
			t.Errorf("route %s via %s reported not installed", r.Prefix, r.Via)
		}
		if r.Prefix == shared && (r.Via != l.gws[1].tunnel || r.Peer != "gw1") {
			t.Errorf("shared prefix status via %s peer %s, want the first gateway gw1", r.Via, r.Peer)
		}
	}
	out := run(t, "ip", "-n", l.gws[0].ns, "-6", "route", "show", "proto", "79")
	for _, want := range []string{"fd00:2::/64", "fd00:3::/64", "fd00:64::2", "fd00:64::3"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipv6 route %s missing in:\n%s", want, out)
		}
	}
}

// kernelState is what Set may change, as text, for before/after checks:
// the device, its global addresses, and every route through it (the IPv6
// link-local and local-table entries the kernel manages by itself, e.g.
// when DAD completes on the underlay, are left out).
func kernelState(t *testing.T, ns, dev string) string {
	ovl := OverlayName(dev)
	return run(t, "ip", "-n", ns, "-d", "link", "show", "dev", dev) +
		run(t, "ip", "-n", ns, "-d", "link", "show", "dev", ovl) +
		run(t, "bridge", "-n", ns, "fdb", "show", "dev", ovl) +
		run(t, "ip", "-n", ns, "neigh", "show", "dev", ovl, "nud", "permanent") +
		run(t, "ip", "-n", ns, "-4", "route", "show", "table", "all", "proto", "79") +
		strings.Join(nftTables(t, ns), " ") + nftGuardRules(t, ns, dev) +
		run(t, "ip", "-n", ns, "-4", "addr", "show", "dev", dev) +
		run(t, "ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "global") +
		run(t, "ip", "-n", ns, "-4", "route", "show", "table", "all", "dev", dev) +
		run(t, "ip", "-n", ns, "-6", "route", "show", "table", "main", "dev", dev) +
		run(t, "ip", "-n", ns, "-6", "route", "show", "table", "all", "proto", "79")
}

func handshakes(t *testing.T, dev string) map[wgtypes.Key]time.Time {
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Device(dev)
	if err != nil {
		t.Fatal(err)
	}
	out := map[wgtypes.Key]time.Time{}
	for _, p := range d.Peers {
		out[p.PublicKey] = p.LastHandshakeTime
	}
	return out
}

// netlinkEvents counts the link, address and route events about dev (or
// with opencen's protocol) in ns while fn runs and for settle after it.
// Kernel-managed IPv6 link-local entries are not counted.
func netlinkEvents(t *testing.T, ns, dev string, settle time.Duration, fn func()) []string {
	h, err := netns.GetFromPath(nsPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	link, err := nh.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	idx := link.Attrs().Index
	olink, err := nh.LinkByName(OverlayName(dev))
	if err != nil {
		t.Fatal(err)
	}
	oidx := olink.Attrs().Index
	done := make(chan struct{})
	links, addrs, routes := make(chan netlink.LinkUpdate, 64), make(chan netlink.AddrUpdate, 64), make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	if err := netlink.NeighSubscribeAt(h, neighs, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeAt(h, links, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrSubscribeAt(h, addrs, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteSubscribeAt(h, routes, done); err != nil {
		t.Fatal(err)
	}
	fn()
	var got []string
	timeout := time.After(settle)
	for {
		select {
		case u := <-neighs:
			if u.LinkIndex == oidx && u.State&netlink.NUD_PERMANENT != 0 {
				got = append(got, fmt.Sprintf("neigh type %d %s %s", u.Type, u.IP, u.HardwareAddr))
			}
		case u := <-links:
			if u.Attrs().Index == idx || u.Attrs().Index == oidx {
				got = append(got, fmt.Sprintf("link %s flags %v", u.Attrs().Name, u.Attrs().Flags))
			}
		case u := <-addrs:
			if (u.LinkIndex == idx || u.LinkIndex == oidx) && !u.LinkAddress.IP.IsLinkLocalUnicast() {
				got = append(got, fmt.Sprintf("addr %s new=%v", u.LinkAddress.String(), u.NewAddr))
			}
		case u := <-routes:
			if u.Protocol == RouteProtocol || (u.LinkIndex == idx && u.Table == 254 && (u.Dst == nil || !u.Dst.IP.IsLinkLocalUnicast())) {
				got = append(got, fmt.Sprintf("route type %d %v", u.Type, u.Dst))
			}
		case <-timeout:
			close(done)
			return got
		}
	}
}

func TestSetTwiceChangesNothing(t *testing.T) {
	l := newLab(t, 3)
	ctx := context.Background()
	l.up(ctx)
	l.pingMesh()
	dp, ns, dev := l.gws[0].dp, l.gws[0].ns, l.device(0)
	before, hs := kernelState(t, ns, dev), handshakes(t, dev)
	for k, v := range hs {
		if v.IsZero() {
			t.Fatalf("peer %s has no handshake after ping", k)
		}
	}
	events := netlinkEvents(t, ns, dev, 500*time.Millisecond, func() {
		if err := dp.Set(ctx, l.desired(0)); err != nil {
			t.Error(err)
		}
	})
	if len(events) != 0 {
		t.Errorf("second Set caused netlink events, want none: %v", events)
	}
	if after := kernelState(t, ns, dev); after != before {
		t.Errorf("kernel state changed by an identical Set:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Traffic after the Set would start a new handshake had a session been
	// reset.
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[2]), 5*time.Second)
	if after := handshakes(t, dev); !mapsEqual(after, hs) {
		t.Errorf("handshakes changed by an identical Set: before %v after %v", hs, after)
	}

	// Changing one peer (a new prefix behind gw2) rewrites that peer only:
	// gw1's session is not touched.
	d := l.desired(0)
	d.Routes = append(d.Routes, Route{Prefix: netip.MustParsePrefix("10.77.0.0/16"), Via: []netip.Addr{l.gws[2].tunnel}})
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[2]), 5*time.Second)
	after := handshakes(t, dev)
	gw1 := l.gws[1].key.PublicKey()
	if !after[gw1].Equal(hs[gw1]) {
		t.Errorf("unchanged peer gw1's handshake moved from %v to %v", hs[gw1], after[gw1])
	}
	if !strings.Contains(run(t, "ip", "-n", ns, "route", "show", "10.77.0.0/16"), "proto 79") {
		t.Error("new route 10.77.0.0/16 not installed")
	}
}

func mapsEqual(a, b map[wgtypes.Key]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !b[k].Equal(v) {
			return false
		}
	}
	return true
}

func TestRouteDeletedByHandComesBack(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	ns, lan := l.gws[0].ns, l.gws[1].lan.String()
	run(t, "ip", "-n", ns, "route", "del", lan)
	eventually(t, 5*time.Second, "route "+lan+" reinstalled", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

func TestAddressDeletedComesBack(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	ns, dev := l.gws[0].ns, l.device(0)
	run(t, "ip", "-n", ns, "addr", "del", l.gws[0].tunnel.String()+"/32", "dev", dev)
	eventually(t, 5*time.Second, "tunnel address restored", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "addr", "show", "dev", dev), l.gws[0].tunnel.String()+"/32")
	})
	waitPing(t, l.gws[1].ns, l.gws[0].tunnel, 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

func TestLinkFlapRepaired(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	ns, dev, lan := l.gws[0].ns, l.device(0), l.gws[1].lan.String()
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "down")
	eventually(t, 5*time.Second, "link up and routes back", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "link", "show", "dev", dev), ",UP") &&
			strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	// Down and straight up again by hand: the routes the kernel flushed
	// come back too.
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "down")
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "up")
	eventually(t, 5*time.Second, "routes back after down/up", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

// TestHelperRestartedAfterCrash: a helper killed outright (the device goes
// with it) is replaced by the watcher and peers are configured again.
func TestHelperRestartedAfterCrash(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	st, _ := l.gws[0].dp.Status()
	if st.HelperPID == 0 {
		t.Skip("kernel wireguard in use: no helper to crash")
	}
	if err := syscallKill(st.HelperPID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a new helper", func() bool {
		s, err := l.gws[0].dp.Status()
		return err == nil && s.HelperPID != 0 && s.HelperPID != st.HelperPID && len(s.Peers) == 1
	})
	waitPing(t, l.gws[0].ns, lanHost(l.gws[1]), 10*time.Second)
}

func TestCloseCleanupLeavesNothing(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	dp, ns, dev := l.gws[0].dp, l.gws[0].ns, l.device(0)
	st, _ := dp.Status()
	if err := dp.Close(true); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", ns, "link", "show"); strings.Contains(out, dev) || strings.Contains(out, OverlayName(dev)) {
		t.Errorf("device %s or overlay %s still present:\n%s", dev, OverlayName(dev), out)
	}
	if tables := nftTables(t, ns); len(tables) != 0 {
		t.Errorf("nftables tables left: %v", tables)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := run(t, "ip", "-n", ns, fam, "route", "show", "table", "all", "proto", "79"); strings.TrimSpace(out) != "" {
			t.Errorf("opencen routes left (%s):\n%s", fam, out)
		}
	}
	if _, err := os.Lstat(filepath.Join(UAPIDir, dev+".sock")); !os.IsNotExist(err) {
		t.Errorf("uapi socket left behind: %v", err)
	}
	if st.HelperPID != 0 && processAlive(st.HelperPID) {
		t.Errorf("helper %d still running", st.HelperPID)
	}
	if h := (&host{stateDir: l.stateDir}); h.findHelper(dev) != 0 {
		t.Errorf("a helper for %s is still running", dev)
	}
	ents, _ := os.ReadDir(l.stateDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), dev) {
			t.Errorf("state file %s left behind", e.Name())
		}
	}
	// The other gateway is unaffected; closing twice is fine.
	if err := dp.Close(true); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSetRejectsBadInput(t *testing.T) {
	l := newLab(t, 1)
	dp := l.open(0)
	d := l.desired(0)
	d.ListenPort = 0
	d.Routes = []Route{{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("100.64.9.9")}}}
	err := dp.Set(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "listen port 0") || !strings.Contains(err.Error(), "via 100.64.9.9") {
		t.Fatalf("Set(bad) = %v, want errors naming the port and the via", err)
	}
	if strings.Contains(err.Error(), l.gws[0].key.String()) {
		t.Fatal("error contains the private key")
	}
	if out := run(t, "ip", "-n", l.gws[0].ns, "link", "show"); strings.Contains(out, l.device(0)) {
		t.Error("a rejected Set created the device")
	}
}

// TestStaleSocketReplaced: a socket file left by a dead process (nobody
// listening) does not stop the device from coming up.
func TestStaleSocketReplaced(t *testing.T) {
	l := newLab(t, 1)
	sock := filepath.Join(UAPIDir, l.device(0)+".sock")
	if err := os.MkdirAll(UAPIDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	t.Cleanup(func() { _ = os.Remove(sock) })
	dp := l.open(0)
	d := l.desired(0)
	if err := dp.Set(context.Background(), d); err != nil {
		t.Fatalf("Set over a stale socket: %v", err)
	}
	st, err := dp.Status()
	if err != nil || st.HelperPID == 0 || st.ListenPort != labPort {
		t.Fatalf("status: %+v, %v", st, err)
	}
}
