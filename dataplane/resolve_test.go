package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestResolveReportsEveryProblem: each problem alone is reported naming
// its value, all of them together are all reported, and an invalid Set
// writes nothing.
func TestResolveReportsEveryProblem(t *testing.T) {
	f := newFixture(t)
	peer := func(name string, mod func(*Peer)) func(*Desired) {
		return func(d *Desired) {
			p := Peer{Name: name, PublicKey: mustKey(t).PublicKey()}
			mod(&p)
			d.Peers = append(d.Peers, p)
		}
	}
	cases := []struct {
		name string
		mod  func(*Desired)
		want string
	}{
		{"no key", func(d *Desired) { d.PrivateKey = wgtypes.Key{} }, "private key: missing"},
		{"port", func(d *Desired) { d.ListenPort = 70000 }, "listen port 70000: must be 1 to 65535"},
		{"mtu", func(d *Desired) { d.MTU = 100 }, "mtu 100: must be 0 (automatic) or 1280 to 65535"},
		{"address", func(d *Desired) { d.Addresses = append(d.Addresses, netip.Prefix{}) }, "address: invalid prefix"},
		{"peer name", peer("", func(*Peer) {}), "peer peers[2]: missing name"},
		{"peer key", peer("x", func(p *Peer) { p.PublicKey = wgtypes.Key{} }), "peer x: missing public key"},
		{"peer duplicate key", peer("dup", func(p *Peer) { p.PublicKey = f.b.PublicKey() }), "peer dup: public key already used by peer b"},
		{"peer own key", func(d *Desired) { peer("self", func(p *Peer) { p.PublicKey = d.PrivateKey.PublicKey() })(d) }, "peer self: public key is this gateway's own"},
		{"endpoint port", peer("x", func(p *Peer) { p.Endpoint = netip.MustParseAddrPort("192.0.2.9:0") }), "peer x: endpoint 192.0.2.9:0: port 0"},
		{"tunnel address", peer("x", func(p *Peer) { p.TunnelAddresses = pfxs("100.64.9.0/24") }), "peer x: tunnel address 100.64.9.0/24: want a host prefix"},
		{"allowed ip", peer("x", func(p *Peer) { p.AllowedIPs = pfxs("10.9.0.1/16") }), "peer x: allowed ip 10.9.0.1/16: invalid or has host bits set"},
		{"allowed ip twice", peer("x", func(p *Peer) { p.AllowedIPs = pfxs("10.2.0.0/16") }), "peer x: allowed ip 10.2.0.0/16: already allowed for peer b"},
		{"tunnel address allowed twice", peer("x", func(p *Peer) { p.AllowedIPs = pfxs("100.64.0.2/32") }), "peer x: allowed ip 100.64.0.2/32: already allowed for peer b"},
		{"tunnel address twice", peer("x", func(p *Peer) { p.TunnelAddresses = pfxs("100.64.0.3/32") }),
			"tunnel address of peer x 100.64.0.3/32: already routed as tunnel address of peer c"},
		{"route host bits", func(d *Desired) { d.Routes = append(d.Routes, netip.MustParsePrefix("10.9.0.1/16")) }, "route 10.9.0.1/16: invalid prefix or host bits set"},
		{"route on a tunnel address", func(d *Desired) { d.Routes = append(d.Routes, netip.MustParsePrefix("100.64.0.2/32")) },
			"route 100.64.0.2/32: already routed as tunnel address of peer b"},
		{"route twice", func(d *Desired) { d.Routes = append(d.Routes, netip.MustParsePrefix("10.2.0.0/16")) }, "route 10.2.0.0/16: already routed as route"},
		{"route without a source", func(d *Desired) {
			d.Addresses = slices.DeleteFunc(d.Addresses, func(a netip.Prefix) bool { return a.Addr().Is6() })
		}, "route fd00:2::/64: no tunnel address of its family in addresses"},
		{"direct without router", func(d *Desired) {
			d.DirectRoutes = append(d.DirectRoutes, []DirectRoute{{Prefix: netip.MustParsePrefix("192.168.0.0/16")}}...)
		},
			"direct route 192.168.0.0/16: via []: need routers of the prefix's address family"},
		{"direct router family", func(d *Desired) {
			d.DirectRoutes = append(d.DirectRoutes, []DirectRoute{{Prefix: netip.MustParsePrefix("fd00::/48"), Via: addrs("172.30.0.2")}}...)
		}, "direct route fd00::/48: via [172.30.0.2]"},
		{"direct on a route", func(d *Desired) {
			d.DirectRoutes = append(d.DirectRoutes, []DirectRoute{{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Via: addrs("172.30.0.2")}}...)
		}, "direct route via 172.30.0.2 10.2.0.0/16: already routed as route"},
		{"handoff to a stranger", func(d *Desired) { d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "zz", Via: addrs("10.1.0.2")}}...) }, `handoff to "zz": no such peer`},
		{"handoff bad via", func(d *Desired) {
			d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "b", Via: []netip.Addr{{}, netip.IPv4Unspecified()}, Sources: pfxs("10.1.128.0/17")}}...)
		}, "handoff to b: via 0.0.0.0: not an address"},
		{"handoff without via", func(d *Desired) {
			d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "b", Sources: pfxs("10.1.128.0/17")}}...)
		}, "handoff to b: no address to hand off to"},
		{"handoff source host bits", func(d *Desired) {
			d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "b", Via: addrs("10.1.0.2"), Sources: pfxs("10.1.128.1/17")}}...)
		}, "handoff to b: source 10.1.128.1/17: invalid prefix or host bits set"},
		{"handoff source twice", func(d *Desired) {
			d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "b", Via: addrs("10.1.0.2"), Sources: pfxs("10.1.128.0/17")}, {Twin: "c", Via: addrs("10.1.0.3"), Sources: pfxs("10.1.128.0/17")}}...)
		}, "handoff to c: source 10.1.128.0/17: already handed off to b"},
		{"handoff twice", func(d *Desired) {
			d.Handoffs = append(d.Handoffs, []Handoff{{Twin: "b", Via: addrs("10.1.0.2")}, {Twin: "b", Via: addrs("10.1.0.3")}}...)
		}, "handoff to b: listed twice"},
	}
	all := f.desired()
	for _, c := range cases {
		d := f.desired()
		c.mod(&d)
		c.mod(&all)
		_, err := resolve(d, DefaultHandoffTableBase)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: resolve = %v, want %q", c.name, err, c.want)
		}
	}
	k := newFakeKernel()
	err := newFakeDataplane(k, "ocdptest0").Set(ctx, all)
	if err == nil {
		t.Fatal("Set of every problem at once succeeded")
	}
	for _, c := range cases {
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("with every problem at once, the error lacks %q", c.want)
		}
	}
	if strings.Contains(err.Error(), f.self.String()) {
		t.Error("error contains the private key")
	}
	if k.writes != 0 {
		t.Errorf("a rejected Set wrote %d times", k.writes)
	}
}

func TestDesiredNeverPrintsKey(t *testing.T) {
	d := handoffDesired(newFixture(t))
	for _, s := range []string{fmt.Sprint(d), fmt.Sprintf("%+v", d), fmt.Sprintf("%#v", d), fmt.Sprintf("%v", &d), fmt.Sprintf("%s", []Desired{d})} {
		if strings.Contains(s, d.PrivateKey.String()) {
			t.Fatalf("formatted Desired contains the private key: %s", s)
		}
	}
	if isZero(d) || !isZero(Desired{}) {
		t.Error("isZero")
	}
}

func TestDeviceName(t *testing.T) {
	a, b := DeviceName("cen/gw-1"), DeviceName("cen/gw-2")
	if len(a) != 15 || a == b || a != DeviceName("cen/gw-1") || validDeviceName(a) != nil {
		t.Errorf("DeviceName: %q %q", a, b)
	}
	for _, bad := range []string{"", "0123456789abcdef", "a/b", "a b", "a:b", ".."} {
		if validDeviceName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{}, "ID or Device is required"},
		{Options{Device: "a/b"}, "not allowed"},
		{Options{ID: "x", Mode: "vpp"}, `mode "vpp"`},
		{Options{ID: "x", Table: DefaultHandoffTableBase + 3}, "lies among the handoff tables"},
	} {
		if err := c.opts.defaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.opts, err, c.want)
		}
	}
	o := Options{ID: "cen/gw-1"}
	if err := o.defaults(); err != nil || o.Device != DeviceName("cen/gw-1") || o.Table != 254 || o.HandoffTableBase != DefaultHandoffTableBase || o.RouteWorkers != 4 {
		t.Errorf("defaults: %+v %v", o, err)
	}
}
