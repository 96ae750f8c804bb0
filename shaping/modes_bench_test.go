package shaping

import (
	"slices"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
)

// modeBench is one shaping path on a tunnelPath: the program at tcx or tc
// on gwA's WireGuard device, or the userspace shaper wrapping its TUN.
type modeBench struct {
	b      *testing.B
	p      *tunnelPath
	mode   Path
	shaped *TUN // gwA's TUN, idle unless the mode is userspace
	s      *Shaper
}

// set makes the mode enforce d.
func (m *modeBench) set(d Desired) {
	m.b.Helper()
	if m.mode == PathUserspace {
		if err := m.shaped.Set(d); err != nil {
			m.b.Fatal(err)
		}
		return
	}
	if m.s == nil {
		if err := m.p.gwA.do(func() (err error) {
			m.s, err = New(Options{Interface: m.p.wgA, Attach: m.mode})
			return err
		}); err != nil {
			m.b.Fatal(err)
		}
	}
	if err := m.s.Set(d); err != nil {
		m.b.Fatal(err)
	}
}

// clear takes the mode's shaper away: no program, or an idle TUN (one
// atomic load a read).
func (m *modeBench) clear() {
	m.b.Helper()
	if m.s != nil {
		if err := m.s.Close(true); err != nil {
			m.b.Fatal(err)
		}
		m.s = nil
	}
	if err := m.shaped.Set(Desired{}); err != nil {
		m.b.Fatal(err)
	}
}

func (m *modeBench) iperf(secs int) float64 {
	m.b.Helper()
	bps, err := iperf(m.p.src, "10.212.0.1", 5201, secs, 1)
	if err != nil {
		m.b.Fatal(err)
	}
	return bps
}

// BenchmarkModes measures each shaping path (tcx, tc, userspace) on the
// same WireGuard tunnel (wireguard-go on a TUN, as on hosts without the
// kernel module), each figure beside a baseline of the same run: TCP
// goodput at 100 Mbps as a share of the allocation; p99 ping RTT while
// that flow fills the allocation, beside the idle tunnel's; and the
// throughput of one flow to an unlimited region with the path's shaper in
// place (the program attached, or the userspace buckets set and
// classifying), against without it (no program; the helper's shaper
// idle), as the median of 5 pairs' ratios, each pair back to back in
// alternating order.
func BenchmarkModes(b *testing.B) {
	testutil.RequireRoot(b)
	p, shaped := userspaceTunnel(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idle, _ := pingP99(p.src, "10.212.0.1", 200)
		b.Logf("idle tunnel: p99 RTT %s", idle.Round(10*time.Microsecond))
		b.Logf("%-10s %8s %12s %20s %8s   target: goodput 0.95-1.00; unlimited ratio >= 0.95 (tcx, tc), 0.90 (userspace)", "mode", "goodput", "p99 RTT", "unlimited with/without", "ratio")
		for _, mode := range []Path{PathTCX, PathTC, PathUserspace} {
			m := &modeBench{b: b, p: p, mode: mode, shaped: shaped}
			benchMode(m, idle)
		}
	}
}

func benchMode(m *modeBench, idle time.Duration) {
	b, mode := m.b, string(m.mode)
	const rate = 100 * Mbps
	m.set(tunnelDesired(rate))
	goodput := m.iperf(8) / float64(rate)
	done := make(chan float64, 1)
	go func() { bps, _ := iperf(m.p.src, "10.212.0.1", 5201, 7, 1); done <- bps }()
	time.Sleep(1500 * time.Millisecond)
	p99, loss := pingP99(m.p.src, "10.212.0.1", 400)
	<-done
	m.clear()

	const pairs = 5
	var ratios []float64
	var with, without float64
	for r := range pairs {
		measure := func(on bool) float64 {
			if on {
				m.set(tunnelDesired(0))
				defer m.clear()
			}
			return m.iperf(3)
		}
		var w, wo float64
		if r%2 == 0 {
			wo, w = measure(false), measure(true)
		} else {
			w, wo = measure(true), measure(false)
		}
		with, without = with+w/pairs, without+wo/pairs
		ratios = append(ratios, w/wo)
	}
	slices.Sort(ratios)
	ratio := ratios[pairs/2]
	b.Logf("%-10s %8.4f %12s %9.0f/%-6.0f Mbps %8.3f   (ping loss under load %.1f%%; pair ratios %.3f)",
		mode, goodput, p99.Round(10*time.Microsecond), with/1e6, without/1e6, ratio, loss*100, ratios)
	b.ReportMetric(goodput, mode+"-goodput-ratio")
	b.ReportMetric(float64(p99.Microseconds())/1000, mode+"-p99ms-load")
	b.ReportMetric(float64(idle.Microseconds())/1000, mode+"-p99ms-idle")
	b.ReportMetric(with/1e6, mode+"-unlimited-with-Mbps")
	b.ReportMetric(without/1e6, mode+"-unlimited-without-Mbps")
	b.ReportMetric(ratio, mode+"-unlimited-ratio")
}
