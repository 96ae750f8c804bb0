package config

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
)

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse("cen.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func egress(t *testing.T, d *Desired, region string) EgressRate {
	t.Helper()
	for _, e := range d.Egress {
		if e.Region == region {
			return e
		}
	}
	t.Fatalf("gateway %s has no egress rate toward %s: %+v", d.Gateway, region, d.Egress)
	return EgressRate{}
}

func TestEgressRatesSplitByWeight(t *testing.T) {
	cfg := mustLoad(t, "../examples/realistic.yaml")
	// Beijing has gw-beijing-1 (weight 2) and gw-beijing-2 (weight 1).
	bj1, err := cfg.Desired("gw-beijing-1", DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bj2, _ := cfg.Desired("gw-beijing-2", DesiredOptions{})
	if got := egress(t, bj1, "us-west-1"); got.Rate != 40_000_000 || got.PairRate != 60_000_000 || got.Package != "bwp-china-na" {
		t.Errorf("gw-beijing-1 -> us-west-1 = %+v, want 2/3 of 60Mbps", got)
	}
	if got := egress(t, bj2, "us-west-1"); got.Rate != 20_000_000 {
		t.Errorf("gw-beijing-2 -> us-west-1 = %v, want 1/3 of 60Mbps", got.Rate)
	}
	if got := egress(t, bj1, "eu-central-1"); got.Rate != 333_333_333 {
		t.Errorf("gw-beijing-1 -> eu-central-1 = %v, want 2/3 of 500Mbps rounded down", got.Rate)
	}

	// With its twin down, a gateway takes the region's whole budget.
	down, _ := cfg.Desired("gw-beijing-2", DesiredOptions{Down: map[string]bool{"gw-beijing-1": true}})
	if got := egress(t, down, "us-west-1"); got.Rate != 60_000_000 {
		t.Errorf("gw-beijing-2 alone -> us-west-1 = %v, want all 60Mbps", got.Rate)
	}
	// A gateway's own "down" mark does not shrink its share to nothing.
	self, _ := cfg.Desired("gw-beijing-2", DesiredOptions{Down: map[string]bool{"gw-beijing-2": true}})
	if got := egress(t, self, "us-west-1"); got.Rate != 20_000_000 {
		t.Errorf("gw-beijing-2 marked down itself -> us-west-1 = %v, want 20Mbps", got.Rate)
	}
	// The other direction is its own budget: the single Silicon Valley
	// gateway gets all 60 Mbps toward Beijing.
	sv, _ := cfg.Desired("gw-siliconvalley-1", DesiredOptions{})
	if got := egress(t, sv, "cn-beijing"); got.Rate != 60_000_000 {
		t.Errorf("us-west-1 -> cn-beijing = %v, want 60Mbps", got.Rate)
	}
}

func TestDefaultPairIsNotSplit(t *testing.T) {
	cfg := mustLoad(t, "../examples/realistic.yaml")
	for _, gw := range []string{"gw-beijing-1", "gw-beijing-2"} {
		d, _ := cfg.Desired(gw, DesiredOptions{})
		got := egress(t, d, "cn-shanghai")
		if got.Rate != DefaultBandwidth || got.Source != SourceDefault || got.Package != "" {
			t.Errorf("%s -> cn-shanghai = %+v, want the whole 1Kbps default", gw, got)
		}
	}
}

func TestSameRegionHasNoRate(t *testing.T) {
	cfg := mustLoad(t, "../examples/realistic.yaml")
	d, _ := cfg.Desired("gw-beijing-1", DesiredOptions{})
	for _, e := range d.Egress {
		if e.Region == "cn-beijing" {
			t.Fatalf("same-region traffic has a rate: %+v", e)
		}
	}
	// Every other region with a gateway has one.
	if len(d.Egress) != 3 {
		t.Errorf("egress = %+v, want cn-shanghai, eu-central-1, us-west-1", d.Egress)
	}
	// The twin is still a peer: same-region traffic rides the tunnel too.
	found := false
	for _, p := range d.Peers {
		found = found || p.Name == "gw-beijing-2"
	}
	if !found || len(d.Peers) != 4 {
		t.Errorf("peers = %v, want every other gateway", d.Peers)
	}
}

func TestOriginationAndEntitlements(t *testing.T) {
	cfg := mustLoad(t, "../examples/realistic.yaml")
	d, _ := cfg.Desired("gw-beijing-2", DesiredOptions{})
	want := []string{"10.10.0.0/16", "fd00:10::/48"}
	if len(d.Originate) != len(want) {
		t.Fatalf("originate = %v", d.Originate)
	}
	for i, w := range want {
		if d.Originate[i].Prefix.String() != w || d.Originate[i].Network != "vpc-beijing-prod" {
			t.Errorf("originate[%d] = %+v, want %s of vpc-beijing-prod", i, d.Originate[i], w)
		}
	}
	if len(d.VBRs) != 0 {
		t.Errorf("gw-beijing-2 holds no VBR, got %+v", d.VBRs)
	}
	bj1, _ := cfg.Desired("gw-beijing-1", DesiredOptions{})
	if len(bj1.VBRs) != 1 || bj1.VBRs[0].Network != "idc-beijing" || bj1.VBRs[0].PeerASN != 65010 {
		t.Errorf("gw-beijing-1 VBRs = %+v", bj1.VBRs)
	}

	var peer1, peer2 Peer
	for _, p := range d.Peers {
		switch p.Name {
		case "gw-beijing-1":
			peer1 = p
		case "gw-siliconvalley-1":
			peer2 = p
		}
	}
	cases := []struct {
		peer    Peer
		prefix  string
		network string
		ok      bool
	}{
		{peer1, "10.10.0.0/16", "vpc-beijing-prod", true},  // its region's VPC
		{peer1, "192.168.0.0/16", "idc-beijing", true},     // its VBR's accept list
		{peer1, "192.168.10.0/24", "idc-beijing", true},    // and more-specifics
		{peer1, "192.0.0.0/8", "", false},                  // but not less-specifics
		{peer1, "10.20.0.0/16", "", false},                 // another region's VPC: a hijack
		{peer1, "10.10.0.0/17", "", false},                 // VPC CIDRs match exactly
		{peer2, "10.20.0.0/16", "vpc-siliconvalley", true}, //
		{peer2, "192.168.0.0/16", "", false},               // holds no VBR
		{peer2, "fd00:10::/48", "", false},                 //
	}
	for _, tc := range cases {
		network, ok := tc.peer.Entitled.Allows(netip.MustParsePrefix(tc.prefix))
		if ok != tc.ok || network != tc.network {
			t.Errorf("%s may originate %s = %q, %v; want %q, %v", tc.peer.Name, tc.prefix, network, ok, tc.network, tc.ok)
		}
	}
}

func TestVBRWithoutAcceptListIsEntitledToAnything(t *testing.T) {
	cfg := mustParse(t, twoGateways+`networks:
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010}}
`)
	e := cfg.Entitlement("gw-bj")
	if network, ok := e.Allows(netip.MustParsePrefix("203.0.113.0/24")); !ok || network != "idc" {
		t.Errorf("Allows = %q, %v", network, ok)
	}
}

// gatewaysYAML renders an instance whose gateways have no tunnel_address,
// in the order given.
func gatewaysYAML(names ...string) string {
	var b strings.Builder
	b.WriteString("instance: {name: t}\ngateways:\n")
	keys := []string{key1, key2, key3, "IUxMbzVG4OKSpRAMV5cRCKu36C5vBNatvFMwlbONYyQ=", "VDHR/2EvViHhn5NBuNtwhYGJyc+fM9/kz8vlZauuqkE="}
	for i, n := range names {
		fmt.Fprintf(&b, "  - {name: %s, region: cn-beijing, endpoint: \"192.0.2.%d:51820\", public_key: %q, private_key_file: k}\n", n, i+1, keys[i])
	}
	return b.String()
}

func TestTunnelAddressesAreStable(t *testing.T) {
	addrs := func(cfg *Config) map[string]netip.Addr {
		out := map[string]netip.Addr{}
		for _, g := range cfg.Gateways {
			if !TunnelPrefix.Contains(g.TunnelAddress) || !g.TunnelAddressDerived {
				t.Errorf("%s tunnel address %s is not derived from %s", g.Name, g.TunnelAddress, TunnelPrefix)
			}
			out[g.Name] = g.TunnelAddress
		}
		return out
	}
	base := addrs(mustParse(t, gatewaysYAML("gw-a", "gw-b", "gw-c")))
	variants := map[string]*Config{
		"reordered": mustParse(t, gatewaysYAML("gw-c", "gw-a", "gw-b")),
		"added":     mustParse(t, gatewaysYAML("gw-new", "gw-a", "gw-b", "gw-c", "gw-z")),
		"removed":   mustParse(t, gatewaysYAML("gw-c", "gw-a")),
	}
	for name, cfg := range variants {
		for gw, addr := range addrs(cfg) {
			if was, ok := base[gw]; ok && was != addr {
				t.Errorf("%s: %s renumbered from %s to %s", name, gw, was, addr)
			}
		}
	}
	// Desired state carries the same address as the peers see.
	cfg := variants["added"]
	d, _ := cfg.Desired("gw-a", DesiredOptions{})
	if d.TunnelAddress != base["gw-a"] {
		t.Errorf("desired tunnel address %s, want %s", d.TunnelAddress, base["gw-a"])
	}
	other, _ := cfg.Desired("gw-b", DesiredOptions{})
	for _, p := range other.Peers {
		if p.Name == "gw-a" && p.TunnelAddress != base["gw-a"] {
			t.Errorf("peer view of gw-a = %s, want %s", p.TunnelAddress, base["gw-a"])
		}
	}
}

func TestDerivedAddressesAvoidNetworkAndBroadcastOctets(t *testing.T) {
	for i := range 5000 {
		a := DeriveTunnelAddress(fmt.Sprintf("gw-%d", i))
		last := a.As4()[3]
		if !TunnelPrefix.Contains(a) || last == 0 || last == 255 {
			t.Fatalf("DeriveTunnelAddress(gw-%d) = %s", i, a)
		}
	}
}

func TestDesiredUnknownGateway(t *testing.T) {
	cfg := mustLoad(t, "../examples/small.yaml")
	if _, err := cfg.Desired("gw-mars", DesiredOptions{}); err == nil || !strings.Contains(err.Error(), "gw-beijing, gw-siliconvalley") {
		t.Errorf("err = %v, want it to list the gateways", err)
	}
}

func TestMatrix(t *testing.T) {
	cfg := mustLoad(t, "../examples/lab.yaml")
	m := cfg.Matrix()
	if len(m) != 6 {
		t.Fatalf("matrix has %d pairs, want 6: %+v", len(m), m)
	}
	for i, p := range m {
		if p.Regions[0] >= p.Regions[1] {
			t.Errorf("pair %v not in lexical order", p.Regions)
		}
		if i > 0 && (m[i-1].Regions[0] > p.Regions[0] || m[i-1].Regions[0] == p.Regions[0] && m[i-1].Regions[1] >= p.Regions[1]) {
			t.Errorf("pairs not sorted at %v", p.Regions)
		}
	}
	last := m[len(m)-1]
	if last.Regions != [2]string{"eu-central-1", "us-west-1"} || last.Source != SourceDefault || last.Bandwidth != 1000 || last.Package != "" {
		t.Errorf("default pair = %+v", last)
	}
	if m[0].Bandwidth != 40_000_000 || m[0].Package != "bwp-china" {
		t.Errorf("first pair = %+v", m[0])
	}
}

// TestGatewayPrefixLimit: a gateway may send its VPC CIDRs with their
// handoff addresses and whatever its VBRs may pass on, plus slack.
func TestGatewayPrefixLimit(t *testing.T) {
	e := Entitlement{
		VPCs: []Origin{{Network: "v", Prefix: netip.MustParsePrefix("10.1.0.0/16")}, {Network: "v", Prefix: netip.MustParsePrefix("fd00:1::/48")}},
		VBRs: []VBREntitlement{{Network: "idc-1", MaxPrefixes: 10_000}, {Network: "idc-2", MaxPrefixes: 500}},
	}
	if got, want := e.MaxPrefixes(), uint32(2*(1+handoffsPerVPCCIDR)+gatewayLimitSlack+10_500); got != want {
		t.Errorf("limit %d, want %d", got, want)
	}
	huge := Entitlement{VBRs: []VBREntitlement{{MaxPrefixes: math.MaxUint32}, {MaxPrefixes: math.MaxUint32}}}
	if got := huge.MaxPrefixes(); got != math.MaxUint32 {
		t.Errorf("limit of two unbounded VBRs %d, want it capped at %d", got, uint32(math.MaxUint32))
	}
}
