package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/opencen/opencen/internal/testutil"
)

func TestSplitFamilies(t *testing.T) {
	v4, v6 := splitFamilies(addrs("100.64.0.3", "fd00::2", "::ffff:100.64.0.1", "100.64.0.3", "fd00::1"))
	if !slices.Equal(v4, addrs("100.64.0.1", "100.64.0.3")) || !slices.Equal(v6, addrs("fd00::1", "fd00::2")) {
		t.Errorf("splitFamilies = %v %v: want each family sorted, unmapped, without duplicates", v4, v6)
	}
	if v4, v6 := splitFamilies([]netip.Addr{{}}); len(v4)+len(v6) != 0 {
		t.Errorf("an invalid address kept: %v %v", v4, v6)
	}
}

// TestGuardFollowsGateways: the guard holds every gateway's tunnel
// address, this one's and its peers', and follows a peer added; an
// unchanged guard is not rewritten.
func TestGuardFollowsGateways(t *testing.T) {
	want := newFixture(t).desired()
	k, d := setFixture(t, want)
	want.Peers = append(want.Peers, Peer{Name: "e", PublicKey: mustKey(t).PublicKey(), TunnelAddresses: pfxs("fd00:64::5/128", "100.64.0.5/32")})
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	g := k.guards[guardTable("ocdptest0")]
	if g.dev != "ocdptest0" || !slices.Equal(g.addrs, addrs("100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.5", "fd00:64::1", "fd00:64::2", "fd00:64::5")) {
		t.Errorf("guard %+v after a peer joined", g)
	}
	if got := gatewayAddrs(want); len(got) != 7 {
		t.Errorf("gatewayAddrs = %v, want 7 addresses", got)
	}
}

// TestGuardSpecOfLinks: the guard names the links that hold an address
// in a LAN prefix and the link toward each VBR router as attached, the
// link toward the peers' endpoints as the underlay; on a gateway whose
// one link is both, it is attached and there is no underlay.
func TestGuardSpecOfLinks(t *testing.T) {
	want := newFixture(t).desired()
	want.LANPrefixes = pfxs("10.1.0.0/16", "10.9.0.0/16")
	want.VBRNeighbors = addrs("172.30.0.2", "172.31.0.2")
	k := newFakeKernel()
	k.addLink("lan0", "10.1.0.1/24")
	k.addLink("vbr0", "172.30.0.1/30")
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	g := k.guards[guardTable("ocdptest0")].spec
	if g.dev != "ocdptest0" || !slices.Equal(g.attached, []string{"lan0", "vbr0"}) || !slices.Equal(g.underlay, []string{"eth0"}) ||
		!slices.Equal(g.vbrs, []vbrLink{{addrs("172.30.0.2")[0], "vbr0"}}) || !slices.Equal(g.self, addrs("100.64.0.1", "fd00:64::1")) {
		t.Errorf("guard spec %+v: want lan0 and vbr0 attached, eth0 the underlay, the router 172.30.0.2 on vbr0 (172.31.0.2 is reached through a router, not on a link)", g)
	}

	want.LANPrefixes = append(want.LANPrefixes, netip.MustParsePrefix("192.0.2.0/24"))
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	g = k.guards[guardTable("ocdptest0")].spec
	if !slices.Equal(g.attached, []string{"eth0", "lan0", "vbr0"}) || len(g.underlay) != 0 {
		t.Errorf("one link for LAN and underlay: attached %v, underlay %v; want eth0 attached, no underlay", g.attached, g.underlay)
	}
}

// nftConn opens nftables in namespace ns for a test.
func nftConn(t testing.TB, ns string) *nftables.Conn {
	c, err := nftables.New(nftables.WithNetNSFd(int(mustNS(t, ns))))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nftTables lists the names of the inet tables in ns.
func nftTables(t testing.TB, ns string) []string {
	ts, err := nftConn(t, ns).ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, tb.Name)
	}
	return out
}

// nftGuardRules describes the guard's chains and rules (not their
// counters) to compare the states around a change.
func nftGuardRules(t testing.TB, ns, dev string) string {
	c := nftConn(t, ns)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, ch := range chains {
		if ch.Table.Name != guardTable(dev) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "chain %s hook %d prio %d:", ch.Name, *ch.Hooknum, *ch.Priority)
		for _, r := range rules {
			fmt.Fprintf(&b, " rule %d %q exprs %d;", r.Handle, r.UserData, len(r.Exprs))
		}
	}
	return b.String()
}

// deleteGuardTable deletes the guard of dev in ns by hand.
func deleteGuardTable(t testing.TB, ns, dev string) {
	c := nftConn(t, ns)
	c.DelTable(&nftables.Table{Name: guardTable(dev), Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestNFTGuard holds the nftables guard against the kernel: it is written
// once and then found intact; each way of it drifting (a set element
// deleted, a rule added, the table flushed, another device, another
// gateway, a LAN, VBR or underlay link changed) makes the next check
// rewrite it; removing it twice is fine.
func TestNFTGuard(t *testing.T) {
	testutil.RequireRoot(t)
	ns := newNetNS(t)
	g, err := newNFTGuard(int(mustNS(t, ns)))
	if err != nil {
		t.Fatal(err)
	}
	table := guardTable("ocdpwg0")
	spec := guardSpec{dev: "ocdpwg0", gateways: addrs("100.64.0.1", "100.64.0.2", "fd00:64::1"), self: addrs("100.64.0.1", "fd00:64::1"),
		attached: []string{"lan0", "vbr0"}, underlay: []string{"eth0"}, vbrs: []vbrLink{{addrs("172.30.0.2")[0], "vbr0"}}}
	ensure := func(what string, spec guardSpec, wantWrite bool) {
		t.Helper()
		wrote, err := g.ensureGuard(table, spec)
		if err != nil || wrote != wantWrite {
			t.Errorf("%s: ensureGuard wrote %v (%v), want %v", what, wrote, err, wantWrite)
		}
	}
	nft := func(args ...string) string {
		return run(t, append([]string{"ip", "netns", "exec", ns, "nft"}, args...)...)
	}
	ensure("new", spec, true)
	ensure("unchanged", spec, false)
	out := nft("list", "table", "inet", table)
	for _, want := range []string{"hook prerouting priority raw", `iifname != "ocdpwg0" iifname != "lo" ip saddr @gateways4`,
		`ip6 saddr @gateways6`, "drop", "100.64.0.1", "fd00:64::1",
		`iifname != "ocdpwg0" iifname != "lo" ip daddr @self4 tcp dport 179`, `ip6 daddr @self6 udp dport 4784`,
		`iifname != "vbr0" ip saddr 172.30.0.2 udp dport 3784`, `iifname != "vbr0" ip saddr 172.30.0.2 tcp sport 179`,
		"hook forward priority filter", `iifname @underlay`, `iifname != @attached oifname @attached`, `"eth0"`, `"lan0"`} {
		if !strings.Contains(out, want) {
			t.Errorf("guard lacks %q:\n%s", want, out)
		}
	}
	for _, drift := range []struct {
		what   string
		nft    []string         // a change made by hand, or
		change func(*guardSpec) // a change of what the guard should be
	}{
		{"set element deleted", []string{"delete", "element", "inet", table, guardSet4, "{ 100.64.0.2 }"}, nil},
		{"link set element deleted", []string{"delete", "element", "inet", table, underlaySet, `{ "eth0" }`}, nil},
		{"rule added", []string{"add", "rule", "inet", table, guardChain, "accept"}, nil},
		{"forward rule deleted", []string{"flush", "chain", "inet", table, forwardChain}, nil},
		{"table flushed", []string{"flush", "table", "inet", table}, nil},
		{"another device", nil, func(c *guardSpec) { c.dev = "ocdpwg1" }},
		{"another gateway", nil, func(c *guardSpec) { c.gateways = append(c.gateways, addrs("fd00:64::3")[0]) }},
		{"another LAN", nil, func(c *guardSpec) { c.attached = []string{"lan0", "lan1", "vbr0"} }},
		{"the VBR router on another link", nil, func(c *guardSpec) { c.vbrs = []vbrLink{{addrs("172.30.0.2")[0], "lan1"}} }},
		{"no underlay", nil, func(c *guardSpec) { c.underlay = nil }},
	} {
		if drift.nft != nil {
			nft(drift.nft...)
		}
		if drift.change != nil {
			c := spec
			c.gateways, c.attached, c.vbrs = slices.Clone(spec.gateways), slices.Clone(spec.attached), slices.Clone(spec.vbrs)
			drift.change(&c)
			spec = c
		}
		ensure(drift.what, spec, true)
		ensure(drift.what+", then unchanged", spec, false)
	}
	if err := g.removeGuard(table); err != nil || len(nftTables(t, ns)) != 0 {
		t.Errorf("removeGuard: %v, tables left %v", err, nftTables(t, ns))
	}
	if err := g.removeGuard(table); err != nil {
		t.Errorf("removing an absent guard: %v", err)
	}
}

// icmpInEchos reads the echo requests received in ns.
func icmpInEchos(t testing.TB, ns string) int {
	out := run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InEchos"); i > 0 && i < len(f) {
			v, err := strconv.Atoi(f[i])
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no Icmp InEchos in /proc/net/snmp of %s:\n%s", ns, out)
	return 0
}

var guardDrops = regexp.MustCompile(`counter packets (\d+)`)

// TestGuardDropsForgedSource: the VPC host forges B's tunnel address and
// sends echo requests to A1's LAN address. With the guard, none arrives
// and the guard counts them; with its table deleted by hand they arrive
// (the test can see a forgery get through); a repair puts the guard back
// and they are dropped again.
func TestGuardDropsForgedSource(t *testing.T) {
	x := newTwinLab(t, false)
	a1, dev := x.gws[0].ns, x.device(0)
	// Only the guard: strict reverse-path filtering would drop these too,
	// but not every gateway has it on.
	run(t, "ip", "netns", "exec", a1, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+twinLANLink+".rp_filter=0")
	forged := x.gws[2].tunnel
	run(t, "ip", "-n", x.h, "addr", "add", netip.PrefixFrom(forged, 32).String(), "dev", "ocdpbr9")
	p := newPingerFrom(t, x.h, forged)
	const n = 10
	arrived := func() int {
		before := icmpInEchos(t, a1)
		_, _ = p.ping(twinLANs[0], n, 5*time.Millisecond, 300*time.Millisecond)
		return icmpInEchos(t, a1) - before
	}
	if got := arrived(); got != 0 {
		t.Errorf("guard in place: %d forged echo requests arrived, want 0", got)
	}
	dropped := 0
	for _, c := range guardDrops.FindAllStringSubmatch(run(t, "ip", "netns", "exec", a1, "nft", "list", "table", "inet", guardTable(dev)), -1) {
		v, _ := strconv.Atoi(c[1])
		dropped += v
	}
	if dropped < n {
		t.Errorf("the guard counted %d drops, want at least %d", dropped, n)
	}
	deleteGuardTable(t, a1, dev)
	if got := arrived(); got != n {
		t.Errorf("guard deleted: %d of %d forged echo requests arrived, want all (else the test sees no forgery)", got, n)
	}
	x.gws[0].dp.repair()
	if got := arrived(); got != 0 {
		t.Errorf("guard repaired: %d forged echo requests arrived, want 0", got)
	}
	// Real traffic from the host is untouched by the guard.
	x.force(remoteHost, 0)
	if got, err := newPingerFrom(t, x.h, twinHosts[0]).ping(remoteHost, n, 5*time.Millisecond, time.Second); got != n {
		t.Errorf("the VPC host's own traffic: %d of %d answered (%v)", got, n, err)
	}
}

// TestGuardRestoredByResync: a guard deleted by hand (nftables sends no
// netlink event the watchers see) comes back with the periodic resync.
func TestGuardRestoredByResync(t *testing.T) {
	l := newLab(t, 1)
	l.resync = 300 * time.Millisecond
	if err := l.open(0).Set(context.Background(), l.desired(0)); err != nil {
		t.Fatal(err)
	}
	ns, dev := l.gws[0].ns, l.device(0)
	want := nftGuardRules(t, ns, dev)
	deleteGuardTable(t, ns, dev)
	eventually(t, 5*time.Second, "guard table restored by the resync", func() bool {
		got := nftGuardRules(t, ns, dev)
		return strings.Contains(got, "opencen guard") && strings.Count(got, "rule ") == strings.Count(want, "rule ")
	})
}

// TestGuardUnderlayAndControl: a host on the underlay that routes the twins'
// VPC through A1's underlay address gets no echo request to the VPC host
// (the guard's forward chain drops it; with the guard deleted by hand it
// arrives, so the test sees an injection; a repair puts the guard back);
// BGP and BFD to A1's tunnel address from the VPC host are dropped, while
// B's, through the tunnel, pass.
func TestGuardUnderlayAndControl(t *testing.T) {
	x := newTwinLab(t, false)
	a1, dev := x.gws[0].ns, x.device(0)
	run(t, "ip", "-n", x.u.ns, "addr", "add", "172.16.0.200/24", "dev", "ocdpbr0")
	run(t, "ip", "-n", x.u.ns, "route", "add", "10.99.0.0/16", "via", x.gws[0].underlay.String())
	p := newPinger(t, x.u.ns)
	const n = 10
	arrived := func() int {
		before := icmpInEchos(t, x.h)
		_, _ = p.ping(twinHosts[0], n, 5*time.Millisecond, 300*time.Millisecond)
		return icmpInEchos(t, x.h) - before
	}
	if got := arrived(); got != 0 {
		t.Errorf("guard in place: %d echo requests from the underlay reached the VPC host, want 0", got)
	}
	deleteGuardTable(t, a1, dev)
	if got := arrived(); got != n {
		t.Errorf("guard deleted: %d of %d echo requests from the underlay arrived, want all (else the test sees no injection)", got, n)
	}
	x.gws[0].dp.repair()
	if got := arrived(); got != 0 {
		t.Errorf("guard repaired: %d echo requests from the underlay reached the VPC host, want 0", got)
	}

	run(t, "ip", "-n", x.h, "route", "add", "100.64.0.0/24", "via", twinLANs[0].String())
	from := controlProbe(t, a1, x.gws[0].tunnel, n)
	if err, got := from(x.h, twinHosts[0]); err == nil || got != 0 {
		t.Errorf("from the VPC host: BGP connected (%v), %d BFD packets arrived; want both dropped", err, got)
	}
	if err, got := from(x.gws[2].ns, x.gws[2].tunnel); err != nil || got != n {
		t.Errorf("from B through the tunnel: BGP %v, %d of %d BFD packets; want both through", err, got, n)
	}
}

// controlProbe listens for BGP and BFD on tunnel in namespace gw and
// returns a probe: from namespace ns with source src, whether a BGP
// connection fails and how many of n BFD packets arrive.
func controlProbe(t *testing.T, gw string, tunnel netip.Addr, n int) func(ns string, src netip.Addr) (bgp error, bfd int) {
	var ln net.Listener
	var pc net.PacketConn
	if err := inNetNS(nsPath(gw), func() (err error) {
		if ln, err = net.Listen("tcp4", netip.AddrPortFrom(tunnel, 179).String()); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(tunnel, 4784).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func(ns string, src netip.Addr) (bgp error, bfd int) {
		err := inNetNS(nsPath(ns), func() error {
			d := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			c, err := d.Dial("tcp4", netip.AddrPortFrom(tunnel, 179).String())
			if err != nil {
				bgp = err
			} else {
				c.Close()
			}
			u, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunnel, 4784)))
			if err != nil {
				return err
			}
			defer u.Close()
			for range n {
				u.Write([]byte("bfd"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		for {
			pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, a, err := pc.ReadFrom(buf)
			if err != nil {
				return bgp, bfd
			}
			if a.(*net.UDPAddr).AddrPort().Addr().Unmap() == src {
				bfd++
			}
		}
	}
}
