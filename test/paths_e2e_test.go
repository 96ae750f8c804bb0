package test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/test/lab"
)

// TestEveryPathForced derives every path between every pair of networks
// of an instance with a two-gateway region (a VBR on one twin, another VBR
// in the remote region) from its config, forces each one with host routes
// (never a hash), and requires every echo of every path to come back: a
// VPC host's every address (one homed at each twin) through each twin,
// to each address of the other side, answered through each of its
// gateways. Then the twins and every pair of gateways reach each other's
// tunnel addresses.
func TestEveryPathForced(t *testing.T) {
	const file = "testdata/paths.yaml"
	l, _ := upLab(t, file)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	paths := l.Paths()
	checkPathList(t, cfg, l, paths)
	waitEstablished(t, l, "gw-a1", "gw-a2", "gw-b1")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Routes and handoff addresses take a moment to spread after the
	// sessions come up: every path must pass in one round within 60 s.
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

	for _, from := range l.Gateways {
		for _, to := range l.Gateways {
			if from.Name == to.Name {
				continue
			}
			g, _ := cfg.Gateway(from.Name)
			peer, _ := cfg.Gateway(to.Name)
			if sent, got := ping(t, l, from.Name, peer.TunnelAddress.String(), 3, 100*time.Millisecond); got != sent {
				t.Errorf("gateway %s (%s) -> %s's tunnel address %s: %d of %d answered", from.Name, g.TunnelAddress, to.Name, peer.TunnelAddress, got, sent)
			}
		}
	}
}

// checkPathList holds the derived path list against what it must contain:
// every ordered pair of networks, both twins as ingress and return of a
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
		seen[p.From+">"+p.To] = true
		seen[p.From+">"+p.To+" in "+p.Ingress] = true
		seen[p.From+">"+p.To+" back "+p.Return] = true
		seen[p.From+">"+p.To+" dst home "+homeOf(p.Dst)] = true
		seen[p.From+">"+p.To+" src home "+homeOf(p.Src)] = true
	}
	for _, a := range cfg.Networks {
		for _, b := range cfg.Networks {
			if a.Name != b.Name && !seen[a.Name+">"+b.Name] {
				t.Errorf("no path from %s to %s", a.Name, b.Name)
			}
		}
	}
	for _, want := range []string{
		"vpc-a>idc-a in gw-a2",      // same region, VPC to VBR through the twin without the session
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
		if !seen[want] {
			t.Errorf("the derived paths miss %q", want)
		}
	}
	host, _ := l.Host("vpc-a")
	if got := len(host.Extra) + 1; got != 2 {
		t.Errorf("vpc-a's host has %d addresses, want one homed at each twin", got)
	}
	t.Logf("%d paths derived from %d networks", len(paths), len(cfg.Networks))
}
