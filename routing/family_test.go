package routing

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The dual-stack topology of TestBothFamiliesOverIPv4Sessions: A (r-a)
// with vpc-a in both families and a VBR whose router (127.0.0.5) may
// announce IPv6 inside 2001:db8:100::/48 only; B (r-b) with vpc-b in both
// families, which also claims a piece of vpc-a's IPv6 CIDR.
var (
	vpcA6, vpcB6  = mp("fd00:1::/48"), mp("fd00:2::/48")
	hijack6       = mp("fd00:1:0:5::/64")
	onprem6Link   = mp("2001:db8:30::1/64") // A's address on the VBR link
	onprem6Router = ma("2001:db8:30::2")    // the router's
	onprem6Good   = mp("2001:db8:100:1::/64")
	onprem6Far    = mp("2001:db8:100:2::/64") // announced with a next hop off the link
	onprem4       = mp("192.168.1.0/24")      // IPv4: the accept list has no IPv4 entry
	onprem6Clash  = mp("fd00:2:0:7::/64")     // inside vpc-b
)

func dualStackA(port int32) Desired {
	d := desiredA(port)
	d.Originate = append(d.Originate, Origin{Prefix: vpcA6, Region: "r-a", Network: "vpc-a"})
	d.Gateways = d.Gateways[:1]
	d.Gateways[0].Entitled = append(d.Gateways[0].Entitled, Entitlement{Network: "vpc-b", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{vpcB6}})
	d.VBRs[0].Accept = []netip.Prefix{mp("2001:db8:100::/48")}
	d.VBRs[0].LinkAddresses = []netip.Prefix{mp("127.0.0.2/8"), onprem6Link}
	d.InstanceCIDRs = append(d.InstanceCIDRs, NamedPrefix{Prefix: vpcA6, Region: "r-a", Network: "vpc-a"},
		NamedPrefix{Prefix: vpcB6, Region: "r-b", Network: "vpc-b"})
	return d
}

func dualStackB() Desired {
	d := desiredB(addrB, addrC, "gw-c")
	d.Gateways = d.Gateways[:1]
	d.Gateways[0].Entitled = []Entitlement{
		{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA, vpcA6}},
		{Network: "idc-a", Region: "r-a", Kind: KindVBR, Prefixes: []netip.Prefix{mp("2001:db8:100::/48")}},
	}
	d.Originate = append(d.Originate, Origin{Prefix: vpcB6, Region: "r-b", Network: "vpc-b"},
		Origin{Prefix: hijack6, Region: "r-b", Network: "vpc-b"})
	d.InstanceCIDRs = dualStackA(0).InstanceCIDRs
	return d
}

// TestBothFamiliesOverIPv4Sessions: gateway sessions between IPv4 tunnel
// addresses carry IPv6 VPC CIDRs both ways; a VBR session over IPv4 carries
// IPv6 on-premises prefixes, installed via the router's IPv6 next hop and
// passed on to B with their origin; the IPv6-only accept list admits no
// IPv4 prefix; an IPv6 hijack, conflict and default route are refused as
// in IPv4; the router gets the CEN's IPv6 routes with A's IPv6 link address
// as next hop; counts are reported per family.
func TestBothFamiliesOverIPv4Sessions(t *testing.T) {
	port := freePort(t)
	onprem := rawRouter(t, addrOnprem, 65010, port, addrA, testASN)
	a := startNode(t, port, dualStackA(port))
	b := startNode(t, port, dualStackB())
	waitFor(t, 30*time.Second, "IPv6 VPC CIDRs both ways", func() bool {
		ra, oka := a.route(vpcB6)
		rb, okb := b.route(vpcA6)
		return oka && okb && slices.Equal(ra.NextHops, []netip.Addr{addrB}) && ra.OriginNetwork == "vpc-b" &&
			slices.Equal(rb.NextHops, []netip.Addr{addrA}) && rb.OriginRegion == "r-a"
	})
	rawAnnounce(t, onprem, onprem6Router, false, onprem6Good, onprem6Clash, mp("::/0"))
	rawAnnounce(t, onprem, ma("2001:db8:99::9"), false, onprem6Far)
	rawAnnounce(t, onprem, addrOnprem, false, onprem4)
	waitFor(t, 20*time.Second, "the on-premises IPv6 prefix at A and B", func() bool {
		ra, oka := a.route(onprem6Good)
		rb, okb := b.route(onprem6Good)
		return oka && okb && ra.Direct && slices.Equal(ra.NextHops, []netip.Addr{onprem6Router}) &&
			slices.Equal(rb.NextHops, []netip.Addr{addrA}) && rb.OriginNetwork == "idc-a"
	})
	checkRefusedAtA(t, a)
	checkExported6(t, onprem)
	checkFamilyCounts(t, a)
}

// checkRefusedAtA: the hijack, the conflict, the default route, the IPv4
// prefix of an IPv6-only accept list and the off-link next hop are not
// learned, each refusal with its reason.
func checkRefusedAtA(t *testing.T, a *node) {
	t.Helper()
	want := map[netip.Prefix]Reason{hijack6: ReasonHijack, onprem6Clash: ReasonConflict, mp("::/0"): ReasonDefaultRoute, onprem4: ReasonNotAccepted}
	waitFor(t, 10*time.Second, "the refusals in A's status", func() bool {
		st, err := a.s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := map[netip.Prefix]Reason{}
		for _, rj := range st.Rejected {
			got[rj.Prefix] = rj.Reason
		}
		for p, r := range want {
			if got[p] != r {
				return false
			}
		}
		return true
	})
	for p := range want {
		if _, ok := a.route(p); ok {
			t.Errorf("A learned %s", p)
		}
	}
	if r, ok := a.route(onprem6Far); ok {
		t.Errorf("A installs %s via %v: its next hop is off the VBR's link", onprem6Far, r.NextHops)
	}
}

// checkExported6: the router has the CEN's IPv6 routes, each with A's
// IPv6 address on the link as next hop (not an IPv4-mapped one).
func checkExported6(t *testing.T, onprem *server.BgpServer) {
	t.Helper()
	var tbl map[netip.Prefix][]*apiutil.Path
	waitFor(t, 10*time.Second, "IPv6 CEN routes at the router", func() bool {
		tbl = rawTable(t, onprem)
		return len(tbl[vpcA6]) > 0 && len(tbl[vpcB6]) > 0
	})
	for _, p := range []netip.Prefix{vpcA6, vpcB6} {
		for _, path := range tbl[p] {
			if nh := pathNexthop(path); nh != onprem6Link.Addr() {
				t.Errorf("router's path to %s has next hop %s, want %s", p, nh, onprem6Link.Addr())
			}
		}
	}
}

// checkFamilyCounts: A's status splits the VBR's prefixes by family.
func checkFamilyCounts(t *testing.T, a *node) {
	t.Helper()
	waitFor(t, 10*time.Second, "per-family counts", func() bool {
		st, _ := a.s.Status(context.Background())
		for _, ss := range st.Sessions {
			if ss.Name == "idc-a" {
				f4, f6 := ss.Families[0], ss.Families[1]
				return f4.Family == "ipv4" && f4.Received == 1 && f4.Rejected == 1 &&
					f6.Family == "ipv6" && f6.Received == 4 && f6.Accepted == 2 && f6.Rejected == 2
			}
		}
		return false
	})
}

func pathNexthop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}
