package shaping

import (
	"fmt"
	"testing"

	"github.com/opencen/opencen/internal/testutil"
)

// accuracyCases are the allocations and flow counts.
var accuracyCases = []struct {
	rate  Rate
	flows int
}{
	{10 * Mbps, 1}, {10 * Mbps, 4},
	{100 * Mbps, 1}, {100 * Mbps, 4},
	{500 * Mbps, 1}, {500 * Mbps, 4},
}

// TestTCPGoodput runs iperf3 through the forwarding gateway for 10 s per
// case and wants goodput within 0.95-1.00 of the allocation.
func TestTCPGoodput(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping: 60 s of iperf3 in -short mode")
	}
	p := newPath(t)
	s := p.shaper(t, ModeQueue)
	iperfServer(t, p.dst, 5201)
	for _, c := range accuracyCases {
		t.Run(fmt.Sprintf("%s-%dflows", c.rate, c.flows), func(t *testing.T) {
			if err := s.Set(pathDesired(c.rate, 0)); err != nil {
				t.Fatal(err)
			}
			bps, err := iperf(p.src, "10.201.0.1", 5201, 10, c.flows)
			if err != nil {
				t.Fatal(err)
			}
			ratio := bps / float64(c.rate)
			t.Logf("allocation %s, %d flows: goodput %.2f Mbps, ratio %.4f", c.rate, c.flows, bps/1e6, ratio)
			if ratio < 0.95 || ratio > 1.0 {
				t.Errorf("goodput ratio %.4f outside 0.95-1.00", ratio)
			}
		})
	}
}
