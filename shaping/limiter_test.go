package shaping

import (
	"net/netip"
	"testing"
	"time"
)

func TestPrefixTableLongestMatch(t *testing.T) {
	tab := newPrefixTable(map[netip.Prefix]string{
		mustPrefix("10.0.0.0/8"):  "a",
		mustPrefix("10.1.0.0/16"): "b",
		mustPrefix("10.1.2.0/24"): "c",
		mustPrefix("fd00::/16"):   "a",
		mustPrefix("fd00:1::/32"): "b",
		mustPrefix("0.0.0.0/0"):   "default",
	})
	for addr, want := range map[string]string{
		"10.9.9.9": "a", "10.1.9.9": "b", "10.1.2.9": "c", "192.0.2.1": "default",
		"fd00:2::1": "a", "fd00:1::1": "b", "::ffff:10.1.2.3": "c",
	} {
		got, ok := tab.lookup(mustAddr(addr))
		if !ok || got != want {
			t.Errorf("lookup(%s) = %q, %v; want %q", addr, got, ok, want)
		}
	}
	if _, ok := tab.lookup(mustAddr("2001:db8::1")); ok {
		t.Error("lookup(2001:db8::1) matched with no IPv6 default")
	}
}

// The fallback's semantics, without root: classification, exemption, the
// bucket, and the queue mode's delays.
func TestLimiter(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{Mode: ModePolice, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	d := Desired{
		Regions:      map[string]Rate{"r-a": Mbps},
		Prefixes:     map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a", mustPrefix("10.1.0.0/16"): "home"},
		ControlAddrs: []netip.Addr{mustAddr("10.0.0.1"), mustAddr("10.0.0.2")},
	}
	if err := l.Set(d); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	big := pkt{src: "10.100.0.1", dst: "10.5.0.1", size: 1000}.ip()
	if _, ok := l.Admit(big, t0); !ok {
		t.Fatal("first packet dropped by a full bucket")
	}
	if _, ok := l.Admit(big, t0); ok {
		t.Fatal("second packet passed a bucket of 500 bytes")
	}
	if _, ok := l.Admit(big, t0.Add(4*time.Millisecond)); !ok {
		t.Fatal("packet dropped after 4 ms of refill at 1 Mbps")
	}
	for _, p := range []pkt{
		{src: "10.100.0.1", dst: "10.1.0.1", size: 1400},                                   // home region
		{src: "10.100.0.1", dst: "192.168.0.1", size: 1400},                                // not CEN
		{src: "10.0.0.1", dst: "10.0.0.2", size: 1400},                                     // gateways
		{src: "10.0.0.2", dst: "10.0.0.1", proto: 6, sport: 179, dport: 40000, size: 1400}, // gateways' BGP
	} {
		if _, ok := l.Admit(p.ip(), t0.Add(4*time.Millisecond)); !ok {
			t.Errorf("untouched or exempt packet %+v dropped", p)
		}
	}
	c, _ := l.Counters()
	if c["r-a"].DroppedPackets != 1 || c["r-a"].PassedPackets != 4 {
		t.Fatalf("counters %+v, want 4 passed (2 shaped, 2 exempt) and 1 dropped", c["r-a"])
	}

	q, err := NewLimiter(LimiterOptions{MTU: 1500}) // ModeQueue, 100 ms
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Set(d); err != nil {
		t.Fatal(err)
	}
	var last time.Duration
	n := 0
	for {
		delay, ok := q.Admit(big, t0)
		if !ok {
			break
		}
		last = delay
		n++
	}
	// 1500 bytes of burst and 12500 of queue: 14 packets, the last one
	// waiting 12500 bytes at 125000 B/s = 100 ms.
	if n != 14 || last != 100*time.Millisecond {
		t.Fatalf("queue mode passed %d packets, last delayed %v; want 14 and 100ms", n, last)
	}
}

// TestLimiterRateDecreaseDropsOldDebt: as TestProgRateDecreaseDropsOldDebt
// for the program, a bucket deep in debt at 10 Mbps lets a ping through
// right after its rate drops to 1 Kbps, and not more than the new bound.
func TestLimiterRateDecreaseDropsOldDebt(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	d := Desired{Regions: map[string]Rate{"r-a": 10 * Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}
	if err := l.Set(d); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bulk := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1500}.ip()
	for i := 0; i < 200; i++ { // run up the debt: 125 KB at 10 Mbps
		l.Admit(bulk, now)
	}
	d.Regions["r-a"] = Kbps
	if err := l.Set(d); err != nil {
		t.Fatal(err)
	}
	tokens := l.buckets["r-a"].lim.TokensAt(now)
	if tokens < -12.5-1 || tokens > 0 {
		t.Fatalf("bucket at %.1f bytes after the drop to 1 Kbps, want the new debt bound, -12.5", tokens)
	}
	ping := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 84}.ip()
	if _, ok := l.Admit(ping, now.Add(time.Second)); !ok {
		t.Fatal("a ping waits for debt run up at the old, higher rate")
	}
}

func TestLimiterPing1Kbps(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Set(Desired{Regions: map[string]Rate{"r-a": Kbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}); err != nil {
		t.Fatal(err)
	}
	ping := pkt{src: "10.100.0.1", dst: "10.0.0.1", proto: 1, size: 84}.ip()
	for i := 0; i < 120; i++ {
		if _, ok := l.Admit(ping, time.Unix(int64(1000+i), 0)); !ok {
			t.Fatalf("ping %d dropped at 1 Kbps", i)
		}
	}
}
