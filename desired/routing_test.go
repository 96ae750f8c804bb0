package desired

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/opencen/opencen/config"
)

// TestRoutingOfBothFamilies: the speaker is given every family: IPv6 VPC
// CIDRs originated and entitled, an IPv6 VBR neighbor with its link
// addresses, and each accept list as written, so one with IPv6 entries
// only admits no IPv4 prefix (it is not nil, which would admit any).
func TestRoutingOfBothFamilies(t *testing.T) {
	cfg := twinsConfig(t, `  - {name: vpc-a6, type: vpc, region: cn-beijing, cidrs: ["fd00:1::/48"]}
  - {name: vpc-b6, type: vpc, region: us-west-1, cidrs: ["fd00:2::/48"]}
  - {name: idc6, type: vbr, region: cn-beijing, gateway: a1, bgp: {neighbor: "2001:db8:30::2", peer_asn: 65020, accept: ["2001:db8:100::/48"]}}
`)
	d, err := cfg.Desired("a1", config.DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mp := netip.MustParsePrefix
	links := []config.LinkAddresses{
		{Link: "lan", Addrs: []netip.Prefix{mp("10.1.0.1/16"), mp("fd00:1::1/64")}},
		{Link: "vbr6", Addrs: []netip.Prefix{mp("2001:db8:30::1/64"), mp("172.30.6.1/30"), mp("2001:db8:30::99/64")}},
	}
	conn, ho := ConnectedAndHandoff(d, links)
	r := RoutingOf(cfg, d, Secrets{}, links, conn, ho)
	if fmt.Sprint(r.Originate) != "[{10.1.0.0/16 cn-beijing vpc-a} {10.11.0.0/24 cn-beijing vpc-a} {fd00:1::/48 cn-beijing vpc-a6}]" {
		t.Errorf("originate = %v", r.Originate)
	}
	if len(r.VBRs) != 1 {
		t.Fatalf("vbrs = %v, want a1's idc6", r.VBRs)
	}
	v := r.VBRs[0]
	if v.Neighbor.String() != "2001:db8:30::2" || fmt.Sprint(v.LinkAddresses) != "[2001:db8:30::1/64 172.30.6.1/30]" {
		t.Errorf("idc6 = %+v, want its IPv6 neighbor and one link address per family", v)
	}
	if v.Accept == nil || fmt.Sprint(v.Accept) != "[2001:db8:100::/48]" {
		t.Errorf("idc6 accept = %#v, want exactly its IPv6 entry (not nil: nil admits any prefix)", v.Accept)
	}
	var b config.GatewayPeer
	for _, g := range r.Gateways {
		if g.Name == "b" {
			b = g
		}
	}
	if fmt.Sprint(b.Entitled) != "[{vpc-b us-west-1 vpc [10.2.0.0/16]} {vpc-b6 us-west-1 vpc [fd00:2::/48]}]" {
		t.Errorf("b's entitlements = %v", b.Entitled)
	}
	var a2 config.GatewayPeer
	for _, g := range r.Gateways {
		if g.Name == "a2" {
			a2 = g
		}
	}
	for _, e := range a2.Entitled {
		if e.Network == "idc" && fmt.Sprint(e.Prefixes) != "[192.168.0.0/16]" {
			t.Errorf("a2's idc entitlement = %v", e.Prefixes)
		}
	}
	if fmt.Sprint(r.HandoffAddresses) != "[10.1.0.1 fd00:1::1]" {
		t.Errorf("handoff addresses = %v", r.HandoffAddresses)
	}
}
