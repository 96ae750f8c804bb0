package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	if len(k.routes) != 5 {
		t.Errorf("%d routes, want 5", len(k.routes))
	}
	for _, r := range k.routes {
		if r.Protocol != RouteProtocol || r.LinkIndex != l.Attrs().Index || !r.Src.Equal(netip.MustParseAddr("100.64.0.1").AsSlice()) {
			t.Errorf("route %v: want proto %d dev %d src 100.64.0.1", r, RouteProtocol, l.Attrs().Index)
		}
	}
	if k.sysctls["net.ipv4.ip_forward"] != "1" || k.sysctls["net.ipv6.conf.all.forwarding"] != "1" {
		t.Errorf("sysctls: %v", k.sysctls)
	}
	dev := k.devices["ocdptest0"]
	if len(dev.Peers) != 2 || dev.ListenPort != 51820 {
		t.Fatalf("device: %d peers, port %d", len(dev.Peers), dev.ListenPort)
	}
	total := 0
	for _, p := range dev.Peers {
		total += len(p.AllowedIPs)
		if p.PersistentKeepaliveInterval != DefaultKeepalive {
			t.Errorf("keepalive %v, want %v", p.PersistentKeepaliveInterval, DefaultKeepalive)
		}
	}
	if total != 5 {
		t.Errorf("%d allowed ips across peers, want 5 (the shared prefix on exactly one)", total)
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
	if len(k.routes) != 2 {
		t.Errorf("routes %v, want 100.64.0.2/32 and 10.2.0.0/16", k.routes)
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
	err := d.Set(ctx, newFixture(t).desired())
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("Set with endless interruptions = %v, want ErrDumpInterrupted", err)
	}
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
	d.repair()
	if _, ok := k.routes[routeID{254, netip.MustParsePrefix("10.2.0.0/16")}]; !ok {
		t.Error("deleted route not repaired")
	}
	if len(k.addrs[idx]) != 1 {
		t.Error("deleted address not repaired")
	}
	k.setDown("ocdptest0")
	d.repair()
	if k.links["ocdptest0"].Attrs().Flags&1 == 0 || len(k.routes) != 5 {
		t.Errorf("link flap not repaired: flags %v, %d routes", k.links["ocdptest0"].Attrs().Flags, len(k.routes))
	}
	if len(k.configured) != configured {
		t.Error("repairs rewrote wireguard peers that did not change")
	}
	// A crashed helper leaves a stale socket; repair replaces both.
	k.crashHelper("ocdptest0")
	d.repair()
	if k.started != 2 || k.sockets["ocdptest0"] != sockLive || len(k.devices["ocdptest0"].Peers) != 2 || len(k.routes) != 5 {
		t.Errorf("crashed helper not replaced: started %d, socket %v", k.started, k.sockets["ocdptest0"])
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
	if len(k.links) != 0 || len(k.routes) != 0 || len(k.helpers) != 0 || len(k.sockets) != 0 {
		t.Errorf("zero Desired left links %v routes %d helpers %v sockets %v", k.links, len(k.routes), k.helpers, k.sockets)
	}
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(false); err != nil {
		t.Fatal(err)
	}
	if len(k.links) != 1 || len(k.routes) != 5 || len(k.helpers) != 1 {
		t.Error("Close(false) removed state")
	}
	d2 := newFakeDataplane(k, "ocdptest0")
	if err := d2.Close(true); err != nil {
		t.Fatal(err)
	}
	if len(k.links) != 0 || len(k.routes) != 0 || len(k.helpers) != 0 || len(k.sockets) != 0 {
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
	want.MTU = 1380
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if m := k.links["ocdptest0"].Attrs().MTU; m != 1380 {
		t.Errorf("mtu %d, want 1380", m)
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
		v := pickVia(p, []netip.Addr{a, b})
		if v != pickVia(p, []netip.Addr{b, a}) {
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
	}
	_ = time.Second
}
