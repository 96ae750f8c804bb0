package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var ctx = context.Background()

func mustKey(t testing.TB) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixture: this gateway plus two peers, B and C, with one VPC each and a
// prefix carried by both.
type fixture struct {
	self, b, c wgtypes.Key
}

func newFixture(t testing.TB) fixture { return fixture{mustKey(t), mustKey(t), mustKey(t)} }

func (f fixture) desired() Desired {
	return Desired{
		PrivateKey: f.self,
		ListenPort: 51820,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []Peer{
			{Name: "b", PublicKey: f.b.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}},
			{Name: "c", PublicKey: f.c.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.3:51820"),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}},
		},
		Routes: []Route{
			{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("100.64.0.2")}},
			{Prefix: netip.MustParsePrefix("10.3.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("100.64.0.3")}},
			{Prefix: netip.MustParsePrefix("10.23.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3")}},
		},
	}
}

func TestSetBuildsEverything(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if k.started != 1 {
		t.Errorf("helpers started: %d, want 1 (no kernel wireguard)", k.started)
	}
	l := k.links["ocdptest0"]
	if l.Attrs().MTU != 1420 || l.Attrs().Flags&1 == 0 {
		t.Errorf("link mtu %d flags %v, want 1420 and up", l.Attrs().MTU, l.Attrs().Flags)
	}
	// The overlay: vxlan, VNI, port, local VTEP address, MTU, derived MAC.
	ovl, ok := k.links[OverlayName("ocdptest0")].(*netlink.Vxlan)
	if !ok {
		t.Fatalf("no vxlan overlay %s: links %v", OverlayName("ocdptest0"), k.links)
	}
	if ovl.VxlanId != OverlayVNI || ovl.Port != OverlayPort || ovl.Learning || ipAddr(ovl.SrcAddr) != netip.MustParseAddr("fd4f:6365:6e00::100.64.0.1") ||
		ovl.MTU != 1420-70 || ovl.HardwareAddr.String() != "02:4f:64:40:00:01" || ovl.Flags&net.FlagUp == 0 {
		t.Errorf("overlay %+v: want vni %d port %d local fd4f:6365:6e00::6440:1 mtu 1350 mac 02:4f:64:40:00:01, up, no learning", ovl, OverlayVNI, OverlayPort)
	}
	if d.Overlay() != ovl.Name {
		t.Errorf("Overlay() = %q, want %q", d.Overlay(), ovl.Name)
	}
	// Kernel routes: IPv4 (peers' tunnel addresses and route prefixes)
	// via the gateways on the overlay, onlink, src the tunnel address; a
	// prefix with two gateways is one route with two nexthops. The VTEP
	// addresses are on the WireGuard device.
	if len(k.routes) != 7 {
		t.Errorf("%d routes, want 7: %v", len(k.routes), k.routes)
	}
	src := netip.MustParseAddr("100.64.0.1").AsSlice()
	for _, r := range k.routes {
		p := routeKey(&r)
		switch {
		case r.Protocol != RouteProtocol:
			t.Errorf("route %v: proto %d, want %d", r, r.Protocol, RouteProtocol)
		case p.Addr().Is6():
			if r.LinkIndex != l.Attrs().Index || !vtepPrefix.Contains(p.Addr()) || p.Bits() != 128 {
				t.Errorf("route %v: want a VTEP /128 on the wireguard device %d", r, l.Attrs().Index)
			}
		case p == netip.MustParsePrefix("10.23.0.0/16"):
			if len(r.MultiPath) != 2 || !r.Src.Equal(src) || r.MultiPath[0].LinkIndex != ovl.Index || r.MultiPath[1].LinkIndex != ovl.Index ||
				r.MultiPath[0].Flags&int(netlink.FLAG_ONLINK) == 0 || r.MultiPath[1].Flags&int(netlink.FLAG_ONLINK) == 0 ||
				r.MultiPath[0].Gw.Equal(r.MultiPath[1].Gw) {
				t.Errorf("shared route %v: want two onlink nexthops (b and c) on the overlay %d, src 100.64.0.1", r, ovl.Index)
			}
		default:
			if r.LinkIndex != ovl.Index || r.Gw == nil || r.Flags&int(netlink.FLAG_ONLINK) == 0 || !r.Src.Equal(src) || len(r.MultiPath) != 0 {
				t.Errorf("route %v: want via a gateway dev overlay %d onlink src 100.64.0.1", r, ovl.Index)
			}
		}
	}
	if a := k.addrs[l.Attrs().Index]; len(a) != 2 || !slices.Contains(a, netip.MustParsePrefix("fd4f:6365:6e00::100.64.0.1/128")) {
		t.Errorf("device addresses %v: want the tunnel address and the VTEP address", a)
	}
	if got, want := k.neighsOf(ovl.Name, syscall.AF_BRIDGE), []string{"fd4f:6365:6e00::6440:2 02:4f:64:40:00:02", "fd4f:6365:6e00::6440:3 02:4f:64:40:00:03"}; !slices.Equal(got, want) {
		t.Errorf("overlay fdb %v, want %v", got, want)
	}
	if got, want := k.neighsOf(ovl.Name, syscall.AF_INET), []string{"100.64.0.2 02:4f:64:40:00:02", "100.64.0.3 02:4f:64:40:00:03"}; !slices.Equal(got, want) {
		t.Errorf("overlay neighbours %v, want %v", got, want)
	}
	for _, n := range k.neighs {
		if n.State&netlink.NUD_PERMANENT == 0 || (n.Family == syscall.AF_BRIDGE && n.Flags&netlink.NTF_SELF == 0) {
			t.Errorf("neighbour %+v: want permanent (and self for fdb)", n)
		}
	}
	if k.guards["opencen_ocdptest0"] != "ocdptest0" {
		t.Errorf("guards %v: want table opencen_ocdptest0 for device ocdptest0", k.guards)
	}
	if k.sysctls["net.ipv4.ip_forward"] != "1" || k.sysctls["net.ipv6.conf.all.forwarding"] != "1" || k.sysctls["net.ipv4.fib_multipath_hash_policy"] != "1" {
		t.Errorf("sysctls: %v", k.sysctls)
	}
	dev := k.devices["ocdptest0"]
	if len(dev.Peers) != 2 || dev.ListenPort != 51820 {
		t.Fatalf("device: %d peers, port %d", len(dev.Peers), dev.ListenPort)
	}
	// WireGuard carries only gateway-to-gateway packets: each peer is
	// allowed its tunnel address and its VTEP address, no route prefix.
	for _, p := range dev.Peers {
		if p.PersistentKeepaliveInterval != DefaultKeepalive {
			t.Errorf("keepalive %v, want %v", p.PersistentKeepaliveInterval, DefaultKeepalive)
		}
		got := ipNetsToPrefixes(p.AllowedIPs)
		if len(got) != 2 || !got[0].Addr().Is4() || got[0].Bits() != 32 || got[1] != netip.PrefixFrom(vtepAddr(got[0].Addr()), 128) {
			t.Errorf("peer allowed ips %v: want its tunnel address and VTEP address only", got)
		}
	}
}

// TestIPv6RoutesStayInAllowedIPs: IPv6 prefixes are still carried by
// WireGuard's cryptokey routing: one gateway per prefix (hashed), the
// prefix in that peer's AllowedIPs, the route on the WireGuard device.
func TestIPv6RoutesStayInAllowedIPs(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	f := newFixture(t)
	want := f.desired()
	want.Addresses = append(want.Addresses, netip.MustParsePrefix("fd00:64::1/128"))
	want.Peers[0].AllowedIPs = append(want.Peers[0].AllowedIPs, netip.MustParsePrefix("fd00:64::2/128"))
	want.Peers[1].AllowedIPs = append(want.Peers[1].AllowedIPs, netip.MustParsePrefix("fd00:64::3/128"))
	shared := netip.MustParsePrefix("fd00:23::/64")
	vias := []netip.Addr{netip.MustParseAddr("fd00:64::2"), netip.MustParseAddr("fd00:64::3")}
	want.Routes = append(want.Routes, Route{Prefix: shared, Via: vias})
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	chosen := PickGateway(shared, vias)
	owner := f.b.PublicKey()
	if chosen == vias[1] {
		owner = f.c.PublicKey()
	}
	for _, p := range k.devices["ocdptest0"].Peers {
		has := slices.Contains(ipNetsToPrefixes(p.AllowedIPs), shared)
		if has != (p.PublicKey == owner) {
			t.Errorf("peer %s: shared ipv6 prefix in allowed ips = %v, want only on the hashed choice %s", p.PublicKey, has, chosen)
		}
	}
	r, ok := k.routes[routeID{254, shared}]
	if !ok || r.LinkIndex != k.links["ocdptest0"].Attrs().Index || r.Gw != nil || !r.Src.Equal(netip.MustParseAddr("fd00:64::1").AsSlice()) {
		t.Errorf("ipv6 route %v: want dev wireguard, src fd00:64::1", r)
	}
}

// TestIPv4RouteValidation: IPv4 routes need IPv4 gateways and an IPv4
// tunnel address of this gateway (the overlay's).
func TestIPv4RouteValidation(t *testing.T) {
	want := newFixture(t).desired()
	want.Routes = append(want.Routes, Route{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("fd00:64::2")}})
	_, err := resolve(want)
	if err == nil || !strings.Contains(err.Error(), "route 10.9.0.0/16: via fd00:64::2: an ipv4 route needs ipv4 gateways") {
		t.Errorf("resolve = %v, want the ipv6 via of an ipv4 route named", err)
	}
	want = newFixture(t).desired()
	want.Addresses = []netip.Prefix{netip.MustParsePrefix("fd00:64::1/128")}
	_, err = resolve(want)
	if err == nil || !strings.Contains(err.Error(), "route 10.2.0.0/16: ipv4 routes need an ipv4 tunnel address") {
		t.Errorf("resolve = %v, want the missing ipv4 tunnel address named", err)
	}
}

func TestOverlayNames(t *testing.T) {
	dev := DeviceName("cen/gw-1")
	if got := OverlayName(dev); got != "ocv"+dev[3:] {
		t.Errorf("OverlayName(%s) = %s, want ocv + the same hex", dev, got)
	}
	a, b := OverlayName("ocdptest0"), OverlayName("ocdptest1")
	if len(a) != 15 || a == b || validDeviceName(a) != nil || a == "ocdptest0" {
		t.Errorf("OverlayName of custom devices: %q %q", a, b)
	}
	if m := overlayMAC(netip.MustParseAddr("100.64.0.7")).String(); m != "02:4f:64:40:00:07" {
		t.Errorf("overlay mac %s", m)
	}
	if v := vtepAddr(netip.MustParseAddr("100.64.0.7")); v != netip.MustParseAddr("fd4f:6365:6e00::6440:7") {
		t.Errorf("vtep address %s", v)
	}
}

func TestSetTwiceWritesNothing(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	before := k.writes
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.writes != before {
		t.Errorf("second identical Set made %d writes, want 0", k.writes-before)
	}
	// The peers' order and Via order do not matter either.
	want.Peers[0], want.Peers[1] = want.Peers[1], want.Peers[0]
	want.Routes[2].Via[0], want.Routes[2].Via[1] = want.Routes[2].Via[1], want.Routes[2].Via[0]
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.writes != before {
		t.Errorf("reordered Set made %d writes, want 0", k.writes-before)
	}
}

func TestChangingOnePeerTouchesOnlyIt(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	f := newFixture(t)
	want := f.desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	k.configured = nil
	want.Peers[1].Endpoint = netip.MustParseAddrPort("192.0.2.33:51820")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if len(k.configured) != 1 || len(k.configured[0].Peers) != 1 {
		t.Fatalf("configs written: %+v, want one with one peer", k.configured)
	}
	pc := k.configured[0].Peers[0]
	if pc.PublicKey != f.c.PublicKey() || !pc.UpdateOnly || pc.Endpoint.String() != "192.0.2.33:51820" ||
		pc.ReplaceAllowedIPs || pc.PersistentKeepaliveInterval != nil || k.configured[0].PrivateKey != nil {
		t.Errorf("peer config %+v: want only c's endpoint", pc)
	}
	for _, p := range k.devices["ocdptest0"].Peers {
		if p.PublicKey == f.b.PublicKey() && !p.LastHandshakeTime.Equal(handshakeAt) {
			t.Error("peer b was touched")
		}
	}
}

func TestRemovedPeerAndRouteAreDeleted(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	want.Peers = want.Peers[:1]
	want.Routes = want.Routes[:1]
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if n := len(k.devices["ocdptest0"].Peers); n != 1 {
		t.Errorf("%d peers, want 1", n)
	}
	if len(k.routes) != 3 {
		t.Errorf("routes %v, want 100.64.0.2/32, its VTEP address and 10.2.0.0/16", k.routes)
	}
	ovl := OverlayName("ocdptest0")
	if got := k.neighsOf(ovl, syscall.AF_BRIDGE); len(got) != 1 || !strings.HasPrefix(got[0], "fd4f:6365:6e00::6440:2 ") {
		t.Errorf("overlay fdb %v: want only b's entry", got)
	}
	if got := k.neighsOf(ovl, syscall.AF_INET); len(got) != 1 || !strings.HasPrefix(got[0], "100.64.0.2 ") {
		t.Errorf("overlay neighbours %v: want only b's entry", got)
	}
}

func TestAddBeforeDeleteOwnedOnlyKeepGoing(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	idx := k.links["ocdptest0"].Attrs().Index
	// Someone else's route in the same table, and a stale one of ours.
	foreign := netlink.Route{LinkIndex: idx, Dst: ipnetOf("10.50.0.0/16"), Protocol: 4, Table: 254}
	stale := netlink.Route{LinkIndex: idx, Dst: ipnetOf("10.60.0.0/16"), Protocol: RouteProtocol, Table: 254}
	k.routes[routeID{254, netip.MustParsePrefix("10.50.0.0/16")}] = foreign
	k.routes[routeID{254, netip.MustParsePrefix("10.60.0.0/16")}] = stale
	want.Routes = append(want.Routes,
		Route{Prefix: netip.MustParsePrefix("10.70.0.0/16"), Via: want.Routes[0].Via},
		Route{Prefix: netip.MustParsePrefix("10.80.0.0/16"), Via: want.Routes[0].Via})
	k.failRoute[netip.MustParsePrefix("10.70.0.0/16")] = syscall.ENOMEM
	k.ops = nil
	// Routes appearing by another's hand are found by the next dump (the
	// periodic resync's, which trusts no cache).
	d.drift.Add(1)
	err := d.Set(ctx, want)
	if err == nil || !strings.Contains(err.Error(), "10.70.0.0/16") || !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("Set = %v, want the failed route named and wrapped", err)
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.80.0.0/16")}]; !ok {
		t.Error("10.80.0.0/16 not installed after another route failed")
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.60.0.0/16")}]; ok {
		t.Error("stale opencen route not deleted")
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.50.0.0/16")}]; !ok {
		t.Error("a route opencen does not own was deleted")
	}
	lastAdd, firstDel := -1, len(k.ops)
	for i, op := range k.ops {
		if strings.HasPrefix(op, "replace") {
			lastAdd = i
		} else if i < firstDel {
			firstDel = i
		}
	}
	if lastAdd > firstDel {
		t.Errorf("a delete came before an add: %v", k.ops)
	}
}

func ipnetOf(s string) *net.IPNet { n := prefixToIPNet(netip.MustParsePrefix(s)); return &n }

func TestDeleteAlreadyGoneIsSuccess(t *testing.T) {
	k := newFakeKernel()
	r := netlink.Route{Dst: ipnetOf("10.9.0.0/16"), Table: 254, Protocol: RouteProtocol}
	if err := applyRoutes([]routeWriter{k}, nil, []netlink.Route{r}); err != nil {
		t.Fatalf("deleting an absent route: %v", err)
	}
}

func TestDumpInterruptedIsRetried(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	k.dumpInterrupts = 2
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatalf("Set with 2 interrupted dumps: %v", err)
	}
	k.dumpInterrupts = 100
	d.drift.Add(1) // the next Set dumps
	err := d.Set(ctx, newFixture(t).desired())
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("Set with endless interruptions = %v, want ErrDumpInterrupted", err)
	}
}

// repairDrift does what the netlink watchers do on an event that may mean
// drift (the fake kernel sends none): the route caches are no longer
// trusted, and a repair runs.
func repairDrift(d *Dataplane) {
	d.drift.Add(1)
	d.repair()
}

func TestRepairRestoresDrift(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	configured := len(k.configured)
	delete(k.routes, routeID{254, netip.MustParsePrefix("10.2.0.0/16")})
	idx := k.links["ocdptest0"].Attrs().Index
	k.addrs[idx] = nil
	repairDrift(d)
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.2.0.0/16")}]; !ok {
		t.Error("deleted route not repaired")
	}
	if len(k.addrs[idx]) != 2 {
		t.Error("deleted address not repaired")
	}
	k.setDown("ocdptest0")
	repairDrift(d)
	if k.links["ocdptest0"].Attrs().Flags&1 == 0 || len(k.routes) != 7 {
		t.Errorf("link flap not repaired: flags %v, %d routes", k.links["ocdptest0"].Attrs().Flags, len(k.routes))
	}
	if len(k.configured) != configured {
		t.Error("repairs rewrote wireguard peers that did not change")
	}
	// A crashed helper leaves a stale socket; repair replaces both.
	k.crashHelper("ocdptest0")
	repairDrift(d)
	if k.started != 2 || k.sockets["ocdptest0"] != sockLive || len(k.devices["ocdptest0"].Peers) != 2 || len(k.routes) != 7 {
		t.Errorf("crashed helper not replaced: started %d, socket %v", k.started, k.sockets["ocdptest0"])
	}
}

// TestRepairRestoresOverlayDrift: the overlay link deleted or set down,
// FDB and neighbour entries deleted, the guard table deleted: repair puts
// each back, and writes nothing when nothing drifted.
func TestRepairRestoresOverlayDrift(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	ovl := OverlayName("ocdptest0")
	snapshot := func() string {
		return fmt.Sprint(len(k.routes), k.neighsOf(ovl, syscall.AF_BRIDGE), k.neighsOf(ovl, syscall.AF_INET), k.guards, k.links[ovl] != nil && k.links[ovl].Attrs().Flags&net.FlagUp != 0)
	}
	good := snapshot()
	for _, drift := range []struct {
		name string
		do   func()
	}{
		{"overlay deleted", func() { k.mu.Lock(); k.delLinkLocked(ovl); k.mu.Unlock() }},
		{"overlay down", func() { k.setDown(ovl) }},
		{"fdb and neighbour entries deleted", func() {
			for id := range k.neighs {
				delete(k.neighs, id)
			}
		}},
		{"guard table deleted", func() { delete(k.guards, "opencen_ocdptest0") }},
	} {
		drift.do()
		if snapshot() == good {
			t.Fatalf("%s: drift not visible", drift.name)
		}
		repairDrift(d)
		if got := snapshot(); got != good {
			t.Errorf("%s: after repair %s, want %s", drift.name, got, good)
		}
	}
	before := k.writes
	repairDrift(d)
	if k.writes != before {
		t.Errorf("repair without drift wrote %d things", k.writes-before)
	}
	// A stale entry with an overlay MAC (a peer removed while the agent
	// was down) is deleted; an entry that is not ours is left.
	k.mu.Lock()
	oidx := k.links[ovl].Attrs().Index
	k.mu.Unlock()
	stale := netlink.Neigh{LinkIndex: oidx, Family: syscall.AF_INET, State: netlink.NUD_PERMANENT, IP: net.ParseIP("100.64.0.9"), HardwareAddr: overlayMAC(netip.MustParseAddr("100.64.0.9"))}
	foreign := netlink.Neigh{LinkIndex: oidx, Family: syscall.AF_INET, State: netlink.NUD_PERMANENT, IP: net.ParseIP("100.64.0.10"), HardwareAddr: net.HardwareAddr{0x52, 0, 0, 0, 0, 1}}
	_ = k.NeighSet(&stale)
	_ = k.NeighSet(&foreign)
	repairDrift(d)
	if _, ok := k.neighs[neighKey(&stale)]; ok {
		t.Error("stale overlay neighbour not deleted")
	}
	if _, ok := k.neighs[neighKey(&foreign)]; !ok {
		t.Error("a neighbour opencen does not own was deleted")
	}
}

func TestAdoptsRunningHelper(t *testing.T) {
	k := newFakeKernel()
	want := newFixture(t).desired()
	if err := newFakeDataplane(k, "ocdptest0").Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	before := k.writes
	d2 := newFakeDataplane(k, "ocdptest0")
	if err := d2.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.started != 1 || k.writes != before {
		t.Errorf("second instance started %d helpers and made %d writes, want adoption with none", k.started-1, k.writes-before)
	}
	st, err := d2.Status()
	if err != nil || st.HelperPID != k.helpers["ocdptest0"] || st.Mode != ModeUserspace {
		t.Errorf("status after adoption: %+v %v", st, err)
	}
}

func TestKernelWireguardPreferred(t *testing.T) {
	k := newFakeKernel()
	k.kernelWG = true
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if k.started != 0 || k.links["ocdptest0"].Type() != "wireguard" {
		t.Errorf("kernel module available but helpers started: %d", k.started)
	}
}

func TestStaleSocketRemovedBeforeStart(t *testing.T) {
	k := newFakeKernel()
	k.sockets["ocdptest0"] = sockStale
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if k.sockets["ocdptest0"] != sockLive {
		t.Error("stale socket not replaced")
	}
	// A live socket with no link here belongs to another namespace.
	k2 := newFakeKernel()
	k2.sockets["ocdptest0"] = sockLive
	err := newFakeDataplane(k2, "ocdptest0").Set(ctx, newFixture(t).desired())
	if err == nil || !strings.Contains(err.Error(), "another namespace") {
		t.Errorf("Set with a foreign live socket = %v", err)
	}
}

func TestTeardown(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if err := d.Set(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if len(k.links) != 0 || len(k.routes) != 0 || len(k.helpers) != 0 || len(k.sockets) != 0 || len(k.guards) != 0 || len(k.neighs) != 0 {
		t.Errorf("zero Desired left links %v routes %d helpers %v sockets %v guards %v neighbours %d", k.links, len(k.routes), k.helpers, k.sockets, k.guards, len(k.neighs))
	}
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(false); err != nil {
		t.Fatal(err)
	}
	if len(k.links) != 2 || len(k.routes) != 7 || len(k.helpers) != 1 || len(k.guards) != 1 || len(k.neighs) != 4 {
		t.Errorf("Close(false) removed state: links %v routes %d guards %v neighbours %d", k.links, len(k.routes), k.guards, len(k.neighs))
	}
	d2 := newFakeDataplane(k, "ocdptest0")
	if err := d2.Close(true); err != nil {
		t.Fatal(err)
	}
	if len(k.links) != 0 || len(k.routes) != 0 || len(k.helpers) != 0 || len(k.sockets) != 0 || len(k.guards) != 0 || len(k.neighs) != 0 {
		t.Error("Close(true) left state")
	}
	if err := d.Set(ctx, newFixture(t).desired()); err == nil {
		t.Error("Set after Close succeeded")
	}
}

func TestForeignLinkUntouched(t *testing.T) {
	k := newFakeKernel()
	k.addLinkLocked(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ocdptest0"}})
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err == nil || !strings.Contains(err.Error(), "not wireguard") {
		t.Errorf("Set over a veth = %v", err)
	}
	if err := d.Close(true); err == nil || len(k.links) != 1 {
		t.Errorf("Close(true) over a veth = %v, links %v", err, k.links)
	}
	// The same for a foreign link with the overlay's name.
	k2 := newFakeKernel()
	k2.addLinkLocked(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: OverlayName("ocdptest0")}})
	d2 := newFakeDataplane(k2, "ocdptest0")
	if err := d2.Set(ctx, newFixture(t).desired()); err == nil || !strings.Contains(err.Error(), "not vxlan") {
		t.Errorf("Set over a veth named like the overlay = %v", err)
	}
	if _, ok := k2.links[OverlayName("ocdptest0")].(*netlink.Veth); !ok {
		t.Error("the foreign link was replaced")
	}
}

func TestMTU(t *testing.T) {
	k := newFakeKernel()
	k.underlayMTU = 9000
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if m := k.links["ocdptest0"].Attrs().MTU; m != 8920 {
		t.Errorf("mtu %d, want underlay 9000 - 80", m)
	}
	if m := k.links[OverlayName("ocdptest0")].Attrs().MTU; m != 8850 {
		t.Errorf("overlay mtu %d, want 9000 - 80 - 70", m)
	}
	want.MTU = 1380
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if m := k.links["ocdptest0"].Attrs().MTU; m != 1380 {
		t.Errorf("mtu %d, want 1380", m)
	}
	if m := k.links[OverlayName("ocdptest0")].Attrs().MTU; m != 1310 {
		t.Errorf("overlay mtu %d, want 1380 - 70", m)
	}
}

func TestResolveReportsEveryProblem(t *testing.T) {
	f := newFixture(t)
	d := f.desired()
	d.ListenPort = 70000
	d.MTU = 100
	d.Peers = append(d.Peers, Peer{Name: "dup", PublicKey: f.b.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}})
	d.Peers = append(d.Peers, Peer{Name: "self", PublicKey: f.self.PublicKey()})
	d.Routes = append(d.Routes,
		Route{Prefix: netip.MustParsePrefix("10.9.0.1/16"), Via: d.Routes[0].Via},
		Route{Prefix: netip.MustParsePrefix("10.10.0.0/16")},
		Route{Prefix: netip.MustParsePrefix("10.11.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("100.64.9.9")}},
		Route{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Via: d.Routes[1].Via},
	)
	_, err := resolve(d)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"listen port 70000", "mtu 100", "peer dup: public key already used by peer b",
		"peer dup: allowed ip 100.64.0.2/32: already allowed for peer b", "peer self: public key is this gateway's own",
		"route 10.9.0.1/16", "route 10.10.0.0/16: no via", "via 100.64.9.9 is in no peer", "route 10.2.0.0/16: already routed to peer b",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), f.self.String()) {
		t.Error("error contains the private key")
	}
}

func TestDesiredNeverPrintsKey(t *testing.T) {
	d := newFixture(t).desired()
	for _, s := range []string{fmt.Sprint(d), fmt.Sprintf("%+v", d), fmt.Sprintf("%#v", d), fmt.Sprintf("%v", &d)} {
		if strings.Contains(s, d.PrivateKey.String()) {
			t.Fatalf("formatted Desired contains the private key: %s", s)
		}
	}
}

func TestPickViaStableAndSpread(t *testing.T) {
	a, b := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3")
	count := map[netip.Addr]int{}
	for i := range 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		v := PickGateway(p, []netip.Addr{a, b})
		if v != PickGateway(p, []netip.Addr{b, a}) {
			t.Fatalf("choice for %s depends on order", p)
		}
		count[v]++
	}
	if count[a] < 400 || count[b] < 400 {
		t.Errorf("1000 prefixes spread %d/%d, want roughly even", count[a], count[b])
	}
}

func TestDeviceName(t *testing.T) {
	a, b := DeviceName("cen/gw-1"), DeviceName("cen/gw-2")
	if len(a) != 15 || a == b || a != DeviceName("cen/gw-1") || validDeviceName(a) != nil {
		t.Errorf("DeviceName: %q %q", a, b)
	}
	for _, bad := range []string{"", "0123456789abcdef", "a/b", "a b"} {
		if validDeviceName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestStatusWithFakes(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	delete(k.routes, routeID{254, netip.MustParsePrefix("10.3.0.0/16")})
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 2 || st.Peers[0].Name == "" || st.Peers[0].LastHandshake.IsZero() {
		t.Errorf("peers: %+v", st.Peers)
	}
	for _, r := range st.Routes {
		if r.Installed == (r.Prefix.String() == "10.3.0.0/16") {
			t.Errorf("route %s installed=%v", r.Prefix, r.Installed)
		}
		if r.Prefix.String() == "10.23.0.0/16" && (r.Peer != "b" || r.Via != netip.MustParseAddr("100.64.0.2")) {
			t.Errorf("shared route status %+v: want the first gateway, b via 100.64.0.2", r)
		}
	}
	// A multipath route that lost a nexthop is not installed as wanted.
	k.mu.Lock()
	r := k.routes[routeID{254, netip.MustParsePrefix("10.23.0.0/16")}]
	r.MultiPath = r.MultiPath[:1]
	k.routes[routeID{254, netip.MustParsePrefix("10.23.0.0/16")}] = r
	k.mu.Unlock()
	st, _ = d.Status()
	for _, r := range st.Routes {
		if r.Prefix.String() == "10.23.0.0/16" && r.Installed {
			t.Error("a multipath route with one nexthop missing reported installed")
		}
	}
	_ = time.Second
}

// TestSetTrustsItsRouteCacheUntilDrift: with nothing drifted, a Set diffs
// against what the last one installed instead of dumping the tables, and
// writes only the change; a drift (as the watchers report it) makes the
// next Set dump and repair.
func TestSetTrustsItsRouteCacheUntilDrift(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	dumps := k.routeDumps
	want.Routes = append(want.Routes, Route{Prefix: netip.MustParsePrefix("10.70.0.0/16"), Via: want.Routes[0].Via})
	want.Routes = slices.Delete(want.Routes, 1, 2) // 10.3.0.0/16
	k.ops = nil
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.routeDumps != dumps {
		t.Errorf("a Set without drift dumped the route tables %d times", k.routeDumps-dumps)
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.70.0.0/16")}]; !ok {
		t.Error("new route not installed from the cache's diff")
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.3.0.0/16")}]; ok {
		t.Error("route no longer wanted not deleted from the cache's diff")
	}
	if len(k.ops) != 2 {
		t.Errorf("route writes %v, want one install and one delete", k.ops)
	}
	// A route deleted by hand: unseen until a drift is reported.
	delete(k.routes, routeID{254, netip.MustParsePrefix("10.2.0.0/16")})
	repairDrift(d)
	if k.routeDumps == dumps {
		t.Error("a repair after drift did not dump the route tables")
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.2.0.0/16")}]; !ok {
		t.Error("route deleted by hand not repaired after drift")
	}
	// A failed write leaves nothing trusted: the next Set dumps.
	want.Routes = append(want.Routes, Route{Prefix: netip.MustParsePrefix("10.80.0.0/16"), Via: want.Routes[0].Via})
	k.failRoute[netip.MustParsePrefix("10.80.0.0/16")] = syscall.ENOMEM
	if err := d.Set(ctx, want); err == nil {
		t.Fatal("Set with a failing route succeeded")
	}
	delete(k.failRoute, netip.MustParsePrefix("10.80.0.0/16"))
	dumps = k.routeDumps
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.routeDumps == dumps {
		t.Error("the Set after a failed write trusted the cache")
	}
}

// TestHomeRanges: a peer's home range is in its AllowedIPs with no route
// of its own, and home routes inside it add no AllowedIPs entries.
func TestHomeRanges(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	f := newFixture(t)
	want := f.desired()
	rng := netip.MustParsePrefix("10.128.0.0/9")
	b := netip.MustParseAddr("100.64.0.2")
	want.Peers[0].HomeRanges = []netip.Prefix{rng}
	want.Peers[1].HomeRanges = []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16")}
	want.Routes = append(want.Routes,
		Route{Prefix: netip.MustParsePrefix("10.128.1.0/28"), Via: []netip.Addr{b}, Home: b},
		Route{Prefix: rng, Via: []netip.Addr{b}, Home: b},
		Route{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Via: []netip.Addr{b}, Home: b})
	want.Sources = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	var allowed []string
	for _, p := range k.devices["ocdptest0"].Peers {
		if p.PublicKey == f.b.PublicKey() {
			for _, a := range p.AllowedIPs {
				allowed = append(allowed, a.String())
			}
		}
	}
	slices.Sort(allowed)
	if w := []string{"10.128.0.0/9", "10.9.0.0/16", "100.64.0.2/32", "fd4f:6365:6e00::6440:2/128"}; !slices.Equal(allowed, w) {
		t.Errorf("peer b AllowedIPs = %v, want %v", allowed, w)
	}
	for _, p := range []string{"10.128.1.0/28", "10.128.0.0/9", "10.9.0.0/16"} {
		if _, ok := k.routes[routeID{254, netip.MustParsePrefix(p)}]; !ok {
			t.Errorf("learned route %s not installed", p)
		}
	}
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.200.0.0/16")}]; ok {
		t.Error("a home range nobody announced got a route")
	}
	bad := want
	bad.Peers = slices.Clone(want.Peers)
	bad.Peers[1].HomeRanges = []netip.Prefix{rng}
	bad.Peers[1].AllowedIPs = slices.Clone(want.Peers[1].AllowedIPs)
	if err := d.Set(ctx, bad); err == nil || !strings.Contains(err.Error(), "home range 10.128.0.0/9: already a home range of peer b") {
		t.Errorf("two peers with one home range: %v", err)
	}
}
