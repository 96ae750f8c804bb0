package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sudoPath is Debian's sudo secure_path: no /usr/local/go/bin in it.
const sudoPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TestMakeFindsGoUnderSudo: with sudo's environment (secure_path, nothing
// of the user's), make still finds a Go, hands the tests the same one on
// PATH, and lets an older Go fetch go.mod's toolchain.
func TestMakeFindsGoUnderSudo(t *testing.T) {
	if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
		t.Skip("no Go at /usr/local/go, where the README installs it")
	}
	cmd := exec.Command("make", "-n", "--no-print-directory", "build", "test")
	cmd.Dir = ".."
	cmd.Env = []string{"PATH=" + sudoPath, "HOME=/root", "SUDO_USER=root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "/usr/local/go/bin/go build -ldflags") || !strings.Contains(string(out), "/usr/local/go/bin/go test ") {
		t.Errorf("make does not run /usr/local/go/bin/go:\n%s", out)
	}
	show := exec.Command("make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "show")
	show.Dir = ".."
	show.Env = cmd.Env
	show.Stdin = strings.NewReader("show:\n\t@echo \"$$PATH|$$GOTOOLCHAIN|$$GOFLAGS\"\n")
	out, err = show.CombinedOutput()
	if err != nil {
		t.Fatalf("make show: %v\n%s", err, out)
	}
	// Under sudo, git refuses a checkout another user owns: go build must
	// not ask it for a VCS stamp.
	if got := strings.TrimSpace(string(out)); got != "/usr/local/go/bin:"+sudoPath+"|auto|-buildvcs=false" {
		t.Errorf("recipes see PATH|GOTOOLCHAIN|GOFLAGS %q; want Go's folder first, auto and -buildvcs=false", got)
	}
}

// deps runs scripts/deps.sh set with only the commands in stubs on PATH.
func deps(t *testing.T, stubs map[string]string, set string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	for name, script := range stubs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "../scripts/deps.sh", set)
	cmd.Env = []string{"PATH=" + dir, "LOG=" + filepath.Join(dir, "log")}
	out, _ := cmd.CombinedOutput()
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	return string(out) + string(log), cmd.ProcessState.ExitCode()
}

// TestMakeDeps: on a machine that has none of the demo's commands, make
// deps as root installs their packages with apt-get, saying so in one
// line; not root, or without apt-get, it says in one line what is missing
// and fails.
func TestMakeDeps(t *testing.T) {
	aptGet := `echo "apt-get $*" >> "$LOG"`
	out, code := deps(t, map[string]string{"id": "echo 0", "apt-get": aptGet}, "demo")
	want := "make deps: installing iproute2 iputils-ping iperf3 bird2 util-linux (for ip ping iperf3 bird birdc nsenter)\n" +
		"apt-get update -qq\napt-get install -y -qq --no-install-recommends iproute2 iputils-ping iperf3 bird2 util-linux\n"
	if code != 0 || out != want {
		t.Errorf("as root: exit %d:\n%s\nwant:\n%s", code, out, want)
	}
	// Not root, sbin is searched too: ip and bird are there on Debian.
	out, code = deps(t, map[string]string{"id": "echo 1000", "apt-get": aptGet, "ip": "", "bird": "", "birdc": "", "nsenter": ""}, "demo")
	if code != 1 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "make deps: missing iputils-ping iperf3 (for ping iperf3): run as root (sudo make ...)") {
		t.Errorf("not root: exit %d:\n%s", code, out)
	}
	out, code = deps(t, map[string]string{"id": "echo 0"}, "demo")
	if code != 1 || !regexp.MustCompile(`^make deps: missing .*and this is no Debian machine \(no apt-get\)`).MatchString(out) {
		t.Errorf("no apt-get: exit %d:\n%s", code, out)
	}
	all := map[string]string{"id": "echo 0", "apt-get": aptGet}
	for _, c := range []string{"ip", "ping", "iperf3", "bird", "birdc", "nsenter"} {
		all[c] = ""
	}
	if out, code = deps(t, all, "demo"); code != 0 || out != "" {
		t.Errorf("nothing missing: exit %d, %q", code, out)
	}
	if out, code = deps(t, all, "tset"); code != 2 || !strings.Contains(out, "unknown set tset") {
		t.Errorf("a bad set: exit %d, %q", code, out)
	}
}

// TestDemoOnAnUnfitHost: cenctl demo run without root (and here without
// iperf3) says in one line what the machine lacks, and builds nothing.
func TestDemoOnAnUnfitHost(t *testing.T) {
	cenctl := binary(t, "cenctl")
	state := filepath.Join(t.TempDir(), "lab")
	args := []string{cenctl, "demo", "--state-dir", state, "--config", "../examples/lab.yaml", "--cend", "/bin/true", "--json", ""}
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("setpriv (util-linux) is needed to drop root")
		}
		args = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=/nonexistent"} // no ip, ping, bird or iperf3
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d (%v), want 1:\n%s", code, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if len(lines) != 1 {
		t.Errorf("want one line, got %d:\n%s", len(lines), out)
	}
	for _, want := range []string{"cenctl: this machine cannot run the lab: it runs without root", "sudo make demo",
		"ip, sh, ping, bird, birdc, iperf3 not found (Debian: apt-get install iproute2 dash iputils-ping bird2 iperf3"} {
		if !strings.Contains(last, want) {
			t.Errorf("the last line lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("the demo made %s on a host that cannot run it", state)
	}
}
