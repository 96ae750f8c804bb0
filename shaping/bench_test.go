package shaping

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/opencen/opencen/internal/testutil"
)

// The benchmarks each measure once per invocation (make bench-shaping runs
// -benchtime 1x) and print every figure beside its same-run baseline and
// target: the machine is shared, so only same-run ratios mean anything.

func benchShaper(b *testing.B, p *path, mode Mode) *Shaper {
	b.Helper()
	var s *Shaper
	dir := pinDir(b)
	if err := p.gw.do(func() error {
		var err error
		s, err = New(Options{Interface: p.gwOut, PinPath: dir, Mode: mode})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(true) })
	return s
}

// tcBaseline installs a tbf or htb root qdisc at rate on gw's device and
// returns a function that removes it. tbf gets the shaper's burst and the
// shaper's queue bound as latency; htb gets tc's defaults.
func tcBaseline(b *testing.B, p *path, kind string, rate Rate) func() {
	b.Helper()
	dev := p.gwOut
	switch kind {
	case "tbf":
		burst := BurstBytes(rate, 1500) + 14
		p.gw.sh(b, fmt.Sprintf("tc qdisc replace dev %s root tbf rate %dbit burst %d latency %dms", dev, uint64(rate), burst, DefaultQueueDelay.Milliseconds()))
	case "htb", "htb-ip":
		if kind == "htb-ip" {
			// The rate that gives a 1500-byte IP packet the allocation
			// once HTB has charged its 14-byte Ethernet header.
			rate = rate * 1514 / 1500
		}
		p.gw.sh(b, "tc qdisc replace dev "+dev+" root handle 1: htb default 1")
		p.gw.sh(b, fmt.Sprintf("tc class add dev %s parent 1: classid 1:1 htb rate %dbit ceil %dbit", dev, uint64(rate), uint64(rate)))
	}
	return func() { p.gw.run("tc qdisc del dev " + dev + " root") }
}

// BenchmarkGoodput: for each allocation and flow count, iperf3 goodput
// over 10 s as a ratio of the allocation, for the shaper beside tc tbf and
// htb at the same rate on the same path (and the pure policer for the
// single-flow cases, the option the design rejected). tc charges the
// 14-byte Ethernet header on veth and the shaper charges IP bytes, so the
// htb-ip column runs htb at rate*1514/1500, the like-for-like rate for
// full-size packets; the target is judged against tbf and htb as the
// issue sets them, at the same rate.
func BenchmarkGoodput(b *testing.B) {
	testutil.RequireRoot(b)
	p := newPath(b)
	iperfServer(b, p.dst, 5201)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.Logf("%-16s %8s %8s %8s %8s %8s   target: shaper in [0.95,1.00] and at least as close as the better of tbf/htb", "case", "shaper", "tbf", "htb", "htb-ip", "police")
		for _, c := range accuracyCases {
			name := fmt.Sprintf("%s/%dflows", c.rate, c.flows)
			run := func() float64 {
				bps, err := iperf(p.src, "10.201.0.1", 5201, 10, c.flows)
				if err != nil {
					b.Fatal(err)
				}
				return bps / float64(c.rate)
			}
			s := benchShaper(b, p, ModeQueue)
			if err := s.Set(pathDesired(c.rate, 0)); err != nil {
				b.Fatal(err)
			}
			ours := run()
			s.Close(true)
			var ratios [3]float64
			for j, kind := range []string{"tbf", "htb", "htb-ip"} {
				undo := tcBaseline(b, p, kind, c.rate)
				ratios[j] = run()
				undo()
			}
			police := "-"
			if c.flows == 1 {
				s := benchShaper(b, p, ModePolice)
				if err := s.Set(pathDesired(c.rate, 0)); err != nil {
					b.Fatal(err)
				}
				police = fmt.Sprintf("%.4f", run())
				s.Close(true)
			}
			best := max(min(ratios[0], 1), min(ratios[1], 1))
			verdict := "ok"
			if ours < 0.95 || ours > 1 || ours < best {
				verdict = "MISSED"
			}
			b.Logf("%-16s %8.4f %8.4f %8.4f %8.4f %8s   %s", name, ours, ratios[0], ratios[1], ratios[2], police, verdict)
			b.ReportMetric(ours, "ratio-"+c.rate.String()+"-"+strconv.Itoa(c.flows)+"f")
			b.ReportMetric(ratios[0], "tbf-ratio-"+c.rate.String()+"-"+strconv.Itoa(c.flows)+"f")
			b.ReportMetric(ratios[1], "htb-ratio-"+c.rate.String()+"-"+strconv.Itoa(c.flows)+"f")
		}
	}
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingP99 pings addr from src every 10 ms, count times, and returns the
// 99th percentile RTT and the loss.
func pingP99(src *testNS, addr string, count int) (time.Duration, float64) {
	out, _ := src.run(fmt.Sprintf("ping -c %d -i 0.01 -W 1 %s", count, addr))
	var rtts []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v)
	}
	if len(rtts) == 0 {
		return 0, 1
	}
	sort.Float64s(rtts)
	p99 := rtts[(len(rtts)*99)/100-boolInt(len(rtts)%100 == 0)]
	return time.Duration(p99 * float64(time.Millisecond)), 1 - float64(len(rtts))/float64(count)
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// BenchmarkLatencyUnderLoad: p99 ping RTT toward a region while one TCP
// flow fills its allocation, shaper beside htb at the same rate.
func BenchmarkLatencyUnderLoad(b *testing.B) {
	testutil.RequireRoot(b)
	p := newPath(b)
	iperfServer(b, p.dst, 5201)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.Logf("%-8s %14s %14s   target: shaper p99 <= htb p99", "rate", "shaper p99", "htb p99")
		for _, rate := range []Rate{10 * Mbps, 100 * Mbps, 500 * Mbps} {
			measure := func() (time.Duration, float64) {
				done := make(chan error, 1)
				go func() { _, err := iperf(p.src, "10.201.0.1", 5201, 7, 1); done <- err }()
				time.Sleep(1500 * time.Millisecond)
				d, loss := pingP99(p.src, "10.201.0.1", 400)
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				return d, loss
			}
			s := benchShaper(b, p, ModeQueue)
			if err := s.Set(pathDesired(rate, 0)); err != nil {
				b.Fatal(err)
			}
			ours, ourLoss := measure()
			s.Close(true)
			undo := tcBaseline(b, p, "htb", rate)
			htb, htbLoss := measure()
			undo()
			verdict := "ok"
			if ours > htb {
				verdict = "MISSED"
			}
			b.Logf("%-8s %14s %14s   %s (ping loss %.1f%% vs %.1f%%)", rate, ours.Round(10*time.Microsecond), htb.Round(10*time.Microsecond), verdict, ourLoss*100, htbLoss*100)
			b.ReportMetric(float64(ours.Microseconds())/1000, "p99ms-"+rate.String())
			b.ReportMetric(float64(htb.Microseconds())/1000, "htb-p99ms-"+rate.String())
		}
	}
}

// BenchmarkProgramCost: nanoseconds per packet of the shaper program
// through BPF_PROG_TEST_RUN with 1,000 and 100,000 prefixes, beside a
// program that parses the same way and only does the prefix lookup.
func BenchmarkProgramCost(b *testing.B) {
	testutil.RequireRoot(b)
	ns := newNS(b)
	dev := "ocsh" + testutil.Suffix(3)
	ns.sh(b, "ip link add "+dev+" type veth peer name "+dev+"p")
	var s *Shaper
	dir := pinDir(b)
	if err := ns.do(func() error {
		var err error
		s, err = New(Options{Interface: dev, PinPath: dir})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(true) })
	f := &fixture{s: s}
	data := f.frame(pkt{src: "10.100.0.1", dst: "10.0.0.1", proto: 6, sport: 40000, dport: 5201, size: 1500})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.Logf("%-10s %12s %12s %8s   target: ratio <= 1.5", "prefixes", "shaper", "lpm only", "ratio")
		for _, n := range []int{1000, 100000} {
			d := Desired{Regions: map[string]Rate{"r-a": MaxRate, "r-b": MaxRate}, Prefixes: map[netip.Prefix]string{}}
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			d.Prefixes[mustPrefix("10.0.0.0/24")] = "r-a"
			for len(d.Prefixes) < n {
				a := netip.AddrFrom4([4]byte{byte(11 + rng.IntN(100)), byte(rng.IntN(256)), byte(rng.IntN(256)), 0})
				d.Prefixes[netip.PrefixFrom(a, 16+rng.IntN(9)).Masked()] = "r-b"
			}
			if err := s.Set(d); err != nil {
				b.Fatal(err)
			}
			// Alternate the two programs, best of 15 each: the machine is
			// shared and its load changes by the second.
			var full, base time.Duration
			for k := 0; k < 15; k++ {
				for _, pr := range []struct {
					prog *ebpf.Program
					best *time.Duration
				}{{s.objs.OcshShape, &full}, {s.objs.OcshLpmOnly, &base}} {
					_, per, err := pr.prog.Benchmark(data, 100000, nil)
					if err != nil {
						b.Fatal(err)
					}
					if *pr.best == 0 || per < *pr.best {
						*pr.best = per
					}
				}
			}
			ratio := float64(full) / float64(base)
			verdict := "ok"
			if ratio > 1.5 {
				verdict = "MISSED"
			}
			b.Logf("%-10d %12s %12s %8.2f   %s", len(d.Prefixes), full, base, ratio, verdict)
			b.ReportMetric(float64(full.Nanoseconds()), fmt.Sprintf("ns/pkt-%d", n))
			b.ReportMetric(ratio, fmt.Sprintf("ratio-%d", n))
		}
	}
}

// BenchmarkUnlimitedOverhead: iperf3 throughput with the program attached
// and the destination region unlimited, against no program. One flow
// forwarded over veth moves with a shared machine's load far more than the
// program costs it, and a mean of a few pairs moves with it, so the figure
// is the median of 9 pairs' ratios, each pair measured back to back in
// alternating order.
func BenchmarkUnlimitedOverhead(b *testing.B) {
	testutil.RequireRoot(b)
	p := newPath(b)
	iperfServer(b, p.dst, 5201)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		measureWithout := func() float64 {
			bps, err := iperf(p.src, "10.201.0.1", 5201, 3, 1)
			if err != nil {
				b.Fatal(err)
			}
			return bps
		}
		measureWith := func() float64 {
			s := benchShaper(b, p, ModeQueue)
			defer s.Close(true)
			if err := s.Set(pathDesired(0, 0)); err != nil {
				b.Fatal(err)
			}
			bps, err := iperf(p.src, "10.201.0.1", 5201, 3, 1)
			if err != nil {
				b.Fatal(err)
			}
			c, _ := s.Counters()
			if c["r-a"].PassedPackets == 0 {
				b.Fatal("the program saw none of the traffic")
			}
			return bps
		}
		const pairs = 9
		var ratios []float64
		var with, without float64
		for r := range pairs {
			var w, wo float64
			if r%2 == 0 {
				wo = measureWithout()
				w = measureWith()
			} else {
				w = measureWith()
				wo = measureWithout()
			}
			with, without = with+w/pairs, without+wo/pairs
			ratios = append(ratios, w/wo)
		}
		slices.Sort(ratios)
		ratio := ratios[pairs/2]
		verdict := "ok"
		if ratio < 0.95 {
			verdict = "MISSED"
		}
		b.Logf("unlimited: with program %.0f Mbps, without %.0f Mbps (means of %d pairs); median pair ratio %.3f (target >= 0.95) %s; pair ratios %.3f",
			with/1e6, without/1e6, pairs, ratio, verdict, ratios)
		b.ReportMetric(ratio, "ratio")
	}
}
