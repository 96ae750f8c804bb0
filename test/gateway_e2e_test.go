package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
	"github.com/opencen/opencen/shaping"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestGatewayEndToEnd runs real cend processes for three gateways in two
// regions, with a BIRD router behind a VBR, and walks through what an
// operator relies on: reachability, the live views, reloads good and bad,
// restarts that lose no packet, recovery from kill -9 without duplicate
// shapers, and no secret in any log.
func TestGatewayEndToEnd(t *testing.T) {
	l, opts := upLab(t, "testdata/e2e.yaml")
	x := &gatewayE2E{l: l, opts: opts, hosts: map[string]string{}}
	for _, h := range l.Hosts {
		x.hosts[h.Name] = h.Address.Addr().String()
	}
	t.Run("reachability", x.reachability)
	t.Run("views", x.views)
	t.Run("shaped goodput out of a region with two gateways", x.twinGoodput)
	t.Run("reload", x.reload)
	t.Run("restart keeps traffic", x.restartKeepsTraffic)
	t.Run("kill -9 recovers with one shaper", x.killRecovers)
	t.Run("cleanup leaves nothing", x.cleanupLeavesNothing)
	t.Run("no secret in any log", x.noSecretInLogs)
}

// gatewayE2E is TestGatewayEndToEnd's lab, which its steps share in turn.
type gatewayE2E struct {
	l     *lab.Lab
	opts  lab.Options
	hosts map[string]string // host name -> address
}

func (x *gatewayE2E) gw(t *testing.T, name string) lab.Gateway { return gatewayOf(t, x.l, name) }

func (x *gatewayE2E) reachability(t *testing.T) {
	// Routes converge over BGP first: allow the sessions to come up.
	eventually(t, 30*time.Second, "vpc-a reaches vpc-b", func() error {
		if _, got := ping(t, x.l, "vpc-a", x.hosts["vpc-b"], 1, 200*time.Millisecond); got != 1 {
			return fmt.Errorf("no answer")
		}
		return nil
	})
	eventually(t, 30*time.Second, "vpc-b reaches the on-premises host", func() error {
		if _, got := ping(t, x.l, "vpc-b", x.hosts["idc-a"], 1, 200*time.Millisecond); got != 1 {
			return fmt.Errorf("no answer")
		}
		return nil
	})
	for from := range x.hosts {
		for to, addr := range x.hosts {
			if from == to {
				continue
			}
			// Several flows so that both Beijing gateways carry some.
			sent, got := ping(t, x.l, from, addr, 10, 20*time.Millisecond)
			if got != sent {
				t.Errorf("%s -> %s: %d of %d answered", from, to, got, sent)
			}
		}
	}
}

func (x *gatewayE2E) views(t *testing.T) {
	// Every session up, including the twins' own (reachability needs
	// only some), and only then are the views read.
	waitEstablished(t, x.l, "gw-a1", "gw-a2", "gw-b1")
	// The agents notice the twin up within a second and re-split.
	eventually(t, 5*time.Second, "gw-a1 allocation split with its twin", func() error {
		var bw []api.Bandwidth
		cenctlJSON(t, x.gw(t, "gw-a1").Socket, &bw, "bandwidth")
		if len(bw) != 1 || bw[0].AllocationBps != 25_000_000 {
			return fmt.Errorf("bandwidth = %+v", bw)
		}
		return nil
	})
	var st api.Status
	cenctlJSON(t, x.gw(t, "gw-a1").Socket, &st, "status")
	if st.Gateway != "gw-a1" || st.Region != "cn-beijing" || st.WireGuard == "" || st.Shaping == "" {
		t.Errorf("status = %+v", st)
	}
	for _, s := range st.Subsystems {
		if !s.OK {
			t.Errorf("subsystem %s failing: %s", s.Name, s.Error)
		}
	}
	var peers []api.Peer
	cenctlJSON(t, x.gw(t, "gw-a1").Socket, &peers, "peers")
	kinds := map[string]int{}
	for _, p := range peers {
		if p.BGPState != "established" {
			t.Errorf("peer %s is %s", p.Name, p.BGPState)
		}
		kinds[p.Kind]++
	}
	if kinds["gateway"] != 2 || kinds["vbr"] != 1 {
		t.Errorf("peers = %+v", peers)
	}
	var routes []api.Route
	cenctlJSON(t, x.gw(t, "gw-b1").Socket, &routes, "routes")
	want := map[string]string{"10.1.0.0/16": "vpc-a", "192.168.1.0/24": "idc-a", "10.2.0.0/16": "vpc-b"}
	for _, r := range routes {
		if n, ok := want[r.Prefix]; ok && n == r.OriginNetwork && r.Installed {
			delete(want, r.Prefix)
		}
	}
	if len(want) != 0 {
		t.Errorf("gw-b1 lacks installed routes %v: %+v", want, routes)
	}
	var bw []api.Bandwidth
	cenctlJSON(t, x.gw(t, "gw-b1").Socket, &bw, "bandwidth")
	if len(bw) != 1 || bw[0].Region != "cn-beijing" || bw[0].AllocationBps != 50_000_000 {
		t.Errorf("gw-b1 bandwidth = %+v", bw)
	}
	cenctlJSON(t, x.gw(t, "gw-a1").Socket, &bw, "bandwidth")
	if len(bw) != 1 || bw[0].AllocationBps != 25_000_000 {
		t.Errorf("gw-a1 bandwidth = %+v, want half of 50Mbps", bw)
	}
	table := runCenctl(t, "--socket", x.gw(t, "gw-a1").Socket, "peers")
	if table.code != 0 || !strings.Contains(table.stdout, "established") {
		t.Errorf("cenctl peers: %d\n%s%s", table.code, table.stdout, table.stderr)
	}
}

func (x *gatewayE2E) twinGoodput(t *testing.T) {
	ctx := context.Background()
	// vpc-a's hosts send through both Beijing gateways: one is the
	// home of 10.1.0.0/16 (plain WireGuard), the other uses the
	// overlay, whose outer packets also leave through its WireGuard
	// device. Each has half the 50 Mbps pair and the pair must get
	// all of it (the overlay's packets must not keep a class on their
	// way out through WireGuard: it would halve the twin's share). The
	// hosts hash flows over the gateways: should all eight land on one
	// (1 in 128), the twin's half goes unused by contract and the
	// goodput is held against the carrier's half.
	for _, dir := range [][2]string{{"vpc-a", "vpc-b"}, {"vpc-b", "vpc-a"}} {
		g, err := x.l.ShapedGoodput(ctx, dir[0], dir[1], lab.IperfOptions{Port: "5210", Seconds: 8, Streams: 8, Omit: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s -> %s, 8 flows: goodput %.2f Mbps, ratio %.4f of %.0f Mbps; passed by %s",
			dir[0], dir[1], g.Bps/1e6, g.Ratio(), float64(g.ShareBps)/1e6, g.Carriers())
		if g.Ratio() < lab.MinGoodputRatio || g.Ratio() > 1 {
			t.Errorf("%s -> %s: goodput ratio %.4f, want %.2f to 1.00", dir[0], dir[1], g.Ratio(), lab.MinGoodputRatio)
		}
	}
	// One flow crosses one gateway and gets that gateway's share, the
	// split of SPEC section 3, and all of it.
	g, err := x.l.ShapedGoodput(ctx, "vpc-a", "vpc-b", lab.IperfOptions{Port: "5210", Seconds: 6, Streams: 1, Omit: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vpc-a -> vpc-b, 1 flow: goodput %.2f Mbps, ratio %.4f of %.0f Mbps; passed by %s", g.Bps/1e6, g.Ratio(), float64(g.ShareBps)/1e6, g.Carriers())
	if g.ShareBps != 25_000_000 || g.Ratio() < lab.MinGoodputRatio || g.Ratio() > 1 {
		t.Errorf("one flow: goodput %.2f Mbps against %d bps carried by %s, want 0.95 to 1.00 of one gateway's 25 Mbps", g.Bps/1e6, g.ShareBps, g.Carriers())
	}
}

// session is gateway's view of its BGP session with peer.
func (x *gatewayE2E) session(t *testing.T, gateway, peer string) api.Peer {
	t.Helper()
	var peers []api.Peer
	cenctlJSON(t, x.gw(t, gateway).Socket, &peers, "peers")
	for _, p := range peers {
		if p.Name == peer {
			return p
		}
	}
	t.Fatalf("%s has no peer %s", gateway, peer)
	return api.Peer{}
}

func (x *gatewayE2E) reload(t *testing.T) {
	unchanged := x.session(t, "gw-b1", "gw-a1")
	good, err := os.ReadFile(x.l.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	x.badReload(t, string(good))
	x.goodReload(t, string(good), unchanged)
}

// badReload: a bad file is rejected with located errors, nothing
// changes, and the gateway keeps forwarding throughout.
func (x *gatewayE2E) badReload(t *testing.T, good string) {
	bad := strings.Replace(good, "bandwidth: 50Mbps", "bandwidth: 500Mbps", 1)
	bad = strings.Replace(bad, "region: us-west-1", "region: us-west-9", 1)
	os.WriteFile(x.l.ConfigFile, []byte(bad), 0o644)
	done := make(chan [2]int)
	go func() {
		s, r := ping(t, x.l, "vpc-b", x.hosts["vpc-a"], 100, 10*time.Millisecond)
		done <- [2]int{s, r}
	}()
	time.Sleep(200 * time.Millisecond)
	r := runCenctl(t, "--socket", x.gw(t, "gw-b1").Socket, "reload")
	if r.code != 1 || !strings.Contains(r.stderr, "reload rejected") || !strings.Contains(r.stderr, x.l.ConfigFile+":") {
		t.Errorf("bad reload: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if p := <-done; p[1] != p[0] {
		t.Errorf("forwarding during a rejected reload: %d of %d answered", p[1], p[0])
	}
}

// goodReload: a good file adds a network and a package; the session and
// tunnel of gw-b1 with gw-a1, unchanged, are neither reset nor re-keyed.
func (x *gatewayE2E) goodReload(t *testing.T, good string, unchanged api.Peer) {
	added := strings.Replace(good, "networks:\n", "networks:\n  - name: vpc-a2\n    type: vpc\n    region: cn-beijing\n    cidrs: [10.11.0.0/16]\n", 1)
	added = strings.Replace(added, "\ninterconnections:", "\n  - name: bwp-china\n    areas: [mainland-china, mainland-china]\n    bandwidth: 10Mbps\n\ninterconnections:", 1)
	os.WriteFile(x.l.ConfigFile, []byte(added), 0o644)
	if r := runCenctl(t, "validate", x.l.ConfigFile); r.code != 0 {
		t.Fatalf("the test's new config does not validate:\n%s", r.stderr)
	}
	for _, g := range []string{"gw-a1", "gw-a2", "gw-b1"} {
		r := runCenctl(t, "--socket", x.gw(t, g).Socket, "reload")
		if r.code != 0 || !strings.Contains(r.stdout, "reloaded: config generation 2") {
			t.Fatalf("good reload of %s: exit %d\n%s%s", g, r.code, r.stdout, r.stderr)
		}
	}
	eventually(t, 10*time.Second, "gw-b1 learns the new network", func() error {
		var routes []api.Route
		cenctlJSON(t, x.gw(t, "gw-b1").Socket, &routes, "routes")
		for _, r := range routes {
			if r.Prefix == "10.11.0.0/16" && r.OriginNetwork == "vpc-a2" && r.Installed {
				return nil
			}
		}
		return fmt.Errorf("10.11.0.0/16 not installed")
	})
	after := x.session(t, "gw-b1", "gw-a1")
	if after.BGPUptimeSeconds < unchanged.BGPUptimeSeconds {
		t.Errorf("the unchanged session is reset: uptime %v -> %v", unchanged.BGPUptimeSeconds, after.BGPUptimeSeconds)
	}
	if !after.LatestHandshake.Equal(unchanged.LatestHandshake) {
		t.Errorf("the unchanged tunnel is re-keyed: handshake %v -> %v", unchanged.LatestHandshake, after.LatestHandshake)
	}
}

func (x *gatewayE2E) restartKeepsTraffic(t *testing.T) {
	ctx := context.Background()
	done := make(chan [2]int)
	go func() {
		s, r := ping(t, x.l, "vpc-b", x.hosts["vpc-a"], 500, 10*time.Millisecond)
		done <- [2]int{s, r}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := x.l.StopAgent(ctx, "gw-b1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := x.l.StartAgent(ctx, "gw-b1", x.opts.Cend); err != nil {
		t.Fatal(err)
	}
	p := <-done
	if p[1] != p[0] {
		t.Errorf("agent restart under a 100 pps ping: %d of %d answered", p[1], p[0])
	}
}

func (x *gatewayE2E) killRecovers(t *testing.T) {
	ctx := context.Background()
	if err := x.l.StopAgent(ctx, "gw-b1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := x.l.StartAgent(ctx, "gw-b1", x.opts.Cend); err != nil {
		t.Fatal(err)
	}
	var st api.Status
	eventually(t, 20*time.Second, "gw-b1 reconciled after kill -9", func() error {
		cenctlJSON(t, x.gw(t, "gw-b1").Socket, &st, "status")
		for _, s := range st.Subsystems {
			if !s.OK || s.LastApplied.IsZero() {
				return fmt.Errorf("%s: %s", s.Name, s.Error)
			}
		}
		return nil
	})
	for _, dev := range []string{st.Device} {
		if progs := tcxPrograms(t, x.gw(t, "gw-b1").Namespace, dev); progs != 1 {
			t.Errorf("%d TCX egress programs on %s after kill -9 and restart, want exactly 1", progs, dev)
		}
	}
	// A crash is seen by the peers (BFD), which withdraw and then
	// relearn its routes: traffic recovers, within seconds.
	eventually(t, 30*time.Second, "traffic after kill -9", func() error {
		if sent, got := ping(t, x.l, "vpc-b", x.hosts["vpc-a"], 5, 20*time.Millisecond); got != sent {
			return fmt.Errorf("%d of %d answered", got, sent)
		}
		return nil
	})
}

func (x *gatewayE2E) cleanupLeavesNothing(t *testing.T) {
	g := x.gw(t, "gw-b1")
	var st api.Status
	cenctlJSON(t, g.Socket, &st, "status")
	runCleanup(t, x.l, x.opts, g)
	leftovers(t, g, st.Device)
}

func (x *gatewayE2E) noSecretInLogs(t *testing.T) {
	keys, _ := filepath.Glob(filepath.Join(x.opts.StateDir, "keys", "*.key"))
	if len(keys) != 3 {
		t.Fatalf("found %d lab keys", len(keys))
	}
	var logs []string
	filepath.Walk(x.opts.StateDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && strings.HasSuffix(p, ".log") {
			logs = append(logs, p)
		}
		return nil
	})
	if len(logs) < 3 {
		t.Fatalf("found only %v", logs)
	}
	for _, k := range keys {
		key, _ := os.ReadFile(k)
		secret := strings.TrimSpace(string(key))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			if strings.Contains(string(b), secret) || strings.Contains(string(b), secret[:20]) {
				t.Errorf("%s holds the private key of %s", f, filepath.Base(k))
			}
		}
	}
}

// tcxPrograms counts the TCX egress programs attached to a device in a
// namespace.
func tcxPrograms(t *testing.T, namespace, device string) int {
	t.Helper()
	var n int
	// BPF_PROG_QUERY names the device by ifindex, in the namespace of the
	// calling thread.
	err := testutil.InNetNS(namespace, func() error {
		lk, err := netlink.LinkByName(device)
		if err != nil {
			return fmt.Errorf("device %s: %w", device, err)
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: lk.Attrs().Index, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return fmt.Errorf("query tcx programs: %w", err)
		}
		n = len(res.Programs)
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", namespace, err)
	}
	return n
}

// leftovers fails the test for anything of a gateway's left after a
// cleanup: tunnel links, routes marked opencen's, helper processes, UAPI
// sockets, pinned objects.
func leftovers(t *testing.T, g lab.Gateway, device string) {
	t.Helper()
	h := handleIn(t, g.Namespace)
	links, _ := h.LinkList()
	for _, lk := range links {
		if strings.HasPrefix(lk.Attrs().Name, "ocw") || strings.HasPrefix(lk.Attrs().Name, "ocv") {
			t.Errorf("link %s left in %s", lk.Attrs().Name, g.Namespace)
		}
	}
	routes, _ := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: 79, Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if len(routes) != 0 {
		t.Errorf("%d opencen routes left in %s (any table): %v", len(routes), g.Namespace, routes)
	}
	rules, _ := h.RuleList(netlink.FAMILY_ALL)
	for _, r := range rules {
		if r.Protocol == 79 || r.Table == 79 {
			t.Errorf("opencen policy rule left in %s: %v", g.Namespace, r)
		}
	}
	if _, err := os.Stat("/var/run/wireguard/" + device + ".sock"); err == nil {
		t.Errorf("uapi socket of %s left", device)
	}
	out, _ := exec.Command("pgrep", "-f", "wireguard-device --device "+device).Output()
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("helper of %s still runs: pids %s", device, out)
	}
	if _, err := os.Stat(shaping.SocketPath(device)); err == nil {
		t.Errorf("shaper socket of %s left", device)
	}
	// cend's bpffs lived in the mount namespace ip netns exec gave it;
	// none of the gateway's may show on the host.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, m := range strings.Split(string(mounts), "\n") {
		if strings.Contains(m, " - bpf ") && (strings.Contains(m, g.StateDir) || strings.Contains(m, "/opencen/"+device)) {
			t.Errorf("bpffs mount of the gateway left: %s", m)
		}
	}
	// The lab's own file (the agent's log) stays.
	entries, _ := os.ReadDir(g.StateDir)
	for _, e := range entries {
		if e.Name() != "cend.log" {
			t.Errorf("state left in %s: %s", g.StateDir, e.Name())
		}
	}
}

func netlinkHandle(namespace string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(namespace)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}
