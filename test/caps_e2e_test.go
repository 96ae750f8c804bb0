package test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
	"golang.org/x/sys/unix"
)

// unitCaps are the capabilities of the cend@ unit's CapabilityBoundingSet.
func unitCaps(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../packaging/systemd/cend@.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("the unit has no CapabilityBoundingSet")
	return nil
}

// capMask is the kernel's bit mask of caps ("CAP_NET_ADMIN", ...).
func capMask(t *testing.T, caps []string) uint64 {
	t.Helper()
	numbers := map[string]int{"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
		"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_BPF": unix.CAP_BPF, "CAP_PERFMON": unix.CAP_PERFMON}
	var m uint64
	for _, c := range caps {
		n, ok := numbers[c]
		if !ok {
			t.Fatalf("unknown capability %s", c)
		}
		m |= 1 << n
	}
	return m
}

// boundedCend writes a command that runs cend as the unit does: root's
// uid with only caps (setpriv's bounding set, nothing inheritable).
func boundedCend(t *testing.T, caps []string) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed")
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	path := filepath.Join(t.TempDir(), "cend-bounded")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set=%s --inh-caps=-all -- %s \"$@\"\n", setpriv, set, binary(t, "cend"))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// procCaps reads a process's effective and bounding capability sets.
func procCaps(t *testing.T, pid int) (eff, bnd uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		switch k {
		case "CapEff":
			eff = n
		case "CapBnd":
			bnd = n
		}
	}
	return eff, bnd
}

// TestGatewayOnTheUnitsCapabilities: cend runs a gateway with no more than
// the cend@ unit's capabilities, as systemd starts it: every gateway of a
// lab comes up, sessions established and shaper started, each cend holding
// exactly that set, and cend --check with that set passes beside it. Without CAP_SYS_ADMIN, cend refuses to start, naming
// it, while nothing is touched.
func TestGatewayOnTheUnitsCapabilities(t *testing.T) {
	testutil.RequireRoot(t)
	caps := unitCaps(t)
	l, _ := testLabCend(t, "testdata/shaping.yaml", true, "", boundedCend(t, caps))
	names := []string{"gw-x", "gw-y", "gw-z"}
	waitEstablished(t, l, names...)
	want := capMask(t, caps)
	for _, name := range names {
		g := gatewayOf(t, l, name)
		if eff, bnd := procCaps(t, g.PID); eff != want || bnd != want {
			t.Errorf("%s's cend holds CapEff %x CapBnd %x; want %x, the unit's %v", name, eff, bnd, want, caps)
		}
		var st api.Status
		cenctlJSON(t, g.Socket, &st, "status")
		if len(st.ShapedDevices) == 0 {
			t.Errorf("%s shapes nothing: %+v", name, st)
		}
		for _, sub := range st.Subsystems {
			if !sub.OK {
				t.Errorf("%s: subsystem %s fails: %s", name, sub.Name, sub.Error)
			}
		}
		if name == "gw-x" {
			preflightBesideCend(t, l, boundedCend(t, caps), g, st)
		}
	}

	var fewer []string
	for _, c := range caps {
		if c != "CAP_SYS_ADMIN" {
			fewer = append(fewer, c)
		}
	}
	state := filepath.Join(t.TempDir(), "state")
	g := gatewayOf(t, l, "gw-x")
	out, err := exec.Command(boundedCend(t, fewer), "--config", l.ConfigFile, "--gateway", g.Name,
		"--socket", filepath.Join(t.TempDir(), "x.sock"), "--state-dir", state, "--metrics-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lacks CAP_SYS_ADMIN: run it as root, or from the cend@ systemd unit") {
		t.Errorf("cend without CAP_SYS_ADMIN: %v\n%s", err, out)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("cend without its capabilities made its state dir")
	}
}

// checkOrder is the checks cend --check prints, in order, on a gateway of
// one region with one gateway.
var checkOrder = []string{"privileges", "kernel", "config", "gateway", "secrets", "wireguard", "shaping", "nftables", "bpffs", "forwarding", "clock"}

// preflightBesideCend runs cend --check (as cend, with the unit's
// capabilities) in the namespace of g, whose cend runs with status st: it
// passes, prints one ok, warn or fail line per check in order, says the
// WireGuard and the shaping mode the running cend has, and changes nothing
// of the namespace's links, addresses, policy rules, nftables or tc.
func preflightBesideCend(t *testing.T, l *lab.Lab, cend string, g lab.Gateway, st api.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snapshot := func() string {
		var b strings.Builder
		for _, argv := range [][]string{{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"ip", "rule", "show"}, {"ip", "-6", "rule", "show"},
			{"nft", "list", "ruleset"}, {"tc", "filter", "show", "dev", st.ShapedDevices[0], "egress"}} {
			out, err := l.Exec(ctx, g.Name, argv...)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(out)
		}
		return b.String()
	}
	before := snapshot()
	cmd, err := l.Command(ctx, g.Name, cend, "--check", "--config", l.ConfigFile, "--gateway", g.Name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("cend --check beside %s's cend:\n%s", g.Name, out)
	if err != nil {
		t.Errorf("cend --check beside %s's cend: %v", g.Name, err)
	}
	says := map[string]string{"wireguard": map[string]string{"kernel": "kernel module", "userspace": "userspace"}[st.WireGuard],
		"shaping": "--shaper auto shapes with " + st.Shaping}
	var names []string
	line := regexp.MustCompile(`^(ok|warn|fail) +(\S+) +(.+)$`)
	for _, text := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := line.FindStringSubmatch(text)
		if m == nil {
			t.Errorf("cend --check printed %q: not a check's line", text)
			continue
		}
		names = append(names, m[2])
		if m[1] == "fail" || !strings.Contains(m[3], says[m[2]]) {
			t.Errorf("cend --check: %q; want no fail, and %q", text, says[m[2]])
		}
	}
	if !slices.Equal(names, checkOrder) {
		t.Errorf("cend --check ran %v, want %v", names, checkOrder)
	}
	if after := snapshot(); after != before {
		t.Errorf("cend --check changed %s's namespace:\nbefore:\n%s\nafter:\n%s", g.Name, before, after)
	}
}
