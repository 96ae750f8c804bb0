package shaping

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// hooks counts the programs at the TCX and tc egress of dev.
func hooks(t testing.TB, ns *testNS, dev string) (tcx, tc int) {
	t.Helper()
	return len(tcxEgress(t, ns, dev)), len(egressProgs(t, ns, dev, PathTC))
}

// pinnedLink moves the shaper of dev from its plain TCX attachment to a
// TCX link pinned in dir, as agents that pin their links leave it.
func pinnedLink(t *testing.T, ns *testNS, s *Shaper, dir string) {
	t.Helper()
	d := s.devs[0]
	if err := ns.do(func() error {
		if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: d.index, Program: d.prog, Attach: ebpf.AttachTCXEgress}); err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: d.index, Program: d.prog, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		defer l.Close()
		return l.Pin(filepath.Join(dir, "ocsh_shape_link_"+d.name))
	}); err != nil {
		t.Fatal(err)
	}
}

// lifecycle is a namespace with two devices and the shapers a test opens
// on them, one at a time, all closed with cleanup at the end.
type lifecycle struct {
	t        *testing.T
	ns       *testNS
	eth, tun string
	dir      string
	d        Desired
	charged  Counters // what the first shaper's buckets counted
	live     []*Shaper
}

func newLifecycle(t *testing.T) *lifecycle {
	ns, eth, tun := twoDevices(t)
	c := &lifecycle{t: t, ns: ns, eth: eth, tun: tun, dir: pinDir(t),
		d: Desired{Regions: map[string]Rate{"r-a": 10 * Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}}
	t.Cleanup(func() {
		for _, s := range c.live {
			s.Close(true)
		}
	})
	return c
}

func (c *lifecycle) open(attach Path, ifs ...string) *Shaper {
	c.t.Helper()
	s := newShaperIn(c.t, c.ns, Options{Interfaces: ifs, Attach: attach, PinPath: c.dir})
	c.live = append(c.live, s)
	return s
}

// want checks that each of devs has tcx programs at TCX egress and tc
// filters at tc egress.
func (c *lifecycle) want(step string, devs []string, tcx, tc int) {
	c.t.Helper()
	for _, dev := range devs {
		if x, f := hooks(c.t, c.ns, dev); x != tcx || f != tc {
			c.t.Fatalf("%s: %s has %d programs at tcx and %d at tc, want %d and %d", step, dev, x, f, tcx, tc)
		}
	}
}

// kept sets the buckets and checks that s adopted the first shaper's
// counters; then, unless last, closes s without cleanup.
func (c *lifecycle) kept(step string, s *Shaper, last bool) {
	c.t.Helper()
	if err := s.Set(c.d); err != nil {
		c.t.Fatal(err)
	}
	if got, _ := s.Counters(); got["r-a"] != c.charged {
		c.t.Fatalf("%s: counters %+v, want %+v: the buckets are not the adopted ones", step, got["r-a"], c.charged)
	}
	if !last {
		if err := s.Close(false); err != nil {
			c.t.Fatal(err)
		}
	}
}

// first starts a shaper on eth alone, charges its bucket three packets,
// and leaves it attached through a pinned TCX link.
func (c *lifecycle) first() {
	c.t.Helper()
	s := c.open(PathTCX, c.eth)
	if err := s.Set(c.d); err != nil {
		c.t.Fatal(err)
	}
	if err := s.objs.ClockOverride.Set(uint64(time.Second)); err != nil {
		c.t.Fatal(err)
	}
	frame := (&fixture{}).frame(pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000})
	if _, err := s.devs[0].prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 3}); err != nil {
		c.t.Fatal(err)
	}
	got, _ := s.Counters()
	if c.charged = got["r-a"]; c.charged.PassedPackets != 3 {
		c.t.Fatalf("counters %+v, want 3 packets", c.charged)
	}
	pinnedLink(c.t, c.ns, s, c.dir)
	if err := s.Close(false); err != nil {
		c.t.Fatal(err)
	}
	c.want("pinned link", []string{c.eth}, 1, 0)
}

// TestLifecycle takes a two-device shaper through what agents do to it,
// checking after each step that every device has exactly one shaper
// program, at the hook asked for, and that the buckets and counters are
// the ones charged at the start: a pinned TCX link (as agents that pin
// their links leave one) is replaced by a plain attachment; a restart at
// tc replaces it (mode change); a restart at tc after the pins and their
// bpffs are gone (an agent started with ip netns exec dies with its mount
// namespace) finds the running filters from the kernel alone; a restart
// at tcx again; a device dropped from Interfaces is detached with its
// HTB; Close(true) leaves no program, filter, clsact, HTB or pin.
func TestLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	c := newLifecycle(t)
	eth, tun, both := c.eth, c.tun, []string{c.eth, c.tun}
	c.first()

	s := c.open(PathTCX, both...)
	c.want("two devices at tcx", both, 1, 0)
	if _, err := os.Stat(filepath.Join(c.dir, "ocsh_shape_link_"+eth)); !os.IsNotExist(err) {
		t.Fatalf("the pinned link's pin is left: %v", err)
	}
	c.kept("two devices at tcx", s, false)

	c.kept("tcx to tc", c.open(PathTC, both...), false)
	c.want("tcx to tc", both, 0, 1)
	// The pins and their bpffs go, as when the agent's mount namespace
	// dies with it.
	if err := unix.Unmount(c.dir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	running := egressProgs(t, c.ns, eth, PathTC)
	c.kept("tc after the pins are gone", c.open(PathTC, both...), false)
	c.want("tc after the pins are gone", both, 0, 1)
	if after := egressProgs(t, c.ns, eth, PathTC); after[0] == running[0] {
		t.Fatal("the new agent's program did not replace the running one")
	}

	c.kept("tc to tcx", c.open(PathTCX, both...), false)
	c.want("tc to tcx", both, 1, 0)
	for _, dev := range both {
		if strings.Contains(c.ns.sh(t, "tc qdisc show dev "+dev), "clsact") {
			t.Fatalf("%s: the emptied clsact qdisc is left", dev)
		}
	}

	s = c.open(PathTCX, eth)
	c.want("tun dropped", []string{eth}, 1, 0)
	c.want("tun dropped", []string{tun}, 0, 0)
	if strings.Contains(c.ns.sh(t, "tc qdisc show dev "+tun), "htb") {
		t.Fatal("htb left on the dropped device")
	}
	c.kept("tun dropped", s, true)

	if err := s.Close(true); err != nil {
		t.Fatal(err)
	}
	c.want("cleanup", both, 0, 0)
	for _, dev := range both {
		if out := c.ns.sh(t, "tc qdisc show dev "+dev); strings.Contains(out, "htb") || strings.Contains(out, "clsact") {
			t.Fatalf("%s: qdisc left after cleanup: %s", dev, out)
		}
	}
	if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
		t.Fatalf("pin directory (its bpffs) left after cleanup: %v", err)
	}
}
