package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/lab"
)

// TestRoutingEndToEnd drives route exchange with real cend processes over
// real opencen tunnels and a BIRD router behind a VBR, its one IPv4 session
// carrying both families: CEN routes of both in the router's table, a
// route conflict in each family, a hijack by a misconfigured gateway of
// both families' prefixes, an IPv6-only accept list letting no IPv4 prefix
// in, and max_prefixes tripping, then reset by the operator.
func TestRoutingEndToEnd(t *testing.T) {
	l, opts := upLab(t, "testdata/e2e.yaml")
	if len(l.Routers) != 1 {
		t.Fatalf("the lab has %d routers, want the one of idc-a", len(l.Routers))
	}
	x := &routingE2E{l: l, opts: opts, router: l.Routers[0]}
	waitEstablished(t, l, "gw-a1", "gw-a2", "gw-b1")
	t.Run("cen routes reach the on-premises router", x.cenRoutesReachRouter)
	t.Run("route conflict", func(t *testing.T) { x.routeConflict(t, "10.2.5.0/24", "192.168.77.0/24") })
	t.Run("route conflict over IPv6", func(t *testing.T) { x.routeConflict(t, "fd00:2:0:5::/64", "fd00:192:168:77::/64") })
	t.Run("hijack attempt", x.hijackAttempt)
	t.Run("an IPv6-only accept list lets no IPv4 prefix in", x.acceptIPv6Only)
	t.Run("max_prefixes trips", x.maxPrefixesTrips)
	t.Run("peers reset after a trip", x.peersResetAfterTrip)
}

// routingE2E is TestRoutingEndToEnd's lab, which its steps share in turn.
type routingE2E struct {
	l      *lab.Lab
	opts   lab.Options
	router lab.Router // idc-a's
}

func (x *routingE2E) gw(t *testing.T, name string) lab.Gateway { return gatewayOf(t, x.l, name) }

// routes is a gateway's routes by prefix.
func (x *routingE2E) routes(t *testing.T, gateway string) map[string]api.Route {
	var rs []api.Route
	cenctlJSON(t, x.gw(t, gateway).Socket, &rs, "routes")
	out := map[string]api.Route{}
	for _, r := range rs {
		out[r.Prefix] = r
	}
	return out
}

// peer is a gateway's view of its peer name.
func (x *routingE2E) peer(t *testing.T, gateway, name string) api.Peer {
	t.Helper()
	var ps []api.Peer
	cenctlJSON(t, x.gw(t, gateway).Socket, &ps, "peers")
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("%s has no peer %s", gateway, name)
	return api.Peer{}
}

// fib lists the destinations of opencen's kernel routes (proto 79) of
// both families in a gateway's main table, with the devices and gateways
// they use.
func (x *routingE2E) fib(t *testing.T, gateway string) string {
	t.Helper()
	var all []byte
	for _, f := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", "-n", x.gw(t, gateway).Namespace, f, "route", "show", "proto", "79").CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s route in %s: %v: %s", f, gateway, err, out)
		}
		all = append(all, out...)
	}
	return string(all)
}

// familyFlag is ip's -4 or -6 for a prefix or address in text.
func familyFlag(p string) string {
	if strings.Contains(p, ":") {
		return "-6"
	}
	return "-4"
}

func (x *routingE2E) cenRoutesReachRouter(t *testing.T) {
	eventually(t, 15*time.Second, "BIRD has the VPCs from the CEN, in its table and its kernel", func() error {
		out, err := exec.Command("birdc", "-s", x.router.Socket, "show", "route", "protocol", lab.BGPProtocol).CombinedOutput()
		if err != nil {
			return fmt.Errorf("birdc: %v: %s", err, out)
		}
		for _, p := range []string{"10.1.0.0/16", "10.2.0.0/16", "fd00:1::/48", "fd00:2::/48"} {
			if !strings.Contains(string(out), p) {
				return fmt.Errorf("%s missing from BIRD's routes from the CEN:\n%s", p, out)
			}
		}
		for _, a := range x.router.Announce {
			if strings.Contains(string(out), a.String()) {
				return fmt.Errorf("the CEN sent the router its own prefix %s back:\n%s", a, out)
			}
		}
		for _, p := range []string{"10.2.0.0/16", "fd00:2::/48"} {
			k, err := exec.Command("ip", "-n", x.router.Namespace, familyFlag(p), "route", "show", p).CombinedOutput()
			if err != nil || !strings.Contains(string(k), p+" ") || !strings.Contains(string(k), "proto bird") {
				return fmt.Errorf("router kernel route to vpc-b's %s: %v %s", p, err, k)
			}
		}
		return nil
	})
}

// routeConflict: the data centre announces clashPrefix, inside vpc-b,
// besides freshPrefix, a new prefix of its own, both of one family: the
// conflict is not learned anywhere and is reported; the rest of the
// session's routes are learned.
func (x *routingE2E) routeConflict(t *testing.T, clashPrefix, freshPrefix string) {
	ctx := context.Background()
	clash, fresh := netip.MustParsePrefix(clashPrefix), netip.MustParsePrefix(freshPrefix)
	if err := x.l.SetAnnouncements(ctx, x.router.Name, append(slices.Clone(x.router.Announce), clash, fresh)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := x.l.SetAnnouncements(ctx, x.router.Name, nil); err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 15*time.Second, "the new on-premises prefix reaches gw-b1's FIB", func() error {
		if r, ok := x.routes(t, "gw-b1")[fresh.String()]; !ok || !r.Installed || r.OriginNetwork != "idc-a" {
			return fmt.Errorf("gw-b1 route %s = %+v", fresh, r)
		}
		if !strings.Contains(x.fib(t, "gw-b1"), fresh.String()) {
			return fmt.Errorf("%s not in gw-b1's kernel table", fresh)
		}
		return nil
	})
	var st api.Status
	eventually(t, 5*time.Second, "gw-a1 reports the conflict", func() error {
		cenctlJSON(t, x.gw(t, "gw-a1").Socket, &st, "status")
		if st.Conflicts != 1 {
			return fmt.Errorf("gw-a1 route_conflicts = %d, want 1", st.Conflicts)
		}
		return nil
	})
	if p := x.peer(t, "gw-a1", "idc-a"); p.BGPState != "established" || p.PrefixesRejected != 1 {
		t.Errorf("gw-a1's VBR session after the conflict: %+v, want established with 1 prefix rejected", p)
	}
	for _, g := range []string{"gw-a1", "gw-a2", "gw-b1"} {
		if r, ok := x.routes(t, g)[clash.String()]; ok {
			t.Errorf("%s learned the conflicting %s: %+v", g, clash, r)
		}
		if strings.Contains(x.fib(t, g), clash.String()) {
			t.Errorf("%s installed the conflicting %s:\n%s", g, clash, x.fib(t, g))
		}
	}
	// The metrics serve the reconcile loop's snapshot, at most a few
	// seconds old.
	eventually(t, 10*time.Second, "gw-a1's conflict metric", func() error {
		if out := metric(t, x.gw(t, "gw-a1"), "opencen_route_conflicts{"); !strings.HasSuffix(out, " 1") {
			return fmt.Errorf("gw-a1 conflict metric: %q", out)
		}
		return nil
	})
	logs, _ := os.ReadFile(x.gw(t, "gw-a1").LogFile)
	if !strings.Contains(string(logs), clash.String()) || !strings.Contains(string(logs), "conflict") {
		t.Errorf("gw-a1's log does not report the conflict on %s", clash)
	}
}

// hijackAttempt: gw-a2 runs with a config that puts vpc-b in Beijing, so
// it originates vpc-b's CIDRs, IPv4 and IPv6. The others, with the true
// config, must ignore it for those prefixes: no route via gw-a2, traffic
// to vpc-b still goes to gw-b1, and the rejections are counted.
func (x *routingE2E) hijackAttempt(t *testing.T) {
	ctx := context.Background()
	stopRogue := x.startRogue(t)
	defer func() {
		stopRogue()
		if err := x.l.StartAgent(ctx, "gw-a2", x.opts.Cend); err != nil {
			t.Errorf("restart gw-a2 with the lab's config: %v", err)
		}
	}()
	// The rogue's session comes up and it announces 10.2.0.0/16 and
	// fd00:2::/48.
	for _, g := range []string{"gw-a1", "gw-b1"} {
		eventually(t, 30*time.Second, g+" sees gw-a2 announce vpc-b's CIDRs and rejects them", func() error {
			p := x.peer(t, g, "gw-a2")
			if p.BGPState != "established" || p.PrefixesRejected < 2 {
				return fmt.Errorf("%s's session with gw-a2: %+v", g, p)
			}
			return nil
		})
	}
	// cenctl routes names a next hop by its session, gw-b1's tunnel
	// address 100.64.0.21, in either family.
	for _, c := range []struct{ cidr, inside string }{{"10.2.0.0/16", "10.2."}, {"fd00:2::/48", "fd00:2:"}} {
		r, ok := x.routes(t, "gw-a1")[c.cidr]
		if !ok || !r.Installed || len(r.NextHops) != 1 || !strings.HasPrefix(r.NextHops[0], "100.64.0.21") {
			t.Errorf("gw-a1's route to vpc-b's %s = %+v, want via gw-b1 (100.64.0.21) alone", c.cidr, r)
		}
		// WireGuard hands vpc-b's traffic to gw-b1 and takes it from
		// gw-b1 alone: the hijacker is the home of none of it.
		if p := x.peer(t, "gw-a1", "gw-b1"); !slices.Contains(p.AllowedIPs, c.cidr) {
			t.Errorf("gw-a1's allowed ips of gw-b1 = %v, want %s among them", p.AllowedIPs, c.cidr)
		}
		if p := x.peer(t, "gw-a1", "gw-a2"); slices.ContainsFunc(p.AllowedIPs, func(s string) bool { return strings.HasPrefix(s, c.inside) }) {
			t.Errorf("gw-a1's allowed ips of the hijacker gw-a2 = %v, want nothing of vpc-b's %s", p.AllowedIPs, c.cidr)
		}
		if r, ok := x.routes(t, "gw-b1")[c.cidr]; ok && r.Source != "local" {
			t.Errorf("gw-b1 learned its own region's CIDR %s from the hijacker: %+v", c.cidr, r)
		}
		if strings.Contains(x.fib(t, "gw-b1"), c.cidr) {
			t.Errorf("gw-b1 installed a tunnel route to its own VPC's %s:\n%s", c.cidr, x.fib(t, "gw-b1"))
		}
	}
	// Traffic from vpc-b to vpc-a is unaffected... through gw-a1; the
	// rogue itself black-holes what it thinks is local, so only the
	// control plane is judged beyond that.
	logs, _ := os.ReadFile(x.gw(t, "gw-b1").LogFile)
	for _, cidr := range []string{"10.2.0.0/16", "fd00:2::/48"} {
		if !strings.Contains(string(logs), cidr) || !strings.Contains(string(logs), "gw-a2") {
			t.Errorf("gw-b1's log does not report gw-a2's announcement of %s", cidr)
		}
	}
	stopRogue()
}

// startRogue replaces gw-a2's agent by one whose config puts vpc-b in
// Beijing. It returns the function that stops it, which may be called
// more than once.
func (x *routingE2E) startRogue(t *testing.T) (stop func()) {
	good, err := os.ReadFile(x.l.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	rogue := strings.Replace(string(good), "- name: vpc-b\n    type: vpc\n    region: us-west-1", "- name: vpc-b\n    type: vpc\n    region: cn-beijing", 1)
	if rogue == string(good) {
		t.Fatal("could not rewrite vpc-b's region in the lab config")
	}
	// Beside the lab's config: key files are relative to it.
	roguePath := filepath.Join(filepath.Dir(x.l.ConfigFile), "rogue.yaml")
	if err := os.WriteFile(roguePath, []byte(rogue), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCenctl(t, "validate", roguePath); r.code != 0 {
		os.Remove(roguePath)
		t.Fatalf("the rogue config does not validate:\n%s", r.stderr)
	}
	a2 := x.gw(t, "gw-a2")
	if err := x.l.StopAgent(context.Background(), "gw-a2", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", a2.Namespace,
		x.opts.Cend, "--config", roguePath, "--gateway", a2.Name, "--socket", a2.Socket, "--metrics-addr", "",
		"--state-dir", a2.StateDir)
	logf, err := os.OpenFile(a2.LogFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.Remove(roguePath)
	}
}

// acceptIPv6Only narrows idc-a's accept list to its IPv6 entry and
// reloads every gateway: the router's IPv4 prefixes, still announced, are
// withdrawn from every gateway's routes and kernel table, its IPv6 ones
// stay.
// An accept list of one family denies the other entirely; it never reads
// as "no filter". The lab's list comes back at the end.
func (x *routingE2E) acceptIPv6Only(t *testing.T) {
	both := `accept: [192.168.0.0/16, "fd00:192:168::/48"]`
	x.setConfig(t, both, `accept: ["fd00:192:168::/48"]`)
	defer x.setConfig(t, `accept: ["fd00:192:168::/48"]`, both)
	var v4, v6 []string
	for _, p := range x.router.Announce {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	eventually(t, 20*time.Second, "idc-a's IPv4 prefixes refused and withdrawn, its IPv6 ones kept", func() error {
		if p := x.peer(t, "gw-a1", "idc-a"); p.BGPState != "established" {
			return fmt.Errorf("gw-a1's session with idc-a: %+v", p)
		}
		for _, g := range []string{"gw-a1", "gw-a2", "gw-b1"} {
			rs, fib := x.routes(t, g), x.fib(t, g)
			for _, p := range v4 {
				if r, ok := rs[p]; ok {
					return fmt.Errorf("%s still has %s: %+v", g, p, r)
				}
				if strings.Contains(fib, p) {
					return fmt.Errorf("%s still has %s in its kernel table:\n%s", g, p, fib)
				}
			}
			for _, p := range v6 {
				if r, ok := rs[p]; !ok || r.OriginNetwork != "idc-a" {
					return fmt.Errorf("%s lost idc-a's IPv6 %s: %+v", g, p, r)
				}
			}
		}
		return nil
	})
}

// setConfig replaces old by new in the lab's config and reloads every
// gateway.
func (x *routingE2E) setConfig(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(x.l.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), old, new, 1)
	if text == string(b) {
		t.Fatalf("%q is not in the lab's config", old)
	}
	if err := os.WriteFile(x.l.ConfigFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, g := range x.l.Gateways {
		if r := runCenctl(t, "--socket", g.Socket, "reload"); r.code != 0 {
			t.Fatalf("reload %s: %s%s", g.Name, r.stdout, r.stderr)
		}
	}
}

func (x *routingE2E) maxPrefixesTrips(t *testing.T) {
	ctx := context.Background()
	// idc-a allows 100 prefixes: 101 shut the session down with a
	// clear state, note and log, and the CEN withdraws its routes.
	var many []netip.Prefix
	for i := range 101 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(100 + i), 0}), 24))
	}
	if err := x.l.SetAnnouncements(ctx, x.router.Name, many); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "gw-a1 shuts the VBR session down", func() error {
		p := x.peer(t, "gw-a1", "idc-a")
		if p.BGPState != "max-prefix-exceeded" || !strings.Contains(p.Note, "max_prefixes") {
			return fmt.Errorf("gw-a1's VBR session: %+v", p)
		}
		return nil
	})
	logs, _ := os.ReadFile(x.gw(t, "gw-a1").LogFile)
	if !strings.Contains(string(logs), "max_prefixes exceeded") {
		t.Errorf("gw-a1's log does not say max_prefixes was exceeded")
	}
	eventually(t, 90*time.Second, "gw-b1 withdraws the data centre's routes", func() error {
		for p, r := range x.routes(t, "gw-b1") {
			if r.OriginNetwork == "idc-a" && r.Source != "held" {
				return fmt.Errorf("gw-b1 still has %s from idc-a: %+v", p, r)
			}
		}
		return nil
	})
}

// peersResetAfterTrip: the router cuts its table back under the limit,
// and `cenctl peers reset` brings the tripped session back without
// waiting for max_prefixes_restart; resetting it again, or a session that
// does not exist, fails with a message naming why.
func (x *routingE2E) peersResetAfterTrip(t *testing.T) {
	ctx := context.Background()
	few := []netip.Prefix{netip.MustParsePrefix("192.168.100.0/24"), netip.MustParsePrefix("192.168.101.0/24")}
	if err := x.l.SetAnnouncements(ctx, x.router.Name, few); err != nil {
		t.Fatal(err)
	}
	sock := x.gw(t, "gw-a1").Socket
	if r := runCenctl(t, "peers", "reset", "idc-nope", "--socket", sock); r.code != 1 || !strings.Contains(r.stderr, `no BGP session named "idc-nope"`) {
		t.Errorf("reset of an unknown session: exit %d, %q", r.code, r.stderr)
	}
	if r := runCenctl(t, "peers", "reset", "idc-a", "--socket", sock); r.code != 0 || !strings.Contains(r.stdout, "session idc-a reset") {
		t.Fatalf("cenctl peers reset idc-a: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	eventually(t, 30*time.Second, "gw-b1 learns idc-a's prefixes again", func() error {
		rs := x.routes(t, "gw-b1")
		for _, p := range few {
			if r, ok := rs[p.String()]; !ok || r.OriginNetwork != "idc-a" {
				return fmt.Errorf("gw-b1 lacks %s from idc-a", p)
			}
		}
		return nil
	})
	if p := x.peer(t, "gw-a1", "idc-a"); p.BGPState != "established" {
		t.Errorf("gw-a1's VBR session after the reset: %+v", p)
	}
	if r := runCenctl(t, "peers", "reset", "idc-a", "--socket", sock); r.code != 1 || !strings.Contains(r.stderr, "not shut down by max_prefixes") {
		t.Errorf("reset of a session that is up: exit %d, %q", r.code, r.stderr)
	}
}

// metric returns the lines of one metric family scraped from a gateway.
func metric(t *testing.T, g lab.Gateway, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", g.Namespace, "curl", "-s", "--max-time", "5", "http://"+g.MetricsAddr+"/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("scrape %s: %v: %s", g.Name, err, out)
	}
	var lines []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, name) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}
