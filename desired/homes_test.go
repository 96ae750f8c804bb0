package desired

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
)

// twinsConfig is a region with two gateways (a1, a2; a2 holds a VBR) and a
// remote one (b), with extra text appended to its networks.
func twinsConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	keys := make([]wgtypes.Key, 3)
	for i := range keys {
		keys[i], _ = wgtypes.GeneratePrivateKey()
	}
	text := `instance: {name: t}
gateways:
  - {name: a1, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + keys[0].PublicKey().String() + `", private_key_file: a.key, tunnel_address: 100.64.0.1}
  - {name: a2, region: cn-beijing, endpoint: "192.0.2.3:51820", public_key: "` + keys[1].PublicKey().String() + `", private_key_file: a.key, tunnel_address: 100.64.0.3}
  - {name: b, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + keys[2].PublicKey().String() + `", private_key_file: b.key, tunnel_address: 100.64.0.2}
networks:
  - {name: vpc-a, type: vpc, region: cn-beijing, cidrs: [10.1.0.0/16, 10.11.0.0/24]}
  - {name: vpc-b, type: vpc, region: us-west-1, cidrs: [10.2.0.0/16]}
  - {name: idc, type: vbr, region: cn-beijing, gateway: a2, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, accept: [192.168.0.0/16]}}
` + extra
	cfg, err := config.Parse("twins.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var (
	a1 = netip.MustParseAddr("100.64.0.1")
	a2 = netip.MustParseAddr("100.64.0.3")
	gb = netip.MustParseAddr("100.64.0.2")
)

// learnedAt is what gateway gw learns: every VPC CIDR of another region
// from the gateways up there, and extra routes.
func learnedAt(cfg *config.Config, gw string, up map[netip.Addr]bool, extra ...config.LearnedRoute) Routes {
	self, _ := cfg.Gateway(gw)
	out := Routes{}
	for _, n := range cfg.Networks {
		if n.Type != config.VPC || n.Region == self.Region {
			continue
		}
		for _, c := range n.CIDRs {
			r := config.LearnedRoute{Prefix: c, OriginRegion: n.Region, OriginNetwork: n.Name}
			for _, g := range cfg.GatewaysIn(n.Region) {
				if up[g.TunnelAddress] {
					r.NextHops = append(r.NextHops, g.TunnelAddress)
				}
			}
			if len(r.NextHops) > 0 {
				out[c] = r
			}
		}
	}
	for _, r := range extra {
		out[r.Prefix] = r
	}
	return out
}

func inVPCA(p netip.Prefix) bool {
	return netip.MustParsePrefix("10.1.0.0/16").Contains(p.Addr()) || netip.MustParsePrefix("10.11.0.0/24").Contains(p.Addr())
}

// homesSeen maps each prefix in a dataplane state's AllowedIPs to its peer,
// and adds the handed-off sources by twin.
func homesSeen(d config.TunnelState) (allowed map[netip.Prefix]string, handoff map[netip.Prefix]string) {
	allowed, handoff = map[netip.Prefix]string{}, map[netip.Prefix]string{}
	for _, p := range d.Peers {
		for _, a := range p.AllowedIPs {
			allowed[a] = p.Name
		}
	}
	for _, h := range d.Handoffs {
		for _, s := range h.Sources {
			handoff[s] = h.Twin
		}
	}
	return allowed, handoff
}

func desiredOf(t *testing.T, cfg *config.Config, gw string, v View) config.TunnelState {
	t.Helper()
	d, err := cfg.Desired(gw, config.DesiredOptions{Down: v.Down})
	if err != nil {
		t.Fatal(err)
	}
	return TunnelOf(cfg, d, Secrets{}, v)
}

// TestHomesAgree: with everyone up, the remote gateway and both twins give
// every piece of the twins' VPC the same home; each twin hands off exactly
// the pieces homed at the other, and each twin is home of half.
func TestHomesAgree(t *testing.T) {
	cfg := twinsConfig(t, "")
	all := map[netip.Addr]bool{a1: true, a2: true, gb: true}
	lan := map[netip.Addr][]netip.Addr{a1: {netip.MustParseAddr("10.1.0.1")}, a2: {netip.MustParseAddr("10.1.0.2")}}
	remote, _ := homesSeen(desiredOf(t, cfg, "b", View{Routes: learnedAt(cfg, "b", all), LAN: lan}))
	count := map[string]int{}
	for _, cidr := range []string{"10.1.0.0/16", "10.11.0.0/24"} {
		for _, p := range cfg.VPCPieces(netip.MustParsePrefix(cidr), "cn-beijing") {
			if remote[p.Prefix] != p.Gateway {
				t.Errorf("b homes %s at %q, want %s (dealt by the config)", p.Prefix, remote[p.Prefix], p.Gateway)
			}
			count[p.Gateway]++
		}
	}
	if count["a1"] != 16 || count["a2"] != 16 {
		t.Errorf("pieces per twin %v, want 16 each", count)
	}
	for _, tw := range []struct{ self, other string }{{"a1", "a2"}, {"a2", "a1"}} {
		d := desiredOf(t, cfg, tw.self, View{Routes: learnedAt(cfg, tw.self, all), LAN: lan})
		allowed, handoff := homesSeen(d)
		for p, home := range remote {
			if !inVPCA(p) {
				continue // b's own VPC, a2's VBR range
			}
			if home == tw.self {
				if _, ok := allowed[p]; ok {
					t.Errorf("%s: its own piece %s is in a peer's AllowedIPs", tw.self, p)
				}
				if _, ok := handoff[p]; ok {
					t.Errorf("%s hands off its own piece %s", tw.self, p)
				}
				continue
			}
			if allowed[p] != tw.other || handoff[p] != tw.other {
				t.Errorf("%s: piece %s of %s is allowed to %q and handed to %q, want %s for both", tw.self, p, home, allowed[p], handoff[p], tw.other)
			}
		}
		if len(d.Handoffs) != 1 || d.Handoffs[0].Twin != tw.other || fmt.Sprint(d.Handoffs[0].Via) != fmt.Sprint(lan[map[string]netip.Addr{"a1": a1, "a2": a2}[tw.other]]) {
			t.Errorf("%s: handoffs %+v", tw.self, d.Handoffs)
		}
	}
}

// TestHomesFailOver: a twin that is down is nobody's home; a twin whose
// LAN address is not known yet gets no handoff (and is reported).
func TestHomesFailOver(t *testing.T) {
	cfg := twinsConfig(t, "")
	up := map[netip.Addr]bool{a1: true, gb: true}
	remote, _ := homesSeen(desiredOf(t, cfg, "b", View{Routes: learnedAt(cfg, "b", up)}))
	for p, home := range remote {
		if !inVPCA(p) {
			continue
		}
		if home != "a1" {
			t.Errorf("with a2 down, b homes %s at %s", p, home)
		}
	}
	// a2's handoff address is withdrawn with it: a1 takes it for down.
	d := desiredOf(t, cfg, "a1", View{Routes: learnedAt(cfg, "a1", up), Down: map[string]bool{"a2": true}})
	if allowed, handoff := homesSeen(d); len(handoff) != 0 || allowed[netip.MustParsePrefix("10.1.16.0/20")] != "" {
		t.Errorf("a1 with a2 Down: handoffs %v, a2 allowed %v", handoff, allowed)
	}
	a1cfg, _ := cfg.Desired("a1", config.DesiredOptions{})
	if got := MissingHandoffs(a1cfg, View{}); fmt.Sprint(got) != "[a2]" {
		t.Errorf("missing handoffs with a2's session up and no LAN address known = %v, want [a2]", got)
	}
	if got := MissingHandoffs(a1cfg, View{Down: map[string]bool{"a2": true}}); len(got) != 0 {
		t.Errorf("missing handoffs with a2 down = %v, want none", got)
	}
	if d := desiredOf(t, cfg, "a1", View{Routes: learnedAt(cfg, "a1", map[netip.Addr]bool{a1: true, a2: true, gb: true})}); len(d.Handoffs) != 0 {
		t.Errorf("handoffs without a LAN address: %+v", d.Handoffs)
	}
}

// TestHomesNeverLoop: while the twins disagree about who is up (a1 has
// lost a2's handoff address, a2 still has a1's), no piece is handed off
// by each to the other.
func TestHomesNeverLoop(t *testing.T) {
	cfg := twinsConfig(t, "")
	lan := map[netip.Addr][]netip.Addr{a1: {netip.MustParseAddr("10.1.0.1")}, a2: {netip.MustParseAddr("10.1.0.2")}}
	all := map[netip.Addr]bool{a1: true, a2: true, gb: true}
	_, h1 := homesSeen(desiredOf(t, cfg, "a1", View{Routes: learnedAt(cfg, "a1", all), LAN: map[netip.Addr][]netip.Addr{a1: lan[a1]}}))
	_, h2 := homesSeen(desiredOf(t, cfg, "a2", View{Routes: learnedAt(cfg, "a2", all), LAN: lan}))
	for p := range h2 {
		if _, ok := h1[p]; ok {
			t.Errorf("%s handed off by both twins", p)
		}
	}
	if len(h2) == 0 {
		t.Error("a2 hands nothing to a1")
	}
	// The same holds for any pair of live sets over three twins: a piece
	// only moves to a gateway with a higher score for it.
	h := newHomes(cfg)
	key := netip.MustParsePrefix("10.1.16.0/20")
	x, y, z := netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("100.64.0.8"), netip.MustParseAddr("100.64.0.9")
	sets := [][]netip.Addr{{x, y}, {y, z}, {x, z}, {x, y, z}}
	for _, s1 := range sets {
		for _, s2 := range sets {
			b1, b2 := h.best(key, s1), h.best(key, s2)
			if b1 != b2 && slices.Contains(s1, b2) && slices.Contains(s2, b1) {
				t.Errorf("live sets %v and %v pick %v and %v: each would hand to the other", s1, s2, b1, b2)
			}
		}
	}
}

// TestHomesOfOnPremisesPrefixes: an on-premises prefix is homed among the
// gateways that announce it, the same from everywhere; a twin announcing
// it too takes part.
func TestHomesOfOnPremisesPrefixes(t *testing.T) {
	cfg := twinsConfig(t, `  - {name: idc-2, type: vbr, region: cn-beijing, gateway: a1, bgp: {neighbor: 172.30.1.2, peer_asn: 65011, accept: [192.168.0.0/16]}}
`)
	all := map[netip.Addr]bool{a1: true, a2: true, gb: true}
	var agree, atA1 int
	for i := range 64 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)
		remote, _ := homesSeen(desiredOf(t, cfg, "b", View{Routes: learnedAt(cfg, "b", all, config.LearnedRoute{Prefix: p, NextHops: []netip.Addr{a1, a2}})}))
		// a1 learned it from its own VBR; a2 announces it too.
		direct := config.LearnedRoute{Prefix: p, NextHops: []netip.Addr{netip.MustParseAddr("172.30.1.2")}, Direct: true, Gateways: []netip.Addr{a2}}
		lan := map[netip.Addr][]netip.Addr{a2: {netip.MustParseAddr("10.1.0.2")}}
		d := desiredOf(t, cfg, "a1", View{Routes: learnedAt(cfg, "a1", all, direct), LAN: lan})
		allowed, handoff := homesSeen(d)
		switch remote[p] {
		case "a1":
			atA1++
			if allowed[p] != "" || handoff[p] != "" {
				t.Errorf("%s homed at a1 (seen from b) but a1 allows it to %q and hands it to %q", p, allowed[p], handoff[p])
			}
			agree++
		case "a2":
			if allowed[p] != "a2" || handoff[p] != "a2" {
				t.Errorf("%s homed at a2 (seen from b) but a1 allows it to %q and hands it to %q", p, allowed[p], handoff[p])
			}
			agree++
		default:
			t.Errorf("b homes %s at %q", p, remote[p])
		}
	}
	if atA1 < 16 || atA1 > 48 {
		t.Errorf("%d of 64 prefixes homed at a1: rendezvous hashing should spread them", atA1)
	}
	// Only a2 announcing: a2, whatever the hash.
	p := netip.MustParsePrefix("192.168.77.0/24")
	if remote, _ := homesSeen(desiredOf(t, cfg, "b", View{Routes: learnedAt(cfg, "b", all, config.LearnedRoute{Prefix: p, NextHops: []netip.Addr{a2}})})); remote[p] != "a2" {
		t.Errorf("a prefix only a2 announces is homed at %q", remote[p])
	}
}

// TestScoreWeights: weighted rendezvous hashing gives each gateway its
// share of the total weight.
func TestScoreWeights(t *testing.T) {
	h := homes{byAddr: map[netip.Addr]homeGateway{
		a1: {name: "a1", addr: a1, weight: 3},
		a2: {name: "a2", addr: a2, weight: 1},
	}}
	n, wins := 4000, 0
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if h.best(p, []netip.Addr{a1, a2}) == a1 {
			wins++
		}
	}
	if share := float64(wins) / float64(n); math.Abs(share-0.75) > 0.03 {
		t.Errorf("a1 (weight 3 of 4) won %.3f of the prefixes, want 0.75", share)
	}
}

// TestConnectedAndHandoff: the gateway's own addresses, of both families,
// give the connected subnets and, inside its region's VPC CIDRs, its
// handoff addresses.
func TestConnectedAndHandoff(t *testing.T) {
	cfg := twinsConfig(t, "  - {name: vpc-a6, type: vpc, region: cn-beijing, cidrs: [\"fd00:1::/48\"]}\n")
	d, err := cfg.Desired("a1", config.DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mp := netip.MustParsePrefix
	links := []config.LinkAddresses{
		{Link: "lan", Addrs: []netip.Prefix{mp("10.1.0.1/16"), mp("fd00:1::1/64")}},
		{Link: "vbr", Addrs: []netip.Prefix{mp("172.30.1.1/30"), mp("2001:db8:30::1/64")}},
		{Link: "underlay", Addrs: []netip.Prefix{mp("10.255.0.11/24")}},
		{Link: "lan2", Addrs: []netip.Prefix{mp("10.11.0.9/24")}},
	}
	conn, ho := ConnectedAndHandoff(d, links)
	if fmt.Sprint(conn) != "[10.1.0.0/16 10.11.0.0/24 10.255.0.0/24 172.30.1.0/30 2001:db8:30::/64 fd00:1::/64]" {
		t.Errorf("connected = %v", conn)
	}
	if fmt.Sprint(ho) != "[10.1.0.1 10.11.0.9 fd00:1::1]" {
		t.Errorf("handoff addresses = %v", ho)
	}
}
