package shaping

import (
	"math"
	"testing"
)

// TestAllocate walks the balancer's division of a region's rate between
// two devices through the cases it exists for. No root needed.
func TestAllocate(t *testing.T) {
	const floor = 0.1
	for _, c := range []struct {
		name      string
		cur, sent []float64
		want      []float64
	}{
		// One device carries everything: it keeps the whole rate, the
		// idle one falls toward the floor.
		{"one active", []float64{1, 1}, []float64{0.99, 0}, []float64{1, 0.9}},
		{"one active, other at floor", []float64{1, 0.1}, []float64{0.99, 0}, []float64{1, 0.1}},
		// Split traffic, both below full shares, the rate all used: the
		// bucket polices them; each gets what it sends, so the HTBs queue.
		{"policer", []float64{1, 1}, []float64{0.6, 0.37}, []float64{0.6 / 0.97, 0.37 / 0.97}},
		// Both held by their ceilings: equal halves.
		{"both busy", []float64{0.62, 0.38}, []float64{0.62, 0.37}, []float64{0.5, 0.5}},
		// A new flow on the idle device fills its floor: it is busy; the
		// other, above the fair level, is cut to it.
		{"new flow", []float64{1, 0.1}, []float64{0.9, 0.1}, []float64{0.5, 0.5}},
		// A light flow well within its share and a greedy one: the light
		// one keeps room, the greedy one gets the rest of the rate.
		{"light and greedy", []float64{0.5, 0.5}, []float64{0.5, 0.2}, []float64{0.8, 0.5}},
		// The same with the rate all in use.
		{"light and greedy, full", []float64{0.75, 0.3}, []float64{0.74, 0.25}, []float64{0.75, 0.3125}},
		// Spare rate: a device below its share may take all of it.
		{"spare", []float64{0.5, 0.5}, []float64{0.1, 0.1}, []float64{0.9, 0.9}},
		// An idle region is back to full shares.
		{"idle", []float64{0.1, 0.5}, []float64{0, 0}, []float64{1, 1}},
	} {
		got := allocate(c.cur, c.sent, floor)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 1e-9 {
				t.Errorf("%s: allocate(%v, %v) = %v, want %v", c.name, c.cur, c.sent, got, c.want)
				break
			}
		}
	}
}
