package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const routeRounds = 3

// BenchmarkRouteInstall compares installing 100,000 routes `PREFIX dev
// DEV proto 79 metric 20 src TUNNEL` (what a CEN route is) with the
// dataplane's route sync (dump, diff, parallel netlink writes) against
// `ip -batch` of the same routes, alternating, best of 3 each, each into
// an empty table on a fresh device.
func BenchmarkRouteInstall(b *testing.B) {
	requireRoot(b)
	const n = 100_000
	ns := newNetNS(b)
	dev := "ocdp" + randSuffix(b, 4) + "r"
	src := netip.MustParseAddr("100.64.0.1")
	fresh := func() int {
		_ = exec.Command("ip", "-n", ns, "link", "del", dev).Run()
		// No dummy module on every host: a veth pair inside the namespace.
		run(b, "ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", dev+"p")
		run(b, "ip", "-n", ns, "addr", "add", src.String()+"/32", "dev", dev)
		run(b, "ip", "-n", ns, "link", "set", dev+"p", "up")
		run(b, "ip", "-n", ns, "link", "set", dev, "up")
		return linkIndex(b, ns, dev)
	}
	p := plan{own4: src}
	var batch strings.Builder
	for i := range n {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		p.routes = append(p.routes, plannedRoute{prefix: pfx})
		fmt.Fprintf(&batch, "route add %s dev %s proto %d metric %d src %s\n", pfx, dev, RouteProtocol, RouteMetric4, src)
	}
	batchFile := filepath.Join(b.TempDir(), "routes.batch")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	workers := 0
	count := func() int {
		return strings.Count(run(b, "ip", "-n", ns, "route", "show", "proto", fmt.Sprint(RouteProtocol)), "\n")
	}
	var tIP, tOC []time.Duration
	for b.Loop() {
		for range routeRounds {
			fresh()
			start := time.Now()
			run(b, "ip", "-n", ns, "-batch", batchFile)
			tIP = append(tIP, time.Since(start))
			if c := count(); c != n {
				b.Fatalf("ip -batch installed %d routes, want %d", c, n)
			}
			idx := fresh()
			// A Dataplane as the agent runs it, watchers included; it is
			// closed before ip runs so its netlink listeners do not slow
			// ip down.
			d, err := New(Options{Device: dev, NetNS: nsPath(ns), ResyncInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			workers = d.opts.RouteWorkers
			start = time.Now()
			err = d.syncRoutes(p, idx)
			tOC = append(tOC, time.Since(start))
			if cerr := d.Close(false); err != nil || cerr != nil {
				b.Fatal(err, cerr)
			}
			if c := count(); c != n {
				b.Fatalf("dataplane installed %d routes, want %d", c, n)
			}
		}
	}
	bi, bo := slices.Min(tIP), slices.Min(tOC)
	speed := bi.Seconds() / bo.Seconds()
	b.ReportMetric(bo.Seconds(), "opencen_s")
	b.ReportMetric(bi.Seconds(), "ip-batch_s")
	b.ReportMetric(speed, "speed_ratio_vs_ip-batch")
	fmt.Printf("\nInstall %d routes on a device with a metric and a source, best of %d (all runs: opencen %v, ip -batch %v)\n", n, routeRounds, tOC, tIP)
	fmt.Printf("  opencen route sync (%d netlink sockets): %v\n", workers, bo.Round(time.Millisecond))
	fmt.Printf("  ip -batch:                               %v\n", bi.Round(time.Millisecond))
	fmt.Printf("  opencen speed / ip -batch speed = %.3f (target >= 0.8)\n\n", speed)
}

// BenchmarkSetLargeRouteSet times a whole Set of 100,000 remote prefixes
// homed at one peer, each its own AllowedIPs entry (the most WireGuard is
// given: the agent gives one entry for a range only that peer's VBRs may
// announce into) and its own route on the device, and the identical Set
// after it, which must write nothing. No baseline: it shows what a full
// table costs end to end.
func BenchmarkSetLargeRouteSet(b *testing.B) {
	const n = 100_000
	l := newLab(b, 2)
	ctx := context.Background()
	dp := l.open(0)
	d := l.desired(0)
	for i := range n {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		d.Routes = append(d.Routes, pfx)
		d.Peers[0].AllowedIPs = append(d.Peers[0].AllowedIPs, pfx)
	}
	var first, second time.Duration
	for b.Loop() {
		start := time.Now()
		if err := dp.Set(ctx, d); err != nil {
			b.Fatal(err)
		}
		first = time.Since(start)
		start = time.Now()
		if err := dp.Set(ctx, d); err != nil {
			b.Fatal(err)
		}
		second = time.Since(start)
	}
	st, err := dp.Status()
	if err != nil {
		b.Fatal(err)
	}
	installed := 0
	for _, r := range st.Routes {
		if r.Installed {
			installed++
		}
	}
	// The prefixes, the peer's VPC and tunnel address, all in the peer's
	// AllowedIPs and each a route.
	if installed != n+2 || len(st.Peers) != 1 || len(st.Peers[0].AllowedIPs) != n+2 {
		b.Fatalf("after Set: %d routes installed, %d peers, want %d routes and %d allowed ips", installed, len(st.Peers), n+2, n+2)
	}
	b.ReportMetric(first.Seconds(), "first_set_s")
	b.ReportMetric(second.Seconds(), "identical_set_s")
	fmt.Printf("\nSet with %d prefixes homed at one peer (userspace device; routes on the device, AllowedIPs): first %v, identical again %v (reads and diffs, writes nothing)\n\n",
		n, first.Round(time.Millisecond), second.Round(time.Millisecond))
}
