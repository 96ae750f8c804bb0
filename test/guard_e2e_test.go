package test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/testutil"
)

// TestVBRControlOnlyOnItsLink: BFD packets from the VBR router's address
// reach the gateway on the router's link; the same packets from a host on
// the gateway's LAN that claims that address are dropped by cend's guard.
// Reverse-path filtering is off in the gateway's namespace, so only the
// guard stands between them: with its table deleted by hand they arrive,
// which shows the test sees them, and cend's repair drops them again.
func TestVBRControlOnlyOnItsLink(t *testing.T) {
	s := newSolo(t)
	lan := testNetns(t)
	gw, host := "ocsl"+testutil.Suffix(3), "ocsh"+testutil.Suffix(3)
	for _, args := range [][]string{
		{"link", "add", gw, "netns", s.ns, "type", "veth", "peer", "name", host, "netns", lan},
		{"-n", s.ns, "addr", "add", "10.1.0.1/24", "dev", gw},
		{"-n", lan, "addr", "add", "10.1.0.10/24", "dev", host},
		{"-n", lan, "addr", "add", routerAddr.String() + "/32", "dev", host},
		{"-n", s.ns, "link", "set", gw, "up"},
		{"-n", lan, "link", "set", host, "up"},
		{"-n", lan, "route", "add", "172.30.0.1/32", "via", "10.1.0.1"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", s.ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf."+gw+".rp_filter=0").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	s.start(binary(t, "cend"))
	s.waitUp(60 * time.Second)

	var pc net.PacketConn
	if err := testutil.InNetNS(s.ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", "172.30.0.1:3784")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const n = 10
	arrived := func(ns string) int {
		t.Helper()
		sendUDP(t, ns, routerAddr, netip.MustParseAddrPort("172.30.0.1:3784"), n)
		got := 0
		buf := make([]byte, 64)
		for {
			pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return got
			}
			if from.(*net.UDPAddr).AddrPort().Addr().Unmap() == routerAddr {
				got++
			}
		}
	}
	if got := arrived(s.router); got != n {
		t.Errorf("from the router on its link: %d of %d arrived, want all", got, n)
	}
	if got := arrived(lan); got != 0 {
		t.Errorf("from the LAN, claiming the router's address: %d of %d arrived, want none", got, n)
	}
	// A periodic repair may land between the deletion and the packets:
	// then the table is back, and the deletion is tried again.
	table := "opencen_" + dataplane.DeviceName(s.instance+"/gw-1")
	nft := func(args ...string) error {
		return exec.Command("ip", append([]string{"netns", "exec", s.ns, "nft"}, args...)...).Run()
	}
	for try := 1; ; try++ {
		if err := nft("delete", "table", "inet", table); err != nil {
			t.Fatalf("delete the guard %s: %v", table, err)
		}
		got := arrived(lan)
		if got == n {
			break
		}
		if nft("list", "table", "inet", table) != nil || try == 3 {
			t.Fatalf("guard deleted: %d of %d arrived from the LAN, want all (else the test sees nothing)", got, n)
		}
	}
	eventually(t, 60*time.Second, "cend repairs its guard", func() error {
		if got := arrived(lan); got != 0 {
			return fmt.Errorf("%d of %d arrived from the LAN", got, n)
		}
		return nil
	})
}

// sendUDP sends n datagrams from src to dst inside namespace ns.
func sendUDP(t *testing.T, ns string, src netip.Addr, dst netip.AddrPort, n int) {
	t.Helper()
	err := testutil.InNetNS(ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte("bfd")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
