package main

import (
	"os"
	"strings"
	"testing"
)

func parseFile(t *testing.T, name string) *benchLog {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lg, err := parseLog(f)
	if err != nil {
		t.Fatal(err)
	}
	return lg
}

func TestParseManyMetricsAndProcsSuffix(t *testing.T) {
	line := "BenchmarkGoodput-2                  \t       1\t301234567890 ns/op\t         0.9577 htb-ratio-100Mbps-1f\t" +
		"         0.9712 ratio-10Mbps-1f\t         0.9412 ratio-500Mbps-1f\t      1012 opencen_fast_Mbps\t" +
		"         3.067 agent-cpu-%\t      1433 rss-B/route\t         0.9533 tbf-ratio-500Mbps-1f\n"
	lg, err := parseLog(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	if len(lg.results) != 1 {
		t.Fatalf("results: %+v", lg.results)
	}
	r := lg.results[0]
	if r.name != "BenchmarkGoodput-2" || r.bench != "BenchmarkGoodput" || r.iters != 1 {
		t.Errorf("name %q bench %q iters %d", r.name, r.bench, r.iters)
	}
	want := map[string]float64{"ns/op": 301234567890, "htb-ratio-100Mbps-1f": 0.9577, "ratio-10Mbps-1f": 0.9712,
		"ratio-500Mbps-1f": 0.9412, "opencen_fast_Mbps": 1012, "agent-cpu-%": 3.067, "rss-B/route": 1433, "tbf-ratio-500Mbps-1f": 0.9533}
	if len(r.metrics) != len(want) || len(r.units) != len(want) {
		t.Errorf("got %d metrics, %d units, want %d", len(r.metrics), len(r.units), len(want))
	}
	for u, v := range want {
		if got, ok := r.metrics[u]; !ok || got != v {
			t.Errorf("%s = %v (%v), want %v", u, got, ok, v)
		}
	}
	if r.units[0] != "ns/op" || r.units[len(r.units)-1] != "tbf-ratio-500Mbps-1f" {
		t.Errorf("units out of order: %v", r.units)
	}
}

func TestStripProcs(t *testing.T) {
	for in, want := range map[string]string{
		"BenchmarkThroughput-2":      "BenchmarkThroughput",
		"BenchmarkThroughput-16":     "BenchmarkThroughput",
		"BenchmarkThroughput":        "BenchmarkThroughput", // GOMAXPROCS=1
		"BenchmarkLearn100k-2":       "BenchmarkLearn100k",
		"BenchmarkX/rate=10Mbps-4-2": "BenchmarkX/rate=10Mbps-4",
	} {
		if got := stripProcs(in); got != want {
			t.Errorf("stripProcs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFieldsRejectsText(t *testing.T) {
	for _, l := range []string{
		"opencen fast path / veth = 0.111 (encryption cost, no target)",
		"1 2",             // no unit
		"x 12 ns/op",      // no iteration count
		"1 12 ns/op 0.95", // a value without its unit
		"1 abc ns/op",
	} {
		if _, _, _, ok := parseFields(strings.Fields(l)); ok {
			t.Errorf("parseFields(%q) accepted it", l)
		}
	}
}

func TestParseWholeRun(t *testing.T) {
	lg := parseFile(t, "all.log")
	if len(lg.runs) != len(areas) {
		t.Fatalf("runs: %+v", lg.runs)
	}
	for _, r := range lg.runs {
		if !r.ended || r.exit != 0 {
			t.Errorf("run %+v: want ended with exit 0", r)
		}
	}
	if lg.runs[1].command != "go test -count=1 -run '^$' -bench . -benchtime 1x ./routing/..." {
		t.Errorf("routing command %q", lg.runs[1].command)
	}
	if len(lg.results) != 14 || len(lg.fails) != 0 || len(lg.pkgFails) != 0 {
		t.Fatalf("%d results, %d fails, %d package fails", len(lg.results), len(lg.fails), len(lg.pkgFails))
	}
	// The benchmark's own text (indented figures, --- BENCH logs with
	// ok/MISSED verdicts) is not a result.
	wantArea := map[string]string{"BenchmarkThroughput": "dataplane", "BenchmarkFailover": "routing",
		"BenchmarkGoodput": "shaping", "BenchmarkIdleAgent": "agent", "BenchmarkValidate100k": "config"}
	for _, r := range lg.results {
		if a, ok := wantArea[r.bench]; ok && (r.area != a || !strings.HasPrefix(r.pkg, module+"/")) {
			t.Errorf("%s: area %q pkg %q, want area %q", r.bench, r.area, r.pkg, a)
		}
	}
	if r := lg.result("dataplane", "BenchmarkThroughput"); r == nil || len(r.metrics) != 10 || r.metrics["enter_twin_ratio_vs_single_gw"] != 0.885 {
		t.Errorf("throughput result: %+v", r)
	}
}

// A log without the runner's markers (make bench-agent with -count 2):
// areas come from the packages; a name printed ahead of the benchmark's
// own output gets the results that follow it.
func TestParseLogWithoutMarkersAndSplitLines(t *testing.T) {
	lg := parseFile(t, "split.log")
	if len(lg.runs) != 0 || len(lg.results) != 2 {
		t.Fatalf("runs %+v results %+v", lg.runs, lg.results)
	}
	for _, r := range lg.results {
		if r.bench != "BenchmarkIdleAgent" || r.pkg != module+"/test" || areaOf(r.area, r.pkg) != "agent" {
			t.Errorf("result %+v", r)
		}
	}
	if lg.results[0].metrics["allocs/op"] != 12 || lg.results[1].metrics["agent-rss-MB"] != 49.5 {
		t.Errorf("metrics %v then %v", lg.results[0].metrics, lg.results[1].metrics)
	}
	if r := lg.result("agent", "BenchmarkIdleAgent"); r != &lg.results[1] {
		t.Errorf("want the last result of a benchmark run twice")
	}
}

func TestParseFailures(t *testing.T) {
	lg := parseFile(t, "failed.log")
	if len(lg.fails) != 1 {
		t.Fatalf("fails %+v", lg.fails)
	}
	// It fails while go test has not printed the package yet (pkg: comes
	// with the first result), so the package comes later.
	f := lg.fails[0]
	want := benchFail{area: "routing", pkg: module + "/routing", bench: "BenchmarkBIRD100k", kind: "FAIL",
		reason: "bench_privileged_test.go:54: BIRD did not load 100000 routes: BIRD 2.0.12 ready."}
	if f != want {
		t.Errorf("fail\n got %+v\nwant %+v", f, want)
	}
	if len(lg.runs) != 2 || lg.runs[0].exit != 1 || lg.runs[0].note != "after 1m46s" {
		t.Errorf("runs %+v", lg.runs)
	}
	if len(lg.pkgFails) != 1 || lg.pkgFails[0].pkg != module+"/routing" || lg.pkgFails[0].reason != "" {
		t.Errorf("package fails %+v", lg.pkgFails)
	}
}

func TestParsePackageFailures(t *testing.T) {
	out := `# github.com/opencen/opencen/dataplane [github.com/opencen/opencen/dataplane.test]
dataplane/bench_test.go:12:2: undefined: foo
FAIL	github.com/opencen/opencen/dataplane [build failed]
goos: linux
pkg: github.com/opencen/opencen/shaping
panic: runtime error: index out of range [3] with length 3

goroutine 7 [running]:
FAIL	github.com/opencen/opencen/shaping	3.1s
### benchreport: start agent: go test ./test/
### benchreport: end agent: exit -1 after 0s: exec: "nogo": executable file not found in $PATH
`
	lg, err := parseLog(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []pkgFail{
		{pkg: module + "/dataplane", reason: "build failed"},
		{pkg: module + "/shaping", reason: "panic: runtime error: index out of range [3] with length 3"},
	}
	if len(lg.pkgFails) != 2 || lg.pkgFails[0] != want[0] || lg.pkgFails[1] != want[1] {
		t.Errorf("package fails\n got %+v\nwant %+v", lg.pkgFails, want)
	}
	if len(lg.runs) != 1 || lg.runs[0].exit != -1 || !strings.Contains(lg.runs[0].note, "executable file not found") {
		t.Errorf("runs %+v", lg.runs)
	}
}
