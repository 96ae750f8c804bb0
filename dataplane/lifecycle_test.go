package dataplane

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/opencen/opencen/internal/netipx"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fullDesired is the fixture with everything a Set can own: a handoff to
// b over the LAN eth1 (both families), and a direct route via a router on
// eth1. addLAN must have given the kernel that link.
func fullDesired(f fixture) Desired {
	d := handoffDesired(f)
	d.DirectRoutes = []DirectRoute{{Prefix: netip.MustParsePrefix("192.168.1.0/24"), Via: addrs("10.1.0.9")}}
	return d
}

// leftovers lists what a teardown must remove, as text.
func (k *fakeKernel) leftovers() []string {
	var out []string
	for _, l := range k.routeLines(RouteProtocol) {
		out = append(out, "route "+l)
	}
	for _, r := range k.ruleLines() {
		out = append(out, "rule "+r)
	}
	for name := range k.links {
		if name != "lo" && name != "eth0" && name != "eth1" {
			out = append(out, "link "+name)
		}
	}
	for t := range k.guards {
		out = append(out, "guard "+t)
	}
	for name := range k.helpers {
		out = append(out, "helper "+name)
	}
	for name := range k.sockets {
		out = append(out, "socket "+name)
	}
	return out
}

// TestTeardown: a zero Desired and Close(true) remove every rule and every
// route of ours in every table (the device's, the direct ones, the
// handoff tables', one in a table the dataplane never used), the guard,
// the device and its helper, and nothing else; Close(false) keeps it all.
func TestTeardown(t *testing.T) {
	f := newFixture(t)
	k := newFakeKernel()
	addLAN(k)
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, fullDesired(f)); err != nil {
		t.Fatal(err)
	}
	stray := netlink.Route{Dst: ipnetOf("10.123.0.0/16"), Gw: net.ParseIP("10.1.0.9"), LinkIndex: k.links["eth1"].Attrs().Index, Table: 1234, Protocol: RouteProtocol}
	k.routes[routeID{1234, netip.MustParsePrefix("10.123.0.0/16"), 0}] = stray
	foreign := slices.Concat(k.routeLines(unix.RTPROT_BOOT), []string{"eth0", "eth1", "lo"})
	keep := func() []string {
		var links []string
		for name := range k.links {
			links = append(links, name)
		}
		slices.Sort(links)
		return slices.Concat(k.routeLines(unix.RTPROT_BOOT), links)
	}
	rules := len(k.rules) - len(k.ruleLines())
	if err := d.Set(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if left := k.leftovers(); len(left) != 0 {
		t.Errorf("zero Desired left:\n\t%s", strings.Join(left, "\n\t"))
	}
	if got := keep(); !slices.Equal(got, foreign) || len(k.rules) != rules {
		t.Errorf("zero Desired touched foreign state: routes and links %v, want %v; %d rules, want %d", got, foreign, len(k.rules), rules)
	}
	if err := d.Set(ctx, fullDesired(f)); err != nil {
		t.Fatal(err)
	}
	before := k.leftovers()
	if err := d.Close(false); err != nil {
		t.Fatal(err)
	}
	if after := k.leftovers(); !slices.Equal(slices.Sorted(slices.Values(after)), slices.Sorted(slices.Values(before))) || len(after) == 0 {
		t.Errorf("Close(false) changed state:\n%v\nwant\n%v", after, before)
	}
	d2 := newFakeDataplane(k, "ocdptest0")
	if err := d2.Close(true); err != nil {
		t.Fatal(err)
	}
	if left := k.leftovers(); len(left) != 0 {
		t.Errorf("Close(true) of a second instance left:\n\t%s", strings.Join(left, "\n\t"))
	}
	if err := d.Set(ctx, f.desired()); err == nil {
		t.Error("Set after Close succeeded")
	}
}

func TestForeignLinkUntouched(t *testing.T) {
	k := newFakeKernel()
	k.addLink("ocdptest0")
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, newFixture(t).desired()); err == nil || !strings.Contains(err.Error(), "not wireguard") {
		t.Errorf("Set over a veth = %v", err)
	}
	if err := d.Close(true); err == nil || k.links["ocdptest0"] == nil {
		t.Errorf("Close(true) over a veth = %v, links %v", err, k.links)
	}
}

// TestSweepsLegacyLayoutOnce: the first reconcile of a Dataplane deletes
// our routes in tables it does not use (the fast table 79 of the legacy
// layout) and the VXLAN link of that layout; foreign routes there and a
// foreign link of that name stay, and later reconciles do not sweep.
func TestSweepsLegacyLayoutOnce(t *testing.T) {
	for _, foreignLink := range []bool{false, true} {
		k := newFakeKernel()
		ovl := legacyOverlayName("ocdptest0")
		var l netlink.Link = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: ovl}}
		if foreignLink {
			l = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ovl}}
		}
		k.addLinkLocked(l)
		put := func(dst string, proto int) {
			k.routes[routeID{79, netip.MustParsePrefix(dst), 0}] = netlink.Route{Dst: ipnetOf(dst), LinkIndex: fakeEth0, Table: 79, Protocol: netlink.RouteProtocol(proto)}
		}
		put("10.2.0.0/16", RouteProtocol)
		put("10.4.0.0/16", unix.RTPROT_STATIC)
		d := newFakeDataplane(k, "ocdptest0")
		if err := d.Set(ctx, newFixture(t).desired()); err != nil {
			t.Fatal(err)
		}
		if k.hasRoute(79, "10.2.0.0/16") || !k.hasRoute(79, "10.4.0.0/16") {
			t.Errorf("table 79 after the first Set: %v, want only the foreign route", k.routeLines(-1))
		}
		if _, ok := k.links[ovl]; ok != foreignLink {
			t.Errorf("link %s (foreign %v) present after the first Set: %v", ovl, foreignLink, ok)
		}
		put("10.5.0.0/16", RouteProtocol)
		repairDrift(d)
		if !k.hasRoute(79, "10.5.0.0/16") {
			t.Error("a later reconcile swept the tables again")
		}
	}
	if got := legacyOverlayName(DeviceName("cen/gw-1")); got != "ocv"+DeviceName("cen/gw-1")[3:] {
		t.Errorf("legacyOverlayName of a DeviceName: %s", got)
	}
	if a, b := legacyOverlayName("ocdptest0"), legacyOverlayName("ocdptest1"); len(a) != 15 || a == b || validDeviceName(a) != nil {
		t.Errorf("legacyOverlayName of custom devices: %q %q", a, b)
	}
}

func TestAdoptsRunningHelper(t *testing.T) {
	want := newFixture(t).desired()
	k, _ := setFixture(t, want)
	before := k.writes
	d2 := newFakeDataplane(k, "ocdptest0")
	if err := d2.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.started != 1 || k.writes != before {
		t.Errorf("second instance started %d helpers and made %d writes, want adoption with none: %v", k.started-1, k.writes-before, k.ops)
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

func TestMTU(t *testing.T) {
	k := newFakeKernel()
	k.links["eth0"].Attrs().MTU = 9000
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
	// No endpoint to route: 1500 - 80.
	k2 := newFakeKernel()
	want = newFixture(t).desired()
	want.Peers = nil
	if err := newFakeDataplane(k2, "ocdptest0").Set(ctx, want); err != nil || k2.links["ocdptest0"].Attrs().MTU != 1420 {
		t.Errorf("Set without peers = %v, mtu %d, want 1500 - 80", err, k2.links["ocdptest0"].Attrs().MTU)
	}
}

func TestStatusWithFakes(t *testing.T) {
	k := newFakeKernel()
	addLAN(k)
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, fullDesired(newFixture(t))); err != nil {
		t.Fatal(err)
	}
	k.deleteRoute(254, "10.3.0.0/16")
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Device != "ocdptest0" || st.Mode != ModeUserspace || st.HelperPID == 0 || !st.Up || st.MTU != 1420 || st.ListenPort != 51820 || st.LastError != "" {
		t.Errorf("status: %+v", st)
	}
	if len(st.Peers) != 2 || st.Peers[0].Name == "" || st.Peers[0].LastHandshake.IsZero() || len(st.Peers[0].AllowedIPs) == 0 {
		t.Errorf("peers: %+v", st.Peers)
	}
	if len(st.Routes) != len(fixtureRoutes)+1 {
		t.Errorf("%d routes in status, want %d", len(st.Routes), len(fixtureRoutes)+1)
	}
	for _, r := range st.Routes {
		if r.Installed == (r.Prefix.String() == "10.3.0.0/16") {
			t.Errorf("route %s installed=%v", r.Prefix, r.Installed)
		}
		if p := r.Prefix.String(); (p == "100.64.0.3/32") != (r.Peer == "c") || (p == "192.168.1.0/24") != (r.Via == netip.MustParseAddr("10.1.0.9")) {
			t.Errorf("route status %+v: want the peer of a tunnel address and the router of a direct route", r)
		}
	}
	if len(st.Handoffs) != 1 || st.Handoffs[0].Twin != "b" || st.Handoffs[0].Table != DefaultHandoffTableBase+1 || st.Handoffs[0].Sources != 2 ||
		!slices.Equal(st.Handoffs[0].Via, addrs("10.1.0.2", "fd00:1::2")) {
		t.Errorf("handoffs: %+v", st.Handoffs)
	}
	// The last error is the last Set's; no device, no more than the name.
	k.failRoute[netip.MustParsePrefix("10.9.0.0/16")] = unix.ENOMEM
	want := fullDesired(newFixture(t))
	want.Routes = append(want.Routes, netip.MustParsePrefix("10.9.0.0/16"))
	_ = d.Set(ctx, want)
	if st, _ := d.Status(); !strings.Contains(st.LastError, "10.9.0.0/16") {
		t.Errorf("last error %q, want the failed route", st.LastError)
	}
	if st, err := newFakeDataplane(newFakeKernel(), "ocdptest9").Status(); err != nil || st.Device != "ocdptest9" || st.Up || st.Mode != "" {
		t.Errorf("status without a device: %+v %v", st, err)
	}
}

// TestLocalAddresses: the namespace's addresses outside the WireGuard
// device and lo, IPv6 link-local ones left out, with their prefix length.
func TestLocalAddresses(t *testing.T) {
	k := newFakeKernel()
	addLAN(k)
	k.mu.Lock()
	k.addrs[fakeLo] = append(k.addrs[fakeLo], netip.MustParsePrefix("10.1.0.1/32"))
	k.addrs[fakeEth0] = append(k.addrs[fakeEth0], netip.MustParsePrefix("fe80::1/64"))
	k.mu.Unlock()
	d := newFakeDataplane(k, "ocdptest0")
	check := func(when string) {
		got, err := d.LocalAddresses()
		if err != nil {
			t.Fatal(err)
		}
		// Link by link, as the kernel lists them.
		want := map[string]string{"eth0": "[192.0.2.1/24]", "eth1": "[10.1.0.1/24 fd00:1::1/64]"}
		have := map[string]string{}
		for _, l := range got {
			have[l.Link] = fmt.Sprint(slices.SortedFunc(slices.Values(l.Addrs), netipx.ComparePrefix))
		}
		if !maps.Equal(have, want) {
			t.Errorf("%s: LocalAddresses = %v, want %v", when, have, want)
		}
	}
	// An adopted device, ahead of this Dataplane's first Set.
	other := newFakeDataplane(k, "ocdptest0")
	if err := other.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	check("before Set")
	if err := d.Set(ctx, newFixture(t).desired()); err != nil {
		t.Fatal(err)
	}
	check("after Set")
}
