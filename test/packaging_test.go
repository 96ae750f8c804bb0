package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencen/opencen/internal/testutil"
)

// tool finds a command a packaging test runs; CI (root, after make deps)
// has them all, elsewhere a missing one skips the test naming its package.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must have %s (Debian package %s; make deps installs it)", name, pkg)
		}
		t.Skipf("%s is not installed (Debian package %s; make deps installs it)", name, pkg)
	}
	return p
}

// exportedMetrics are the metric names cend registers: every "opencen_..."
// string of the agent's and the speaker's non-test sources.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`"(opencen_[a-z0-9_]+)"`)
	var names []string
	for _, glob := range []string{"../agent/*.go", "../routing/*.go"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				names = append(names, m[1])
			}
		}
	}
	if !slices.Contains(names, "opencen_bgp_session_up") || !slices.Contains(names, "opencen_build_info") {
		t.Fatalf("found no metric definitions: %v", names)
	}
	return names
}

// usedMetrics are the opencen_ metric names text uses (a _bucket, _sum or
// _count suffix is the histogram's own).
func usedMetrics(text string) []string {
	return regexp.MustCompile(`\bopencen_[a-z0-9_]+`).FindAllString(text, -1)
}

// TestAlertRules: the rules file passes promtool check rules, its unit
// tests pass promtool test rules, and it uses only metrics cend exports.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	const dir = "../packaging/prometheus"
	for _, args := range [][]string{{"check", "rules", "opencen.rules.yml"}, {"test", "rules", "opencen.rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, err := os.ReadFile(filepath.Join(dir, "opencen.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	for _, m := range usedMetrics(string(rules)) {
		if !slices.Contains(exported, m) {
			t.Errorf("the rules use %s, which cend does not export", m)
		}
	}
	for _, alert := range []string{"OpencenBGPSessionDown", "OpencenBFDDown", "OpencenShaperDroppingAtAllocation", "OpencenMaxPrefixTripped",
		"OpencenTunnelHandshakeStale", "OpencenReconcileErrors", "OpencenConfigSkew"} {
		if !strings.Contains(string(rules), "alert: "+alert+"\n") {
			t.Errorf("no alert %s", alert)
		}
	}
}

// TestDashboard: the Grafana dashboard shows BFD, session state, rejected
// prefixes by reason and reloads; every legend names its gateway; every
// rate is over $__rate_interval; it uses only metrics cend exports.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("../packaging/grafana/opencen.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("not a dashboard: %v", err)
	}
	exported := exportedMetrics(t)
	shown := map[string]bool{}
	rangeRE := regexp.MustCompile(`\[([^\]]+)\]`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Legend, "{{gateway}}") {
				t.Errorf("panel %q: legend %q does not name the gateway", p.Title, q.Legend)
			}
			for _, r := range rangeRE.FindAllStringSubmatch(q.Expr, -1) {
				if r[1] != "$__rate_interval" {
					t.Errorf("panel %q: %q takes a range of %s, not $__rate_interval", p.Title, q.Expr, r[1])
				}
			}
			for _, m := range usedMetrics(q.Expr) {
				if !slices.Contains(exported, m) {
					t.Errorf("panel %q uses %s, which cend does not export", p.Title, m)
				}
				shown[m] = true
			}
			if strings.Contains(q.Expr, "opencen_bgp_routes_rejected_total") && !strings.Contains(q.Legend, "{{reason}}") {
				t.Errorf("panel %q: rejected prefixes not by reason: %q", p.Title, q.Legend)
			}
		}
	}
	for _, m := range []string{"opencen_bgp_bfd_up", "opencen_bgp_session_up", "opencen_bgp_session_state", "opencen_bgp_routes_rejected_total",
		"opencen_config_reloads_total", "opencen_shaper_rate_bits_per_second", "opencen_shaper_allocation_bits_per_second"} {
		if !shown[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestDebPackage: make deb builds the package; installed into an empty
// root (never this machine's /), it holds both binaries, the unit, man
// pages, completions and /etc/opencen with an example config; the
// installed cend tells its version, the installed cenctl validates the
// example, and systemd-analyze verify accepts the unit.
func TestDebPackage(t *testing.T) {
	testutil.RequireRoot(t) // dpkg --root writes files owned by root
	dpkg := tool(t, "dpkg", "dpkg")
	analyze := tool(t, "systemd-analyze", "systemd")
	tool(t, "man", "man-db")
	goBin := tool(t, "go", "golang")
	deb := makeDeb(t, goBin)

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Maintainer scripts run outside the root, told so by DPKG_ROOT.
	if out, err := exec.Command(dpkg, "--root="+root, "--force-script-chrootless", "--log=/dev/null", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/bin/cend": 0o755, "usr/bin/cenctl": 0o755, "usr/lib/systemd/system/cend@.service": 0o644,
		"usr/share/man/man1/cend.1.gz": 0o644, "usr/share/man/man1/cenctl-validate.1.gz": 0o644,
		"usr/share/bash-completion/completions/cenctl": 0o644, "usr/share/zsh/vendor-completions/_cenctl": 0o644,
		"usr/share/fish/vendor_completions.d/cenctl.fish": 0o644, "usr/share/bash-completion/completions/cend": 0o644,
		"etc/opencen": 0o700 | os.ModeDir, "etc/opencen/keys": 0o700 | os.ModeDir, "etc/opencen/cen.yaml.example": 0o600,
		"usr/share/opencen/prometheus/opencen.rules.yml": 0o644, "usr/share/opencen/grafana/opencen.json": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("the package lacks /%s: %v", path, err)
		} else if fi.Mode()&(os.ModeDir|os.ModePerm) != mode {
			t.Errorf("/%s has mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	out, err := exec.Command(filepath.Join(root, "usr/bin/cend"), "--version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^cend \S+ \(commit [0-9a-f]{7,}`).Match(out) {
		t.Errorf("installed cend --version: %v: %s", err, out)
	}
	example := filepath.Join(root, "etc/opencen/cen.yaml.example")
	if out, err := exec.Command(filepath.Join(root, "usr/bin/cenctl"), "validate", example).CombinedOutput(); err != nil || !strings.Contains(string(out), "valid.") {
		t.Errorf("installed cenctl validate of the example: %v: %s", err, out)
	}
	verifyUnit(t, analyze, root)
}

// makeDeb runs make deb with goBin and returns the package it made.
func makeDeb(t *testing.T, goBin string) string {
	t.Helper()
	cmd := exec.Command("make", "deb", "GO="+goBin)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob("../bin/opencen_*.deb")
	if len(debs) != 1 {
		t.Fatalf("make deb left %d packages in bin/: %v", len(debs), debs)
	}
	return debs[0]
}

// verifyUnit runs systemd-analyze verify on the installed unit, for a
// gateway named gw-test, within root: the package's files beside the
// host's own units and kill, and its man pages for Documentation=.
func verifyUnit(t *testing.T, analyze, root string) {
	t.Helper()
	units := filepath.Join(root, "usr/lib/systemd/system")
	if out, err := exec.Command("cp", "-rn", "/usr/lib/systemd/system/.", units).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v: %s", err, out)
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", kill, filepath.Join(root, "usr/bin/kill")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--root="+root, "cend@gw-test.service")
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"))
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify cend@gw-test.service: %v\n%s", err, out)
	}
}
