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

// TestLifecycle takes a two-device shaper through what agents do to it,
// checking after each step that every device has exactly one shaper
// program, at the hook asked for, and that the buckets and counters are
// the ones charged at the start: a pinned TCX link (as agents that pin
// their links leave one) is replaced by a plain attachment; a restart at tc replaces it (mode
// change); a restart at tc after the pins and their bpffs are gone (an
// agent started with ip netns exec dies with its mount namespace) finds
// the running filters from the kernel alone; a restart at tcx again; a
// device dropped from Interfaces is detached with its HTB; Close(true)
// leaves no program, filter, clsact, HTB or pin.
func TestLifecycle(t *testing.T) {
	requireRoot(t)
	ns, eth, tun := twoDevices(t)
	dir := pinDir(t)
	both := []string{eth, tun}
	var live []*Shaper
	open := func(attach Path, ifs ...string) *Shaper {
		t.Helper()
		s := newShaperIn(t, ns, Options{Interfaces: ifs, Attach: attach, PinPath: dir})
		live = append(live, s)
		return s
	}
	t.Cleanup(func() {
		for _, s := range live {
			s.Close(true)
		}
	})
	want := func(step string, devs []string, tcx, tc int) {
		t.Helper()
		for _, dev := range devs {
			if x, c := hooks(t, ns, dev); x != tcx || c != tc {
				t.Fatalf("%s: %s has %d programs at tcx and %d at tc, want %d and %d", step, dev, x, c, tcx, tc)
			}
		}
	}
	d := Desired{Regions: map[string]Rate{"r-a": 10 * Mbps}, Prefixes: map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"}}

	s := open(PathTCX, eth)
	if err := s.Set(d); err != nil {
		t.Fatal(err)
	}
	if err := s.objs.ClockOverride.Set(uint64(time.Second)); err != nil {
		t.Fatal(err)
	}
	frame := (&fixture{}).frame(pkt{src: "10.100.0.1", dst: "10.0.0.1", size: 1000})
	if _, err := s.devs[0].prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 3}); err != nil {
		t.Fatal(err)
	}
	charged, _ := s.Counters()
	if charged["r-a"].PassedPackets != 3 {
		t.Fatalf("counters %+v, want 3 packets", charged["r-a"])
	}
	pinnedLink(t, ns, s, dir)
	if err := s.Close(false); err != nil {
		t.Fatal(err)
	}
	want("pinned link", []string{eth}, 1, 0)

	kept := func(step string, s *Shaper) {
		t.Helper()
		if err := s.Set(d); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Counters(); c["r-a"] != charged["r-a"] {
			t.Fatalf("%s: counters %+v, want %+v: the buckets were not adopted", step, c["r-a"], charged["r-a"])
		}
	}
	s = open(PathTCX, both...)
	want("two devices at tcx", both, 1, 0)
	if _, err := os.Stat(filepath.Join(dir, "ocsh_shape_link_"+eth)); !os.IsNotExist(err) {
		t.Fatalf("the pinned link's pin is left: %v", err)
	}
	kept("two devices at tcx", s)
	if err := s.Close(false); err != nil {
		t.Fatal(err)
	}

	s = open(PathTC, both...)
	want("tcx to tc", both, 0, 1)
	kept("tcx to tc", s)
	if err := s.Close(false); err != nil {
		t.Fatal(err)
	}
	// The pins and their bpffs go, as when the agent's mount namespace
	// dies with it.
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	before := egressProgs(t, ns, eth, PathTC)
	s = open(PathTC, both...)
	want("tc after the pins are gone", both, 0, 1)
	if after := egressProgs(t, ns, eth, PathTC); after[0] == before[0] {
		t.Fatal("the running program was not replaced by the new agent's")
	}
	kept("tc after the pins are gone", s)
	if err := s.Close(false); err != nil {
		t.Fatal(err)
	}

	s = open(PathTCX, both...)
	want("tc to tcx", both, 1, 0)
	for _, dev := range both {
		if strings.Contains(ns.sh(t, "tc qdisc show dev "+dev), "clsact") {
			t.Fatalf("%s: the emptied clsact qdisc is left", dev)
		}
	}
	kept("tc to tcx", s)
	if err := s.Close(false); err != nil {
		t.Fatal(err)
	}

	s = open(PathTCX, eth)
	want("tun dropped", []string{eth}, 1, 0)
	want("tun dropped", []string{tun}, 0, 0)
	if strings.Contains(ns.sh(t, "tc qdisc show dev "+tun), "htb") {
		t.Fatal("htb left on the dropped device")
	}
	kept("tun dropped", s)

	if err := s.Close(true); err != nil {
		t.Fatal(err)
	}
	want("cleanup", both, 0, 0)
	for _, dev := range both {
		if out := ns.sh(t, "tc qdisc show dev "+dev); strings.Contains(out, "htb") || strings.Contains(out, "clsact") {
			t.Fatalf("%s: qdisc left after cleanup: %s", dev, out)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("pin directory (its bpffs) left after cleanup: %v", err)
	}
}
