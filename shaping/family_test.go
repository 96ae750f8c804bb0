package shaping

import (
	"net/netip"
	"testing"
	"time"
)

// bothFamilies is one region holding an IPv4 and an IPv6 prefix at 1 Mbps:
// a bucket of 1500 bytes, charged by both families alike.
var bothFamilies = Desired{
	Regions:  map[string]Rate{"r-a": Mbps},
	Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a", mustPrefix("fd00:a::/48"): "r-a"},
}

// TestProgBothFamiliesShareOneBucket: an IPv6 packet toward a region is
// charged to the bucket an IPv4 packet toward it just drew from (one pair,
// one budget), and one refill later the IPv4 packet pays for the IPv6 one.
func TestProgBothFamiliesShareOneBucket(t *testing.T) {
	f := newFixture(t, false, ModePolice)
	f.set(bothFamilies)
	v4 := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000}
	v6 := pkt{src: "fd00:100::1", dst: "fd00:a::1", size: 1000}
	now := 5 * uint64(time.Second)
	for i, s := range []struct {
		p    pkt
		dt   uint64
		pass bool
	}{
		{v4, 0, true},  // 1500 -> 500
		{v6, 0, false}, // 500 left: the IPv4 packet spent the rest
		{v6, 4_000_000, true},
		{v4, 0, false},
	} {
		now += s.dt
		if ret, _ := f.run(s.p, now); (ret == retNext) != s.pass {
			t.Fatalf("step %d (%s): verdict %#x, want pass=%v", i, s.p.dst, ret, s.pass)
		}
	}
	if c := f.counters()["r-a"]; c.PassedPackets != 2 || c.DroppedPackets != 2 {
		t.Fatalf("counters %+v, want both families counted in one region: 2 passed, 2 dropped", c)
	}
}

// TestLimiterBothFamiliesShareOneBucket: the userspace limiter charges
// both families to one bucket per region, as the program does.
func TestLimiterBothFamiliesShareOneBucket(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{Mode: ModePolice, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Set(bothFamilies); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	v4 := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000}.ip()
	v6 := pkt{src: "fd00:100::1", dst: "fd00:a::1", size: 1000}.ip()
	if _, ok := l.Admit(v4, t0); !ok {
		t.Fatal("IPv4 packet dropped by a full bucket")
	}
	if _, ok := l.Admit(v6, t0); ok {
		t.Fatal("IPv6 packet passed: it drew on a bucket of its own, not the IPv4 one's")
	}
	if _, ok := l.Admit(v6, t0.Add(4*time.Millisecond)); !ok {
		t.Fatal("IPv6 packet dropped after 4 ms of refill at 1 Mbps")
	}
	if c, _ := l.Counters(); c["r-a"].PassedPackets != 2 || c["r-a"].DroppedPackets != 1 {
		t.Fatalf("counters %+v, want 2 passed and 1 dropped in one region", c["r-a"])
	}
}
