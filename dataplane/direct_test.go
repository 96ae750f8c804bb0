package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestDirectRoutes: a direct route is one route via its routers (a
// multipath route for several), each resolved to the link of its
// connected subnet, with our protocol and metric; no peer carries it; a
// reordered Set writes nothing; a withdrawn one goes.
func TestDirectRoutes(t *testing.T) {
	k := newFakeKernel()
	k.addLink("eth1", "172.30.0.1/24", "fd00:30::1/64")
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	want.DirectRoutes = []DirectRoute{
		{Prefix: netip.MustParsePrefix("192.168.1.0/24"), Via: addrs("172.30.0.2")},
		{Prefix: netip.MustParsePrefix("192.168.2.0/24"), Via: addrs("172.30.0.3", "172.30.0.2")},
		{Prefix: netip.MustParsePrefix("fd00:168::/48"), Via: addrs("fd00:30::2")},
	}
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	direct := []string{
		"table 254 192.168.1.0/24 via 172.30.0.2 dev eth1 metric 20 proto 79",
		"table 254 192.168.2.0/24 via 172.30.0.2 dev eth1 via 172.30.0.3 dev eth1 metric 20 proto 79",
		"table 254 fd00:168::/48 via fd00:30::2 dev eth1 metric 1044 proto 79",
	}
	sameLines(t, "routes", k.routeLines(RouteProtocol), slices.Concat(fixtureRoutes, direct))
	for _, p := range k.devices["ocdptest0"].Peers {
		for _, a := range ipNetsToPrefixes(p.AllowedIPs) {
			if strings.HasPrefix(a.String(), "192.168.") || strings.HasPrefix(a.String(), "fd00:168:") {
				t.Errorf("direct prefix %s in a peer's allowed ips", a)
			}
		}
	}
	slices.Reverse(want.DirectRoutes[1].Via)
	slices.Reverse(want.DirectRoutes)
	setWritesNothing(t, k, d, want, "a reordered Set")
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	installed := 0
	for _, r := range st.Routes {
		if r.Via.IsValid() && r.Installed && r.Peer == "" {
			installed++
		}
	}
	if installed != 3 {
		t.Errorf("status shows %d direct routes installed: %+v", installed, st.Routes)
	}
	// The router's link flaps: the kernel drops the routes, a repair
	// brings them back.
	k.setDown("eth1")
	_ = k.LinkSetUp(k.links["eth1"])
	repairDrift(d)
	sameLines(t, "routes after the VBR link flapped", k.routeLines(RouteProtocol), slices.Concat(fixtureRoutes, direct))
	want.DirectRoutes = slices.DeleteFunc(want.DirectRoutes, func(r DirectRoute) bool { return r.Prefix.String() != "192.168.1.0/24" })
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	sameLines(t, "routes after withdrawals", k.routeLines(RouteProtocol), slices.Concat(fixtureRoutes, direct[:1]))
}
