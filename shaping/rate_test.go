package shaping

import (
	"testing"
	"time"
)

func TestBurstBytes(t *testing.T) {
	cases := []struct {
		rate Rate
		mtu  int
		want uint64
	}{
		{Kbps, 1420, 1420},             // floor: one full packet
		{Mbps, 1500, 1500},             // 1250 < 1500
		{10 * Mbps, 1500, 12500},       // 10 ms
		{500 * Mbps, 1420, 625000},     // 10 ms
		{1_500_000_000, 1420, 1875000}, // 1.5 Gbps
	}
	for _, c := range cases {
		if got := BurstBytes(c.rate, c.mtu); got != c.want {
			t.Errorf("BurstBytes(%s, %d) = %d, want %d", c.rate, c.mtu, got, c.want)
		}
	}
	if got := QueueBytes(10*Mbps, 100*time.Millisecond); got != 125000 {
		t.Errorf("QueueBytes(10Mbps, 100ms) = %d, want 125000", got)
	}
}

func TestRateString(t *testing.T) {
	for r, want := range map[Rate]string{0: "unlimited", Kbps: "1Kbps", 60 * Mbps: "60Mbps", 2 * Gbps: "2Gbps", 1500: "1500bps"} {
		if got := r.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint64(r), got, want)
		}
	}
}
