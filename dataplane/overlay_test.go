package dataplane

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// nftConn opens nftables in namespace ns for a test.
func nftConn(t *testing.T, ns string) *nftables.Conn {
	h, err := netns.GetFromPath(nsPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nftTables lists the names of the inet tables in ns.
func nftTables(t *testing.T, ns string) []string {
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
// counters) for before/after comparisons.
func nftGuardRules(t *testing.T, ns, dev string) string {
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

// icmpInEchos reads the echo requests received in ns.
func icmpInEchos(t *testing.T, ns string) int {
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
		for i, n := range names {
			if n == "InEchos" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Icmp InEchos in /proc/net/snmp of %s:\n%s", ns, out)
	return 0
}

// vxlanEcho builds a VXLAN packet (the UDP payload) carrying an Ethernet
// frame to dstMAC with an ICMP echo request from src to dst.
func vxlanEcho(dstMAC net.HardwareAddr, src, dst netip.Addr, seq int) []byte {
	echo, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x4f4f, Seq: seq, Data: []byte("injected")}}).Marshal(nil)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(echo)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	pkt := make([]byte, 8, 8+14+20+len(echo))
	pkt[0] = 0x08 // flags: VNI present
	binary.BigEndian.PutUint32(pkt[4:], OverlayVNI<<8)
	pkt = append(pkt, dstMAC...)
	pkt = append(pkt, 0x02, 0, 0, 0, 0, 0x99)
	pkt = append(pkt, 0x08, 0x00)
	pkt = append(pkt, ip...)
	return append(pkt, echo...)
}

// TestUnderlayVXLANInjectionDropped: a host on the underlay sends VXLAN
// frames (right VNI, right MAC) carrying an ICMP echo to the VPC address
// behind gw0, to gw0's underlay address. With the guard none arrives; with
// the guard table deleted by hand they do (the test can see an injection);
// the next reconcile restores the guard. Overlay traffic through the
// tunnel works throughout.
func TestUnderlayVXLANInjectionDropped(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	g := l.gws[0]
	// The VTEPs are IPv6, so the attack comes over an IPv6 underlay.
	run(t, "ip", "-n", g.ns, "addr", "add", "fd00:172::1/64", "dev", "ocdpeth0", "nodad")
	attacker := newNetNS(t)
	l.u.attach(t, attacker, netip.MustParsePrefix("172.16.0.99/24"))
	run(t, "ip", "-n", attacker, "addr", "add", "fd00:172::99/64", "dev", "ocdpeth0", "nodad")
	var conns []*net.UDPConn
	err := inNetNS(nsPath(attacker), func() error {
		for _, dst := range []string{"[fd00:172::1]:4789", "172.16.0.1:4789"} {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
	}
	seq := 0
	inject := func(n int) {
		for range n {
			seq++
			for _, c := range conns {
				_, _ = c.Write(vxlanEcho(overlayMAC(g.tunnel), lanHost(l.gws[1]), lanHost(g), seq))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	const n = 10
	expectDropped := func(when string) {
		before := icmpInEchos(t, g.ns)
		inject(n)
		time.Sleep(300 * time.Millisecond)
		if got := icmpInEchos(t, g.ns) - before; got != 0 {
			t.Errorf("%s: %d injected echo requests reached the VPC address behind gw0, want 0", when, got)
		}
	}
	expectDropped("guard in place")

	// Without the guard the same packets get in: the test sees injection.
	c := nftConn(t, g.ns)
	c.DelTable(&nftables.Table{Name: guardTable(l.device(0)), Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	before := icmpInEchos(t, g.ns)
	inject(n)
	eventually(t, 2*time.Second, "injected echoes to arrive without the guard", func() bool { return icmpInEchos(t, g.ns)-before >= n })

	// The next reconcile (here: a resync) puts the guard back.
	g.dp.repair()
	expectDropped("guard restored by repair")
	waitPing(t, l.gws[1].ns, lanHost(g), 5*time.Second)
	waitPing(t, g.ns, lanHost(l.gws[1]), 5*time.Second)
}

// TestOverlayDriftRepaired: the overlay deleted or set down, its FDB or
// neighbour entries deleted (netlink events), the guard table deleted
// (periodic resync): each comes back and traffic flows again.
func TestOverlayDriftRepaired(t *testing.T) {
	l := newLab(t, 2)
	l.resync = 300 * time.Millisecond
	l.up(context.Background())
	l.pingMesh()
	ns, dev := l.gws[0].ns, l.device(0)
	ovl := OverlayName(dev)
	peer := l.gws[1].tunnel
	vtep := vtepAddr(peer).String()
	mac := overlayMAC(peer).String()
	works := func(what string) {
		t.Helper()
		eventually(t, 5*time.Second, what+" repaired", func() bool {
			return strings.Contains(output("ip", "-n", ns, "-d", "link", "show", "dev", ovl), ",UP") &&
				strings.Contains(output("bridge", "-n", ns, "fdb", "show", "dev", ovl), mac+" dst "+vtep) &&
				strings.Contains(output("ip", "-n", ns, "neigh", "show", "dev", ovl), peer.String()+" lladdr "+mac+" PERMANENT") &&
				strings.Contains(output("ip", "-n", ns, "route", "show", l.gws[1].lan.String()), "dev "+ovl)
		})
		waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	}
	run(t, "ip", "-n", ns, "link", "del", ovl)
	works("overlay deleted")
	run(t, "ip", "-n", ns, "link", "set", ovl, "down")
	works("overlay set down")
	run(t, "bridge", "-n", ns, "fdb", "del", mac, "dev", ovl, "dst", vtep, "self")
	works("fdb entry deleted")
	run(t, "ip", "-n", ns, "neigh", "del", peer.String(), "dev", ovl)
	works("neighbour entry deleted")
	c := nftConn(t, ns)
	c.DelTable(&nftables.Table{Name: guardTable(dev), Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "guard table restored by resync", func() bool {
		return strings.Contains(nftGuardRules(t, ns, dev), "opencen overlay guard")
	})
}
