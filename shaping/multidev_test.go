package shaping

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/internal/testutil"
)

// tcxEgress returns the ids of the programs attached at TCX egress of dev
// in ns.
func tcxEgress(t testing.TB, ns *testNS, dev string) []ebpf.ProgramID {
	t.Helper()
	return egressProgs(t, ns, dev, PathTCX)
}

// egressProgs returns the ids of the programs at the egress of dev in ns
// at hook: TCX, or tc egress filters (none without a clsact).
func egressProgs(t testing.TB, ns *testNS, dev string, hook Path) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	if err := ns.do(func() error {
		lk, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if hook == PathTC {
			fs, _ := netlink.FilterList(lk, netlink.HANDLE_MIN_EGRESS)
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					ids = append(ids, ebpf.ProgramID(bf.Id))
				}
			}
			return nil
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: lk.Attrs().Index, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
		return nil
	}); err != nil {
		t.Fatalf("programs at %s egress of %s: %v", hook, dev, err)
	}
	return ids
}

// newShaperIn starts a Shaper in ns; the test closes it.
func newShaperIn(t testing.TB, ns *testNS, opts Options) *Shaper {
	t.Helper()
	var s *Shaper
	if err := ns.do(func() error {
		var err error
		s, err = New(opts)
		return err
	}); err != nil {
		t.Fatalf("new shaper on %q: %v", opts.Interfaces, err)
	}
	return s
}

// twoDevices makes a namespace with a veth (Ethernet) and a TUN (L3)
// device, both down and without traffic: enough to attach to.
func twoDevices(t testing.TB) (ns *testNS, eth, tun string) {
	t.Helper()
	ns = newNS(t)
	sfx := testutil.Suffix(3)
	eth, tun = "ocsh"+sfx+"e", "ocsh"+sfx+"t"
	ns.sh(t, "ip link add "+eth+" type veth peer name "+eth+"p")
	ns.sh(t, "ip tuntap add dev "+tun+" mode tun")
	ns.sh(t, "ip link set "+tun+" mtu 1420")
	return ns, eth, tun
}

// TestProgSharedBucketTwoDevices: the programs of an Ethernet and an L3
// device, charged at once from two CPUs with the clock stopped, draw on
// one bucket: exactly burst/size packets pass in all, the counters are
// the sum, and each program reads its own device's framing.
func TestProgSharedBucketTwoDevices(t *testing.T) {
	testutil.RequireRoot(t)
	ns, eth, tun := twoDevices(t)
	s := newShaperIn(t, ns, Options{Interfaces: []string{eth, tun}, PinPath: pinDir(t), Mode: ModePolice})
	t.Cleanup(func() { s.Close(true) })
	if len(s.devs) != 2 || s.devs[0].l2 != 14 || s.devs[1].l2 != 0 || s.mtu != 1500 {
		t.Fatalf("devices %+v %+v, mtu %d: want l2 14 and 0, burst floor 1500", *s.devs[0], *s.devs[1], s.mtu)
	}
	// 1 Gbps: burst = 1,250,000 bytes = 12,500 packets of 100 bytes.
	if err := s.Set(Desired{Regions: map[string]Rate{"r-a": Gbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}); err != nil {
		t.Fatal(err)
	}
	// One clock override for both programs: .bss is shared like the maps.
	if err := s.objs.ClockOverride.Set(uint64(time.Second)); err != nil {
		t.Fatal(err)
	}
	ip := pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 100}.ip()
	ethFrame := (&fixture{}).frame(pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 100})

	// Each program ignores the other's framing.
	for _, c := range []struct {
		prog *ebpf.Program
		data []byte
	}{{s.devs[0].prog, ip}, {s.devs[1].prog, ethFrame}} {
		if _, err := c.prog.Run(&ebpf.RunOptions{Data: c.data}); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := s.Counters(); c["r-a"] != (Counters{}) {
		t.Fatalf("a frame of the other device's type is classified: %+v", c["r-a"])
	}

	const perDevice = 500000
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []struct {
		prog *ebpf.Program
		data []byte
	}{{s.devs[0].prog, ethFrame}, {s.devs[1].prog, ip}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.prog.Run(&ebpf.RunOptions{Data: c.data, Repeat: perDevice})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	got := c["r-a"]
	want := Counters{PassedPackets: 12500, PassedBytes: 12500 * 100, DroppedPackets: 2*perDevice - 12500, DroppedBytes: (2*perDevice - 12500) * 100}
	if got != want {
		t.Fatalf("counters %+v, want %+v: the devices do not share one bucket", got, want)
	}
}

// splitPath is a gateway whose traffic toward one region leaves through
// two devices: src -> gw; gw -> dst over veth c/d to 10.221.0.1, and to
// 10.221.0.2 over a second device: a wireguard-go tunnel (TUN, L3) whose
// underlay is veth e/f, or (wg false) veth e/f itself. Each flow returns
// the way it came.
type splitPath struct {
	src, gw, dst *testNS
	devs         [2]string // gw's egress devices toward 10.221.0.1 and .2
}

func newSplitPath(t *testing.T, wg bool) *splitPath {
	t.Helper()
	src, gw, dst := newNS(t), newNS(t), newNS(t)
	sfx := testutil.Suffix(3)
	a, b, c, d, e, f := "ocsh"+sfx+"a", "ocsh"+sfx+"b", "ocsh"+sfx+"c", "ocsh"+sfx+"d", "ocsh"+sfx+"e", "ocsh"+sfx+"f"
	p := &splitPath{src: src, gw: gw, dst: dst, devs: [2]string{c, e}}
	src.sh(t, "ip link add "+a+" type veth peer name "+b+" netns "+gw.name)
	gw.sh(t, "ip link add "+c+" type veth peer name "+d+" netns "+dst.name)
	gw.sh(t, "ip link add "+e+" type veth peer name "+f+" netns "+dst.name)
	src.sh(t, "ip addr add 10.220.1.2/24 dev "+a)
	src.sh(t, "ip link set "+a+" up")
	src.sh(t, "ip route add 10.221.0.0/16 via 10.220.1.1")
	gw.sh(t, "ip addr add 10.220.1.1/24 dev "+b)
	gw.sh(t, "ip addr add 10.220.2.1/24 dev "+c)
	gw.sh(t, "ip addr add 172.16.220.1/24 dev "+e)
	for _, dev := range []string{b, c, e} {
		gw.sh(t, "ip link set "+dev+" up")
	}
	gw.sh(t, "sysctl -qw net.ipv4.ip_forward=1")
	dst.sh(t, "ip addr add 10.220.2.2/24 dev "+d)
	dst.sh(t, "ip addr add 172.16.220.2/24 dev "+f)
	dst.sh(t, "ip link set "+d+" up")
	dst.sh(t, "ip link set "+f+" up")
	dst.sh(t, "ip addr add 10.221.0.1/32 dev lo")
	dst.sh(t, "ip addr add 10.221.0.2/32 dev lo")
	gw.sh(t, "ip route add 10.221.0.1/32 via 10.220.2.2")
	dst.sh(t, "ip route add 10.220.0.0/16 via 10.220.2.1")
	dst.sh(t, "ip rule add from 10.221.0.2 lookup 220")
	if !wg {
		gw.sh(t, "ip route add 10.221.0.2/32 via 172.16.220.2")
		dst.sh(t, "ip route add 10.220.0.0/16 via 172.16.220.1 table 220")
		return p
	}
	wgA, wgB := "ocsh"+sfx+"w", "ocsh"+sfx+"x"
	p.devs[1] = wgA
	keyA, _ := wgtypes.GeneratePrivateKey()
	keyB, _ := wgtypes.GeneratePrivateKey()
	wgDevice(t, gw, wgA, keyA, 51820, keyB.PublicKey(), "172.16.220.2:51820", "10.221.0.2/32,100.64.220.2/32", nil)
	wgDevice(t, dst, wgB, keyB, 51820, keyA.PublicKey(), "172.16.220.1:51820", "10.220.0.0/16,100.64.220.1/32", nil)
	gw.sh(t, "ip addr add 100.64.220.1/32 dev "+wgA)
	gw.sh(t, "ip link set "+wgA+" up")
	gw.sh(t, "ip route add 100.64.220.2/32 dev "+wgA)
	dst.sh(t, "ip addr add 100.64.220.2/32 dev "+wgB)
	dst.sh(t, "ip link set "+wgB+" up")
	dst.sh(t, "ip route add 100.64.220.1/32 dev "+wgB)
	gw.sh(t, "ip route add 10.221.0.2/32 dev "+wgA)
	dst.sh(t, "ip route add 10.220.0.0/16 dev "+wgB+" table 220")
	return p
}

func splitDesired(rate Rate) Desired {
	return Desired{
		Regions:      map[string]Rate{"r-a": rate},
		Prefixes:     map[netipPrefix]string{mustPrefix("10.221.0.0/16"): "r-a", mustPrefix("10.220.0.0/16"): "home"},
		ControlAddrs: []netipAddr{mustAddr("100.64.220.1"), mustAddr("100.64.220.2")},
	}
}

// splitResult is one run of two TCP flows, one per device.
type splitResult struct {
	bps     [2]float64 // goodput of each flow
	tx      [2]uint64  // bytes each device sent
	passed  uint64     // bytes the shaper passed (both devices)
	dropped uint64
}

func (r splitResult) sum() float64 { return r.bps[0] + r.bps[1] }

// run sends one TCP flow to each destination host for secs seconds.
func (p *splitPath) run(t *testing.T, s *Shaper, secs int) splitResult {
	t.Helper()
	txBytes := func(dev string) uint64 {
		var n uint64
		if err := p.gw.do(func() error {
			lk, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			n = lk.Attrs().Statistics.TxBytes
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The path is up ahead of the measurement; the WireGuard leg's
	// first packets wait for a handshake, which a loaded machine may take
	// seconds to complete.
	for _, addr := range []string{"10.221.0.1", "10.221.0.2"} {
		var out string
		var err error
		for try := 0; try < 5; try++ {
			if out, err = p.src.run("ping -c 2 -i 0.2 -W 2 " + addr); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("ping %s: %v\n%s", addr, err, out)
		}
	}
	iperfServer(t, p.dst, 5201)
	iperfServer(t, p.dst, 5202)
	start, _ := s.Counters()
	tx0 := [2]uint64{txBytes(p.devs[0]), txBytes(p.devs[1])}
	var r splitResult
	var wg sync.WaitGroup
	var errs [2]error
	for i, addr := range []string{"10.221.0.1", "10.221.0.2"} {
		wg.Add(1)
		go func() { defer wg.Done(); r.bps[i], errs[i] = iperf(p.src, addr, 5201+i, secs, 1) }()
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Counters()
	for i := range r.tx {
		r.tx[i] = txBytes(p.devs[i]) - tx0[i]
	}
	r.passed = after["r-a"].PassedBytes - start["r-a"].PassedBytes
	r.dropped = after["r-a"].DroppedBytes - start["r-a"].DroppedBytes
	return r
}

// TestTwoDevicesSplitTraffic: a gateway sends one region's traffic out of
// two devices, a veth (Ethernet) and a wireguard-go tunnel (TUN, L3), one
// TCP flow on each; the sum of their goodput is held to the region's rate
// and the region's counters carry both.
func TestTwoDevicesSplitTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping: 10 s of iperf3 in -short mode")
	}
	p := newSplitPath(t, true)
	s := newShaperIn(t, p.gw, Options{Interfaces: p.devs[:], PinPath: pinDir(t)})
	t.Cleanup(func() { s.Close(true) })
	const rate = 40 * Mbps
	if err := s.Set(splitDesired(rate)); err != nil {
		t.Fatal(err)
	}
	for _, dev := range p.devs {
		if out := p.gw.sh(t, "tc class show dev "+dev); strings.Count(out, "class htb") != 3 {
			t.Fatalf("want the region's 3 htb classes on %s, got:\n%s", dev, out)
		}
	}
	const secs = 10
	r := p.run(t, s, secs)
	ratio := r.sum() / float64(rate)
	// Goodput over the IP bytes the counters saw: 1448/1500 = 0.965 with
	// full-size segments, less the retransmissions.
	counted := r.sum() * secs / 8 / float64(r.passed)
	t.Logf("region at %s over veth + wireguard: %.2f + %.2f = %.2f Mbps, ratio %.4f; device tx %d + %d bytes; shaper passed %d bytes (goodput/counted %.4f), dropped %d",
		rate, r.bps[0]/1e6, r.bps[1]/1e6, r.sum()/1e6, ratio, r.tx[0], r.tx[1], r.passed, counted, r.dropped)
	if ratio < 0.90 || ratio > 1.0 {
		t.Errorf("sum of goodput %.4f of the allocation, want 0.90-1.00", ratio)
	}
	for i, dev := range p.devs {
		if r.bps[i] < 0.1*float64(rate) || float64(r.tx[i]) < 0.1*float64(r.passed) {
			t.Errorf("%s carried %.2f Mbps (%d bytes): the split did not happen", dev, r.bps[i]/1e6, r.tx[i])
		}
	}
	if counted < 0.90 || counted > 1.0 {
		t.Errorf("goodput is %.4f of the bytes the counters passed, want 0.90-1.00: the counters miss a device", counted)
	}
}
