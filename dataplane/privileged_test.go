package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/procx"
)

func TestTwoGatewaysPing(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	ns, dev := l.gws[0].ns, l.device(0)
	st, err := l.gws[0].dp.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode == "" || !st.Up || st.MTU != 1500-80 || st.ListenPort != labPort {
		t.Errorf("status: mode %q up %v mtu %d port %d; want a device up with mtu 1420 on %d", st.Mode, st.Up, st.MTU, st.ListenPort, labPort)
	}
	if len(st.Peers) != 1 || st.Peers[0].Name != "gw1" || st.Peers[0].LastHandshake.IsZero() ||
		st.Peers[0].ReceiveBytes == 0 || st.Peers[0].TransmitBytes == 0 ||
		st.Peers[0].Endpoint != netip.AddrPortFrom(l.gws[1].underlay, labPort) {
		t.Errorf("peer status after ping: %+v", st.Peers)
	}
	for _, r := range st.Routes {
		if !r.Installed {
			t.Errorf("route %s reported not installed", r.Prefix)
		}
	}
	if len(st.Routes) != 2 || len(st.Handoffs) != 0 {
		t.Errorf("status: %d routes and %d handoffs, want 2 (the peer's tunnel address and VPC) and none", len(st.Routes), len(st.Handoffs))
	}
	want := fmt.Sprintf("%s dev %s proto 79 scope link src %s metric 20", l.gws[1].lan, dev, l.gws[0].tunnel)
	if out := run(t, "ip", "-n", ns, "route", "show", l.gws[1].lan.String()); !strings.Contains(out, want) {
		t.Errorf("vpc route %q, want %q", out, want)
	}
	if out := run(t, "ip", "-n", ns, "link", "show", "dev", dev); !strings.Contains(out, fmt.Sprintf("group %d", DeviceGroup)) {
		t.Errorf("device not in group %d:\n%s", DeviceGroup, out)
	}
	if out := run(t, "ip", "-n", ns, "rule"); strings.Contains(out, "79") {
		t.Errorf("rules without handoffs:\n%s", out)
	}
	if !slices.Contains(nftTables(t, ns), guardTable(dev)) {
		t.Errorf("guard table %s missing", guardTable(dev))
	}
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
		"net/ipv4/conf/all/send_redirects": "0", "net/ipv4/conf/" + dev + "/rp_filter": "2"} {
		if got := readSysctl(t, ns, k); got != v {
			t.Errorf("%s = %q in the gateway namespace, want %s", k, got, v)
		}
	}
}

func readSysctl(t *testing.T, ns, key string) string {
	var v []byte
	if err := inNetNS(nsPath(ns), func() (err error) { v, err = os.ReadFile("/proc/sys/" + key); return err }); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

// TestThreeGatewaysPing: three gateways, IPv4 and IPv6 tunnel addresses
// and VPCs, every one reaches every other's in both families.
func TestThreeGatewaysPing(t *testing.T) {
	l := newLab(t, 3)
	ctx := context.Background()
	for i, g := range l.gws {
		run(t, "ip", "-n", g.ns, "addr", "add", fmt.Sprintf("fd00:%d::1/128", i+1), "dev", "lo")
	}
	for i := range l.gws {
		d := l.desired(i)
		d.Addresses = append(d.Addresses, netip.MustParsePrefix(fmt.Sprintf("fd00:64::%d/128", i+1)))
		for j := range d.Peers {
			o := int(d.Peers[j].Name[2]-'0') + 1
			vpc := netip.MustParsePrefix(fmt.Sprintf("fd00:%d::/64", o))
			d.Peers[j].TunnelAddresses = append(d.Peers[j].TunnelAddresses, netip.MustParsePrefix(fmt.Sprintf("fd00:64::%d/128", o)))
			d.Peers[j].AllowedIPs = append(d.Peers[j].AllowedIPs, vpc)
			d.Routes = append(d.Routes, vpc)
		}
		if err := l.open(i).Set(ctx, d); err != nil {
			t.Fatalf("gw%d: Set: %v", i, err)
		}
	}
	l.pingMesh()
	for i, g := range l.gws {
		for j := range l.gws {
			if i != j {
				waitPing(t, g.ns, netip.MustParseAddr(fmt.Sprintf("fd00:64::%d", j+1)), 5*time.Second)
				waitPing(t, g.ns, netip.MustParseAddr(fmt.Sprintf("fd00:%d::1", j+1)), 5*time.Second)
			}
		}
	}
	st, err := l.gws[0].dp.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Routes) != 8 {
		t.Errorf("gw0 has %d routes in status, want 8 (2 peers x v4/v6 tunnel address and VPC): %+v", len(st.Routes), st.Routes)
	}
	for _, r := range st.Routes {
		if !r.Installed {
			t.Errorf("route %s reported not installed", r.Prefix)
		}
	}
	out := run(t, "ip", "-n", l.gws[0].ns, "-6", "route", "show", "proto", "79")
	for _, want := range []string{"fd00:2::/64", "fd00:3::/64", "fd00:64::2", "fd00:64::3"} {
		if !strings.Contains(out, want+" dev "+l.device(0)+" src fd00:64::1 metric 1044") {
			t.Errorf("ipv6 route %s on the device, src fd00:64::1, metric 1044 missing in:\n%s", want, out)
		}
	}
}

func TestRouteDeletedByHandComesBack(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	ns, lan := l.gws[0].ns, l.gws[1].lan.String()
	run(t, "ip", "-n", ns, "route", "del", lan)
	eventually(t, 5*time.Second, "route "+lan+" reinstalled", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

func TestAddressDeletedComesBack(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	ns, dev := l.gws[0].ns, l.device(0)
	run(t, "ip", "-n", ns, "addr", "del", l.gws[0].tunnel.String()+"/32", "dev", dev)
	eventually(t, 5*time.Second, "tunnel address restored", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "addr", "show", "dev", dev), l.gws[0].tunnel.String()+"/32")
	})
	waitPing(t, l.gws[1].ns, l.gws[0].tunnel, 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

// TestRuleDeletedByHandComesBack: a handoff's rules and its table's
// routes, deleted by hand in either family, are put back by the watcher.
func TestRuleDeletedByHandComesBack(t *testing.T) {
	l := newLab(t, 2)
	l.underlay6()
	d := l.desired(0)
	l.handoffTo(&d, 1)
	if err := l.open(0).Set(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	ns, table := l.gws[0].ns, fmt.Sprint(DefaultHandoffTableBase+1)
	state := func() string {
		return run(t, "ip", "-n", ns, "rule") + run(t, "ip", "-n", ns, "-6", "rule") +
			run(t, "ip", "-n", ns, "route", "show", "table", table) + run(t, "ip", "-n", ns, "-6", "route", "show", "table", table)
	}
	want := state()
	for _, del := range [][]string{
		{"rule", "del", "pref", "7901"},
		{"-6", "rule", "del", "pref", "7900"},
		{"rule", "del", "pref", "7918", "from", l.gws[1].lan.String()},
		{"-6", "rule", "del", "pref", "7966"},
		{"route", "del", "default", "table", table},
		{"-6", "route", "del", "default", "table", table},
	} {
		// run fails unless there is something to delete; the watcher may
		// put it back ahead of anything here looking.
		run(t, append([]string{"ip", "-n", ns}, del...)...)
		eventually(t, 5*time.Second, "ip "+strings.Join(del, " ")+" repaired", func() bool { return state() == want })
	}
}

func TestLinkFlapRepaired(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	ns, dev, lan := l.gws[0].ns, l.device(0), l.gws[1].lan.String()
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "down")
	eventually(t, 5*time.Second, "link up and routes back", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "link", "show", "dev", dev), ",UP") &&
			strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	// Down and straight up again by hand: the routes the kernel flushed
	// come back too.
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "down")
	run(t, "ip", "-n", ns, "link", "set", "dev", dev, "up")
	eventually(t, 5*time.Second, "routes back after down/up", func() bool {
		return strings.Contains(run(t, "ip", "-n", ns, "route", "show", lan), "proto 79")
	})
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}

// TestHelperRestartedAfterCrash: a helper killed outright (the device goes
// with it) is replaced by the watcher and peers are configured again.
func TestHelperRestartedAfterCrash(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	l.pingMesh()
	st, _ := l.gws[0].dp.Status()
	if st.HelperPID == 0 {
		t.Skip("kernel wireguard in use: no helper to crash")
	}
	if err := syscallKill(st.HelperPID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a new helper", func() bool {
		s, err := l.gws[0].dp.Status()
		return err == nil && s.HelperPID != 0 && s.HelperPID != st.HelperPID && len(s.Peers) == 1
	})
	waitPing(t, l.gws[0].ns, lanHost(l.gws[1]), 10*time.Second)
}

// routingState is every route of every table and every rule of both
// families in ns: what Close(true) must leave as it found it.
func routingState(t *testing.T, ns string) string {
	return run(t, "ip", "-n", ns, "route", "show", "table", "all") + run(t, "ip", "-n", ns, "-6", "route", "show", "table", "all") +
		run(t, "ip", "-n", ns, "rule") + run(t, "ip", "-n", ns, "-6", "rule")
}

// TestCloseCleanupLeavesNothing: after Close(true) the namespace's routes
// in every table and its rules of both families are those it found ahead of
// the first Set (which made handoff rules and tables in both families and
// direct routes via a router on a link of its own), and the device, the
// guard, the helper, its socket and its state files are gone.
func TestCloseCleanupLeavesNothing(t *testing.T) {
	l := newLab(t, 2)
	l.underlay6()
	ns, dev := l.gws[0].ns, l.device(0)
	router := newNetNS(t)
	run(t, "ip", "-n", ns, "link", "add", "ocdpvbr0", "type", "veth", "peer", "name", "ocdpvbr1", "netns", router)
	run(t, "ip", "-n", ns, "addr", "add", "172.30.0.1/24", "dev", "ocdpvbr0")
	run(t, "ip", "-n", ns, "addr", "add", "fd00:30::1/64", "dev", "ocdpvbr0", "nodad")
	run(t, "ip", "-n", ns, "link", "set", "ocdpvbr0", "up")
	run(t, "ip", "-n", router, "addr", "add", "172.30.0.2/24", "dev", "ocdpvbr1")
	run(t, "ip", "-n", router, "link", "set", "ocdpvbr1", "up")
	// Set leaves its sysctls (other parts of a gateway rely on
	// forwarding), and IPv6 forwarding adds subnet-router anycast routes:
	// the starting state is that of a router. Link-local addresses settle
	// first.
	run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	eventually(t, 10*time.Second, "IPv6 duplicate address detection done", func() bool {
		return strings.TrimSpace(run(t, "ip", "-n", ns, "-6", "addr", "show", "tentative")) == ""
	})
	before := routingState(t, ns)

	dp := l.open(0)
	d := l.desired(0)
	l.handoffTo(&d, 1)
	d.DirectRoutes = []DirectRoute{
		{Prefix: netip.MustParsePrefix("192.168.1.0/24"), Via: []netip.Addr{netip.MustParseAddr("172.30.0.2")}},
		{Prefix: netip.MustParsePrefix("fd00:168::/48"), Via: []netip.Addr{netip.MustParseAddr("fd00:30::2")}},
	}
	if err := dp.Set(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if err := l.open(1).Set(context.Background(), l.desired(1)); err != nil {
		t.Fatal(err)
	}
	l.pingMesh()
	during := routingState(t, ns)
	for _, want := range []string{"192.168.1.0/24 via 172.30.0.2 dev ocdpvbr0 proto 79 metric 20", "fd00:168::/48 via fd00:30::2 dev ocdpvbr0 proto 79 metric 1044",
		"default via 172.16.0.2 dev ocdpeth0 table 7901 proto 79 metric 20", "default via fd00:172::2 dev ocdpeth0 table 7901 proto 79 metric 1044",
		"7918:\tfrom 10.2.0.0/16 lookup 7901 proto 79", "7966:\tfrom fd00:99:2::/64 lookup 7901 proto 79", "7901:\tfrom all lookup main suppress_ifgroup 79 proto 79",
		"7900:\tfrom all iif " + dev + " lookup main proto 79"} {
		if !strings.Contains(during, want) {
			t.Errorf("%q missing while up:\n%s", want, during)
		}
	}
	st, _ := dp.Status()
	if err := dp.Close(true); err != nil {
		t.Fatal(err)
	}
	if after := routingState(t, ns); after != before {
		t.Errorf("routes or rules changed by Set and Close(true):\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out := run(t, "ip", "-n", ns, "link", "show"); strings.Contains(out, dev) {
		t.Errorf("device %s still present:\n%s", dev, out)
	}
	if tables := nftTables(t, ns); len(tables) != 0 {
		t.Errorf("nftables tables left: %v", tables)
	}
	if _, err := os.Lstat(filepath.Join(UAPIDir, dev+".sock")); !os.IsNotExist(err) {
		t.Errorf("uapi socket left behind: %v", err)
	}
	if st.HelperPID == 0 || procx.Alive(st.HelperPID) {
		t.Errorf("helper %d still running (or none was)", st.HelperPID)
	}
	if h := (&host{stateDir: l.stateDir}); h.findHelper(dev) != 0 {
		t.Errorf("a helper for %s is still running", dev)
	}
	ents, _ := os.ReadDir(l.stateDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), dev) {
			t.Errorf("state file %s left behind", e.Name())
		}
	}
	// The other gateway is unaffected; closing twice is fine.
	if st, err := l.gws[1].dp.Status(); err != nil || !st.Up {
		t.Errorf("gw1 after gw0's Close(true): %+v %v", st, err)
	}
	if err := dp.Close(true); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSetRejectsBadInput(t *testing.T) {
	l := newLab(t, 1)
	dp := l.open(0)
	d := l.desired(0)
	d.ListenPort = 0
	d.Handoffs = []Handoff{{Twin: "gw9", Via: []netip.Addr{netip.MustParseAddr("172.16.0.9")}}}
	err := dp.Set(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "listen port 0") || !strings.Contains(err.Error(), `handoff to "gw9": no such peer`) {
		t.Fatalf("Set(bad) = %v, want errors naming the port and the twin", err)
	}
	if strings.Contains(err.Error(), l.gws[0].key.String()) {
		t.Fatal("error contains the private key")
	}
	if out := run(t, "ip", "-n", l.gws[0].ns, "link", "show"); strings.Contains(out, l.device(0)) {
		t.Error("a rejected Set created the device")
	}
}

// TestStaleSocketReplaced: a socket file left by a dead process (nobody
// listening) does not stop the device from coming up.
func TestStaleSocketReplaced(t *testing.T) {
	l := newLab(t, 1)
	sock := filepath.Join(UAPIDir, l.device(0)+".sock")
	if err := os.MkdirAll(UAPIDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	t.Cleanup(func() { _ = os.Remove(sock) })
	dp := l.open(0)
	if err := dp.Set(context.Background(), l.desired(0)); err != nil {
		t.Fatalf("Set over a stale socket: %v", err)
	}
	st, err := dp.Status()
	if err != nil || st.HelperPID == 0 || st.ListenPort != labPort {
		t.Fatalf("status: %+v, %v", st, err)
	}
}
