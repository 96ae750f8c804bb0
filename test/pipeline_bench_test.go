package test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/fibbench"
)

const pipelinePrefixes = 100_000

// pipelinePrefixList is n /28s in 10.128.0.0/9 (accepted by the VBR).
func pipelinePrefixList(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	base := uint32(10)<<24 | uint32(128)<<16
	for i := range n {
		a := base + uint32(i)<<4
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 28)
	}
	return out
}

// pipelinePrefixList6 is n /64s in fd80:1::/32, inside the VBR's accept
// range fd80::/16 and clear of the lab's own on-premises prefixes (the
// first /64s of fd80::/48).
func pipelinePrefixList6(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range n {
		var a [16]byte
		a[0], a[1], a[3] = 0xfd, 0x80, 0x01
		a[4], a[5], a[6], a[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		out[i] = netip.PrefixFrom(netip.AddrFrom16(a), 64)
	}
	return out
}

// announceBulk rewrites the router's BIRD config with prefixes of one
// family (4 or 6) added to what it announces (the lab's script takes
// prefixes as arguments, too many for one command line here) and
// reconfigures BIRD.
func announceBulk(tb testing.TB, rt lab.Router, family int, prefixes []netip.Prefix) {
	tb.Helper()
	conf, err := os.ReadFile(rt.Config)
	if err != nil {
		tb.Fatal(err)
	}
	anchor := fmt.Sprintf("protocol static onprem%d {\n\tipv%d;\n", family, family)
	i := strings.Index(string(conf), anchor)
	if i < 0 {
		tb.Fatalf("no %q block in %s", strings.TrimSpace(anchor), rt.Config)
	}
	var b strings.Builder
	b.WriteString(string(conf[:i+len(anchor)]))
	for _, p := range prefixes {
		fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
	}
	b.WriteString(string(conf[i+len(anchor):]))
	if err := os.WriteFile(rt.Config, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command("birdc", "-s", rt.Socket, "configure").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Reconfigur") {
		tb.Fatalf("birdc configure: %v: %s", err, out)
	}
}

// countRoutes counts opencen's routes (proto 79) of family (unix.AF_INET
// or AF_INET6) in a namespace's main table.
func countRoutes(tb testing.TB, namespace string, family int) int {
	tb.Helper()
	h, err := netlinkHandle(namespace)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(family, &netlink.Route{Protocol: 79, Table: 254}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return -1 // an interrupted dump: try again
	}
	return len(rs)
}

// ipBatchInstall times `ip -batch` installing the prefixes in a fresh
// namespace: the kernel's share of the pipeline, on its own.
func ipBatchInstall(tb testing.TB, prefixes []netip.Prefix) time.Duration {
	tb.Helper()
	d, err := fibbench.IPBatch(testutil.NewNetNS(tb, "ocl-pb"), prefixes, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// pipelineRun has the router announce prefixes of one family (4 or 6) and
// times until all are in namespace's kernel table, beside BIRD's own
// reconfigure; it returns how many routes of the family the table holds.
func pipelineRun(b *testing.B, rt lab.Router, namespace string, family int, prefixes []netip.Prefix) (pipeline, reconfigured time.Duration, n int) {
	af := unix.AF_INET
	if family == 6 {
		af = unix.AF_INET6
	}
	base := countRoutes(b, namespace, af)
	watch := watchRoutes(b, namespace, af)
	t0 := time.Now()
	announceBulk(b, rt, family, prefixes)
	reconfigured = time.Since(t0)
	deadline := t0.Add(120 * time.Second)
	for {
		// The notifications say when; a dump confirms (and takes over,
		// 5 times a second, should notifications be lost).
		seen, ok := watch.count()
		if !ok || seen >= base+len(prefixes) {
			if n = countRoutes(b, namespace, af); n >= base+len(prefixes) {
				return time.Since(t0), reconfigured, n
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s has %d of %d IPv%d routes after 120 s", namespace, max(n, seen)-base, len(prefixes), family)
		}
		if ok {
			time.Sleep(10 * time.Millisecond)
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// BenchmarkPipeline100k is the whole routing pipeline with real cend
// processes over real opencen tunnels: an on-premises BIRD router starts
// announcing 100,000 IPv4 prefixes to gw-a1 over its VBR session, then
// 100,000 IPv6 ones; the benchmark times until all of each family are
// installed in the kernel of gw-b1, in another region (gw-a1's speaker
// learns and filters them, sends them over iBGP inside WireGuard, gw-b1's
// speaker learns them and its dataplane installs them). Beside it, `ip
// -batch` installing the same routes in the same run; the time bare GoBGP
// takes to receive them from BIRD is routing.BenchmarkBIRD100k's (make
// bench runs both and reports them together). Target: the pipeline within
// 2x of GoBGP plus ip -batch, and under 10 s, in each family.
func BenchmarkPipeline100k(b *testing.B) {
	l, _ := upLab(b, "testdata/pipeline.yaml")
	gb1, _ := l.Gateway("gw-b1")
	if len(l.Routers) != 1 {
		b.Fatalf("the lab has %d routers, want 1", len(l.Routers))
	}
	rt := l.Routers[0]
	eventually(b, 60*time.Second, "gw-b1 installs the data centre's own prefixes", func() error {
		out, _ := exec.Command("ip", "-n", gb1.Namespace, "route", "show", rt.LAN.Masked().String()).CombinedOutput()
		if !strings.Contains(string(out), "proto 79") {
			return fmt.Errorf("%s not installed yet", rt.LAN.Masked())
		}
		return nil
	})
	prefixes, prefixes6 := pipelinePrefixList(pipelinePrefixes), pipelinePrefixList6(pipelinePrefixes)
	b.ResetTimer()
	for range b.N {
		rss0 := rssMB(b, gb1.PID)
		pipeline, reconfigured, n := pipelineRun(b, rt, gb1.Namespace, 4, prefixes)
		b.StopTimer()
		batch := ipBatchInstall(b, prefixes)
		rss := rssMB(b, gb1.PID)
		b.StartTimer()
		pipeline6, reconfigured6, _ := pipelineRun(b, rt, gb1.Namespace, 6, prefixes6)
		b.StopTimer()
		batch6 := ipBatchInstall(b, prefixes6)
		rss6 := rssMB(b, gb1.PID)
		perRoute, perRoute6 := rss*1e6/float64(n), (rss6-rss)*1e6/pipelinePrefixes
		b.ReportMetric(pipeline.Seconds(), "pipeline-s")
		b.ReportMetric(batch.Seconds(), "ipbatch-s")
		b.ReportMetric(reconfigured.Seconds(), "bird-configure-s")
		b.ReportMetric(perRoute, "receiver-rss-B/route")
		b.ReportMetric(pipeline6.Seconds(), "pipeline6-s")
		b.ReportMetric(batch6.Seconds(), "ipbatch6-s")
		b.ReportMetric(perRoute6, "receiver-rss6-B/route")
		fmt.Printf(`
routing pipeline, real cend processes (100,000 IPv4 /28s, then 100,000 IPv6 /64s, from BIRD over a VBR, then iBGP inside WireGuard to another region)
  IPv4: announced by BIRD until all in gw-b1's kernel FIB:  %8.2fs   (target: within 2x of GoBGP alone + ip -batch, and under 10s)
    of which BIRD's own reconfigure (parse 100k routes):   %6.2fs
  ip -batch installs the same 100k IPv4 routes (baseline): %6.2fs
  IPv6: announced by BIRD until all in gw-b1's kernel FIB:  %8.2fs   (same target, against IPv6's GoBGP and ip -batch)
    of which BIRD's own reconfigure:                        %6.2fs
  ip -batch installs the same 100k IPv6 routes (baseline): %6.2fs
  gw-b1's cend RSS: %.1f MB before, %.1f MB with the IPv4 routes (%.0f B per route, the whole agent), %.1f MB with both (%.0f B per IPv6 route)
`, pipeline.Seconds(), reconfigured.Seconds(), batch.Seconds(), pipeline6.Seconds(), reconfigured6.Seconds(), batch6.Seconds(),
			rss0, rss, perRoute, rss6, perRoute6)
		// A session lost on the way (BFD starved of CPU, say) makes a run
		// relearn everything: say so beside the figures it inflates.
		for _, g := range l.Gateways {
			if n := sessionsLost(b, g.LogFile); n > 0 {
				fmt.Printf("  %s lost a BGP or BFD session %d time(s) during the run: its figures include relearning\n", g.Name, n)
			}
		}
		b.StartTimer()
	}
}

// sessionsLost counts the sessions a gateway's log says went down.
func sessionsLost(tb testing.TB, logFile string) int {
	tb.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(string(data), `msg="bgp session down"`) + strings.Count(string(data), `msg="bfd session down`)
}
