package routing

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/fibbench"
	"github.com/opencen/opencen/internal/testutil"
)

func birdBulkConf(n int) string {
	var b strings.Builder
	b.WriteString("router id 172.30.0.2;\nprotocol device {}\nprotocol static bulk {\n\tipv4;\n")
	for _, p := range benchPrefixList(n) {
		fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
	}
	b.WriteString(`}
protocol bgp cen {
	local 172.30.0.2 as 65010;
	neighbor 172.30.0.1 as 64512;
	hold time 9;
	connect retry time 1;
	ipv4 { import none; export where source = RTS_STATIC; };
}
`)
	return b.String()
}

// birdReceive runs BIRD announcing n prefixes to a receiver helper (the
// Speaker, or bare GoBGP with plain) in namespaces, and returns the
// receiver's final summary.
func birdReceive(b *testing.B, n int, plain bool) helperState {
	l := newLab(b)
	nsG, nsOp := l.netns("gw"), l.netns("op")
	l.link(nsG, "172.30.0.1/30", nsOp, "172.30.0.2/30")
	run(b, "ip", "-n", nsG, "addr", "add", "100.64.0.1/32", "dev", "lo")
	d := Desired{RouterID: ma("100.64.0.1"), LocalAddress: ma("100.64.0.1"), Region: "r-a", InstanceASN: testASN,
		VBRs:          []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: ma("172.30.0.2"), LocalAddress: ma("172.30.0.1"), PeerASN: 65010}},
		InstanceCIDRs: instanceCIDRs(), ProtectedPrefixes: []netip.Prefix{mp("100.64.0.1/32")}}
	// BIRD loads its static routes first, so the receivers' clocks (from
	// session up) time BGP, not BIRD parsing its config.
	sock := startBIRD(b, nsOp, birdBulkConf(n))
	want := fmt.Sprintf("%d of %d routes", n, n)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := exec.Command("birdc", "-s", sock, "show", "route", "count").CombinedOutput()
		if strings.Contains(string(out), want) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("BIRD did not load %d routes: %s", n, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h := l.speaker(nsG, helperConfig{Desired: d, Port: 179, Summary: true, Plain: plain, Expect: n})
	return h.waitFor(180*time.Second, fmt.Sprintf("%d routes (plain=%v)", n, plain), func(s helperState) bool {
		return s.Count >= n && s.HeapNow > 0
	})
}

// ipBatch times `ip -batch` installing n routes in a fresh namespace: the
// kernel side a gateway's dataplane adds on top of routing.
func ipBatch(b *testing.B, n int) time.Duration {
	l := newLab(b)
	d, err := fibbench.IPBatch(l.netns("fib"), benchPrefixList(n), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkBIRD100k: BIRD 2 announces 100,000 prefixes to the Speaker
// running alone in its own process and namespace; beside it the time bare
// GoBGP takes to receive them and `ip -batch` takes to install them; and
// the Speaker process's heap and RSS per route.
func BenchmarkBIRD100k(b *testing.B) {
	testutil.RequireRoot(b)
	for range b.N {
		base := birdReceive(b, benchPrefixes, true)
		sp := birdReceive(b, benchPrefixes, false)
		fib := ipBatch(b, benchPrefixes)
		tBase := base.LastAt.Sub(base.UpAt)
		tSp := sp.LastAt.Sub(sp.UpAt)
		heap := float64(int64(sp.HeapNow)-int64(sp.HeapStart)) / benchPrefixes
		rss := float64(int64(sp.RSSNow)-int64(sp.RSSStart)) / benchPrefixes
		baseHeap := float64(int64(base.HeapNow)-int64(base.HeapStart)) / benchPrefixes
		fmt.Printf(`
routing benchmark with BIRD 2 (100,000 /32 prefixes, eBGP over a veth between namespaces, each receiver alone in its process)
  bare GoBGP receives 100k (baseline):        %8.2fs   (from session up; heap %0.f B/route)
  ip -batch installs 100k routes (baseline):  %8.2fs
  opencen Speaker delivers 100k as learned:   %8.2fs   (%.2fx GoBGP; target: with the FIB, within 2x of %.2fs and under 10s)
  Speaker process heap per route:             %8.0f B   (target <= 1536 B)
  Speaker process RSS per route:              %8.0f B   (target <= 1536 B)
`, tBase.Seconds(), baseHeap, fib.Seconds(), tSp.Seconds(), tSp.Seconds()/tBase.Seconds(), tBase.Seconds()+fib.Seconds(), heap, rss)
		b.ReportMetric(tBase.Seconds(), "gobgp-s")
		b.ReportMetric(fib.Seconds(), "ipbatch-s")
		b.ReportMetric(tSp.Seconds(), "speaker-s")
		b.ReportMetric(heap, "heap-B/route")
		b.ReportMetric(rss, "rss-B/route")
	}
}

// BenchmarkFailover: 20 trials of a hung twin gateway, p50/p95 of the
// time until routes move to the other twin.
func BenchmarkFailover(b *testing.B) {
	testutil.RequireRoot(b)
	for range b.N {
		const trials = 20
		times, _ := measureFailover(b, trials)
		p50, p95 := times[trials/2], times[trials*95/100]
		fmt.Printf(`
failover (BFD 100ms x 3, twin gateways in namespaces, %d trials)
  p50 %v   p95 %v   max %v   (target < 1s)
`, trials, p50.Round(time.Millisecond), p95.Round(time.Millisecond), times[trials-1].Round(time.Millisecond))
		b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
		b.ReportMetric(float64(p95.Milliseconds()), "p95-ms")
	}
}
