package lab

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/procx"
	"github.com/opencen/opencen/internal/testutil"
)

// TestMain doubles as a stand-in cend for TestUpWithAgents: with
// OCL_FAKE_CEND=1 the test binary parses cend's flags, checks the lab's
// config and key, records where it runs and serves its socket until
// signalled. It proves the lab starts each agent in the right namespace
// with the right flags, without needing the real agent.
func TestMain(m *testing.M) {
	if os.Getenv("OCL_FAKE_CEND") == "1" {
		os.Exit(fakeCend(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type fakeReport struct {
	Gateway, Metrics, LogFormat, Shaper string
	Addrs                               []string
	// BPFFS is whether /sys/fs/bpf is a bpf filesystem when the agent
	// started: the lab prepares nothing an operator would not.
	BPFFS bool
}

func fakeCend(args []string) int {
	fs := flag.NewFlagSet("cend", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "")
	gw := fs.String("gateway", "", "")
	sock := fs.String("socket", "", "")
	metrics := fs.String("metrics-addr", "", "")
	stateDir := fs.String("state-dir", "", "")
	logFormat := fs.String("log-format", "", "")
	shaper := fs.String("shaper", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	g, ok := cfg.Gateway(*gw)
	if !ok {
		fmt.Fprintln(os.Stderr, "fake cend: no gateway", *gw)
		return 1
	}
	if fi, err := os.Stat(g.PrivateKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		fmt.Fprintln(os.Stderr, "fake cend: key file not 0600:", err)
		return 1
	}
	var st unix.Statfs_t
	rep := fakeReport{Gateway: *gw, Metrics: *metrics, LogFormat: *logFormat, Shaper: *shaper,
		BPFFS: unix.Statfs("/sys/fs/bpf", &st) == nil && st.Type == unix.BPF_FS_MAGIC}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		rep.Addrs = append(rep.Addrs, a.String())
	}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(filepath.Join(*stateDir, "fake.json"), b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(5 * time.Minute): // bounded even if nobody stops it
	}
	ln.Close()
	return 0
}

// privileged skips unless root and returns options for a lab of the
// test's own: a random prefix and state dir, torn down in cleanup.
func privileged(t *testing.T) Options {
	t.Helper()
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "bird", "birdc", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the lab test needs %s: %v", tool, err)
		}
	}
	o := Options{
		Config:   labConfig,
		StateDir: filepath.Join(t.TempDir(), "state"),
		Prefix:   fmt.Sprintf("ocl-t%04x-", rand.IntN(0x10000)),
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o := o
		o.Logger = nil // t.Log after the test ends would panic
		if err := Down(ctx, o); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left := labNamespaces(o.Prefix); len(left) > 0 {
			t.Errorf("cleanup left namespaces %v", left)
		}
	})
	return o
}

// mountsUnder lists the mount points below dir: the agents mount their
// bpffs in the mount namespaces ip netns exec gives them, so none of
// theirs shows here.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(out)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ping(ctx context.Context, l *Lab, from, to string) error {
	_, err := l.Exec(ctx, from, "ping", "-c", "1", "-W", "1", "-q", to)
	return err
}

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

	// Every namespace exists, and none can route out of the machine.
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

	// Underlay: every gateway reaches every other's endpoint.
	for _, a := range l.Gateways {
		for _, b := range l.Gateways {
			if a.Name != b.Name {
				if err := ping(ctx, l, a.Name, b.Endpoint.Addr().String()); err != nil {
					t.Errorf("underlay %s -> %s: %v", a.Name, b.Name, err)
				}
			}
		}
	}
	// Each VPC host reaches its gateways; routes cover the CEN only.
	for _, h := range l.Hosts {
		for _, nh := range h.NextHops {
			if err := ping(ctx, l, h.Name, nh.String()); err != nil {
				t.Errorf("%s -> next hop %s: %v", h.Name, nh, err)
			}
		}
	}
	out, err := l.Exec(ctx, "vpc-beijing", "ip", "route", "show", "10.2.0.0/16")
	if err != nil || strings.Count(string(out), "nexthop via") != 2 {
		t.Errorf("vpc-beijing has no two-way multipath route to 10.2.0.0/16: %v\n%s", err, out)
	}
	out, err = l.Exec(ctx, "vpc-beijing", "sysctl", "-n", "net.ipv4.fib_multipath_use_neigh")
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("fib_multipath_use_neigh = %q (%v)", out, err)
	}
	for _, g := range l.Gateways {
		out, err := l.Exec(ctx, g.Name, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("%s ip_forward = %q (%v)", g.Name, out, err)
		}
	}
	// On-premises: host -> router -> VBR gateway side.
	rt := l.Routers[0]
	if err := ping(ctx, l, "idc-beijing", rt.LAN.Addr().String()); err != nil {
		t.Errorf("on-premises host -> router: %v", err)
	}
	if err := ping(ctx, l, rt.Name, rt.GatewayAddress.Addr().String()); err != nil {
		t.Errorf("router -> gw-beijing-1 VBR address: %v", err)
	}
	// Without agents, another region's host is out of reach.
	if err := ping(ctx, l, "vpc-beijing", "10.2.0.10"); err == nil {
		t.Error("vpc-beijing reached vpc-shanghai with no agent running")
	}

	// BIRD runs, its session is configured toward the gateway (not up: no
	// agent answers) and its own routes are in its table.
	st, err := Status(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status:\n%s", st)
	if !st.Up() || len(st.Routers) != 1 || !st.Routers[0].Alive {
		t.Fatalf("status not up: %+v", st)
	}
	if r := st.Routers[0]; r.State != "start" || !(strings.HasPrefix(r.Info, "Active") || strings.HasPrefix(r.Info, "Connect") || strings.HasPrefix(r.Info, "Idle")) {
		t.Errorf("bgp state %q %q, want start with Active/Connect/Idle", r.State, r.Info)
	}
	out, err = l.Birdc(ctx, "idc-beijing", "show", "protocols", "all", BGPProtocol)
	if err != nil || !strings.Contains(string(out), "Neighbor address: 172.30.0.1") || !strings.Contains(string(out), "Neighbor AS:      64512") {
		t.Errorf("bgp protocol details: %v\n%s", err, out)
	}
	out, err = l.Birdc(ctx, "idc-beijing", "show", "route")
	if err != nil || !strings.Contains(string(out), "192.168.1.0/24") || !strings.Contains(string(out), "192.168.100.0/24") {
		t.Errorf("bird table lacks the on-premises prefixes: %v\n%s", err, out)
	}

	// A second Up is refused, and leaves the first lab whole.
	if _, err := Up(ctx, o); !errors.Is(err, ErrAlreadyUp) {
		t.Errorf("second Up: %v, want ErrAlreadyUp", err)
	}
	if st, err := Status(o); err != nil || !st.Up() {
		t.Errorf("lab damaged by the refused second Up: %v\n%s", err, st)
	}

	// A crash of the lab: the state file is gone; Down still removes all.
	birdPID := rt.PID
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

func TestUpWithAgents(t *testing.T) {
	o := privileged(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("OCL_FAKE_CEND", "1")
	o.Cend = self
	o.CendShaper = "tc"
	o.StartTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range l.Gateways {
		b, err := os.ReadFile(filepath.Join(g.StateDir, "fake.json"))
		if err != nil {
			t.Fatalf("%s: agent did not report: %v", g.Name, err)
		}
		var rep fakeReport
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Gateway != g.Name || rep.Metrics != "127.0.0.1:9469" || rep.LogFormat != "text" || rep.Shaper != "tc" {
			t.Errorf("%s: agent flags %+v", g.Name, rep)
		}
		if rep.BPFFS {
			t.Errorf("%s: the agent found a bpffs the lab prepared at /sys/fs/bpf", g.Name)
		}
		if !strings.Contains(strings.Join(rep.Addrs, " "), g.UnderlayAddr.String()) {
			t.Errorf("%s: agent runs outside its namespace: addresses %v", g.Name, rep.Addrs)
		}
	}
	st, err := Status(o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Up() || len(st.Agents) != len(l.Gateways) {
		t.Fatalf("agents not all alive:\n%s", st)
	}
	loaded, err := Load(o)
	if err != nil || len(loaded.Gateways) != len(l.Gateways) || loaded.Gateways[0].PID != l.Gateways[0].PID {
		t.Fatalf("Load: %v", err)
	}

	// Restart one agent: it gets the flags the lab is brought up with.
	if err := l.StopAgent(ctx, "gw-shanghai-1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sh, _ := l.Gateway("gw-shanghai-1")
	os.Remove(filepath.Join(sh.StateDir, "fake.json"))
	if err := l.StartAgent(ctx, "gw-shanghai-1", self); err != nil {
		t.Fatal(err)
	}
	var rep fakeReport
	if b, err := os.ReadFile(filepath.Join(sh.StateDir, "fake.json")); err != nil || json.Unmarshal(b, &rep) != nil || rep.Shaper != "tc" || rep.BPFFS {
		t.Errorf("restarted agent: %+v (%v), want --shaper tc and no bpffs prepared", rep, err)
	}

	// Kill a gateway the way the demo does.
	if err := ping(ctx, l, "gw-beijing-1", "10.255.0.12"); err != nil {
		t.Fatalf("underlay to gw-beijing-2 before the kill: %v", err)
	}
	pid := l.Gateways[1].PID
	if err := l.KillGateway(ctx, "gw-beijing-2"); err != nil {
		t.Fatal(err)
	}
	if procx.Alive(pid) {
		t.Error("KillGateway left cend running")
	}
	if err := ping(ctx, l, "gw-beijing-1", "10.255.0.12"); err == nil {
		t.Error("a killed gateway still answers on the underlay")
	}
	if err := ping(ctx, l, "vpc-beijing", "10.1.0.1"); err != nil {
		t.Errorf("the surviving gateway is out of reach: %v", err)
	}

	var pids []int
	for _, g := range l.Gateways {
		if g.PID != 0 {
			pids = append(pids, g.PID)
		}
	}
	if err := Down(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if procx.Alive(p) {
			t.Errorf("agent pid %d survived Down", p)
		}
	}
	if m := mountsUnder(o.StateDir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(o.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
}

// The VM lab's provisioning scripts, run in namespaces standing in for a
// VM: a NIC found by MAC and renamed, a VPC host namespace taking its own
// NIC, an on-premises host behind the router. (vm-gateway.sh and
// vm-router.sh write /etc and systemd units, so they run on VMs only.)
func TestVMScriptsInNamespaces(t *testing.T) {
	o := privileged(t)
	p := o.Prefix
	vm, peer, host, onprem := p+"vm", p+"peer", p+"host", p+"onprem"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := &runner{log: o.Logger}
	must := func(argv ...string) {
		t.Helper()
		if err := r.run(ctx, argv...); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{vm, peer} {
		must("ip", "netns", "add", ns)
	}
	// Namespaces made by hand are not the lab's (Down removes only what a
	// lab's state or plan names): the test removes its own.
	t.Cleanup(func() {
		for _, ns := range []string{vm, peer} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	must("ip", "-n", vm, "link", "set", "lo", "up") // as on a VM
	const mac1, mac2 = "52:54:00:0c:00:01", "52:54:00:0c:00:02"
	must("ip", "-n", vm, "link", "add", "eth1", "address", mac1, "type", "veth", "peer", "name", "p1", "netns", peer)
	must("ip", "-n", vm, "link", "add", "eth2", "address", mac2, "type", "veth", "peer", "name", "p2", "netns", peer)
	must("ip", "-n", peer, "addr", "add", "10.255.0.99/24", "dev", "p1")
	must("ip", "-n", peer, "addr", "add", "10.1.0.1/16", "dev", "p2")
	must("ip", "-n", peer, "link", "set", "p1", "up")
	must("ip", "-n", peer, "link", "set", "p2", "up")
	s := "../scripts/lab/"
	// nsenter switches only the network namespace, like a VM's root
	// namespace (ip netns exec would hide the namespaces the scripts add).
	inVM := []string{"nsenter", "--net=/run/netns/" + vm, "sh"}
	for range 2 { // idempotent
		must(append(inVM, s+"vm-iface.sh", strings.ToUpper(mac1), "ocl-ul", "10.255.0.11/24")...)
		must(append(inVM, s+"vm-host.sh", host, mac2, "10.1.0.10/16,10.1.16.10/16", "10.1.0.1", "10.2.0.0/16", "192.168.0.0/16")...)
		must(append(inVM, s+"vm-onprem.sh", onprem, "192.168.1.1/24", "192.168.1.10/24", "192.168.100.1", "10.1.0.0/16")...)
	}
	// vm-host.sh and vm-onprem.sh made named namespaces: clean them too.
	t.Cleanup(func() {
		for _, ns := range []string{host, onprem} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	l := &Lab{Namespaces: []string{vm, peer, host, onprem}}
	for _, c := range []struct{ from, to string }{
		{vm, "10.255.0.99"}, {host, "10.1.0.1"}, {onprem, "192.168.1.1"}, {vm, "192.168.100.1"},
	} {
		if err := ping(ctx, l, c.from, c.to); err != nil {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
	if out, err := l.Exec(ctx, host, "ip", "-4", "addr", "show", "dev", "ocl-lan"); err != nil || !strings.Contains(string(out), "10.1.0.10/16") || !strings.Contains(string(out), "10.1.16.10/16") {
		t.Errorf("VPC host addresses (one homed at each gateway): %v %s", err, out)
	}
	out, err := l.Exec(ctx, host, "ip", "route", "show", "10.2.0.0/16")
	if err != nil || !strings.Contains(string(out), "via 10.1.0.1 dev ocl-lan") {
		t.Errorf("VPC host route: %v %s", err, out)
	}
	out, err = l.Exec(ctx, onprem, "ip", "route", "show", "10.1.0.0/16")
	if err != nil || !strings.Contains(string(out), "via 192.168.1.1 dev ocl-lan") {
		t.Errorf("on-premises host route: %v %s", err, out)
	}
	if out, err := l.Exec(ctx, vm, "ip", "link", "show", "eth2"); err == nil {
		t.Errorf("the VPC host's NIC stayed in the VM: %s", out)
	}
	if err := exec.Command(inVM[0], append(inVM[1:], s+"vm-iface.sh", "52:54:00:0c:00:77", "ocl-x")...).Run(); err == nil {
		t.Error("vm-iface.sh accepted a MAC no NIC has")
	}
}

// The router's eBGP session comes up against a real speaker on the
// gateway's side (a second BIRD standing in for cend, without BFD although
// the router asks for it), routes flow both ways into the kernels, and the
// on-premises host reaches the gateway's VPC address through them.
func TestRouterPeersWithBGPSpeaker(t *testing.T) {
	o := privileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	rt := l.Routers[0]
	gw, _ := l.Gateway(rt.Gateway)
	conf := filepath.Join(o.StateDir, "speaker.conf")
	sock := filepath.Join(o.StateDir, "speaker.ctl")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`router id %s;
protocol device {}
protocol static cen { ipv4; route %s blackhole; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
protocol bgp vbr {
	local as %d;
	neighbor %s as %d;
	connect retry time 1;
	ipv4 { import all; export where proto = "cen"; };
}
`, rt.GatewayAddress.Addr(), gw.LANAddrs[0].Masked(), rt.PeerASN, rt.Address.Addr(), rt.ASN)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.spawn(gw.Namespace, filepath.Join(o.StateDir, "speaker.log"), "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(o.StateDir, "speaker.pid")); err != nil {
		t.Fatal(err)
	}
	var state, info string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if state, info, err = l.BGPState(ctx, rt.Network); err == nil && state == "up" && strings.HasPrefix(info, "Established") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if state != "up" {
		t.Fatalf("router session %q %q (%v) 30s after the speaker started", state, info, err)
	}
	want := gw.LANAddrs[0].Masked().String()
	var out []byte
	for time.Now().Before(deadline) {
		if out, err = l.Exec(ctx, rt.Name, "ip", "route", "show", want); err == nil && strings.Contains(string(out), "via "+rt.GatewayAddress.Addr().String()) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(string(out), "via "+rt.GatewayAddress.Addr().String()) {
		t.Fatalf("router kernel lacks %s via the gateway: %s", want, out)
	}
	for time.Now().Before(deadline) {
		if err = ping(ctx, l, rt.Network, gw.LANAddrs[0].Addr().String()); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("on-premises host -> %s over the learned routes: %v", gw.LANAddrs[0].Addr(), err)
	}
	st, err := Status(o)
	if err != nil || st.Routers[0].State != "up" {
		t.Errorf("status does not show the session up: %v\n%s", err, st)
	}

	// A hijack attempt: the router also announces a VPC's CIDR.
	hijack := netip.MustParsePrefix("10.2.0.0/16")
	if err := l.SetAnnouncements(ctx, rt.Network, append(slices.Clone(rt.Announce), hijack)); err != nil {
		t.Fatal(err)
	}
	learned := func() string {
		out, _ := birdc(ctx, sock, "show", "route", "protocol", "vbr")
		return string(out)
	}
	for !strings.Contains(learned(), hijack.String()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := learned(); !strings.Contains(got, hijack.String()) || !strings.Contains(got, "192.168.100.0/24") {
		t.Errorf("the speaker did not learn the new announcement:\n%s", got)
	}
	if err := l.SetAnnouncements(ctx, rt.Network, nil); err != nil {
		t.Fatal(err)
	}
	for strings.Contains(learned(), hijack.String()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := learned(); strings.Contains(got, hijack.String()) {
		t.Errorf("the announcement was not withdrawn:\n%s", got)
	}
}

// A region host's multipath route skips a dead gateway once its neighbour
// entry fails (fib_multipath_use_neigh with the short timers of
// host-routes.sh): a flow hashed onto gw-beijing-2 moves to gw-beijing-1,
// stays there, and returns when the gateway is revived.
func TestMultipathSkipsDeadGateway(t *testing.T) {
	o := privileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := l.Host("vpc-beijing")
	dead, live := h.NextHops[1].String(), h.NextHops[0].String()
	routeVia := func(sport int) string {
		out, err := l.Exec(ctx, h.Name, "ip", "route", "get", "10.2.0.10", "from", h.Address.Addr().String(),
			"ipproto", "udp", "sport", fmt.Sprint(sport), "dport", "9")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(out))
		for i := range f[:len(f)-1] {
			if f[i] == "via" {
				return f[i+1]
			}
		}
		t.Fatalf("no next hop in %q", out)
		return ""
	}
	sport := 0
	for s := 40000; s < 40064 && sport == 0; s++ {
		if routeVia(s) == dead {
			sport = s
		}
	}
	if sport == 0 {
		t.Fatalf("no flow of 64 hashed onto %s: the route is not multipath", dead)
	}
	if err := ping(ctx, l, h.Name, dead); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.KillGateway(ctx, "gw-beijing-2"); err != nil {
		t.Fatal(err)
	}
	// Keep traffic toward the dead gateway flowing, as a host would, so its
	// neighbour entry is probed; bounded to 8 s.
	for time.Since(start) < 8*time.Second {
		_, _ = l.Exec(ctx, h.Name, "bash", "-c", "echo x > /dev/udp/"+dead+"/9")
		if routeVia(sport) == live {
			t.Logf("flow moved from %s to %s %s after the gateway died", dead, live, time.Since(start).Round(10*time.Millisecond))
			back := 0
			for range 30 {
				_, _ = l.Exec(ctx, h.Name, "bash", "-c", "echo x > /dev/udp/10.2.0.10/9")
				if routeVia(sport) == dead {
					back++
				}
				time.Sleep(100 * time.Millisecond)
			}
			if back > 0 {
				t.Errorf("the flow went back to the dead gateway in %d of 30 samples", back)
			}
			// Revived, the gateway gets its share again.
			if err := l.ReviveGateway(ctx, "gw-beijing-2", ""); err != nil {
				t.Fatal(err)
			}
			revived := time.Now()
			for time.Since(revived) < 3*time.Second {
				if routeVia(sport) == dead {
					t.Logf("flow back on %s %s after the revival", dead, time.Since(revived).Round(10*time.Millisecond))
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Fatalf("flow not back on the revived gateway %s after 3s", dead)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("flow still on the dead gateway %s after 8s", dead)
}
