package agent

import (
	"testing"
	"time"

	"github.com/opencen/opencen/shaping"
)

func TestRateTracker(t *testing.T) {
	rt := newRateTracker()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if s := rt.snapshot(); !s.at.IsZero() || len(s.rates) != 0 {
		t.Fatalf("fresh tracker: %+v, want no sample", s)
	}
	rt.observe(t0, map[string]shaping.Counters{"r-a": {PassedBytes: 1000}, "r-b": {PassedBytes: 5000}})
	// 2.5 MB in 2 s is 10 Mbps; r-b's counter went back (a new shaper): 0,
	// never a huge unsigned difference.
	t1 := t0.Add(2 * time.Second)
	rt.observe(t1, map[string]shaping.Counters{"r-a": {PassedBytes: 2_501_000}, "r-b": {PassedBytes: 10}, "r-c": {PassedBytes: 7}})
	s := rt.snapshot()
	if s.rates["r-a"] != 10e6 || s.rates["r-b"] != 0 || s.rates["r-c"] != 0 {
		t.Fatalf("rates %v, want r-a 10 Mbps and 0 for the others", s.rates)
	}
	if !s.at.Equal(t1) || s.counters["r-a"].PassedBytes != 2_501_000 {
		t.Fatalf("sample at %v with %+v, want the counters read at %v", s.at, s.counters, t1)
	}
	// A region left out of the shaping leaves the rates.
	rt.observe(t1.Add(time.Second), map[string]shaping.Counters{"r-a": {PassedBytes: 2_501_000}})
	if s := rt.snapshot(); len(s.rates) != 1 || s.rates["r-a"] != 0 {
		t.Fatalf("rates %v, want only r-a, idle", s.rates)
	}
}
