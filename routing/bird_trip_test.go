package routing

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// birdTripConf is an on-premises BIRD that restarts gracefully (BIRD's
// default) and announces a prefix of each family over one IPv4 session.
const birdTripConf = `router id 172.30.0.2;
protocol device {}
protocol static onprem4 {
	ipv4;
	route 192.168.10.0/24 blackhole;
	route 192.168.11.0/24 blackhole;
	route 192.168.12.0/24 blackhole;
}
protocol static onprem6 {
	ipv6;
	route 2001:db8:100:10::/64 blackhole;
}
protocol bgp cen {
	local 172.30.0.2 as 65010;
	neighbor 172.30.0.1 as 64512;
	hold time 9;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export where source = RTS_STATIC; };
	ipv6 { import all; export where source = RTS_STATIC; next hop address fd30::2; };
}
`

// TestBIRDTripDropsBothFamilies: a BIRD router past max_prefixes in one
// family loses every route of its session at once, both families, at its
// gateway and at the gateway it passed them to, although BIRD restarts
// gracefully and GoBGP would keep them as a graceful restart's.
func TestBIRDTripDropsBothFamilies(t *testing.T) {
	l := newLab(t)
	nsA, nsB, nsOp := l.dualStackVBR(t, "172.30.0.1/30", "172.30.0.2/30", "fd30::1/64", "fd30::2/64")
	sock := startBIRD(t, nsOp, birdTripConf)

	tunA, tunB := ma("100.64.0.1"), ma("100.64.0.2")
	accept := []netip.Prefix{mp("192.168.0.0/16"), mp("2001:db8:100::/48")}
	inst := []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}
	dA := Desired{RouterID: tunA, LocalAddress: tunA, Region: "r-a", InstanceASN: testASN,
		Gateways:  []GatewayPeer{{Name: "gw-b", Region: "r-b", Address: tunB, MaxPrefixes: 1000, Entitled: []Entitlement{{Network: "vpc-b", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{vpcB}}}}},
		Originate: []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}},
		VBRs: []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: ma("172.30.0.2"), PeerASN: 65010, Accept: accept, MaxPrefixes: 3,
			LinkAddresses: []netip.Prefix{mp("172.30.0.1/30"), mp("fd30::1/64")}}},
		InstanceCIDRs: inst}
	dB := Desired{RouterID: tunB, LocalAddress: tunB, Region: "r-b", InstanceASN: testASN,
		Gateways: []GatewayPeer{{Name: "gw-a", Region: "r-a", Address: tunA, MaxPrefixes: 1000, Entitled: []Entitlement{
			{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA}},
			{Network: "idc-a", Region: "r-a", Kind: KindVBR, Prefixes: accept}}}},
		Originate:     []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}},
		InstanceCIDRs: inst}
	a := l.speaker(nsA, helperConfig{Desired: dA, Port: 179})
	b := l.speaker(nsB, helperConfig{Desired: dB, Port: 179})
	// Three IPv4 prefixes: at the limit, not past it.
	b.waitFor(60*time.Second, "both families from BIRD at gw-b", func(s helperState) bool {
		_, ok4 := s.routes()["192.168.12.0/24"]
		_, ok6 := s.routes()["2001:db8:100:10::/64"]
		return ok4 && ok6
	})
	// One more IPv4 prefix trips the session.
	more := strings.Replace(birdTripConf, "route 192.168.12.0/24 blackhole;", "route 192.168.12.0/24 blackhole;\n\troute 192.168.13.0/24 blackhole;", 1)
	if err := os.WriteFile(filepath.Join(filepath.Dir(sock), "bird.conf"), []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	birdc(t, sock, "configure")
	for _, n := range []*helperProc{a, b} {
		n.waitFor(15*time.Second, "no route of the tripped session left", func(s helperState) bool {
			for p, r := range s.routes() {
				if r.OriginNetwork == "idc-a" {
					t.Logf("still %s", p)
					return false
				}
			}
			return true
		})
	}
}
