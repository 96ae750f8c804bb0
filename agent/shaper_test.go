package agent

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/shaping"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	noTCX       = errors.New("no TCX (it needs Linux 6.6 or later)")
	noTC        = errors.New("no direct-action cls_bpf filter (cls_bpf)")
	kernelWG    = errors.New("the host has the WireGuard kernel module, which the tunnel uses")
	everything  = hostSupport{}
	debian12    = hostSupport{tcx: noTCX}
	bareKernel  = hostSupport{tcx: noTCX, tc: noTC}
	nothingWill = hostSupport{tcx: noTCX, tc: noTC, userspace: kernelWG}
)

// TestChooseShaper: auto takes the first path the host supports; a forced
// path the host lacks, or a host where none enforces, is refused with what
// it lacks and the flag to use.
func TestChooseShaper(t *testing.T) {
	for _, c := range []struct {
		want shaping.Path
		host hostSupport
		got  shaping.Path
		errs []string
	}{
		{shaping.PathAuto, everything, shaping.PathTCX, nil},
		{"", everything, shaping.PathTCX, nil},
		{shaping.PathAuto, debian12, shaping.PathTC, nil},
		{shaping.PathAuto, bareKernel, shaping.PathUserspace, nil},
		{shaping.PathAuto, nothingWill, "", []string{"no shaper can enforce", "no TCX", "cls_bpf", "kernel module", "--shaper userspace"}},
		{shaping.PathTC, everything, shaping.PathTC, nil},
		{shaping.PathUserspace, everything, shaping.PathUserspace, nil},
		{shaping.PathTCX, debian12, "", []string{"--shaper tcx", "no TCX", "6.6"}},
		{shaping.PathTC, bareKernel, "", []string{"--shaper tc", "cls_bpf"}},
		{shaping.PathUserspace, nothingWill, "", []string{"--shaper userspace", "kernel module"}},
		{"xdp", everything, "", []string{`--shaper "xdp"`, "auto, tcx, tc or userspace"}},
	} {
		got, err := chooseShaper(c.want, c.host)
		if got != c.got || (err == nil) != (c.errs == nil) {
			t.Errorf("--shaper %q on %+v: %q, %v; want %q", c.want, c.host, got, err, c.got)
			continue
		}
		for _, w := range c.errs {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("--shaper %q on %+v: error %q does not say %q", c.want, c.host, err, w)
			}
		}
	}
}

// TestRefusesBeforeTouchingAnything: on a host where no shaper can
// enforce, Run fails ahead of making its state folder, a device or
// anything else.
func TestRefusesBeforeTouchingAnything(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	state := filepath.Join(t.TempDir(), "state")
	var logs bytes.Buffer
	a, err := New(Options{ConfigPath: path, Gateway: "a", StateDir: state, Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	a.probe = func(string) hostSupport { return nothingWill }
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--shaper userspace") {
		t.Fatalf("Run on a host that cannot shape: %v", err)
	}
	if _, serr := os.Stat(state); !os.IsNotExist(serr) {
		t.Fatalf("the state folder was made before the refusal: %v", serr)
	}
	if a.dp != nil || a.sh != nil || a.rt != nil {
		t.Fatal("a subsystem was started before the refusal")
	}
}

// TestForcedUserspaceShaperMeansUserspaceWireGuard: --shaper userspace
// runs the tunnel in userspace even where the kernel has WireGuard.
func TestForcedUserspaceShaperMeansUserspaceWireGuard(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	var logs bytes.Buffer
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs), Shaper: shaping.PathUserspace})
	if err != nil {
		t.Fatal(err)
	}
	a.probe = func(string) hostSupport { return everything }
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	if a.shPath != shaping.PathUserspace || a.wireGuardMode() != dataplane.ModeUserspace {
		t.Fatalf("shaper %q, wireguard %q: want userspace for both", a.shPath, a.wireGuardMode())
	}
}

// TestShaperModeMetric: opencen_shaper_mode is 1 for the mode in use and 0
// for the others.
func TestShaperModeMetric(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs), Registerer: reg, Shaper: shaping.PathTC})
	if err != nil {
		t.Fatal(err)
	}
	a.probe = func(string) hostSupport { return everything }
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "opencen_shaper_mode" {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if want := map[string]float64{"tcx": 0, "tc": 1, "userspace": 0}; !maps.Equal(got, want) {
		t.Fatalf("opencen_shaper_mode %v, want %v", got, want)
	}
	if st := a.Status(); st.Shaping != "tc" {
		t.Fatalf("status shaping %q, want tc", st.Shaping)
	}
}
