package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binary builds the named command of this checkout once per test run. With
// OPENCEN_TEST_BIN set to a folder, the commands there are tested instead
// (another build: an installed package, or an older commit, to show a test
// fails on it).
func binary(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("OPENCEN_TEST_BIN"); dir != "" {
		return filepath.Join(dir, name)
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "opencen-e2e-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "../cmd/...").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func runCenctl(t testing.TB, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary(t, "cenctl"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// The file commands as an operator runs them: every shipped example
// validates and prints its matrix, text and JSON agree, and a broken file
// exits 1 with one located line per mistake.
func TestCenctlFileCommands(t *testing.T) {
	examples, _ := filepath.Glob("../examples/*.yaml")
	if len(examples) < 3 {
		t.Fatalf("expected the three shipped examples, found %v", examples)
	}
	for _, ex := range examples {
		text := runCenctl(t, "validate", ex)
		if text.code != 0 || !strings.Contains(text.stdout, "valid. instance") {
			t.Fatalf("validate %s: exit %d\n%s%s", ex, text.code, text.stdout, text.stderr)
		}
		js := runCenctl(t, "validate", "-o", "json", ex)
		var doc struct {
			Pairs []struct {
				Regions   [2]string `json:"regions"`
				Bandwidth uint64    `json:"bandwidth_bps"`
			} `json:"pairs"`
		}
		if js.code != 0 || json.Unmarshal([]byte(js.stdout), &doc) != nil {
			t.Fatalf("validate -o json %s: exit %d\n%s", ex, js.code, js.stdout)
		}
		// One table row per JSON pair.
		for _, p := range doc.Pairs {
			if !strings.Contains(text.stdout, p.Regions[0]) || !strings.Contains(text.stdout, p.Regions[1]) {
				t.Errorf("%s: pair %v missing from the table", ex, p.Regions)
			}
		}
		if got := strings.Count(text.stdout, "\n") - 3; got != len(doc.Pairs) {
			t.Errorf("%s: table has %d rows, JSON %d pairs", ex, got, len(doc.Pairs))
		}
		topo := runCenctl(t, "topology", ex)
		if topo.code != 0 || !strings.HasPrefix(topo.stdout, "graph ") {
			t.Fatalf("topology %s: exit %d\n%s", ex, topo.code, topo.stderr)
		}
		// Where Graphviz is installed (CI installs it), the DOT must parse.
		if dot, err := exec.LookPath("dot"); err == nil {
			cmd := exec.Command(dot, "-Tsvg")
			cmd.Stdin = strings.NewReader(topo.stdout)
			if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("<svg")) {
				t.Errorf("dot rejects the topology of %s: %v\n%s", ex, err, out)
			}
		} else if os.Getenv("CI") != "" {
			t.Error("CI must install graphviz to check the topology output")
		}
	}

	bad := runCenctl(t, "validate", "../config/testdata/five-mistakes.yaml")
	if bad.code != 1 || bad.stdout != "" {
		t.Fatalf("bad file: exit %d, stdout %q", bad.code, bad.stdout)
	}
	lines := strings.Split(strings.TrimSpace(bad.stderr), "\n")
	if len(lines) != 6 || !strings.HasSuffix(lines[5], "5 error(s)") {
		t.Fatalf("want five located errors and a count:\n%s", bad.stderr)
	}
	for _, l := range lines[:5] {
		if parts := strings.SplitN(l, ":", 4); len(parts) != 4 || parts[1] == "" || parts[2] == "" {
			t.Errorf("not FILE:LINE:COL: message: %q", l)
		}
	}

	if r := runCenctl(t, "plan", "../examples/small.yaml", "../examples/small.yaml"); r.code != 0 || !strings.Contains(r.stdout, "no changes") {
		t.Errorf("plan of a file against itself: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCenctl(t, "validate"); r.code != 2 {
		t.Errorf("validate without a file: exit %d, want 2", r.code)
	}
}
