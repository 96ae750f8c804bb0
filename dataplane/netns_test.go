package dataplane

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/opencen/opencen/internal/testutil"
)

func run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// output runs a command and returns its output, or "" if it failed: for
// conditions polled while the thing they look at may not exist yet.
func output(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

// newNetNS creates a named namespace "ocdp<random>" with lo up and deletes
// it at cleanup. It returns the name; the path is /run/netns/NAME.
func newNetNS(tb testing.TB) string {
	tb.Helper()
	return testutil.NewNetNS(tb, "ocdp")
}

func nsPath(name string) string { return "/run/netns/" + name }

// underlay is a bridge in a namespace of its own joining the gateways'
// underlay interfaces, like an IP network between hosts.
type underlay struct {
	ns string
	n  int
}

func newUnderlay(tb testing.TB) *underlay {
	u := &underlay{ns: newNetNS(tb)}
	run(tb, "ip", "-n", u.ns, "link", "add", "ocdpbr0", "type", "bridge")
	run(tb, "ip", "-n", u.ns, "link", "set", "ocdpbr0", "up")
	return u
}

// attach gives gwNS an interface ocdpeth0 with addr, bridged to the others.
func (u *underlay) attach(tb testing.TB, gwNS string, addr netip.Prefix) {
	port := fmt.Sprintf("ocdpp%d", u.n)
	u.n++
	run(tb, "ip", "-n", gwNS, "link", "add", "ocdpeth0", "type", "veth", "peer", "name", port, "netns", u.ns)
	run(tb, "ip", "-n", u.ns, "link", "set", port, "master", "ocdpbr0", "up")
	run(tb, "ip", "-n", gwNS, "addr", "add", addr.String(), "dev", "ocdpeth0")
	run(tb, "ip", "-n", gwNS, "link", "set", "ocdpeth0", "up")
}

// pinger sends ICMP echo requests from inside a namespace.
type pinger struct {
	conn *icmp.PacketConn
	id   int
	v6   bool
}

func newPinger(tb testing.TB, ns string) *pinger { return newPingerFamily(tb, ns, false) }

func newPingerFamily(tb testing.TB, ns string, v6 bool) *pinger {
	if v6 {
		return newPingerFrom(tb, ns, netip.IPv6Unspecified())
	}
	return newPingerFrom(tb, ns, netip.IPv4Unspecified())
}

// newPingerFrom sends from src (an address of the namespace, or the
// unspecified address to let the kernel choose).
func newPingerFrom(tb testing.TB, ns string, src netip.Addr) *pinger {
	tb.Helper()
	var c *icmp.PacketConn
	v6 := src.Is6()
	err := inNetNS(nsPath(ns), func() (err error) {
		if v6 {
			c, err = icmp.ListenPacket("ip6:ipv6-icmp", src.String())
		} else {
			c, err = icmp.ListenPacket("ip4:icmp", src.String())
		}
		return err
	})
	if err != nil {
		tb.Fatalf("icmp socket in %s: %v", ns, err)
	}
	tb.Cleanup(func() { c.Close() })
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return &pinger{conn: c, id: int(b[0])<<8 | int(b[1]), v6: v6}
}

// ping sends count echo requests to dst every interval and returns how
// many distinct ones get an answer within wait after the last one sent.
func (p *pinger) ping(dst netip.Addr, count int, interval, wait time.Duration) (int, error) {
	got := make(map[int]bool, count)
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, peer, err := p.conn.ReadFrom(buf)
			if err != nil {
				return // deadline set by the sender below
			}
			proto, reply := 1, icmp.Type(ipv4.ICMPTypeEchoReply)
			if p.v6 {
				proto, reply = 58, ipv6.ICMPTypeEchoReply
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != reply {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.ID != p.id || peer.String() != dst.String() {
				continue
			}
			mu.Lock()
			got[e.Seq] = true
			full := len(got) == count
			mu.Unlock()
			if full {
				return
			}
		}
	}()
	_ = p.conn.SetReadDeadline(time.Time{})
	var sendErr error
	t := time.NewTicker(interval)
	for seq := range count {
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if p.v6 {
			typ = ipv6.ICMPTypeEchoRequest
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("opencen-dataplane")}}
		b, _ := msg.Marshal(nil)
		if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil && sendErr == nil {
			sendErr = fmt.Errorf("send echo %d to %s: %w", seq, dst, err)
		}
		if seq < count-1 {
			<-t.C
		}
	}
	t.Stop()
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	<-done
	mu.Lock()
	defer mu.Unlock()
	return len(got), sendErr
}

// waitPing retries single pings to dst until one answers or timeout.
func waitPing(tb testing.TB, ns string, dst netip.Addr, timeout time.Duration) {
	tb.Helper()
	p := newPingerFamily(tb, ns, dst.Is6())
	deadline := time.Now().Add(timeout)
	for {
		n, _ := p.ping(dst, 1, time.Millisecond, 300*time.Millisecond)
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no ping reply from %s in namespace %s within %s", dst, ns, timeout)
		}
	}
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkIndex is the index of link name in ns.
func linkIndex(tb testing.TB, ns, name string) int {
	tb.Helper()
	h, err := netlink.NewHandleAt(mustNS(tb, ns))
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	return l.Attrs().Index
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
