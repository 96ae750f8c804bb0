package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The table is code, so check what the compiler cannot: every row belongs
// to an area, its expressions are well formed, its conditions can be
// judged.
func TestTableIsWellFormed(t *testing.T) {
	perArea := map[string]int{}
	for _, r := range rows {
		perArea[r.area]++
		name := r.area + " " + r.figure
		if !slices.ContainsFunc(areas, func(a area) bool { return a.name == r.area }) {
			t.Errorf("%s: no area %q", name, r.area)
		}
		if !strings.HasPrefix(r.bench, "Benchmark") || stripProcs(r.bench) != r.bench {
			t.Errorf("%s: benchmark %q", name, r.bench)
		}
		if r.value == "" && (r.ratio == "" || r.ratio == noRatio) {
			t.Errorf("%s: neither a value nor a ratio", name)
		}
		exprs := []string{r.value}
		if r.ratio != noRatio {
			exprs = append(exprs, r.ratio)
		}
		for _, b := range r.baselines {
			exprs = append(exprs, b.expr)
		}
		for _, e := range exprs {
			tok := strings.Fields(e)
			if e != "" && len(tok)%2 == 0 {
				t.Errorf("%s: expression %q", name, e)
			}
			for i := 1; i < len(tok); i += 2 {
				if !slices.Contains([]string{"+", "-", "*", "/"}, tok[i]) {
					t.Errorf("%s: expression %q: operator %q", name, e, tok[i])
				}
			}
			for i := 0; i < len(tok); i += 2 {
				if strings.Contains(tok[i], "*") && !strings.Contains(r.figure, "*") {
					t.Errorf("%s: a wildcard row needs '*' in its figure", name)
				}
			}
		}
		for _, c := range r.target {
			if c.against != limit && len(r.baselines) == 0 {
				t.Errorf("%s: a target against baselines, and none", name)
			}
			if c.on == onRatio && r.ratio == noRatio {
				t.Errorf("%s: a target on the ratio, and no ratio", name)
			}
		}
	}
	for _, a := range areas {
		if perArea[a.name] == 0 {
			t.Errorf("area %s has no rows", a.name)
		}
	}
}

// make bench-<area> and the report run the same command.
func TestCommandsMatchMakefile(t *testing.T) {
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	mk := string(b)
	for _, a := range areas {
		m := regexp.MustCompile(`(?m)^bench-` + a.name + `:.*\n\t\$\(GO\) (.*)$`).FindStringSubmatch(mk)
		if m == nil {
			t.Errorf("Makefile: no bench-%s target running $(GO)", a.name)
			continue
		}
		got := strings.Fields(strings.NewReplacer("$$", "$", "'", "").Replace(m[1]))
		if !slices.Equal(got, a.args) {
			t.Errorf("bench-%s runs go %q, the report go %q", a.name, got, a.args)
		}
	}
	if !regexp.MustCompile(`(?m)^bench:.*\n\t\$\(GO\) run ./test/benchreport`).MatchString(mk) {
		t.Error("Makefile: bench does not run ./test/benchreport")
	}
}

func TestAreaHolds(t *testing.T) {
	for _, c := range []struct {
		area, pkg string
		want      bool
	}{
		{"dataplane", module + "/dataplane", true},
		{"dataplane", module + "/dataplane/internal/x", true},
		{"routing", module + "/routingx", false},
		{"agent", module + "/test", true},
		{"agent", module + "/test/benchreport", false}, // ./test/ is not ./test/...
	} {
		for _, a := range areas {
			if a.name == c.area && a.holds(c.pkg) != c.want {
				t.Errorf("%s holds %s: %v, want %v", c.area, c.pkg, !c.want, c.want)
			}
		}
	}
}

// fakeGo stands in for the go command: it prints canned benchmark output
// for the agent area and fails the routing area's package.
func fakeGo(t *testing.T) string {
	t.Helper()
	script := `#!/bin/sh
last=""; for a in "$@"; do last="$a"; done
case "$last" in
./test/)
	printf 'goos: linux\npkg: github.com/opencen/opencen/test\n'
	printf 'BenchmarkIdleAgent-2   \t       1\t30032087661 ns/op\t         0.52 agent-cpu-%%\t        49.50 agent-rss-MB\t         0.30 helper-cpu-%%\t        32.46 helper-rss-MB\n'
	printf 'BenchmarkPipeline100k-2   \t       1\t9032087661 ns/op\t         0.61 bird-configure-s\t        1.20 ipbatch-s\t         4.10 pipeline-s\t        1480 receiver-rss-B/route\n'
	printf 'PASS\nok  \tgithub.com/opencen/opencen/test\t43.046s\n' ;;
./routing/...)
	printf -- '--- FAIL: BenchmarkBIRD100k\n    bench_privileged_test.go:54: no bird\n' >&2
	printf 'FAIL\tgithub.com/opencen/opencen/routing\t1.0s\n'
	exit 1 ;;
*)
	echo "unexpected: $*" >&2; exit 3 ;;
esac
`
	p := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunStreamsSavesAndReports(t *testing.T) {
	goCmd := fakeGo(t)
	logPath := filepath.Join(t.TempDir(), "bench.log")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--go", goCmd, "--log", logPath, "--only", "agent,routing"}, &out, &errb)
	if code != 1 {
		t.Errorf("exit %d, want 1 (routing failed); stderr %s", code, errb.String())
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Streamed and saved alike; areas in the table's order, not --only's.
	for _, w := range []string{
		"### benchreport: start routing: " + goCmd + " test -count=1 -run '^$' -bench . -benchtime 1x ./routing/...\n",
		"--- FAIL: BenchmarkBIRD100k\n",
		"### benchreport: end routing: exit 1 after ",
		"### benchreport: start agent: ",
		"BenchmarkIdleAgent-2",
		"### benchreport: end agent: exit 0 after ",
	} {
		if !strings.Contains(string(log), w) || !strings.Contains(out.String(), w) {
			t.Errorf("log or terminal lacks %q:\nlog:\n%s", w, log)
		}
	}
	if strings.Index(string(log), "start routing") > strings.Index(string(log), "start agent") {
		t.Error("routing must run before agent")
	}
	report := out.String()[len(log):]
	for _, w := range []string{"idle cend, 10 peers: RSS", "routing: the command failed: exit 1", "routing: BenchmarkBIRD100k failed: bench_privileged_test.go:54: no bird"} {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q:\n%s", w, report)
		}
	}
	if strings.Contains(report, "dataplane") {
		t.Errorf("report has areas not run:\n%s", report)
	}

	out.Reset()
	if code := run(context.Background(), []string{"--go", goCmd, "--log", logPath, "--only", "agent"}, &out, &errb); code != 0 {
		t.Errorf("agent alone: exit %d, want 0 (its CPU target is met, every benchmark ran)", code)
	}
}

func TestRunInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	logPath := filepath.Join(t.TempDir(), "bench.log")
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"--go", fakeGo(t), "--log", logPath}, &out, &errb); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, a := range areas {
		if w := a.name + ": the command did not complete: interrupted before it started"; !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, out.String())
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"go", "test", "-run", "^$", "-bench", ".", "it's"})
	if want := `go test -run '^$' -bench . 'it'\''s'`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
