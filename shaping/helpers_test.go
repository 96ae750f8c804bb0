package shaping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// testNS is a named network namespace deleted at cleanup.
type testNS struct{ name string }

func newNS(t testing.TB) *testNS {
	t.Helper()
	return &testNS{name: testutil.NewNetNS(t, "ocsh")}
}

// do runs fn on a thread inside the namespace.
func (n *testNS) do(fn func() error) error { return testutil.InNetNS(n.name, fn) }

// sh runs one command line (no shell) in the namespace, failing the test
// on error.
func (n *testNS) sh(t testing.TB, cmd string) string {
	t.Helper()
	out, err := n.run(cmd)
	if err != nil {
		t.Fatalf("%s: %s: %v: %s", n.name, cmd, err, out)
	}
	return out
}

func (n *testNS) run(cmd string) (string, error) {
	args := append([]string{"netns", "exec", n.name}, strings.Fields(cmd)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// pinDir is a temporary directory for pins, unmounted at cleanup even if
// the test fails and the shaper never removes it.
func pinDir(t testing.TB) string {
	dir := filepath.Join(t.TempDir(), "ocsh"+testutil.Suffix(3))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// path is a three-namespace path: src -> gw -> dst. The gateway forwards,
// as a real gateway does, and its device toward dst (gwOut) is where the
// shaper sits. dst owns 10.201.0.1 (region "r-a"), 10.202.0.1 (region
// "r-b") and fd00:201::1 (r-a), reachable through gw.
type path struct {
	src, gw, dst *testNS
	gwOut        string // gw's device toward dst
}

func newPath(t testing.TB) *path {
	t.Helper()
	p := &path{src: newNS(t), gw: newNS(t), dst: newNS(t)}
	sfx := testutil.Suffix(3)
	a, b := "ocsh"+sfx+"a", "ocsh"+sfx+"b"
	c, d := "ocsh"+sfx+"c", "ocsh"+sfx+"d"
	p.gwOut = c
	p.src.sh(t, "ip link add "+a+" type veth peer name "+b+" netns "+p.gw.name)
	p.gw.sh(t, "ip link add "+c+" type veth peer name "+d+" netns "+p.dst.name)
	p.src.sh(t, "ip addr add 10.200.1.2/24 dev "+a)
	p.src.sh(t, "ip -6 addr add fd00:200:1::2/64 dev "+a+" nodad")
	p.src.sh(t, "ip link set "+a+" up")
	p.src.sh(t, "ip route add 10.200.0.0/14 via 10.200.1.1")
	p.src.sh(t, "ip -6 route add fd00:200::/16 via fd00:200:1::1")
	p.gw.sh(t, "ip addr add 10.200.1.1/24 dev "+b)
	p.gw.sh(t, "ip -6 addr add fd00:200:1::1/64 dev "+b+" nodad")
	p.gw.sh(t, "ip addr add 10.200.2.1/24 dev "+c)
	p.gw.sh(t, "ip -6 addr add fd00:200:2::1/64 dev "+c+" nodad")
	p.gw.sh(t, "ip link set "+b+" up")
	p.gw.sh(t, "ip link set "+c+" up")
	p.gw.sh(t, "sysctl -qw net.ipv4.ip_forward=1")
	p.gw.sh(t, "sysctl -qw net.ipv6.conf.all.forwarding=1")
	p.gw.sh(t, "ip route add 10.201.0.0/16 via 10.200.2.2")
	p.gw.sh(t, "ip route add 10.202.0.0/16 via 10.200.2.2")
	p.gw.sh(t, "ip -6 route add fd00:201::/32 via fd00:200:2::2")
	p.dst.sh(t, "ip addr add 10.200.2.2/24 dev "+d)
	p.dst.sh(t, "ip -6 addr add fd00:200:2::2/64 dev "+d+" nodad")
	p.dst.sh(t, "ip addr add 10.201.0.1/32 dev lo")
	p.dst.sh(t, "ip addr add 10.202.0.1/32 dev lo")
	p.dst.sh(t, "ip -6 addr add fd00:201::1/128 dev lo")
	p.dst.sh(t, "ip link set "+d+" up")
	p.dst.sh(t, "ip route add 10.200.0.0/14 via 10.200.2.1")
	p.dst.sh(t, "ip -6 route add fd00:200::/16 via fd00:200:2::1")
	return p
}

// shaper starts a Shaper on gw's outgoing device.
func (p *path) shaper(t testing.TB, mode Mode) *Shaper {
	t.Helper()
	var s *Shaper
	dir := pinDir(t)
	err := p.gw.do(func() error {
		var err error
		s, err = New(Options{Interface: p.gwOut, PinPath: dir, Mode: mode})
		return err
	})
	if err != nil {
		t.Fatalf("new shaper: %v", err)
	}
	t.Cleanup(func() { s.Close(true) })
	return s
}

func pathDesired(a, b Rate) Desired {
	return Desired{
		Regions: map[string]Rate{"r-a": a, "r-b": b},
		Prefixes: map[netipPrefix]string{
			mustPrefix("10.201.0.0/16"): "r-a",
			mustPrefix("fd00:201::/32"): "r-a",
			mustPrefix("10.202.0.0/16"): "r-b",
			mustPrefix("10.200.0.0/16"): "home",
		},
		ControlAddrs: []netipAddr{mustAddr("10.200.1.2"), mustAddr("10.200.2.2")},
	}
}

// iperfServer starts iperf3 -s in dst on port, killed at cleanup.
func iperfServer(t testing.TB, ns *testNS, port int) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.name, "iperf3", "-s", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("start iperf3 server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait for the listener.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := ns.run("ss -ltnH")
		if strings.Contains(out, fmt.Sprintf(":%d ", port)) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("iperf3 server on port %d did not listen", port)
}

// iperf runs an iperf3 TCP client for secs seconds with flows streams and
// returns the receiver's goodput in bits/s. The sender uses cubic, Linux's
// default, whatever the host's default is (lab.IperfOptions says
// why).
//
// The server serves one test at a time and may still be closing the last
// one (a policed run's final exchange can wait on a retransmission): a
// "busy" answer is retried for up to 10 s.
func iperf(ns *testNS, addr string, port, secs, flows int) (float64, error) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		bps, err := iperfOnce(ns, addr, port, secs, flows)
		if err == nil || !strings.Contains(err.Error(), "server is busy") || time.Now().After(deadline) {
			return bps, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func iperfOnce(ns *testNS, addr string, port, secs, flows int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, "iperf3", "-c", addr, "-p", fmt.Sprint(port),
		"-t", fmt.Sprint(secs), "-P", fmt.Sprint(flows), "-C", "cubic", "-J").Output()
	if err != nil && len(out) == 0 {
		return 0, fmt.Errorf("iperf3 -c %s: %w", addr, err)
	}
	var res testutil.Iperf3Result
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return 0, fmt.Errorf("iperf3 -c %s: %v: %.300s", addr, errors.Join(err, jerr), out)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3 -c %s: %w: %.300s", addr, err, out)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}
