package lab

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/procx"
)

func TestUpDown(t *testing.T) {
	o := privileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up in %s:\n%s", time.Since(start).Round(time.Millisecond), l.Describe())
	checkIsolated(t, l, o)
	checkReachability(t, ctx, l)
	checkRouter(t, ctx, l, o)

	// A second Up is refused, and leaves the first lab whole.
	if _, err := Up(ctx, o); !errors.Is(err, ErrAlreadyUp) {
		t.Errorf("second Up: %v, want ErrAlreadyUp", err)
	}
	if st, err := Status(o); err != nil || !st.Up() {
		t.Errorf("lab damaged by the refused second Up: %v\n%s", err, st)
	}
	checkDownAfterCrash(t, ctx, o, l.Routers[0].PID)
}

// checkIsolated: every namespace of the lab exists, none can route out of
// the machine, and no lab link is in the root namespace.
func checkIsolated(t *testing.T, l *Lab, o Options) {
	t.Helper()
	if got := labNamespaces(o.Prefix); len(got) != len(l.Namespaces) {
		t.Errorf("namespaces present %v, want %v", got, l.Namespaces)
	}
	for _, ns := range l.Namespaces {
		out, err := exec.Command("ip", "-n", ns, "route", "show", "default").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("%s has a default route (or ip failed: %v): %s", ns, err, out)
		}
		if out, err := exec.Command("ip", "-n", ns, "route", "get", "198.51.100.1").CombinedOutput(); err == nil {
			t.Errorf("%s routes to an outside address: %s", ns, out)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), " "+o.Prefix) || strings.Contains(string(out), " ocl-br") || strings.Contains(string(out), " ocl-u") {
		t.Errorf("a lab link is in the root namespace:\n%s", out)
	}
}

// checkReachability: without agents, the underlay joins every gateway,
// each host reaches its next hops over multipath routes of the CEN's
// prefixes only, and another region's host is out of reach.
func checkReachability(t *testing.T, ctx context.Context, l *Lab) {
	t.Helper()
	for _, a := range l.Gateways {
		for _, b := range l.Gateways {
			if a.Name != b.Name {
				if err := ping(ctx, l, a.Name, b.Endpoint.Addr().String()); err != nil {
					t.Errorf("underlay %s -> %s: %v", a.Name, b.Name, err)
				}
			}
		}
	}
	for _, h := range l.Hosts {
		if !h.Address.IsValid() || !h.Address6.IsValid() {
			t.Errorf("%s is not dual stack: %s %s", h.Name, h.Address, h.Address6)
		}
		for _, nh := range append(append([]netip.Addr{}, h.NextHops...), h.NextHops6...) {
			if err := ping(ctx, l, h.Name, nh.String()); err != nil {
				t.Errorf("%s -> next hop %s: %v", h.Name, nh, err)
			}
		}
	}
	for _, p := range [][2]string{{"-4", "10.2.0.0/16"}, {"-6", "fd00:2::/48"}} {
		out, err := l.Exec(ctx, "vpc-beijing", "ip", p[0], "route", "show", p[1])
		if err != nil || strings.Count(string(out), "nexthop via") != 2 {
			t.Errorf("vpc-beijing has no two-way multipath route to %s: %v\n%s", p, err, out)
		}
	}
	out, err := l.Exec(ctx, "vpc-beijing", "sysctl", "-n", "net.ipv4.fib_multipath_use_neigh")
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("fib_multipath_use_neigh = %q (%v)", out, err)
	}
	for _, g := range l.Gateways {
		out, err := l.Exec(ctx, g.Name, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("%s ip_forward = %q (%v)", g.Name, out, err)
		}
	}
	for _, a := range []string{"10.2.0.10", "fd00:2::a"} {
		if err := ping(ctx, l, "vpc-beijing", a); err == nil {
			t.Errorf("vpc-beijing reached vpc-shanghai's %s with no agent running", a)
		}
	}
}

// checkRouter: each on-premises host reaches its router and each router
// its VBR's gateway in both families; BIRD runs, its session is configured
// toward the gateway (not up: no agent answers) over the neighbor's
// family, and its own routes of both families are in its table.
func checkRouter(t *testing.T, ctx context.Context, l *Lab, o Options) {
	t.Helper()
	for _, rt := range l.Routers {
		for _, a := range []netip.Prefix{rt.LAN, rt.LAN6} {
			if err := ping(ctx, l, rt.Network, a.Addr().String()); err != nil {
				t.Errorf("on-premises host %s -> router %s: %v", rt.Network, a.Addr(), err)
			}
		}
		for _, a := range []netip.Prefix{rt.GatewayAddress, rt.OtherGatewayAddress} {
			if err := ping(ctx, l, rt.Name, a.Addr().String()); err != nil {
				t.Errorf("router %s -> %s's VBR address %s: %v", rt.Name, rt.Gateway, a.Addr(), err)
			}
		}
	}
	st, err := Status(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", st)
	if !st.Up() || len(st.Routers) != len(l.Routers) {
		t.Fatalf("status not up: %+v", st)
	}
	for _, r := range st.Routers {
		if !r.Alive || r.State != "start" || !(strings.HasPrefix(r.Info, "Active") || strings.HasPrefix(r.Info, "Connect") || strings.HasPrefix(r.Info, "Idle")) {
			t.Errorf("router %s: alive %v, bgp state %q %q, want start with Active/Connect/Idle", r.Name, r.Alive, r.State, r.Info)
		}
	}
	for _, c := range []struct{ vbr, neighbor, local, v6Route string }{
		{"idc-beijing", "172.30.0.1", "192.168.1.0/24", "fd00:192:168:1::/64"},
		{"idc-shanghai", "fd6c:6162::ac1f:1", "172.20.1.0/24", "fd00:172:20:1::/64"},
	} {
		out, err := l.Birdc(ctx, c.vbr, "show", "protocols", "all", BGPProtocol)
		if err != nil || !strings.Contains(string(out), "Neighbor address: "+c.neighbor) || !strings.Contains(string(out), "Neighbor AS:      64512") {
			t.Errorf("%s: bgp protocol details: %v\n%s", c.vbr, err, out)
		}
		out, err = l.Birdc(ctx, c.vbr, "show", "route")
		if err != nil || !strings.Contains(string(out), c.local) || !strings.Contains(string(out), c.v6Route) {
			t.Errorf("%s: bird table lacks the on-premises prefixes %s and %s: %v\n%s", c.vbr, c.local, c.v6Route, err, out)
		}
	}
}

// checkDownAfterCrash: with the state file gone, as after a crash of the
// process that built the lab, Down still removes every namespace, BIRD
// (birdPID) and the state dir; a second Down is harmless.
func checkDownAfterCrash(t *testing.T, ctx context.Context, o Options, birdPID int) {
	t.Helper()
	if err := os.Remove(filepath.Join(o.StateDir, stateFile)); err != nil {
		t.Fatal(err)
	}
	if err := Down(ctx, o); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(o.Prefix); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if procx.Alive(birdPID) {
		t.Errorf("bird (pid %d) survived Down", birdPID)
	}
	if _, err := os.Stat(o.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
	if err := Down(ctx, o); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if st, err := Status(o); err != nil || st.StateFile || len(st.Namespaces) > 0 {
		t.Errorf("status after Down: %v %+v", err, st)
	}
}

// Another lab whose prefix merely starts with this one's ("ocl-" is the
// start of every test lab's "ocl-t1a2b-") is not this lab's: Up is not
// refused because of it, Down leaves it, and a Down that can tell nothing
// (no state file, no readable config) refuses to guess.
func TestDownLeavesOtherLabs(t *testing.T) {
	o := privileged(t)
	other := o.Prefix + "x1-gw-1" // a namespace of a lab "<prefix>x1-"
	if out, err := exec.Command("ip", "netns", "add", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", other, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", other).Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := Up(ctx, o); err != nil {
		t.Fatalf("Up beside another lab: %v", err)
	}
	if err := Down(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !nsExists(other) {
		t.Fatalf("Down removed %s, another lab's namespace", other)
	}
	if left := labNamespaces(o.Prefix); len(left) != 1 {
		t.Errorf("namespaces left: %v, want only %s", left, other)
	}
	blind := o
	blind.Config = filepath.Join(t.TempDir(), "missing.yaml")
	blind.StateDir = filepath.Join(t.TempDir(), "none")
	if err := Down(ctx, blind); err == nil || !strings.Contains(err.Error(), other) {
		t.Errorf("Down with neither state nor config: %v, want a refusal naming %s", err, other)
	}
	if !nsExists(other) {
		t.Errorf("a blind Down removed %s", other)
	}
}
