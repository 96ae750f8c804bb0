package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fastDesired is gw0 of a three-gateway world: its own VPC 10.1/16 is a
// source, 10.2/16 is homed on gw1 (up), 10.3/16 on gw2 (down: gw2 is not
// in Via) and 10.4/16 has no home.
var (
	gwB = netip.MustParseAddr("100.64.0.2")
	gwC = netip.MustParseAddr("100.64.0.3")
)

func fastDesired(f fixture) Desired {
	d := f.desired()
	d.Sources = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	d.Routes = []Route{
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Via: []netip.Addr{gwB, gwC}, Home: gwB},
		{Prefix: netip.MustParsePrefix("10.3.0.0/16"), Via: []netip.Addr{gwB}, Home: gwC},
		{Prefix: netip.MustParsePrefix("10.4.0.0/16"), Via: []netip.Addr{gwB}},
	}
	return d
}

func TestFastPathPlan(t *testing.T) {
	k := newFakeKernel()
	dp := newFakeDataplane(k, "wg-test")
	f := newFixture(t)
	fastDesired := func() Desired { return fastDesired(f) }
	if err := dp.Set(ctx, fastDesired()); err != nil {
		t.Fatal(err)
	}
	// Homes get their prefixes in WireGuard, up or not; a homeless one
	// stays out.
	allowed := map[string][]netip.Prefix{}
	for _, p := range k.devices["wg-test"].Peers {
		allowed[p.PublicKey.String()] = ipNetsToPrefixes(p.AllowedIPs)
	}
	d := fastDesired()
	for i, want := range []string{"10.2.0.0/16", "10.3.0.0/16"} {
		if !slices.Contains(allowed[d.Peers[i].PublicKey.String()], netip.MustParsePrefix(want)) {
			t.Errorf("peer %s allowed ips %v lack its home prefix %s", d.Peers[i].Name, allowed[d.Peers[i].PublicKey.String()], want)
		}
	}
	for key, a := range allowed {
		if slices.Contains(a, netip.MustParsePrefix("10.4.0.0/16")) {
			t.Errorf("peer %s has the homeless 10.4.0.0/16 in allowed ips", key)
		}
	}
	fast := map[netip.Prefix]netlink.Route{}
	for id, r := range k.routes {
		if id.table == DefaultFastTable {
			fast[id.dst] = r
		}
	}
	if r, ok := fast[netip.MustParsePrefix("10.2.0.0/16")]; !ok || r.Type != unix.RTN_UNICAST || r.LinkIndex == 0 || int32(r.LinkIndex) != dp.linkIndex.Load() {
		t.Errorf("10.2.0.0/16 (home up) in the fast table: %+v, want a route on the wireguard device", r)
	}
	if r, ok := fast[netip.MustParsePrefix("10.3.0.0/16")]; !ok || r.Type != unix.RTN_THROW {
		t.Errorf("10.3.0.0/16 (home down) in the fast table: %+v, want a throw route", r)
	}
	if len(fast) != 2 {
		t.Errorf("fast table has %d routes, want 2: %v", len(fast), fast)
	}
	if len(k.rules) != 1 || ruleSource(&k.rules[0]) != netip.MustParsePrefix("10.1.0.0/16") ||
		k.rules[0].Table != DefaultFastTable || k.rules[0].Priority != FastRulePriority || k.rules[0].Protocol != RouteProtocol {
		t.Errorf("rules %+v, want one from 10.1.0.0/16 lookup %d", k.rules, DefaultFastTable)
	}

	// Idempotent.
	before := k.writes
	if err := dp.Set(ctx, fastDesired()); err != nil {
		t.Fatal(err)
	}
	if k.writes != before {
		t.Errorf("second Set wrote %d times: %v", k.writes-before, k.ops)
	}

	// A foreign rule is never touched; a new source replaces the old one.
	foreign := netlink.NewRule()
	foreign.Table, foreign.Priority = 100, 100
	k.rules = append(k.rules, *foreign)
	d = fastDesired()
	d.Sources = []netip.Prefix{netip.MustParsePrefix("10.11.0.0/16")}
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	var srcs []string
	for _, r := range k.rules {
		srcs = append(srcs, fmt.Sprintf("%s/%d", ruleSource(&r), r.Table))
	}
	if !slices.Equal(srcs, []string{"0.0.0.0/0/100", "10.11.0.0/16/79"}) {
		t.Errorf("rules after a source change: %v", srcs)
	}

	// No sources: no rules and an empty fast table, the rest unchanged.
	d.Sources = nil
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	for id := range k.routes {
		if id.table == DefaultFastTable {
			t.Errorf("fast route %s left without sources", id.dst)
		}
	}
	if len(k.rules) != 1 || k.rules[0].Table != 100 {
		t.Errorf("rules without sources: %+v", k.rules)
	}

	// Teardown removes the fast path too.
	if err := dp.Set(ctx, fastDesired()); err != nil {
		t.Fatal(err)
	}
	if err := dp.Set(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if len(k.rules) != 1 {
		t.Errorf("rules after teardown: %+v", k.rules)
	}
	for id := range k.routes {
		if id.table == DefaultFastTable {
			t.Errorf("fast route %s left after teardown", id.dst)
		}
	}
}

// TestFastPathInMainTable: with SourcesComplete the main table carries
// the fast path itself (a prefix whose home is up routed plain on the
// WireGuard device, the others through the overlay) and there are no
// rules and no fast table; turning it off brings them back.
func TestFastPathInMainTable(t *testing.T) {
	k := newFakeKernel()
	dp := newFakeDataplane(k, "wg-test")
	f := newFixture(t)
	d := fastDesired(f)
	d.SourcesComplete = true
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	wg := int(dp.linkIndex.Load())
	main := func() map[netip.Prefix]netlink.Route {
		out := map[netip.Prefix]netlink.Route{}
		for id, r := range k.routes {
			if id.table == unix.RT_TABLE_MAIN {
				out[id.dst] = r
			}
		}
		return out
	}
	fastRoutes := func() int {
		n := 0
		for id := range k.routes {
			if id.table == DefaultFastTable {
				n++
			}
		}
		return n
	}
	rs := main()
	if r := rs[netip.MustParsePrefix("10.2.0.0/16")]; r.LinkIndex != wg || r.Gw != nil || len(r.MultiPath) != 0 || r.Scope != netlink.SCOPE_LINK {
		t.Errorf("10.2.0.0/16 (home up): %+v, want plain on the wireguard device (index %d)", r, wg)
	}
	for _, p := range []string{"10.3.0.0/16", "10.4.0.0/16"} {
		if r := rs[netip.MustParsePrefix(p)]; r.LinkIndex == wg || r.Gw == nil {
			t.Errorf("%s (home down or none): %+v, want via a gateway on the overlay", p, r)
		}
	}
	if len(k.rules) != 0 || fastRoutes() != 0 {
		t.Errorf("with the fast path in the main table: rules %+v and %d fast-table routes, want none", k.rules, fastRoutes())
	}
	before := k.writes
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	if k.writes != before {
		t.Errorf("second Set wrote %d times: %v", k.writes-before, k.ops)
	}

	// A second gateway joins the region: rules and the fast table come
	// back, and the main table sends 10.2.0.0/16 through the overlay.
	d.SourcesComplete = false
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	if r := main()[netip.MustParsePrefix("10.2.0.0/16")]; r.LinkIndex == wg || len(r.MultiPath) != 2 {
		t.Errorf("10.2.0.0/16 without SourcesComplete: %+v, want two overlay nexthops", r)
	}
	if len(k.rules) != 1 || fastRoutes() != 2 {
		t.Errorf("without SourcesComplete: rules %+v and %d fast-table routes, want 1 and 2", k.rules, fastRoutes())
	}
	// And back.
	d.SourcesComplete = true
	if err := dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	if r := main()[netip.MustParsePrefix("10.2.0.0/16")]; r.LinkIndex != wg || len(r.MultiPath) != 0 {
		t.Errorf("10.2.0.0/16 with SourcesComplete again: %+v, want plain", r)
	}
	if len(k.rules) != 0 || fastRoutes() != 0 {
		t.Errorf("SourcesComplete again: rules %+v and %d fast-table routes, want none", k.rules, fastRoutes())
	}
}

func TestFastPathRejectsBadHome(t *testing.T) {
	k := newFakeKernel()
	dp := newFakeDataplane(k, "wg-test")
	d := fastDesired(newFixture(t))
	d.Routes[0].Home = netip.MustParseAddr("100.64.9.9")
	d.Sources = append(d.Sources, netip.MustParsePrefix("10.1.2.3/16"))
	err := dp.Set(ctx, d)
	if err == nil {
		t.Fatal("Set accepted a home outside every peer and a source with host bits")
	}
	for _, want := range []string{"home 100.64.9.9", "source 10.1.2.3/16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if k.writes != 0 {
		t.Errorf("a rejected Set wrote %d times", k.writes)
	}
}

// devPackets reads a device's transmit packet counter in ns.
func devPackets(t *testing.T, ns, dev string) int {
	t.Helper()
	out := strings.TrimSpace(run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/statistics/tx_packets"))
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("tx_packets of %s: %q", dev, out)
	}
	return n
}

// twinLab is a three-gateway lab whose gw1 and gw2 are twins sharing the
// VPC 10.99.0.0/16 (homed on one of them), with strict reverse-path
// filtering host-wide (Debian's default is loose: the dataplane's
// per-device setting must still let both paths in), every gateway Set
// with both twins up and the mesh pinged. gw0 routes the shared VPC.
type twinLab struct {
	lab               *lab
	shared            netip.Prefix
	host              string // the shared VPC's host namespace
	twins             []netip.Addr
	home              netip.Addr
	homeIdx, otherIdx int
	sourcesComplete   bool // gw0's Desired.SourcesComplete
}

func newTwinLab(t *testing.T, sourcesComplete bool) *twinLab {
	l := newLab(t, 3)
	x := &twinLab{lab: l, shared: netip.MustParsePrefix("10.99.0.0/16"), host: sharedVPC(t, l, 1, 2),
		twins: []netip.Addr{l.gws[1].tunnel, l.gws[2].tunnel}, homeIdx: 1, otherIdx: 2, sourcesComplete: sourcesComplete}
	x.home = PickGateway(x.shared, x.twins)
	if x.home == l.gws[2].tunnel {
		x.homeIdx, x.otherIdx = 2, 1
	}
	for _, g := range l.gws {
		run(t, "ip", "netns", "exec", g.ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	}
	for i := range l.gws {
		if err := l.open(i).Set(ctx, x.desired(i, x.twins...)); err != nil {
			t.Fatalf("gw%d: Set: %v", i, err)
		}
	}
	l.pingMesh()
	return x
}

// desired is gateway i's state with the shared VPC carried by via.
func (x *twinLab) desired(i int, via ...netip.Addr) Desired {
	d := x.lab.desired(i)
	if i == 0 {
		d.Routes = append(d.Routes, Route{Prefix: x.shared, Via: via, Home: x.home})
		d.SourcesComplete = x.sourcesComplete
	}
	if i == x.homeIdx {
		d.Sources = append(d.Sources, x.shared)
	}
	return d
}

// pingThroughOverlay: with gw0's route through the other twin only (the
// home down), count echoes from gw0's VPC address to the shared VPC's
// host are all answered, and all leave gw0 through the overlay.
func (x *twinLab) pingThroughOverlay(t *testing.T, count int) {
	t.Helper()
	gw0, src := x.lab.gws[0], lanHost(x.lab.gws[0])
	run(t, "ip", "-n", x.host, "route", "replace", gw0.lan.String(), "via", fmt.Sprintf("10.99.0.%d", x.otherIdx))
	ovl0 := devPackets(t, gw0.ns, gw0.dp.Overlay())
	if got, err := newPingerFrom(t, gw0.ns, src).ping(netip.MustParseAddr("10.99.0.10"), count, 10*time.Millisecond, time.Second); err != nil || got != count {
		t.Errorf("home down: %s -> VPC host: %d of %d answered (%v)", src, got, count, err)
	}
	if n := devPackets(t, gw0.ns, gw0.dp.Overlay()) - ovl0; n < count {
		t.Errorf("home down: gw0 sent %d overlay packets for %d echoes, want all through the overlay", n, count)
	}
}

// TestFastPath sends between VPCs through a region with two gateways:
// traffic from a source whose home is the sending gateway goes plain
// WireGuard (the overlay's counter does not move), traffic through the
// other twin goes through the overlay, both are answered, and with the
// home down the fast table throws the prefix back to the overlay.
func TestFastPath(t *testing.T) {
	x := newTwinLab(t, false)
	l, shared, host, twins, homeIdx, otherIdx, desired := x.lab, x.shared, x.host, x.twins, x.homeIdx, x.otherIdx, x.desired
	gw0, src := l.gws[0], lanHost(l.gws[0])
	if out := run(t, "ip", "-n", gw0.ns, "rule", "show"); !strings.Contains(out, fmt.Sprintf("%d:\tfrom %s lookup %d", FastRulePriority, gw0.lan, DefaultFastTable)) {
		t.Errorf("gw0 has no fast-path rule for its VPC:\n%s", out)
	}

	const count = 20
	for _, tc := range []struct {
		twin    int
		overlay bool
	}{{homeIdx, false}, {otherIdx, true}} {
		g := l.gws[tc.twin]
		run(t, "ip", "-n", host, "route", "replace", gw0.lan.String(), "via", fmt.Sprintf("10.99.0.%d", tc.twin))
		ovl0, wg0 := devPackets(t, g.ns, g.dp.Overlay()), devPackets(t, g.ns, g.dp.Device())
		got, err := newPinger(t, host).ping(src, count, 10*time.Millisecond, time.Second)
		if err != nil || got != count {
			t.Errorf("VPC host -> %s through gw%d: %d of %d answered (%v)", src, tc.twin, got, count, err)
		}
		ovl, wg := devPackets(t, g.ns, g.dp.Overlay())-ovl0, devPackets(t, g.ns, g.dp.Device())-wg0
		switch {
		case !tc.overlay && (ovl > 2 || wg < count):
			t.Errorf("gw%d is the home of %s: its %d echoes should go plain, but the overlay sent %d packets and wireguard %d", tc.twin, shared, count, ovl, wg)
		case tc.overlay && ovl < count:
			t.Errorf("gw%d is not the home of %s: its %d echoes should go through the overlay, which sent %d packets", tc.twin, shared, count, ovl)
		}
	}
	// gw0's own VPC address reaches the host plain through the home.
	ovl0 := devPackets(t, gw0.ns, gw0.dp.Overlay())
	if got, err := newPingerFrom(t, gw0.ns, src).ping(netip.MustParseAddr("10.99.0.10"), count, 10*time.Millisecond, time.Second); err != nil || got != count {
		t.Errorf("%s -> VPC host: %d of %d answered (%v)", src, got, count, err)
	}
	if n := devPackets(t, gw0.ns, gw0.dp.Overlay()) - ovl0; n > 2 {
		t.Errorf("gw0 sent %d overlay packets for %d echoes to a prefix whose home is up", n, count)
	}

	// A rule and a fast route deleted by hand come back.
	run(t, "ip", "-n", gw0.ns, "rule", "del", "pref", strconv.Itoa(FastRulePriority), "from", gw0.lan.String(), "lookup", strconv.Itoa(DefaultFastTable))
	eventually(t, 5*time.Second, "fast-path rule restored", func() bool {
		return strings.Contains(run(t, "ip", "-n", gw0.ns, "rule", "show"), "from "+gw0.lan.String()+" lookup 79")
	})
	run(t, "ip", "-n", gw0.ns, "route", "del", shared.String(), "table", strconv.Itoa(DefaultFastTable))
	eventually(t, 5*time.Second, "fast-path route restored", func() bool {
		return strings.Contains(run(t, "ip", "-n", gw0.ns, "route", "show", "table", "79"), shared.String())
	})

	// The home goes down: the fast table throws the prefix, the overlay
	// through the other twin carries everything.
	if err := gw0.dp.Set(ctx, desired(0, l.gws[otherIdx].tunnel)); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", "table", "79"); !strings.Contains(out, "throw "+shared.String()) {
		t.Errorf("fast table with the home down:\n%s", out)
	}
	x.pingThroughOverlay(t, count)

	// The home back, then the prefix withdrawn: its fast route (on the
	// device, link scope) goes at once, not at the next resync.
	if err := gw0.dp.Set(ctx, desired(0, twins...)); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", "table", "79"); !strings.Contains(out, shared.String()+" dev "+gw0.dp.Device()) {
		t.Errorf("fast table with the home back:\n%s", out)
	}
	if err := gw0.dp.Set(ctx, l.desired(0)); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", "table", "79"); strings.Contains(out, shared.String()) {
		t.Errorf("fast table after %s was withdrawn:\n%s", shared, out)
	}

	// Cleanup removes rules and the fast table.
	if err := gw0.dp.Close(true); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", gw0.ns, "rule", "show"); strings.Contains(out, "lookup 79") {
		t.Errorf("fast-path rules left after Close(true):\n%s", out)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", "table", "79"); strings.TrimSpace(out) != "" {
		t.Errorf("fast table left after Close(true):\n%s", out)
	}
}

// TestFastPathInMainTableForwards is TestFastPath's gw0 alone in its
// region (SourcesComplete): its VPC's and its own traffic to a prefix
// whose home is up goes plain WireGuard from the main table and is
// answered, with no rule and no fast table; with the home down it goes
// through the overlay via the other twin.
func TestFastPathInMainTableForwards(t *testing.T) {
	x := newTwinLab(t, true)
	l, shared, host, twins, homeIdx, otherIdx, desired := x.lab, x.shared, x.host, x.twins, x.homeIdx, x.otherIdx, x.desired
	gw0, src := l.gws[0], lanHost(l.gws[0])
	for _, back := range []string{gw0.lan.String(), gw0.tunnel.String()} {
		run(t, "ip", "-n", host, "route", "replace", back, "via", fmt.Sprintf("10.99.0.%d", homeIdx))
	}
	if out := run(t, "ip", "-n", gw0.ns, "rule", "show"); strings.Contains(out, "lookup 79") {
		t.Errorf("gw0 has fast-path rules with SourcesComplete:\n%s", out)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", shared.String()); !strings.Contains(out, "dev "+gw0.dp.Device()) {
		t.Errorf("gw0's route to %s with its home up: %q, want it on %s", shared, out, gw0.dp.Device())
	}
	const count = 20
	target := netip.MustParseAddr("10.99.0.10")
	for _, from := range []*pinger{newPingerFrom(t, gw0.ns, src), newPinger(t, gw0.ns)} {
		ovl0, wg0 := devPackets(t, gw0.ns, gw0.dp.Overlay()), devPackets(t, gw0.ns, gw0.dp.Device())
		if got, err := from.ping(target, count, 10*time.Millisecond, time.Second); err != nil || got != count {
			t.Errorf("gw0 -> VPC host: %d of %d answered (%v)", got, count, err)
		}
		if ovl, wg := devPackets(t, gw0.ns, gw0.dp.Overlay())-ovl0, devPackets(t, gw0.ns, gw0.dp.Device())-wg0; ovl > 2 || wg < count {
			t.Errorf("gw0 -> VPC host, home up: overlay sent %d packets and wireguard %d for %d echoes, want all plain", ovl, wg, count)
		}
	}

	if err := gw0.dp.Set(ctx, desired(0, l.gws[otherIdx].tunnel)); err != nil {
		t.Fatal(err)
	}
	x.pingThroughOverlay(t, count)

	// The home back, then the prefix withdrawn: its plain route (link
	// scope) goes at once, not at the next resync.
	if err := gw0.dp.Set(ctx, desired(0, twins...)); err != nil {
		t.Fatal(err)
	}
	d := l.desired(0)
	d.SourcesComplete = true
	if err := gw0.dp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	if out := run(t, "ip", "-n", gw0.ns, "route", "show", shared.String()); strings.TrimSpace(out) != "" {
		t.Errorf("route to %s after it was withdrawn: %q", shared, out)
	}
}
