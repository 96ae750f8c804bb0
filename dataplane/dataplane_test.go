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

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// fixture: this gateway (100.64.0.1, fd00:64::1) and two peers: b, dual
// stack, home of 10.2.0.0/16 and fd00:2::/64, and c, home of 10.3.0.0/16.
type fixture struct {
	self, b, c wgtypes.Key
}

func newFixture(t testing.TB) fixture { return fixture{mustKey(t), mustKey(t), mustKey(t)} }

func (f fixture) desired() Desired {
	return Desired{
		PrivateKey: f.self,
		ListenPort: 51820,
		Addresses:  pfxs("100.64.0.1/32", "fd00:64::1/128"),
		Peers: []Peer{
			{Name: "b", PublicKey: f.b.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"),
				TunnelAddresses: pfxs("100.64.0.2/32", "fd00:64::2/128"), AllowedIPs: pfxs("10.2.0.0/16", "fd00:2::/64")},
			{Name: "c", PublicKey: f.c.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.3:51820"),
				TunnelAddresses: pfxs("100.64.0.3/32"), AllowedIPs: pfxs("10.3.0.0/16")},
		},
		Routes: pfxs("10.2.0.0/16", "10.3.0.0/16", "fd00:2::/64"),
	}
}

// fixtureRoutes are the main table's routes of fixture.desired on device
// ocdptest0, as routeLines shows them.
var fixtureRoutes = []string{
	"table 254 10.2.0.0/16 dev ocdptest0 scope link src 100.64.0.1 metric 20 proto 79",
	"table 254 10.3.0.0/16 dev ocdptest0 scope link src 100.64.0.1 metric 20 proto 79",
	"table 254 100.64.0.2/32 dev ocdptest0 scope link src 100.64.0.1 metric 20 proto 79",
	"table 254 100.64.0.3/32 dev ocdptest0 scope link src 100.64.0.1 metric 20 proto 79",
	"table 254 fd00:2::/64 dev ocdptest0 src fd00:64::1 metric 1044 proto 79",
	"table 254 fd00:64::2/128 dev ocdptest0 src fd00:64::1 metric 1044 proto 79",
}

// setFixture opens a fake dataplane on a new fake kernel and sets want.
func setFixture(t *testing.T, want Desired) (*fakeKernel, *Dataplane) {
	t.Helper()
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	return k, d
}

// sameLines reports a difference between two line lists, order aside.
func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot\n\t%s\nwant\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// setWritesNothing sets want again and reports any write it made.
func setWritesNothing(t *testing.T, k *fakeKernel, d *Dataplane, want Desired, what string) {
	t.Helper()
	writes, ops := k.writes, len(k.ops)
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.writes != writes {
		t.Errorf("%s made %d writes, want none: %v", what, k.writes-writes, k.ops[ops:])
	}
}

// TestSetBuildsEverything: a Set of everything (peers, routes, a direct
// route, a handoff in both families) builds the device, its addresses,
// the routes with our protocol, metric and source, the rules and the
// handoff table, the guard, the sysctls and the peers.
func TestSetBuildsEverything(t *testing.T) {
	f := newFixture(t)
	k, _ := setHandoffs(t, fullDesired(f))
	if k.started != 1 {
		t.Errorf("helpers started: %d, want 1 (no kernel wireguard)", k.started)
	}
	l := k.links["ocdptest0"]
	if a := l.Attrs(); a.MTU != 1420 || a.Flags&net.FlagUp == 0 || a.Group != DeviceGroup {
		t.Errorf("device mtu %d flags %v group %d, want 1420 (underlay 1500 - 80), up, group %d", a.MTU, a.Flags, a.Group, DeviceGroup)
	}
	if got := k.addrs[l.Attrs().Index]; !slices.Equal(got, pfxs("100.64.0.1/32", "fd00:64::1/128")) {
		t.Errorf("device addresses %v", got)
	}
	// Every tunnel address of a peer and every CEN route is one route on
	// the device, with our protocol, metric and source of its family.
	sameLines(t, "main table", k.mainLines(), append(slices.Clone(fixtureRoutes), "table 254 192.168.1.0/24 via 10.1.0.9 dev eth1 metric 20 proto 79"))
	sameLines(t, "handoff table", k.tableLines(), handoffTable)
	sameLines(t, "rules", k.ruleLines(), handoffRules)
	g := k.guards["opencen_ocdptest0"]
	if g.dev != "ocdptest0" || !slices.Equal(g.addrs, addrs("100.64.0.1", "100.64.0.2", "100.64.0.3", "fd00:64::1", "fd00:64::2")) {
		t.Errorf("guard %+v: want device ocdptest0 and every gateway's tunnel address", g)
	}
	// The LAN a handoff leaves through exists ahead of the Set: its own
	// send_redirects is what counts there.
	for key, want := range map[string]string{
		"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1", "net.ipv4.conf.all.send_redirects": "0",
		"net.ipv4.conf.default.send_redirects": "0", "net.ipv4.conf.eth1.send_redirects": "0", "net.ipv4.conf.ocdptest0.rp_filter": "2",
	} {
		if k.sysctls[key] != want {
			t.Errorf("sysctl %s = %q, want %q", key, k.sysctls[key], want)
		}
	}
	dev := k.devices["ocdptest0"]
	if len(dev.Peers) != 2 || dev.ListenPort != 51820 || dev.PrivateKey != f.self {
		t.Fatalf("device: %d peers, port %d", len(dev.Peers), dev.ListenPort)
	}
	want := map[wgtypes.Key][]netip.Prefix{
		f.b.PublicKey(): pfxs("10.1.128.0/17", "10.2.0.0/16", "100.64.0.2/32", "fd00:1:0:0:8000::/65", "fd00:2::/64", "fd00:64::2/128"),
		f.c.PublicKey(): pfxs("10.3.0.0/16", "100.64.0.3/32"),
	}
	for _, p := range dev.Peers {
		if got := ipNetsToPrefixes(p.AllowedIPs); !slices.Equal(got, want[p.PublicKey]) || p.PersistentKeepaliveInterval != DefaultKeepalive || p.Endpoint == nil {
			t.Errorf("peer allowed ips %v keepalive %v endpoint %v: want %v, %v and an endpoint", got, p.PersistentKeepaliveInterval, p.Endpoint, want[p.PublicKey], DefaultKeepalive)
		}
	}
}

func TestSetTwiceWritesNothing(t *testing.T) {
	want := newFixture(t).desired()
	k, d := setFixture(t, want)
	setWritesNothing(t, k, d, want, "a second identical Set")
	// The order of peers, routes and allowed IPs does not matter either.
	slices.Reverse(want.Peers)
	slices.Reverse(want.Routes)
	slices.Reverse(want.Peers[1].AllowedIPs)
	setWritesNothing(t, k, d, want, "a reordered Set")
}

func TestChangingOnePeerTouchesOnlyIt(t *testing.T) {
	f := newFixture(t)
	want := f.desired()
	k, d := setFixture(t, want)
	for _, change := range []struct {
		name  string
		do    func(p *Peer)
		check func(pc wgtypes.PeerConfig) bool
	}{
		{"endpoint", func(p *Peer) { p.Endpoint = netip.MustParseAddrPort("192.0.2.33:51820") }, func(pc wgtypes.PeerConfig) bool {
			return pc.Endpoint.String() == "192.0.2.33:51820" && !pc.ReplaceAllowedIPs && pc.PersistentKeepaliveInterval == nil
		}},
		{"allowed ips", func(p *Peer) { p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix("10.33.0.0/16")) }, func(pc wgtypes.PeerConfig) bool {
			return pc.Endpoint == nil && pc.ReplaceAllowedIPs && len(pc.AllowedIPs) == 3
		}},
	} {
		k.configured = nil
		change.do(&want.Peers[1])
		if err := d.Set(ctx, want); err != nil {
			t.Fatal(err)
		}
		if len(k.configured) != 1 || len(k.configured[0].Peers) != 1 {
			t.Fatalf("%s: configs written: %+v, want one with one peer", change.name, k.configured)
		}
		pc := k.configured[0].Peers[0]
		if pc.PublicKey != f.c.PublicKey() || !pc.UpdateOnly || !change.check(pc) || k.configured[0].PrivateKey != nil {
			t.Errorf("%s: peer config %+v: want only c's %s", change.name, pc, change.name)
		}
	}
	for _, p := range k.devices["ocdptest0"].Peers {
		if p.PublicKey == f.b.PublicKey() && !p.LastHandshakeTime.Equal(handshakeAt) {
			t.Error("peer b was touched")
		}
	}
}

func TestRemovedPeerAndRouteAreDeleted(t *testing.T) {
	want := newFixture(t).desired()
	k, d := setFixture(t, want)
	want.Peers = want.Peers[:1]
	want.Routes = pfxs("10.2.0.0/16", "fd00:2::/64")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if n := len(k.devices["ocdptest0"].Peers); n != 1 {
		t.Errorf("%d peers, want 1", n)
	}
	sameLines(t, "routes", k.routeLines(RouteProtocol), slices.DeleteFunc(slices.Clone(fixtureRoutes), func(l string) bool {
		return strings.Contains(l, "10.3.0.0/16") || strings.Contains(l, "100.64.0.3/32")
	}))
	if g := k.guards["opencen_ocdptest0"]; slices.Contains(g.addrs, netip.MustParseAddr("100.64.0.3")) {
		t.Errorf("guard %v still holds the removed peer's tunnel address", g.addrs)
	}
}

// TestAddBeforeDeleteOwnedOnlyKeepGoing: a Set that adds and deletes adds
// first, deletes only routes of our protocol, and writes everything it
// can past a refused route and a failed guard, reporting both.
func TestAddBeforeDeleteOwnedOnlyKeepGoing(t *testing.T) {
	want := newFixture(t).desired()
	k, d := setFixture(t, want)
	idx := k.links["ocdptest0"].Attrs().Index
	// Someone else's route in the same table, and a stale one of ours.
	k.routes[routeID{254, netip.MustParsePrefix("10.50.0.0/16"), 0}] = netlink.Route{LinkIndex: idx, Dst: ipnetOf("10.50.0.0/16"), Protocol: 4, Table: 254}
	k.routes[routeID{254, netip.MustParsePrefix("10.60.0.0/16"), 20}] = netlink.Route{LinkIndex: idx, Dst: ipnetOf("10.60.0.0/16"), Protocol: RouteProtocol, Table: 254, Priority: 20}
	want.Routes = append(want.Routes, pfxs("10.70.0.0/16", "10.80.0.0/16")...)
	k.failRoute[netip.MustParsePrefix("10.70.0.0/16")] = syscall.ENOMEM
	k.failGuard = errors.New("nftables is broken")
	k.ops = nil
	// Routes appearing by another's hand are found by the next dump (the
	// periodic resync's, which trusts no cache).
	d.drift.Add(1)
	err := d.Set(ctx, want)
	if err == nil || !strings.Contains(err.Error(), "10.70.0.0/16") || !errors.Is(err, syscall.ENOMEM) || !strings.Contains(err.Error(), "nftables is broken") {
		t.Fatalf("Set = %v, want the failed route named and wrapped, and the guard's failure", err)
	}
	if !k.hasRoute(254, "10.80.0.0/16") {
		t.Error("10.80.0.0/16 not installed after another route and the guard failed")
	}
	if k.hasRoute(254, "10.60.0.0/16") {
		t.Error("stale opencen route not deleted")
	}
	if !k.hasRoute(254, "10.50.0.0/16") || !k.hasRoute(254, "0.0.0.0/0") {
		t.Error("a route opencen does not own was deleted")
	}
	lastAdd, firstDel := -1, len(k.ops)
	for i, op := range k.ops {
		if strings.HasPrefix(op, "route add") {
			lastAdd = i
		} else if i < firstDel {
			firstDel = i
		}
	}
	if lastAdd > firstDel || firstDel == len(k.ops) {
		t.Errorf("want every add before the delete: %v", k.ops)
	}
}

func TestDeleteAlreadyGoneIsSuccess(t *testing.T) {
	k := newFakeKernel()
	r := ownedRoute(netip.MustParsePrefix("10.9.0.0/16"), 254)
	if err := applyRoutes([]routeWriter{k}, nil, []netlink.Route{r}); err != nil {
		t.Fatalf("deleting an absent route: %v", err)
	}
}

func TestDumpInterruptedIsRetried(t *testing.T) {
	for _, dump := range []string{"route", "rule"} {
		k := newFakeKernel()
		d := newFakeDataplane(k, "ocdptest0")
		interrupt := func(n int) {
			if dump == "route" {
				k.dumpInterrupts = n
			} else {
				k.ruleInterrupts = n
			}
		}
		interrupt(dumpRetries - 1)
		if err := d.Set(ctx, newFixture(t).desired()); err != nil {
			t.Fatalf("Set with %d interrupted %s dumps: %v", dumpRetries-1, dump, err)
		}
		interrupt(100)
		d.drift.Add(1) // the next Set dumps
		if err := d.Set(ctx, newFixture(t).desired()); !errors.Is(err, netlink.ErrDumpInterrupted) {
			t.Fatalf("Set with endless %s dump interruptions = %v, want ErrDumpInterrupted", dump, err)
		}
	}
}

// repairDrift does what the netlink watchers do on an event that may mean
// drift (the fake kernel sends none): the route caches are not
// trusted, and a repair runs.
func repairDrift(d *Dataplane) {
	d.drift.Add(1)
	d.repair()
}

// TestRepairRestoresDrift: a route or an address deleted, the device set
// down, the guard deleted, the helper crashed: a repair puts each back
// without reconfiguring a peer that did not change, and a repair without
// drift writes nothing.
func TestRepairRestoresDrift(t *testing.T) {
	k, d := setFixture(t, newFixture(t).desired())
	good := func() string {
		return fmt.Sprint(k.routeLines(RouteProtocol), k.guards, k.addrs[k.links["ocdptest0"].Attrs().Index], k.links["ocdptest0"].Attrs().Flags&net.FlagUp)
	}
	want := good()
	configured := len(k.configured)
	for _, drift := range []struct {
		name string
		do   func()
	}{
		{"route deleted", func() { k.deleteRoute(254, "10.2.0.0/16") }},
		{"address deleted", func() { k.addrs[k.links["ocdptest0"].Attrs().Index] = nil }},
		{"device down", func() { k.setDown("ocdptest0") }},
		{"guard deleted", func() { delete(k.guards, "opencen_ocdptest0") }},
	} {
		drift.do()
		if good() == want {
			t.Fatalf("%s: drift not visible", drift.name)
		}
		repairDrift(d)
		if got := good(); got != want {
			t.Errorf("%s: after repair\n%s\nwant\n%s", drift.name, got, want)
		}
	}
	if len(k.configured) != configured {
		t.Error("repairs rewrote wireguard peers that did not change")
	}
	before := k.writes
	repairDrift(d)
	if k.writes != before {
		t.Errorf("repair without drift wrote %d things: %v", k.writes-before, k.ops)
	}
	// A crashed helper leaves a stale socket; repair replaces both.
	k.crashHelper("ocdptest0")
	repairDrift(d)
	if k.started != 2 || k.sockets["ocdptest0"] != sockLive || len(k.devices["ocdptest0"].Peers) != 2 || good() != want {
		t.Errorf("crashed helper not replaced: started %d, socket %v, state %s", k.started, k.sockets["ocdptest0"], good())
	}
}

// TestSetTrustsItsRouteCacheUntilDrift: with nothing drifted, a Set diffs
// against what the last one installed instead of dumping the tables, and
// writes only the change; a drift (as the watchers report it) makes the
// next Set dump and repair; so does a failed write.
func TestSetTrustsItsRouteCacheUntilDrift(t *testing.T) {
	want := newFixture(t).desired()
	k, d := setFixture(t, want)
	dumps := k.routeDumps
	want.Routes = append(pfxs("10.2.0.0/16", "fd00:2::/64"), netip.MustParsePrefix("10.70.0.0/16"))
	k.ops = nil
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.routeDumps != dumps {
		t.Errorf("a Set without drift dumped the route tables %d times", k.routeDumps-dumps)
	}
	if !k.hasRoute(254, "10.70.0.0/16") || k.hasRoute(254, "10.3.0.0/16") {
		t.Errorf("the cache's diff was not applied: %v", k.routeLines(RouteProtocol))
	}
	if len(k.ops) != 2 {
		t.Errorf("route writes %v, want one install and one delete", k.ops)
	}
	// A route deleted by hand: unseen until a drift is reported.
	k.deleteRoute(254, "10.2.0.0/16")
	repairDrift(d)
	if k.routeDumps == dumps || !k.hasRoute(254, "10.2.0.0/16") {
		t.Error("a repair after drift did not dump the route tables and repair")
	}
	want.Routes = append(want.Routes, netip.MustParsePrefix("10.80.0.0/16"))
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

// TestOurRouteWithAnotherMetricReplaced: a route of ours for a wanted
// prefix with another metric (a legacy layout's, adopted on start) is
// replaced by one with ours; a foreign route for the prefix stays.
func TestOurRouteWithAnotherMetricReplaced(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	// The device first, so the old routes can be on it.
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	idx := k.links["ocdptest0"].Attrs().Index
	for _, r := range []netlink.Route{
		{Dst: ipnetOf("10.2.0.0/16"), Protocol: RouteProtocol, Priority: 0},
		{Dst: ipnetOf("fd00:2::/64"), Protocol: RouteProtocol, Priority: 1024, Family: netlink.FAMILY_V6},
		{Dst: ipnetOf("10.3.0.0/16"), Protocol: 4, Priority: 5},
	} {
		r.LinkIndex, r.Table = idx, 254
		k.routes[routeID{254, routeKey(&r), r.Priority}] = r
	}
	repairDrift(d)
	sameLines(t, "routes", k.routeLines(-1), append(slices.Clone(fixtureRoutes),
		"table 254 0.0.0.0/0 via 192.0.2.254 dev eth0 metric 0 proto 3", "table 254 10.3.0.0/16 dev ocdptest0 metric 5 proto 4"))
}
