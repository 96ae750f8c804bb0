package routing

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/server"
)

// trippedVBR starts gw-a with a VBR session limited to 5 prefixes per
// family and restarting after restart, has its router send 10, and waits
// for the trip. It returns the node and the router, and the 5 prefixes
// beyond the first 5.
func trippedVBR(t *testing.T, restart time.Duration) (*node, *server.BgpServer, []netip.Prefix) {
	t.Helper()
	port := freePort(t)
	onprem := rawRouter(t, addrOnprem, 65010, port, addrA, testASN)
	da := desiredA(port)
	da.Gateways = nil
	da.VBRs[0].MaxPrefixes, da.VBRs[0].MaxPrefixesRestart = 5, restart
	a := startNode(t, port, da)
	waitFor(t, 20*time.Second, "vbr established", func() bool { return sessionState(a) == "established" })
	var ps []netip.Prefix
	for i := range 10 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24))
	}
	rawAnnounce(t, onprem, addrOnprem, false, ps[:4]...)
	// Both ends connect: a collision can close the first session and
	// the next comes after GoBGP's connect retry, hence the longer wait.
	waitFor(t, 30*time.Second, "4 prefixes under the limit", func() bool { return len(a.s.Routes()) == 4 })
	rawAnnounce(t, onprem, addrOnprem, false, ps[4:]...)
	waitFor(t, 10*time.Second, "max-prefix-exceeded state", func() bool { return sessionState(a) == "max-prefix-exceeded" })
	waitFor(t, 10*time.Second, "routes of the tripped session withdrawn", func() bool { return len(a.s.Routes()) == 0 })
	return a, onprem, ps[5:]
}

// cutBack has the router withdraw extra and waits until its own table
// holds only the 5 prefixes under the limit.
func cutBack(t *testing.T, onprem *server.BgpServer, extra []netip.Prefix) {
	t.Helper()
	rawAnnounce(t, onprem, addrOnprem, true, extra...)
	waitFor(t, 10*time.Second, "the router down to 5 prefixes of its own", func() bool {
		n := 0
		for p := range rawTable(t, onprem) {
			if mp("192.168.0.0/16").Contains(p.Addr()) {
				n++
			}
		}
		return n == 5
	})
}

func sessionState(a *node) string {
	st, _ := a.s.Status(context.Background())
	if len(st.Sessions) != 1 {
		return ""
	}
	return st.Sessions[0].State
}

// TestMaxPrefixesRestart: a tripped session stays down for its
// max_prefixes_restart, then is configured again by itself and counts
// afresh. (That a real router then comes back with its table cut to the
// limit is TestRoutingEndToEnd's, with BIRD: GoBGP as the router here
// backs off its reconnects after an Administrative Shutdown for longer
// than a test should wait.)
func TestMaxPrefixesRestart(t *testing.T) {
	const restart = 3 * time.Second
	tripped := time.Now()
	a, onprem, extra := trippedVBR(t, restart)
	cutBack(t, onprem, extra)
	for time.Since(tripped) < restart-time.Second {
		if s := sessionState(a); s != "max-prefix-exceeded" {
			t.Fatalf("%v after the trip, before max_prefixes_restart: state %s", time.Since(tripped).Round(time.Millisecond), s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, restart+10*time.Second, "the session configured again after max_prefixes_restart", func() bool {
		return sessionState(a) != "max-prefix-exceeded"
	})
	if err := a.s.ResetSession(context.Background(), "idc-a"); !errors.Is(err, ErrNotTripped) {
		t.Errorf("reset of a restarted session: %v, want ErrNotTripped", err)
	}
}

// TestMaxPrefixesResetByOperator: with max_prefixes_restart 0 a tripped
// session stays down until ResetSession (cenctl peers reset) clears it;
// resetting a session that is not tripped, or one that does not exist, is
// an error naming which. (The session's coming back with a real router is
// TestRoutingEndToEnd's; see TestMaxPrefixesRestart.)
func TestMaxPrefixesResetByOperator(t *testing.T) {
	a, onprem, extra := trippedVBR(t, 0)
	cutBack(t, onprem, extra)
	time.Sleep(3 * time.Second)
	if s := sessionState(a); s != "max-prefix-exceeded" {
		t.Fatalf("without a restart time the session left its trip by itself: %s", s)
	}
	ctx := context.Background()
	if err := a.s.ResetSession(ctx, "idc-nope"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("reset of an unknown session: %v, want ErrUnknownSession", err)
	}
	if err := a.s.ResetSession(ctx, "idc-a"); err != nil {
		t.Fatal(err)
	}
	if s := sessionState(a); s == "max-prefix-exceeded" {
		t.Errorf("after the reset the session is still %s", s)
	}
	if err := a.s.ResetSession(ctx, "idc-a"); !errors.Is(err, ErrNotTripped) {
		t.Errorf("reset of a session already reset: %v, want ErrNotTripped", err)
	}
}

// TestGatewayMaxPrefixes: a gateway peer sending more than its derived
// limit is shut down like a VBR router.
func TestGatewayMaxPrefixes(t *testing.T) {
	port := freePort(t)
	rogue := rawRouter(t, addrB, testASN, port, addrA, testASN)
	da := desiredA(port)
	da.VBRs = nil
	da.Gateways = da.Gateways[:1]
	da.Gateways[0].MaxPrefixes = 3
	da.Gateways[0].Entitled = append(da.Gateways[0].Entitled, Entitlement{Network: "idc-b", Region: "r-b", Kind: KindVBR})
	a := startNode(t, port, da)
	waitFor(t, 20*time.Second, "gateway session established", func() bool { return sessionState(a) == "established" })
	var ps []netip.Prefix
	for i := range 6 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24))
	}
	rawAnnounce(t, rogue, addrB, false, ps...)
	waitFor(t, 10*time.Second, "max-prefix-exceeded state", func() bool { return sessionState(a) == "max-prefix-exceeded" })
}

// TestCountsFollowANewAcceptList: narrowing a VBR's accept list to IPv6
// turns the IPv4 prefixes its router announces into refusals in the
// session's counts at once, without the router sending them again (the
// IPv6 prefix, over an IPv4 session with no IPv6 next hop, is accepted
// but has nothing to be installed with).
func TestCountsFollowANewAcceptList(t *testing.T) {
	port := freePort(t)
	onprem := rawRouter(t, addrOnprem, 65010, port, addrA, testASN)
	d := desiredA(port)
	d.Gateways = nil
	d.VBRs[0].Accept = []netip.Prefix{mp("192.168.0.0/16"), mp("2001:db8:100::/48")}
	d.VBRs[0].MaxPrefixes = 100 // as every VBR has, by default
	a := startNode(t, port, d)
	waitFor(t, 20*time.Second, "vbr established", func() bool { return sessionState(a) == "established" })
	rawAnnounce(t, onprem, addrOnprem, false, mp("192.168.1.0/24"), mp("192.168.2.0/24"), mp("2001:db8:100:1::/64"))
	counts := func() [2]FamilyCounts {
		st, _ := a.s.Status(context.Background())
		return st.Sessions[0].Families
	}
	waitFor(t, 10*time.Second, "2 IPv4 and 1 IPv6 accepted", func() bool {
		f := counts()
		return f[0].Accepted == 2 && f[1].Accepted == 1 && len(a.s.Routes()) == 2
	})
	narrowed := cloneDesired(d)
	narrowed.VBRs[0].Accept = []netip.Prefix{mp("2001:db8:100::/48")}
	if err := a.s.Set(context.Background(), narrowed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the IPv4 prefixes refused, the IPv6 one still accepted", func() bool {
		f := counts()
		return f[0].Accepted == 0 && f[0].Rejected == 2 && f[1].Accepted == 1 && len(a.s.Routes()) == 0
	})
}
