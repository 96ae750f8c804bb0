package routing

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// floodRate and floodFor bound every flood the BFD tests send.
const (
	floodRate = 10_000 // packets per second
	floodFor  = 3 * time.Second
)

// bfdFloodLab is two gateways, gw-a and gw-b, whose "tunnel" is a veth
// (the speakers' TunnelDevice), a VPC host on gw-a's LAN and a host behind
// gw-b, which routes it toward gw-a.
type bfdFloodLab struct {
	l                *lab
	nsA, nsB         string
	hostA, hostB     string
	lanA             string // gw-a's LAN port
	a                *helperProc
	tunnelA, tunnelB string
}

func newBFDFloodLab(t *testing.T) *bfdFloodLab {
	l := newLab(t)
	x := &bfdFloodLab{l: l, nsA: l.netns("gwa"), nsB: l.netns("gwb"), hostA: l.netns("hosta"), hostB: l.netns("hostb")}
	run(t, "ip", "-n", x.nsA, "addr", "add", "100.64.0.1/32", "dev", "lo")
	run(t, "ip", "-n", x.nsB, "addr", "add", "100.64.0.2/32", "dev", "lo")
	x.tunnelA, x.tunnelB = l.linkNames(x.nsA, "10.255.1.1/30", x.nsB, "10.255.1.2/30")
	x.lanA, _ = l.linkNames(x.nsA, "10.1.0.1/24", x.hostA, "10.1.0.10/24")
	l.linkNames(x.nsB, "10.2.0.1/24", x.hostB, "10.2.0.10/24")
	run(t, "ip", "-n", x.nsA, "route", "add", "100.64.0.2/32", "via", "10.255.1.2", "src", "100.64.0.1")
	run(t, "ip", "-n", x.nsB, "route", "add", "100.64.0.1/32", "via", "10.255.1.1", "src", "100.64.0.2")
	run(t, "ip", "-n", x.hostA, "route", "add", "100.64.0.0/24", "via", "10.1.0.1")
	run(t, "ip", "-n", x.hostB, "route", "add", "100.64.0.0/24", "via", "10.2.0.1")
	// Loose reverse-path filtering, as on a gateway: a source with a route
	// anywhere passes, so the forged packets reach the gateways' stacks.
	for _, ns := range []string{x.nsA, x.nsB} {
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
	}
	// gw-b takes in, and routes on, packets from its host that claim its
	// own tunnel address (it has no guard here).
	run(t, "ip", "netns", "exec", x.nsB, "sysctl", "-qw", "net.ipv4.conf.all.accept_local=1")
	inst := []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}
	prot := []netip.Prefix{mp("100.64.0.0/29")}
	dA := Desired{RouterID: tunA, LocalAddress: tunA, Region: "r-a", InstanceASN: testASN,
		Gateways:  []GatewayPeer{{Name: "gw-b", Region: "r-b", Address: tunB1, Entitled: entB()}},
		Originate: []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}}, InstanceCIDRs: inst, ProtectedPrefixes: prot}
	dB := Desired{RouterID: tunB1, LocalAddress: tunB1, Region: "r-b", InstanceASN: testASN,
		Gateways:  []GatewayPeer{{Name: "gw-a", Region: "r-a", Address: tunA, Entitled: entA()}},
		Originate: []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}, InstanceCIDRs: inst, ProtectedPrefixes: prot}
	x.a = l.speaker(x.nsA, helperConfig{Desired: dA, Port: 179, TunnelDevice: x.tunnelA})
	l.speaker(x.nsB, helperConfig{Desired: dB, Port: 179, TunnelDevice: x.tunnelB})
	return x
}

// linkNames is link, returning the two ends' names.
func (l *lab) linkNames(nsA, addrA, nsB, addrB string) (string, string) {
	l.link(nsA, addrA, nsB, addrB)
	return fmt.Sprintf("ocrt%da%s", l.n, l.suffix), fmt.Sprintf("ocrt%db%s", l.n, l.suffix)
}

// rxPackets reads a link's received-packet counter in ns (through `ip
// netns exec`, which mounts that namespace's /sys).
func rxPackets(t *testing.T, ns, link string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+link+"/statistics/rx_packets").CombinedOutput()
	if err != nil {
		t.Fatalf("rx_packets of %s: %v: %s", link, err, out)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("rx_packets of %s: %v", link, err)
	}
	return n
}

// forgedBFD is an IPv4 UDP packet from src to dst port GatewayBFDPort with
// TTL 255, holding a BFD Down with Your Discriminator 0 and My
// Discriminator disc.
func forgedBFD(src, dst netip.Addr, disc uint32) []byte {
	h := bfd.BFDHeader{Version: 1, State: bfd.StateDown, DetectTimeMultiplier: 3, MyDiscriminator: disc,
		DesiredMinTxInterval: 100_000, RequiredMinRxInterval: 100_000}
	payload, _ := h.MarshalBinary()
	pkt := make([]byte, 28+len(payload))
	pkt[0], pkt[8], pkt[9] = 0x45, 255, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	copy(pkt[12:16], src.AsSlice())
	copy(pkt[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(pkt[20:], 49152+uint16(disc%16384))
	binary.BigEndian.PutUint16(pkt[22:], GatewayBFDPort)
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return pkt // the kernel fills in the IP checksum; a UDP checksum of 0 is none
}

// flood sends forged Down packets from ns at floodRate for floodFor: a
// bounded count, paced in 10ms slots. It returns how many it sent.
func flood(t *testing.T, ns string, src, dst netip.Addr) int {
	t.Helper()
	sent := 0
	err := testutil.InNetNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		const slot = 10 * time.Millisecond
		perSlot := floodRate * int(slot) / int(time.Second)
		start := time.Now()
		for i := range int(floodFor / slot) {
			for range perSlot {
				if err := unix.Sendto(fd, forgedBFD(src, dst, newDiscriminator()), 0, to); err == nil {
					sent++
				}
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * slot)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

// TestBFDSpoofedFlood: a VPC host on gw-a's LAN floods gw-a with BFD Down
// packets that claim gw-b's tunnel address (Your Discriminator 0, TTL
// 255), at floodRate for floodFor; then a host behind gw-b does the same
// through the tunnel (gw-b routes them: TTL 254 on arrival). gw-a's BFD
// and BGP sessions with gw-b stay up throughout, and the test checks that
// the forged packets did reach gw-a.
func TestBFDSpoofedFlood(t *testing.T) {
	x := newBFDFloodLab(t)
	st := x.a.waitFor(60*time.Second, "gw-a's session with gw-b established with BFD up", func(s helperState) bool {
		ss := s.session("gw-b")
		return ss.State == "established" && ss.BFD == "up"
	})
	calls := len(st.Sessions)
	since := time.Now()
	for _, f := range []struct {
		what, from, link string
	}{
		{"from gw-a's LAN", x.hostA, x.lanA},
		{"through the tunnel, routed by gw-b", x.hostB, x.tunnelA},
	} {
		before := rxPackets(t, x.nsA, f.link)
		sent := flood(t, f.from, tunB1, tunA)
		if got := rxPackets(t, x.nsA, f.link) - before; got < uint64(sent)*9/10 {
			t.Fatalf("%s: gw-a received %d packets of %d forged: the test cannot see the flood", f.what, got, sent)
		}
		time.Sleep(500 * time.Millisecond) // more than the detection time
		st = x.a.state()
		ss := st.session("gw-b")
		if ss.State != "established" || ss.BFD != "up" || ss.Uptime < time.Since(since).Truncate(time.Second)-time.Second {
			t.Fatalf("after %d forged packets %s: gw-a's session with gw-b is %s, BFD %s, up for %v", sent, f.what, ss.State, ss.BFD, ss.Uptime)
		}
		t.Logf("%s: %d forged BFD Down packets in %v; the session stayed up", f.what, sent, floodFor)
	}
	for _, call := range st.Sessions[calls:] {
		if slices.Contains(call.Down, "gw-b") {
			t.Errorf("OnSessions reported gw-b down at %v, during the floods", call.At.Sub(since))
		}
	}
}
