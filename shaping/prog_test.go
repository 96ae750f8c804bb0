package shaping

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/opencen/opencen/internal/testutil"
)

// Return codes of the program (TCX_NEXT, TCX_DROP) as BPF_PROG_TEST_RUN
// reports them.
const (
	retNext = 0xffffffff
	retDrop = 2
)

// skbCtx mirrors struct __sk_buff (192 bytes) for BPF_PROG_TEST_RUN.
type skbCtx [48]uint32

const (
	ctxPriority       = 8
	ctxIngressIfindex = 9
	ctxGSOSegs        = 41
	ctxGSOSize        = 44
)

// fixture is a Shaper attached to a device of its own namespace, driven
// through BPF_PROG_TEST_RUN: the production program, maps and Set.
type fixture struct {
	t  *testing.T
	s  *Shaper
	ns *testNS
	l3 bool
}

// newFixture makes a veth (Ethernet, l3 false) or a TUN (L3, l3 true)
// device in a fresh namespace and a Shaper on it.
func newFixture(t *testing.T, l3 bool, mode Mode) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	ns := newNS(t)
	dev := "ocsh" + testutil.Suffix(3)
	if l3 {
		ns.sh(t, "ip tuntap add dev "+dev+" mode tun")
	} else {
		ns.sh(t, "ip link add "+dev+" type veth peer name "+dev+"p")
	}
	ns.sh(t, "ip link set "+dev+" mtu 1500")
	f := &fixture{t: t, ns: ns, l3: l3}
	dir := pinDir(t)
	err := ns.do(func() error {
		var err error
		f.s, err = New(Options{Interface: dev, PinPath: dir, Mode: mode})
		return err
	})
	if err != nil {
		t.Fatalf("new shaper: %v", err)
	}
	t.Cleanup(func() { f.s.Close(true) })
	return f
}

// pkt is an IP packet of total IP length size.
type pkt struct {
	src, dst     string
	proto        byte // 6 TCP, 17 UDP, 1 ICMP
	sport, dport uint16
	size         int
}

func (p pkt) ip() []byte {
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	size := p.size
	if p.proto == 0 {
		p.proto = 17
	}
	if src.Is4() {
		size = max(size, 20+20)
		b := make([]byte, size)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(size))
		b[8] = 64
		b[9] = p.proto
		s4, d4 := src.As4(), dst.As4()
		copy(b[12:], s4[:])
		copy(b[16:], d4[:])
		binary.BigEndian.PutUint16(b[20:], p.sport)
		binary.BigEndian.PutUint16(b[22:], p.dport)
		if p.proto == 6 {
			b[32] = 5 << 4
		}
		return b
	}
	size = max(size, 40+20)
	b := make([]byte, size)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(size-40))
	b[6] = p.proto
	b[7] = 64
	s16, d16 := src.As16(), dst.As16()
	copy(b[8:], s16[:])
	copy(b[24:], d16[:])
	binary.BigEndian.PutUint16(b[40:], p.sport)
	binary.BigEndian.PutUint16(b[42:], p.dport)
	if p.proto == 6 {
		b[52] = 5 << 4
	}
	return b
}

// frame is what the device carries: the IP packet, behind an Ethernet
// header on veth.
func (f *fixture) frame(p pkt) []byte {
	b := p.ip()
	if f.l3 {
		return b
	}
	eth := make([]byte, 14, 14+len(b))
	if b[0]>>4 == 4 {
		eth[12], eth[13] = 0x08, 0x00
	} else {
		eth[12], eth[13] = 0x86, 0xdd
	}
	return append(eth, b...)
}

// run passes p through the program at clock now (ns) and returns the
// verdict and the skb priority it left.
func (f *fixture) run(p pkt, now uint64) (uint32, uint32) {
	f.t.Helper()
	return f.runCtx(f.frame(p), now, skbCtx{})
}

func (f *fixture) runCtx(data []byte, now uint64, in skbCtx) (uint32, uint32) {
	f.t.Helper()
	if err := f.s.objs.ClockOverride.Set(now); err != nil {
		f.t.Fatal(err)
	}
	var out skbCtx
	ret, err := f.s.objs.OcshShape.Run(&ebpf.RunOptions{Data: data, Context: in, ContextOut: &out})
	if err != nil {
		f.t.Fatalf("prog run: %v", err)
	}
	return ret, out[ctxPriority]
}

func (f *fixture) set(d Desired) {
	f.t.Helper()
	if err := f.s.Set(d); err != nil {
		f.t.Fatalf("set: %v", err)
	}
}

func (f *fixture) counters() map[string]Counters {
	f.t.Helper()
	c, err := f.s.Counters()
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func classifyDesired() Desired {
	return Desired{
		Regions: map[string]Rate{"r-a": 100 * Mbps, "r-b": 200 * Mbps, "r-free": 0},
		Prefixes: map[netip.Prefix]string{
			mustPrefix("10.0.0.0/8"):      "r-a",
			mustPrefix("10.1.0.0/16"):     "r-b",
			mustPrefix("10.1.2.0/24"):     "home",
			mustPrefix("10.9.0.0/16"):     "r-free",
			mustPrefix("fd00:1::/32"):     "r-a",
			mustPrefix("fd00:1:2::/48"):   "r-b",
			mustPrefix("fd00:1:2:3::/64"): "home",
		},
	}
}

func TestProgClassification(t *testing.T) {
	for _, l3 := range []bool{false, true} {
		name := "ethernet"
		if l3 {
			name = "l3"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, l3, ModeQueue)
			f.set(classifyDesired())
			ida, idb := f.s.mirror.ids["r-a"], f.s.mirror.ids["r-b"]
			cases := []struct {
				dst      string
				region   string // "" = untouched, not counted
				priority uint32
			}{
				{"192.168.0.1", "", 0},                 // no prefix: not CEN traffic
				{"10.5.5.5", "r-a", smallClassID(ida)}, // /8
				{"10.1.5.5", "r-b", smallClassID(idb)}, // longer /16 wins
				{"10.1.2.3", "", 0},                    // /24 of the home region: untouched
				{"10.9.0.1", "r-free", 0},              // unlimited: counted, never stamped
				{"fd00:1:9::1", "r-a", smallClassID(ida)},
				{"fd00:1:2:9::1", "r-b", smallClassID(idb)},
				{"fd00:1:2:3::1", "", 0},
				{"fd00:9::1", "", 0},
			}
			// A full-size packet goes to the region's bulk class.
			if _, prio := f.run(pkt{src: "10.100.0.1", dst: "10.5.5.5", size: 1000}, uint64(time.Second)/2); prio != bulkClassID(ida) {
				t.Errorf("1000-byte packet: priority %#x, want bulk class %#x", prio, bulkClassID(ida))
			}
			for i, c := range cases {
				src := "10.100.0.1"
				if netip.MustParseAddr(c.dst).Is6() {
					src = "fd00:100::1"
				}
				start := f.counters()
				ret, prio := f.run(pkt{src: src, dst: c.dst, size: 100}, uint64(i+1)*uint64(time.Second))
				after := f.counters()
				if ret != retNext {
					t.Errorf("%s: verdict %#x, want pass (TCX_NEXT)", c.dst, ret)
				}
				if prio != c.priority {
					t.Errorf("%s: priority %#x, want %#x", c.dst, prio, c.priority)
				}
				for region, a := range after {
					want := start[region]
					if region == c.region {
						want.PassedPackets++
						want.PassedBytes += 100
					}
					if a != want {
						t.Errorf("%s: counters of %s = %+v, want %+v", c.dst, region, a, want)
					}
				}
			}
		})
	}
}

// TestProgBucket checks refill and exhaustion against numbers computed by
// hand from the burst formula, in police and queue mode.
func TestProgBucket(t *testing.T) {
	const sec = uint64(time.Second)
	t.Run("police", func(t *testing.T) {
		f := newFixture(t, false, ModePolice)
		// 1 Mbps = 125000 B/s; burst = max(1250, 1500) = 1500 bytes.
		f.set(Desired{Regions: map[string]Rate{"r-a": Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
		p := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000}
		now := 5 * sec
		steps := []struct {
			dt   uint64
			pass bool
		}{
			{0, true},               // full: 1500 -> 500
			{0, false},              // 500 < 1000
			{3_999_999, false},      // 500 + 499.999875 < 1000
			{1, true},               // exactly 1000 -> 0
			{0, false},              //
			{1 * sec, true},         // capped at 1500 -> 500
			{4 * 1000 * 1000, true}, // +500 -> 0
		}
		for i, s := range steps {
			now += s.dt
			ret, prio := f.run(p, now)
			if (ret == retNext) != s.pass {
				t.Fatalf("step %d: verdict %#x, want pass=%v", i, ret, s.pass)
			}
			if prio != 0 {
				t.Fatalf("step %d: police mode stamped priority %#x", i, prio)
			}
		}
		c := f.counters()["r-a"]
		if c.PassedPackets != 4 || c.DroppedPackets != 3 || c.PassedBytes != 4000 || c.DroppedBytes != 3000 {
			t.Fatalf("counters %+v, want 4 passed and 3 dropped 1000-byte packets", c)
		}
	})
	t.Run("queue", func(t *testing.T) {
		f := newFixture(t, true, ModeQueue)
		// burst 1500, debt allowed = 125000 * 100 ms = 12500 bytes.
		f.set(Desired{Regions: map[string]Rate{"r-a": Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
		p := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000}
		now := 5 * sec
		passed := 0
		for i := 0; i < 20; i++ {
			if ret, _ := f.run(p, now); ret == retNext {
				passed++
			}
		}
		// 1500 + 12500 = 14000 bytes of credit and debt: 14 packets.
		if passed != 14 {
			t.Fatalf("%d packets passed at one instant, want 14", passed)
		}
		// Debt is 12500; 8 ms later it is 11500: one more fits.
		now += 8 * 1000 * 1000
		if ret, _ := f.run(p, now); ret != retNext {
			t.Fatal("packet after refill dropped")
		}
		if ret, _ := f.run(p, now); ret != retDrop {
			t.Fatal("packet beyond the debt passed")
		}
	})
}

// TestProgGSO charges a GSO packet the IP headers of every segment and
// lets a GSO packet larger than burst+queue through a full bucket.
func TestProgGSO(t *testing.T) {
	f := newFixture(t, false, ModePolice)
	f.set(Desired{Regions: map[string]Rate{"r-a": Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
	// 3 segments of 1000 bytes payload: 40 + 3000 IP bytes in the skb,
	// 3*(40+1000) = 3120 on the wire, more than burst (1500).
	data := f.frame(pkt{src: "10.100.0.1", dst: "10.0.0.1", proto: 6, size: 3040})
	var ctx skbCtx
	ctx[ctxGSOSegs] = 3
	ctx[ctxGSOSize] = 1000
	const start = uint64(time.Second)
	if ret, _ := f.runCtx(data, start, ctx); ret != retNext {
		t.Fatal("oversize GSO packet on a full bucket dropped")
	}
	if c := f.counters()["r-a"]; c.PassedBytes != 3120 {
		t.Fatalf("charged %d bytes, want 3120", c.PassedBytes)
	}
	// The debt (3120-1500 = 1620 bytes) plus a 100-byte packet take
	// 13.76 ms to earn at 1 Mbps.
	small := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 100}
	if ret, _ := f.run(small, start+13_700_000); ret != retDrop {
		t.Fatal("packet passed while the bucket is in debt")
	}
	if ret, _ := f.run(small, start+13_800_000); ret != retNext {
		t.Fatal("packet dropped with the debt repaid")
	}
}

// TestProgLiveRateChange changes one region's rate with a map update: the
// new rate applies to the next packet, the bucket keeps its credit, the
// other region's bucket is untouched and the program is not reattached.
func TestProgLiveRateChange(t *testing.T) {
	f := newFixture(t, false, ModePolice)
	d := Desired{
		Regions:  map[string]Rate{"r-a": Mbps, "r-b": Mbps},
		Prefixes: map[netip.Prefix]string{mustPrefix("10.1.0.0/16"): "r-a", mustPrefix("10.2.0.0/16"): "r-b"},
	}
	f.set(d)
	const ms = uint64(time.Millisecond)
	now := uint64(time.Second)
	pa := pkt{src: "10.100.0.1", dst: "10.1.0.1", size: 1500}
	pb := pkt{src: "10.100.0.1", dst: "10.2.0.1", size: 1000}
	f.run(pa, now) // a: 1500 -> 0
	f.run(pb, now) // b: 1500 -> 500
	var stateB bpfBucketState
	if err := f.s.objs.OcshState.Lookup(f.s.mirror.ids["r-b"], &stateB); err != nil {
		t.Fatal(err)
	}
	progs := attachedIDs(t, f)

	d.Regions["r-a"] = 10 * Mbps // 1.25 MB/s, burst 12500
	f.set(d)
	// 1 ms at the new rate is 1250 bytes: not enough for 1500 ...
	if ret, _ := f.run(pa, now+ms); ret != retDrop {
		t.Fatal("1500 bytes passed after 1 ms at 10 Mbps")
	}
	// ... 1.2 ms is 1500 (at the old rate it would be 150).
	if ret, _ := f.run(pa, now+1200*1000); ret != retNext {
		t.Fatal("new rate not in effect")
	}
	var after bpfBucketState
	if err := f.s.objs.OcshState.Lookup(f.s.mirror.ids["r-b"], &after); err != nil {
		t.Fatal(err)
	}
	if after != stateB {
		t.Fatalf("bucket of r-b changed by r-a's rate change: %+v -> %+v", stateB, after)
	}
	if ret, _ := f.run(pb, now); ret != retDrop {
		t.Fatal("the change reset r-b's bucket")
	}
	if ids := attachedIDs(t, f); !slices.Equal(ids, progs) || len(ids) != 1 {
		t.Fatalf("program replaced (%v -> %v) by a rate change", progs, ids)
	}
}

// TestProgExcessBound drives a greedy sender of mixed sizes, with idle
// gaps that refill the bucket, and checks MaxExcessBytes over every window
// between two packets: what the program admits never exceeds rate*T by
// more, and from a full bucket it comes within a packet of burst plus
// queue (the rest of the bound is one oversize GSO packet, which this
// schedule does not send).
func TestProgExcessBound(t *testing.T) {
	f := newFixture(t, true, ModeQueue)
	const rate = Mbps
	f.set(Desired{Regions: map[string]Rate{"r-a": rate}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
	type admitted struct{ at, bytes uint64 }
	var log []admitted
	rng := rand.New(rand.NewPCG(1, 2))
	now := uint64(time.Second)
	for i := 0; i < 3000; i++ {
		size := 64 + rng.IntN(1500-64+1)
		if ret, _ := f.run(pkt{src: "10.100.0.1", dst: "10.0.0.1", size: size}, now); ret == retNext {
			log = append(log, admitted{now, uint64(size)})
		}
		now += uint64(rng.IntN(1_000_000)) // up to 1 ms: several times the rate
		if i%1000 == 999 {
			now += uint64(200 * time.Millisecond) // idle: the bucket fills
		}
	}
	bound := MaxExcessBytes(rate, 1500, DefaultQueueDelay)
	var worst int64
	for i := range log {
		var sum uint64
		for j := i; j < len(log); j++ {
			sum += log[j].bytes
			earned := uint64(rate) / 8 * (log[j].at - log[i].at) / uint64(time.Second)
			worst = max(worst, int64(sum)-int64(earned))
		}
	}
	t.Logf("%d packets admitted; worst excess over rate*T %d bytes, bound %d", len(log), worst, bound)
	if worst > int64(bound) {
		t.Fatalf("admitted %d bytes beyond rate*T in one window, more than MaxExcessBytes %d", worst, bound)
	}
	// Burst plus queue, less at most one packet that did not fit.
	if tight := int64(BurstBytes(rate, 1500) + QueueBytes(rate, DefaultQueueDelay) - 1500); worst < tight {
		t.Fatalf("worst excess %d bytes, want at least %d from a full bucket", worst, tight)
	}
}

// attachedIDs are the programs at the egress of the fixture's device.
func attachedIDs(t *testing.T, f *fixture) []ebpf.ProgramID {
	t.Helper()
	return tcxEgress(t, f.ns, f.s.devs[0].name)
}

// TestProgMatchesRateModel drives the program and the x/time/rate based
// Limiter with the same random schedule and wants the same verdict for
// every packet.
func TestProgMatchesRateModel(t *testing.T) {
	for _, mode := range []Mode{ModePolice, ModeQueue} {
		for _, r := range []Rate{Kbps, 2 * Mbps, 100 * Mbps} {
			t.Run(mode.String()+"-"+r.String(), func(t *testing.T) {
				f := newFixture(t, true, mode)
				d := Desired{Regions: map[string]Rate{"r-a": r}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}
				f.set(d)
				lim, err := NewLimiter(LimiterOptions{Mode: mode, MTU: 1500})
				if err != nil {
					t.Fatal(err)
				}
				if err := lim.Set(d); err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(uint64(r), uint64(mode)))
				// Mean gap chosen so the offered load is about four times
				// the rate: buckets fill, run into debt and refill.
				meanGap := float64(time.Second) * 8 * 800 / float64(r) / 4
				now := uint64(1_000_000_000) + uint64(time.Now().Unix())%1000
				agree, passed := 0, 0
				const n = 6000
				for i := 0; i < n; i++ {
					now += uint64(rng.ExpFloat64()*meanGap) + 1
					size := 40 + rng.IntN(1461)
					p := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: size}
					ret, _ := f.run(p, now)
					_, ok := lim.Admit(p.ip(), time.Unix(0, int64(now)))
					if (ret == retNext) != ok {
						t.Errorf("packet %d (size %d, t=%d): program pass=%v, x/time/rate pass=%v", i, size, now, ret == retNext, ok)
						if agree < i-5 {
							t.FailNow()
						}
						continue
					}
					agree++
					if ok {
						passed++
					}
				}
				if passed == 0 || passed == n {
					t.Fatalf("schedule did not exercise the bucket: %d of %d passed", passed, n)
				}
				t.Logf("%d/%d verdicts agree, %d passed", agree, n, passed)
			})
		}
	}
}

// TestProgPingAt1Kbps: at 1 Kbps a default ping (84 IP bytes) every second
// always gets through, over a simulated minute.
func TestProgPingAt1Kbps(t *testing.T) {
	f := newFixture(t, true, ModeQueue)
	f.set(Desired{Regions: map[string]Rate{"r-a": Kbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
	for i := uint64(1); i <= 60; i++ {
		if ret, _ := f.run(pkt{src: "10.100.0.1", dst: "10.0.0.1", proto: 1, size: 84}, i*uint64(time.Second)); ret != retNext {
			t.Fatalf("ping %d dropped", i)
		}
	}
}

// TestProgConcurrentCharges charges one bucket from two goroutines (two
// CPUs) at once with the clock stopped: exactly burst/size packets pass,
// none twice, none lost.
func TestProgConcurrentCharges(t *testing.T) {
	f := newFixture(t, true, ModePolice)
	// 1 Gbps: burst = 1,250,000 bytes = 12,500 packets of 100 bytes.
	f.set(Desired{Regions: map[string]Rate{"r-a": Gbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}})
	if err := f.s.objs.ClockOverride.Set(uint64(time.Second)); err != nil {
		t.Fatal(err)
	}
	data := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 100}.ip()
	const perWorker = 500000
	errc := make(chan error, 2)
	for w := 0; w < 2; w++ {
		go func() {
			_, err := f.s.objs.OcshShape.Run(&ebpf.RunOptions{Data: data, Repeat: perWorker})
			errc <- err
		}()
	}
	for w := 0; w < 2; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	c := f.counters()["r-a"]
	if c.PassedPackets != 12500 || c.DroppedPackets != 2*perWorker-12500 {
		t.Fatalf("passed %d, dropped %d; want exactly 12500 and %d", c.PassedPackets, c.DroppedPackets, 2*perWorker-12500)
	}
}

// TestSetRateBounds: the highest rate fits the 64-bit bucket; a rate and
// queue that would overflow it are refused with an error naming both.
func TestSetRateBounds(t *testing.T) {
	f := newFixture(t, true, ModeQueue)
	pfx := map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}
	f.set(Desired{Regions: map[string]Rate{"r-a": MaxRate}, Prefixes: pfx})
	var got bpfBucketCfg
	if err := f.s.objs.OcshCfg.Lookup(f.s.mirror.ids["r-a"], &got); err != nil {
		t.Fatal(err)
	}
	if got.Rate != uint64(MaxRate) || got.Burst+got.Queue > maxCreditBytes*unitsPerByte {
		t.Fatalf("bucket at MaxRate: %+v", got)
	}
	err := f.s.Set(Desired{Regions: map[string]Rate{"r-a": MaxRate + 1}, Prefixes: pfx})
	if err == nil || !strings.Contains(err.Error(), "above the maximum") {
		t.Fatalf("rate above MaxRate: err %v", err)
	}
}

// TestProgRateDecreaseDropsOldDebt: a queue-mode bucket deep in debt at a
// high rate must not make its region wait for that debt at a much lower
// rate (a ping must pass at 1 Kbps right after a change from 10 Mbps).
func TestProgRateDecreaseDropsOldDebt(t *testing.T) {
	f := newFixture(t, true, ModeQueue)
	d := Desired{Regions: map[string]Rate{"r-a": 10 * Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}
	f.set(d)
	now := uint64(time.Second)
	bulk := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1500}
	for i := 0; i < 200; i++ { // run up the debt: 125 KB at 10 Mbps
		f.run(bulk, now)
	}
	d.Regions["r-a"] = Kbps
	f.set(d)
	ping := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 84}
	if ret, _ := f.run(ping, now+uint64(time.Second)); ret != retNext {
		t.Fatal("a ping waits for debt run up at the old, higher rate")
	}
}

// TestProgForgetsStaleClass: a packet the program does not shape that
// arrives with one of our HTB classes in skb->priority (an encapsulated
// packet keeping its inner packet's class, a socket's SO_PRIORITY) leaves
// with none, or HTB would queue it in a region's class. A priority that
// is not ours is left alone.
func TestProgForgetsStaleClass(t *testing.T) {
	f := newFixture(t, true, ModeQueue)
	f.set(classifyDesired())
	stale := bulkClassID(f.s.mirror.ids["r-a"])
	for _, c := range []struct {
		what     string
		dst      string
		in, want uint32
	}{
		{"not CEN traffic, our class", "192.168.0.1", stale, 0},
		{"home region, our class", "10.1.2.3", stale, 0},
		{"unlimited region, our class", "10.9.0.1", stale, 0},
		{"not CEN traffic, someone else's priority", "192.168.0.1", 0x10002, 0x10002},
		{"shaped region, our stale class replaced", "10.5.5.5", smallClassID(f.s.mirror.ids["r-b"]), smallClassID(f.s.mirror.ids["r-a"])},
	} {
		var in skbCtx
		in[ctxPriority] = c.in
		_, prio := f.runCtx(f.frame(pkt{src: "10.100.0.1", dst: c.dst, size: 100}), uint64(time.Second), in)
		if prio != c.want {
			t.Errorf("%s: priority %#x -> %#x, want %#x", c.what, c.in, prio, c.want)
		}
	}
}
