package routing

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/server"
)

// TestPolicyMatchesFilter checks that the GoBGP policy compiled from the
// import table enforces exactly what filter.classify (which feeds status,
// logs and counters) says, for a VBR, a gateway of this region (VPC
// CIDRs, handoff addresses, VBR entitlements) and a gateway of another
// region (its host routes are hijacks; a VBR entitlement without a list
// admits any prefix that is not refused first), over edge cases and random prefixes. GoBGP's verdict is read
// per session from its global RIB, which holds only what import policy
// accepted.
func TestPolicyMatchesFilter(t *testing.T) {
	port := freePort(t)
	d := desiredA(port)
	d.Gateways = []GatewayPeer{
		{Name: "gw-twin", Region: "r-a", Address: addrB, Entitled: []Entitlement{
			{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA, vpcA6}},
			{Network: "idc-b", Region: "r-a", Kind: KindVBR, Prefixes: []netip.Prefix{mp("172.16.0.0/12"), mp("192.168.128.0/17"), mp("2001:db8:100::/48")}},
		}},
		{Name: "gw-c", Region: "r-b", Address: addrC, Entitled: append(entB(), Entitlement{Network: "idc-c", Region: "r-b", Kind: KindVBR})},
	}
	d.VBRs[0].Accept = []netip.Prefix{mp("192.168.0.0/16"), mp("172.16.0.0/12"), mp("10.0.0.0/8"), mp("2001:db8::/32"), mp("fd00::/16")}
	d.ProtectedPrefixes = append(d.ProtectedPrefixes, mp("100.64.0.1/32"), mp("198.51.100.7/32"), mp("fd63:656e::6440:1/128"))
	d.RouterAddresses = []netip.Prefix{mp("192.168.77.1/32"), mp("2001:db8:77::1/128")}
	d.Connected = []netip.Prefix{mp("172.20.0.0/30"), mp("10.3.0.0/24"), mp("2001:db8:30::/64")}
	d.InstanceCIDRs = append(d.InstanceCIDRs, NamedPrefix{Prefix: vpcA6, Region: "r-a", Network: "vpc-a"},
		NamedPrefix{Prefix: vpcB6, Region: "r-b", Network: "vpc-b"})
	d.Gateways[1].Entitled[0].Prefixes = append(d.Gateways[1].Entitled[0].Prefixes, vpcB6)
	names := map[netip.Addr]string{addrOnprem: "idc-a", addrB: "gw-twin", addrC: "gw-c"}
	routers := map[netip.Addr]*server.BgpServer{
		addrOnprem: rawRouter(t, addrOnprem, 65010, port, addrA, testASN),
		addrB:      rawRouter(t, addrB, testASN, port, addrA, testASN),
		addrC:      rawRouter(t, addrC, testASN, port, addrA, testASN),
	}
	a := startNode(t, port, d)

	all := policyTestPrefixes()
	f := newFilter(&d)
	want := map[netip.Addr]map[netip.Prefix]bool{}
	for peer, name := range names {
		want[peer] = map[netip.Prefix]bool{}
		for _, p := range all {
			if f.classify(peer, p).reason == "" {
				want[peer][p] = true
			}
		}
		if n := len(want[peer]); n < 10 || n > len(all)-50 {
			t.Fatalf("test set is lopsided for %s: %d of %d accepted", name, n, len(all))
		}
	}
	for peer, r := range routers {
		rawAnnounce(t, r, peer, false, all...)
	}
	waitClassified(t, a, len(all), want)
	got := learnedBySession(t, a.s)
	st, _ := a.s.Status(context.Background())
	for _, ss := range st.Sessions {
		peer := ss.Neighbor
		for _, p := range all {
			if got[peer][p] != want[peer][p] {
				t.Errorf("%s from %s: policy learned=%v, filter says accept=%v (%s)", p, ss.Name, got[peer][p], want[peer][p], f.classify(peer, p).reason)
			}
		}
		if int(ss.Rejected) != len(all)-len(want[peer]) {
			t.Errorf("%s: status rejected %d, want %d", ss.Name, ss.Rejected, len(all)-len(want[peer]))
		}
	}
}

// policyTestPrefixes are edge cases of the test's Desired and random
// prefixes around them.
func policyTestPrefixes() []netip.Prefix {
	set := map[netip.Prefix]bool{}
	for _, s := range []string{"0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/15", "10.1.0.0/16", "10.1.0.0/17", "10.1.255.0/24",
		"10.1.0.7/32", "10.1.255.255/32", "10.2.0.0/16", "10.2.0.7/32", "10.3.0.0/16", "10.0.0.0/16", "192.168.0.0/16",
		"192.168.0.0/15", "192.168.7.0/24", "192.168.128.0/17", "192.168.200.0/24", "172.16.0.0/12", "172.15.0.0/16",
		"172.31.255.255/32", "100.64.0.0/10", "100.64.0.1/32", "100.64.0.2/32", "198.51.100.0/24", "11.0.0.0/8",
		"127.0.0.2/32", "127.0.0.0/8", "172.20.0.0/30", "172.20.0.0/16", "172.20.0.2/32", "10.3.0.128/25",
		"::/0", "fd00::/16", "fd00:1::/48", "fd00:1::/64", "fd00:1::7/128", "fd00:2::/48", "fd00:2::/47", "fd00:3::/48",
		"2001:db8::/32", "2001:db8:100::/48", "2001:db8:100:5::/64", "2001:db8:30::/64", "2001:db8:30::2/128",
		"2001:db8:30::/60", "fd63:656e::/96", "fd63:656e::6440:1/128", "2001:db9::/32",
		"192.168.77.1/32", "192.168.77.0/24", "2001:db8:77::1/128", "2001:db8:77::/48"} {
		set[mp(s)] = true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	bases := []netip.Prefix{mp("10.0.0.0/8"), mp("10.1.0.0/16"), mp("10.2.0.0/16"), mp("172.16.0.0/12"), mp("192.168.0.0/16"),
		mp("100.64.0.0/10"), mp("198.51.100.0/24")}
	bases6 := []netip.Prefix{mp("fd00::/16"), mp("fd00:1::/48"), mp("fd00:2::/48"), mp("2001:db8::/32"), mp("2001:db8:100::/48"), mp("fd63:656e::/96")}
	for len(set) < 200 {
		b := bases6[rng.IntN(len(bases6))]
		bits := b.Bits() + rng.IntN(129-b.Bits())
		v := b.Addr().As16()
		for i := b.Bits() / 8; i < 16; i++ {
			v[i] |= byte(rng.Uint32()) & (0xff >> max(0, b.Bits()-8*i))
		}
		p, _ := netip.AddrFrom16(v).Prefix(bits)
		set[p] = true
	}
	for len(set) < 700 {
		b := bases[rng.IntN(len(bases))]
		bits := b.Bits() + rng.IntN(33-b.Bits())
		v := b.Addr().As4()
		r := rng.Uint32() >> b.Bits()
		for i := range v {
			v[i] |= byte(r >> (24 - 8*i))
		}
		p, _ := netip.AddrFrom4(v).Prefix(bits)
		set[p] = true
	}
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	return out
}

// learnedBySession lists, per session, the prefixes in s's global RIB.
func learnedBySession(t *testing.T, s *Speaker) map[netip.Addr]map[netip.Prefix]bool {
	t.Helper()
	s.mu.Lock()
	srv := s.bgp.srv
	s.mu.Unlock()
	out := map[netip.Addr]map[netip.Prefix]bool{}
	for p, paths := range rawTable(t, srv) {
		for _, path := range paths {
			if out[path.PeerAddress] == nil {
				out[path.PeerAddress] = map[netip.Prefix]bool{}
			}
			out[path.PeerAddress][p] = true
		}
	}
	return out
}

// waitClassified waits until every session of want has received all n
// prefixes, then, for up to as long again, until the refusals status
// records match want: GoBGP counts a session's prefixes as their UPDATE
// arrives, and the refusals come from the watch that delivers the same
// paths after it. The caller compares what is there then.
func waitClassified(t *testing.T, a *node, n int, want map[netip.Addr]map[netip.Prefix]bool) {
	t.Helper()
	waitFor(t, 30*time.Second, "all prefixes received on every session", func() bool {
		st, _ := a.s.Status(context.Background())
		got := 0
		for _, ss := range st.Sessions {
			if ss.Received == uint64(n) {
				got++
			}
		}
		return got == len(want)
	})
	classified := func() bool {
		st, _ := a.s.Status(context.Background())
		for _, ss := range st.Sessions {
			if int(ss.Rejected) != n-len(want[ss.Neighbor]) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !classified() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}
