package test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/lab"
)

// TestEveryPathForced derives every path between every pair of networks
// of a dual-stack instance with a two-gateway region (a VBR on one twin
// peering over IPv4, another VBR in the remote region peering over IPv6,
// each carrying both families) from its config, in each family, forces each one with host routes
// (never a hash), and requires every echo of every path to come back: a
// VPC host's every address (one homed at each twin) through each twin,
// to each address of the other side, answered through each of its
// gateways. Then the twins and every pair of gateways reach each other's
// tunnel addresses of both families.
func TestEveryPathForced(t *testing.T) {
	const file = "testdata/paths.yaml"
	l, opts := upLabAgents(t, file, false)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pristine := startAgentsRecordingTables(t, ctx, l, opts)
	paths := l.Paths()
	checkPathList(t, cfg, l, paths)
	waitEstablished(t, l, "gw-a1", "gw-a2", "gw-b1")

	t.Run("every path", func(t *testing.T) { pingEveryPath(t, ctx, l, paths) })
	t.Run("gateways reach each other", func(t *testing.T) {
		for _, from := range l.Gateways {
			for _, to := range l.Gateways {
				peer, _ := cfg.Gateway(to.Name)
				if from.Name == to.Name {
					continue
				}
				for _, a := range []netip.Addr{peer.TunnelAddress, config.TunnelAddress6(peer.TunnelAddress)} {
					if sent, got := ping(t, l, from.Name, a.String(), 3, 100*time.Millisecond); got != sent {
						t.Errorf("gateway %s -> %s's tunnel address %s: %d of %d answered", from.Name, to.Name, a, got, sent)
					}
				}
			}
		}
	})
	t.Run("a prefix equal to the VBR link is refused", func(t *testing.T) { refuseConnected(t, ctx, l) })
	t.Run("restarts lose nothing, cleanup restores every table and rule", func(t *testing.T) {
		restartsLoseNothing(t, ctx, l, opts)
		// Every path again, through agents that clean up when they stop.
		pingEveryPath(t, ctx, l, paths)
		for _, g := range l.Gateways {
			if err := l.StopAgent(ctx, g.Name, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if after := routingTables(t, l, g.Name); after != pristine[g.Name] {
				t.Errorf("%s: routes and rules after cend --cleanup differ from those the gateway has with no agent yet:\n%s", g.Name, lineDiff(pristine[g.Name], after))
			}
		}
	})
}

// startAgentsRecordingTables starts every gateway's agent, each once its
// addresses have settled, and returns each gateway's routing tables and
// rules as they are with no agent yet.
func startAgentsRecordingTables(t *testing.T, ctx context.Context, l *lab.Lab, opts lab.Options) map[string]string {
	t.Helper()
	pristine := map[string]string{}
	for _, g := range l.Gateways {
		// The kernel's IPv6 link-local addresses get their routes once
		// duplicate address detection is over: wait for it.
		eventually(t, 10*time.Second, g.Name+"'s addresses settled", func() error {
			if out, _ := l.Exec(ctx, g.Name, "ip", "-6", "addr", "show", "tentative"); len(strings.TrimSpace(string(out))) > 0 {
				return fmt.Errorf("tentative: %s", out)
			}
			return nil
		})
		pristine[g.Name] = routingTables(t, l, g.Name)
		if err := l.StartAgent(ctx, g.Name, opts.Cend); err != nil {
			t.Fatal(err)
		}
	}
	return pristine
}

// restartsLoseNothing restarts every agent in turn, each with --cleanup
// (for the end of the test), under UDP flows from vpc-a's address homed
// at gw-a1, forced in at gw-a2 (a handoff): no flow loses a packet.
func restartsLoseNothing(t *testing.T, ctx context.Context, l *lab.Lab, opts lab.Options) {
	t.Helper()
	src, _ := l.Host("vpc-a")
	dst, _ := l.Host("vpc-b")
	undo, err := l.Force(ctx, lab.Path{From: "vpc-a", To: "vpc-b", Src: src.Address.Addr(), Dst: dst.Address.Addr(), Ingress: "gw-a2", Return: "gw-b1"})
	defer undo()
	if err != nil {
		t.Fatal(err)
	}
	probe, err := l.StartProbe(ctx, "vpc-a", "vpc-b", lab.ProbeOptions{Flows: 4, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	event := time.Now()
	for _, g := range l.Gateways {
		t.Logf("%.0f ms: restarting %s", ms(time.Since(event)), g.Name)
		if err := l.StopAgent(ctx, g.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := l.StartAgent(ctx, g.Name, opts.Cend, "--cleanup"); err != nil {
			t.Fatal(err)
		}
		waitEstablished(t, l, g.Name)
	}
	time.Sleep(2 * time.Second)
	for _, f := range probe.Outages(event) {
		if f.Lost > 0 || !f.Recovered {
			t.Errorf("flow :%d through the handoff lost %d of %d packets (longest gap %.0f ms from %.0f ms) while every agent restarted", f.SourcePort, f.Lost, f.Sent, f.GapMs, f.GapStartMs)
		}
	}
}

// pingEveryPath forces every path and requires all its echoes back in one
// round; routes and handoff addresses take a moment to spread after the
// sessions come up, so rounds repeat for up to 60 s.
func pingEveryPath(t *testing.T, ctx context.Context, l *lab.Lab, paths []lab.Path) {
	t.Helper()
	var failed []lab.PathResult
	deadline := time.Now().Add(60 * time.Second)
	for {
		failed = failed[:0]
		for _, r := range l.PingPaths(ctx, paths, 2, 100*time.Millisecond) {
			if !r.OK() {
				failed = append(failed, r)
			}
		}
		if len(failed) == 0 || time.Now().After(deadline) {
			break
		}
		t.Logf("%d of %d paths not yet through, e.g. %s: %d of %d %s", len(failed), len(paths), failed[0].Path, failed[0].Received, failed[0].Sent, failed[0].Error)
		time.Sleep(2 * time.Second)
	}
	for _, r := range failed {
		t.Errorf("%s: %d of %d echoes answered %s", r.Path, r.Received, r.Sent, r.Error)
	}
	t.Logf("%d forced paths, %d failed", len(paths), len(failed))
}

// refuseConnected has the VBR router announce its own link's subnet: the
// gateway refuses it (reason connected) and its link route stays.
func refuseConnected(t *testing.T, ctx context.Context, l *lab.Lab) {
	rt := l.Routers[0]
	link := rt.Address.Masked()
	g, _ := l.Gateway(rt.Gateway)
	if err := l.SetAnnouncements(ctx, rt.Name, append(slices.Clone(rt.Announce), link)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.SetAnnouncements(ctx, rt.Name, nil); err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 20*time.Second, link.String()+" refused as connected", func() error {
		var peers []api.Peer
		cenctlJSON(t, g.Socket, &peers, "peers")
		for _, p := range peers {
			if p.Name == rt.Network && p.PrefixesRejected >= 1 {
				return nil
			}
		}
		return fmt.Errorf("not rejected yet: %+v", peers)
	})
	eventually(t, 10*time.Second, "the refusal counted under reason connected", func() error {
		for _, line := range strings.Split(metric(t, g, "opencen_bgp_routes_rejected_total"), "\n") {
			if strings.Contains(line, `reason="connected"`) && !strings.HasSuffix(line, " 0") {
				return nil
			}
		}
		return fmt.Errorf("no opencen_bgp_routes_rejected_total{reason=\"connected\"} above 0")
	})
	out, _ := l.Exec(ctx, g.Name, "ip", "route", "show", "exact", link.String())
	if !strings.Contains(string(out), "proto kernel") || strings.Contains(string(out), "proto 79") {
		t.Errorf("%s's route for its VBR link %s: %q, want the kernel's link route alone", g.Name, link, out)
	}
}

// routingTables is a gateway's routes in every table and its policy rules,
// both families, sorted, with what the kernel varies on its own (cache
// expiries) left out.
func routingTables(t *testing.T, l *lab.Lab, gateway string) string {
	t.Helper()
	var lines []string
	for _, argv := range [][]string{{"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "rule"}, {"ip", "-6", "rule"}} {
		out, err := l.Exec(context.Background(), gateway, argv...)
		if err != nil {
			t.Fatalf("%s: %v: %s", gateway, argv, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			lines = append(lines, strings.Join(argv[:2], " ")+": "+strings.TrimSpace(line))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// checkPathList holds the derived path list against what it must contain,
// in each family: every ordered pair of networks, both twins as ingress and return of a
// two-gateway region, a destination address homed at each twin, and the
// paths the issue names one by one.
func checkPathList(t *testing.T, cfg *config.Config, l *lab.Lab, paths []lab.Path) {
	t.Helper()
	homeOf := func(a netip.Addr) string {
		for _, n := range cfg.Networks {
			for _, c := range n.CIDRs {
				for _, p := range cfg.VPCPieces(c, n.Region) {
					if p.Prefix.Contains(a) {
						return p.Gateway
					}
				}
			}
		}
		return ""
	}
	seen := map[string]bool{}
	for _, p := range paths {
		f := lab.Family(p.IPv6()) + " "
		seen[f+p.From+">"+p.To] = true
		seen[f+p.From+">"+p.To+" in "+p.Ingress] = true
		seen[f+p.From+">"+p.To+" back "+p.Return] = true
		seen[f+p.From+">"+p.To+" dst home "+homeOf(p.Dst)] = true
		seen[f+p.From+">"+p.To+" src home "+homeOf(p.Src)] = true
	}
	host, _ := l.Host("vpc-a")
	for _, f := range []string{lab.FamilyIPv4, lab.FamilyIPv6} {
		for _, a := range cfg.Networks {
			for _, b := range cfg.Networks {
				if a.Name != b.Name && !seen[f+" "+a.Name+">"+b.Name] {
					t.Errorf("no %s path from %s to %s", f, a.Name, b.Name)
				}
			}
		}
		for _, want := range []string{
			"vpc-a>idc-a in gw-a2",       // same region, VPC to VBR through the twin without the session
			"vpc-a>idc-a src home gw-a2", // from an address homed at the twin without the session
			"idc-a>vpc-a back gw-a2",     // VBR to VPC, the VPC answering through the other twin
			"idc-a>idc-b",                // VBR to a remote VBR
			"vpc-b>vpc-a dst home gw-a1", // a remote region into each twin
			"vpc-b>vpc-a dst home gw-a2",
			"vpc-a>vpc-b in gw-a1",
			"vpc-a>vpc-b in gw-a2",
			"vpc-a>vpc-b src home gw-a1",
			"vpc-a>vpc-b src home gw-a2",
			"idc-b>vpc-a back gw-a2",
		} {
			if !seen[f+" "+want] {
				t.Errorf("the derived paths miss %q over %s", want, f)
			}
		}
		// One address of the family homed at each twin.
		n := 0
		for _, p := range append([]netip.Prefix{host.Address, host.Address6}, host.Extra...) {
			if p.IsValid() && lab.Family(p.Addr().Is6()) == f {
				n++
			}
		}
		if n != 2 {
			t.Errorf("vpc-a's host has %d %s addresses, want one homed at each twin", n, f)
		}
	}
	t.Logf("%d paths derived from %d networks", len(paths), len(cfg.Networks))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
