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

// benchPrefixList6 is n IPv6 /64s in 2001:db8::/32.
func benchPrefixList6(n int) []netip.Prefix {
	ps := make([]netip.Prefix, n)
	for i := range n {
		var a [16]byte
		copy(a[:], []byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		ps[i] = netip.PrefixFrom(netip.AddrFrom16(a), 64)
	}
	return ps
}

// bulkFamily is one address family of the BIRD benchmark: the link's
// addresses, BIRD's channel and the prefixes it announces.
type bulkFamily struct {
	name               string // BIRD's channel: ipv4 or ipv6
	gwLink, routerLink string // the link's addresses (with length)
	prefixes           func(int) []netip.Prefix
	memoryTarget       string // the per-route memory target, if the family has one
}

var (
	bulk4 = bulkFamily{"ipv4", "172.30.0.1/30", "172.30.0.2/30", benchPrefixList, "(target <= 1536 B)"}
	// IPv6 has no memory target of its own: it is reported beside IPv4's.
	bulk6 = bulkFamily{"ipv6", "fd30::1/64", "fd30::2/64", benchPrefixList6, "(reported; the target is IPv4's)"}
)

func (f bulkFamily) gw() netip.Addr     { return netip.MustParsePrefix(f.gwLink).Addr() }
func (f bulkFamily) router() netip.Addr { return netip.MustParsePrefix(f.routerLink).Addr() }

// birdBulkConf is BIRD announcing n prefixes of family f over a session
// of that family.
func birdBulkConf(n int, f bulkFamily) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id 172.30.0.2;\nprotocol device {}\nprotocol static bulk {\n\t%s;\n", f.name)
	for _, p := range f.prefixes(n) {
		fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
	}
	fmt.Fprintf(&b, `}
protocol bgp cen {
	local %s as 65010;
	neighbor %s as 64512;
	hold time 9;
	connect retry time 1;
	%s { import none; export where source = RTS_STATIC; };
}
`, f.router(), f.gw(), f.name)
	return b.String()
}

// birdReceive runs BIRD announcing n prefixes of family f to a receiver
// helper (the Speaker, or bare GoBGP with plain) in namespaces, over a
// session of that family, and returns the receiver's final summary.
func birdReceive(b *testing.B, n int, plain bool, f bulkFamily) helperState {
	l := newLab(b)
	nsG, nsOp := l.netns("gw"), l.netns("op")
	l.link(nsG, f.gwLink, nsOp, f.routerLink)
	run(b, "ip", "-n", nsG, "addr", "add", "100.64.0.1/32", "dev", "lo")
	d := Desired{RouterID: ma("100.64.0.1"), LocalAddress: ma("100.64.0.1"), Region: "r-a", InstanceASN: testASN,
		VBRs: []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: f.router(), LocalAddress: f.gw(), PeerASN: 65010,
			LinkAddresses: []netip.Prefix{mp(f.gwLink)}}},
		InstanceCIDRs: instanceCIDRs(), ProtectedPrefixes: []netip.Prefix{mp("100.64.0.1/32")}}
	// BIRD loads its static routes first, so the receivers' clocks (from
	// session up) time BGP, not BIRD parsing its config.
	sock := startBIRD(b, nsOp, birdBulkConf(n, f))
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
	return h.waitFor(180*time.Second, fmt.Sprintf("%d %s routes (plain=%v)", n, f.name, plain), func(s helperState) bool {
		return s.Count >= n && s.HeapNow > 0
	})
}

// ipBatch times `ip -batch` installing prefixes in a fresh namespace: the
// kernel side a gateway's dataplane adds on top of routing.
func ipBatch(b *testing.B, prefixes []netip.Prefix) time.Duration {
	l := newLab(b)
	d, err := fibbench.IPBatch(l.netns("fib"), prefixes, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// birdRun is one family's figures of BenchmarkBIRD100k.
type birdRun struct {
	gobgp, speaker, fib time.Duration
	heap, rss, baseHeap float64
}

// birdFamily measures family f: bare GoBGP and the Speaker receiving
// benchPrefixes from BIRD, and ip -batch installing them.
func birdFamily(b *testing.B, f bulkFamily) birdRun {
	base := birdReceive(b, benchPrefixes, true, f)
	sp := birdReceive(b, benchPrefixes, false, f)
	return birdRun{
		gobgp:    base.LastAt.Sub(base.UpAt),
		speaker:  sp.LastAt.Sub(sp.UpAt),
		fib:      ipBatch(b, f.prefixes(benchPrefixes)),
		heap:     float64(int64(sp.HeapNow)-int64(sp.HeapStart)) / benchPrefixes,
		rss:      float64(int64(sp.RSSNow)-int64(sp.RSSStart)) / benchPrefixes,
		baseHeap: float64(int64(base.HeapNow)-int64(base.HeapStart)) / benchPrefixes,
	}
}

// BenchmarkBIRD100k: BIRD 2 announces 100,000 prefixes to the Speaker
// running alone in its own process and namespace; beside it the time bare
// GoBGP takes to receive them and `ip -batch` takes to install them; and
// the Speaker process's heap and RSS per route.
func BenchmarkBIRD100k(b *testing.B) {
	testutil.RequireRoot(b)
	for range b.N {
		for _, f := range []bulkFamily{bulk4, bulk6} {
			r := birdFamily(b, f)
			fmt.Printf(`
routing benchmark with BIRD 2 (100,000 %s prefixes, eBGP over a veth between namespaces, each receiver alone in its process)
  bare GoBGP receives 100k (baseline):        %8.2fs   (from session up; heap %0.f B/route)
  ip -batch installs 100k routes (baseline):  %8.2fs
  opencen Speaker delivers 100k as learned:   %8.2fs   (%.2fx GoBGP; target: with the FIB, within 2x of %.2fs and under 10s)
  Speaker process heap per route:             %8.0f B   %s
  Speaker process RSS per route:              %8.0f B   %s
`, f.name, r.gobgp.Seconds(), r.baseHeap, r.fib.Seconds(), r.speaker.Seconds(), r.speaker.Seconds()/r.gobgp.Seconds(),
				r.gobgp.Seconds()+r.fib.Seconds(), r.heap, f.memoryTarget, r.rss, f.memoryTarget)
			// IPv4's metric names carry no suffix, IPv6's a "6".
			sfx := ""
			if f.name == "ipv6" {
				sfx = "6"
			}
			b.ReportMetric(r.gobgp.Seconds(), "gobgp"+sfx+"-s")
			b.ReportMetric(r.fib.Seconds(), "ipbatch"+sfx+"-s")
			b.ReportMetric(r.speaker.Seconds(), "speaker"+sfx+"-s")
			b.ReportMetric(r.heap, "heap"+sfx+"-B/route")
			b.ReportMetric(r.rss, "rss"+sfx+"-B/route")
		}
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
