package routing

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// bird6Conf is an on-premises BIRD peering over IPv6 on a dual-stack link,
// both families on the one session, announcing a prefix of each family
// inside the accept list and an IPv6 one inside vpc-b.
const bird6Conf = `router id 172.30.0.2;
protocol device {}
protocol direct { ipv4; ipv6; }
protocol static onprem4 {
	ipv4;
	route 192.168.10.0/24 blackhole;
}
protocol static onprem6 {
	ipv6;
	route 2001:db8:100:10::/64 blackhole;
	route fd00:2:0:9::/64 blackhole;
}
protocol bgp cen {
	local fd30::2 as 65010;
	neighbor fd30::1 as 64512;
	hold time 9;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export where source = RTS_STATIC; next hop address 172.30.0.2; };
	ipv6 { import all; export where source = RTS_STATIC; };
}
`

// TestBIRDVBROverIPv6: a real BIRD peers with gw-a over IPv6 only and the
// session carries both families: gw-a installs the IPv6 prefix via the
// router's IPv6 address and the IPv4 one via its IPv4 next hop on the same
// link, passes both on to gw-b with their origin, refuses the IPv6 prefix
// inside vpc-b as a conflict, and BIRD gets the CEN's routes of both
// families with gw-a's link address of each family as next hop.
func TestBIRDVBROverIPv6(t *testing.T) {
	l := newLab(t)
	nsA, nsB, nsOp := l.dualStackVBR(t, "fd30::1/64", "fd30::2/64", "172.30.0.1/30", "172.30.0.2/30")
	sock := startBIRD(t, nsOp, bird6Conf)

	tunA, tunB := ma("100.64.0.1"), ma("100.64.0.2")
	inst := []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcA6, Region: "r-a", Network: "vpc-a"},
		{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}, {Prefix: vpcB6, Region: "r-b", Network: "vpc-b"}}
	prot := []netip.Prefix{mp("100.64.0.1/32"), mp("100.64.0.2/32")}
	accept := []netip.Prefix{mp("192.168.0.0/16"), mp("2001:db8:100::/48"), mp("fd00::/16")}
	entB := []Entitlement{{Network: "vpc-b", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{vpcB, vpcB6}}}
	dA := Desired{RouterID: tunA, LocalAddress: tunA, Region: "r-a", InstanceASN: testASN,
		Gateways:  []GatewayPeer{{Name: "gw-b", Region: "r-b", Address: tunB, Entitled: entB}},
		Originate: []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcA6, Region: "r-a", Network: "vpc-a"}},
		VBRs: []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: ma("fd30::2"), PeerASN: 65010, Accept: accept,
			LinkAddresses: []netip.Prefix{mp("172.30.0.1/30"), mp("fd30::1/64")}}},
		InstanceCIDRs: inst, ProtectedPrefixes: prot}
	dB := Desired{RouterID: tunB, LocalAddress: tunB, Region: "r-b", InstanceASN: testASN,
		Gateways: []GatewayPeer{{Name: "gw-a", Region: "r-a", Address: tunA, Entitled: []Entitlement{
			{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA, vpcA6}},
			{Network: "idc-a", Region: "r-a", Kind: KindVBR, Prefixes: accept}}}},
		Originate:     []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}, {Prefix: vpcB6, Region: "r-b", Network: "vpc-b"}},
		InstanceCIDRs: inst, ProtectedPrefixes: prot}
	a := l.speaker(nsA, helperConfig{Desired: dA, Port: 179})
	b := l.speaker(nsB, helperConfig{Desired: dB, Port: 179})

	stA := a.waitFor(60*time.Second, "both families from BIRD at gw-a", func(s helperState) bool {
		r4, ok4 := s.routes()["192.168.10.0/24"]
		r6, ok6 := s.routes()["2001:db8:100:10::/64"]
		return ok4 && ok6 && r4.Direct && r6.Direct &&
			slices.Equal(r4.NextHops, []netip.Addr{ma("172.30.0.2")}) && slices.Equal(r6.NextHops, []netip.Addr{ma("fd30::2")})
	})
	if _, ok := stA.routes()["fd00:2:0:9::/64"]; ok {
		t.Error("gw-a learned fd00:2:0:9::/64 from BIRD: it lies inside vpc-b's IPv6 CIDR")
	}
	b.waitFor(30*time.Second, "both families from BIRD at gw-b, through gw-a", func(s helperState) bool {
		r4, ok4 := s.routes()["192.168.10.0/24"]
		r6, ok6 := s.routes()["2001:db8:100:10::/64"]
		return ok4 && ok6 && slices.Equal(r4.NextHops, []netip.Addr{tunA}) && slices.Equal(r6.NextHops, []netip.Addr{tunA}) &&
			r6.OriginNetwork == "idc-a" && r6.OriginRegion == "r-a"
	})
	a.waitFor(20*time.Second, "the conflict in gw-a's status", func(s helperState) bool {
		return slices.ContainsFunc(s.Status.Rejected, func(r Rejection) bool {
			return r.Prefix == mp("fd00:2:0:9::/64") && r.Reason == ReasonConflict
		})
	})
	checkBIRDHasCEN(t, sock)
}

// checkBIRDHasCEN: BIRD holds vpc-a and vpc-b in both families, each via
// gw-a's address of the family on the link.
func checkBIRDHasCEN(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r4 := birdc(t, sock, "show", "route", "protocol", "cen", "table", "master4")
		r6 := birdc(t, sock, "show", "route", "protocol", "cen", "table", "master6")
		ok := true
		for _, want := range []string{"10.1.0.0/16", "10.2.0.0/16", "via 172.30.0.1"} {
			ok = ok && strings.Contains(r4, want)
		}
		for _, want := range []string{"fd00:1::/48", "fd00:2::/48", "via fd30::1"} {
			ok = ok && strings.Contains(r6, want)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BIRD lacks the CEN's routes of both families via gw-a's link addresses:\n%s\n%s", r4, r6)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dualStackVBR is gw-a and gw-b linked over 100.64.0.0/24, and an
// on-premises router linked to gw-a over first (gw-a's address, the
// router's), with second added on the same link: a VBR link of both
// families, the session over first's. It returns the three namespaces.
func (l *lab) dualStackVBR(t *testing.T, firstA, firstOp, secondA, secondOp string) (nsA, nsB, nsOp string) {
	t.Helper()
	nsA, nsB, nsOp = l.netns("gwa"), l.netns("gwb"), l.netns("op")
	l.link(nsA, "100.64.0.1/24", nsB, "100.64.0.2/24")
	l.link(nsA, firstA, nsOp, firstOp)
	vbrA, vbrOp := fmt.Sprintf("ocrt2a%s", l.suffix), fmt.Sprintf("ocrt2b%s", l.suffix)
	for _, a := range []struct{ ns, dev, addr string }{{nsA, vbrA, secondA}, {nsOp, vbrOp, secondOp}} {
		args := []string{"-n", a.ns, "addr", "add", a.addr, "dev", a.dev}
		if strings.Contains(a.addr, ":") {
			args = append(args, "nodad")
		}
		run(t, append([]string{"ip"}, args...)...)
	}
	return nsA, nsB, nsOp
}
