package dataplane

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDirectRoutes(t *testing.T) {
	k := newFakeKernel()
	d := newFakeDataplane(k, "ocdptest0")
	want := newFixture(t).desired()
	want.DirectRoutes = []DirectRoute{
		{Prefix: netip.MustParsePrefix("192.168.1.0/24"), Via: []netip.Addr{netip.MustParseAddr("172.30.0.2")}},
		{Prefix: netip.MustParsePrefix("192.168.2.0/24"), Via: []netip.Addr{netip.MustParseAddr("172.30.0.3"), netip.MustParseAddr("172.30.0.2")}},
	}
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	var single, multi bool
	for _, r := range k.routes {
		if r.Dst == nil || r.Protocol != RouteProtocol {
			continue
		}
		switch r.Dst.String() {
		case "192.168.1.0/24":
			single = r.LinkIndex == 0 && r.Gw.String() == "172.30.0.2"
		case "192.168.2.0/24":
			multi = r.LinkIndex == 0 && r.Gw == nil && len(r.MultiPath) == 2
		}
	}
	if !single || !multi {
		t.Fatalf("direct routes not installed via their routers: %v", k.routes)
	}
	// Not handed to WireGuard: no peer carries them.
	for _, p := range k.devices["ocdptest0"].Peers {
		for _, a := range p.AllowedIPs {
			if strings.HasPrefix(a.String(), "192.168.") {
				t.Errorf("direct prefix %s in a peer's allowed ips", a.String())
			}
		}
	}
	before := k.writes
	want.DirectRoutes[1].Via[0], want.DirectRoutes[1].Via[1] = want.DirectRoutes[1].Via[1], want.DirectRoutes[1].Via[0]
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if k.writes != before {
		t.Errorf("an identical Set rewrote %d things", k.writes-before)
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	installed := 0
	for _, r := range st.Routes {
		if strings.HasPrefix(r.Prefix.String(), "192.168.") && r.Installed && r.Peer == "" {
			installed++
		}
	}
	if installed != 2 {
		t.Errorf("status shows %d direct routes installed: %+v", installed, st.Routes)
	}
	want.DirectRoutes = want.DirectRoutes[:1]
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	for _, r := range k.routes {
		if r.Dst != nil && r.Dst.String() == "192.168.2.0/24" {
			t.Error("a withdrawn direct route stayed")
		}
	}
}

func TestDirectRouteValidation(t *testing.T) {
	want := newFixture(t).desired()
	want.DirectRoutes = []DirectRoute{
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Via: []netip.Addr{netip.MustParseAddr("172.30.0.2")}}, // already a tunnel route
		{Prefix: netip.MustParsePrefix("192.168.0.0/16")},                                                    // no router
		{Prefix: netip.MustParsePrefix("fd00::/48"), Via: []netip.Addr{netip.MustParseAddr("172.30.0.2")}},   // wrong family
	}
	_, err := resolve(want)
	for _, s := range []string{"direct route 10.2.0.0/16: already routed to peer b", "direct route 192.168.0.0/16: via []", "direct route fd00::/48"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v lacks %q", err, s)
		}
	}
}
