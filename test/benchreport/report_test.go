package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt from the report")

func allAreas() []string {
	var n []string
	for _, a := range areas {
		n = append(n, a.name)
	}
	return n
}

func reportOf(t *testing.T, name string) *report {
	t.Helper()
	rep, err := buildReport(parseFile(t, name), allAreas(), false, name)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func find(t *testing.T, rep *report, figureName string) figure {
	t.Helper()
	for _, f := range rep.Figures {
		if f.Figure == figureName {
			return f
		}
	}
	t.Fatalf("no row %q", figureName)
	return figure{}
}

func val(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func near(got *float64, want float64) bool {
	return got != nil && *got > want-1e-3 && *got < want+1e-3
}

func TestReportWholeRun(t *testing.T) {
	rep := reportOf(t, "all.log")
	if !rep.OK || len(rep.Unlisted) != 0 {
		t.Errorf("ok %v, unlisted %v", rep.OK, rep.Unlisted)
	}
	for _, a := range rep.Areas {
		if len(a.Problems) != 0 || a.Exit == nil || *a.Exit != 0 {
			t.Errorf("area %+v", a)
		}
	}
	for _, c := range []struct {
		figure        string
		value, ratio  any
		baselines     int
		target, verdi string
	}{
		{"TCP throughput, one-gateway region (the baseline)", 1824.0, nil, 0, "", noTarget},
		{"two gateways, entering at the source's home", 1811.0, 0.9912, 1, "ratio >= 0.9", met},
		{"two gateways, entering at the twin (handed off)", 1650.0, 0.8850, 1, "ratio >= 0.9", missed},
		{"two gateways, answering through the first twin", 1702.0, 0.9310, 1, "ratio >= 0.9", met},
		{"install 100k routes (ratio: speed)", 1.187, 0.832, 1, "ratio >= 0.8", met},
		// The pipeline: the Speaker plus the FIB against GoBGP plus the
		// FIB, ratio computed: (3.05+0.84)/(2.31+0.84).
		{"100k prefixes from BIRD, learned + installed", 3.89, 1.2349, 1, "ratio <= 2 and < 10 s", met},
		{"100k IPv6 prefixes from BIRD, learned + installed", 4.17, 1.2560, 1, "ratio <= 2 and < 10 s", met},
		{"Speaker RSS growth per route (in-process)", 1611.0, nil, 0, "<= 1536 B", missed},
		{"failover to the twin gateway, p95", 688.0, nil, 0, "< 1000 ms", met},
		{"convergence for one new prefix", 104.0, nil, 0, "", noTarget},
		// Within 0.95-1.00 and at least as close as the better of tbf/htb.
		{"goodput 10Mbps-1f, share of allocation", 0.9712, nil, 2, "0.95 to 1 and >= best of tbf/htb", met},
		{"goodput 500Mbps-1f, share of allocation", 0.9412, nil, 2, "0.95 to 1 and >= best of tbf/htb", missed},
		{"p99 RTT under load at 10Mbps", 6.41, 0.2054, 1, "<= htb", met},
		{"program cost, 100000 prefixes", 88.0, 1.38, 1, "ratio <= 1.5", met},
		{"throughput with the program, no limit / without", nil, 0.9741, 0, "ratio >= 0.95", met},
		{"tcx mode: goodput at 100 Mbps, share of allocation", 0.9634, nil, 0, "0.95 to 1", met},
		{"userspace mode: p99 RTT under load at 100 Mbps", 1.21, 1.21 / 0.41, 1, "", noTarget},
		{"tc mode: unlimited class, with / without", 1148.0, 0.975, 1, "ratio >= 0.95", met},
		{"userspace mode: unlimited class, with / without", 1069.0, 0.912, 1, "ratio >= 0.9", met},
		{"idle cend, 10 peers: CPU of one core", 3.067, nil, 0, "< 1 %", missed},
		{"idle cend, 10 peers: RSS", 57.15, nil, 0, "< 60 MB", met},
	} {
		f := find(t, rep, c.figure)
		okv := c.value == nil && f.Opencen == nil || c.value != nil && near(f.Opencen, c.value.(float64))
		okr := c.ratio == nil && f.Ratio == nil || c.ratio != nil && near(f.Ratio, c.ratio.(float64))
		if !okv || !okr || len(f.Baselines) != c.baselines || f.Target != c.target || f.Verdict != c.verdi || len(f.Missing) != 0 {
			t.Errorf("%s: opencen %v ratio %v baselines %d target %q verdict %q missing %v; want %v %v %d %q %q",
				c.figure, val(f.Opencen), val(f.Ratio), len(f.Baselines), f.Target, f.Verdict, f.Missing,
				c.value, c.ratio, c.baselines, c.target, c.verdi)
		}
	}
	// Program cost's baseline is derived: ns/pkt over the ratio.
	if b := find(t, rep, "program cost, 1000 prefixes").Baselines[0]; b.Name != "lookup only" || !near(b.Value, 61/1.17) {
		t.Errorf("lookup-only baseline %v %v", b.Name, val(b.Value))
	}
	// Wildcard rows come in natural order: 10, 100, 500 Mbps.
	var goodput []string
	for _, f := range rep.Figures {
		if strings.HasPrefix(f.Figure, "goodput ") {
			goodput = append(goodput, strings.Fields(f.Figure)[1])
		}
	}
	if want := []string{"10Mbps-1f,", "10Mbps-4f,", "100Mbps-1f,", "100Mbps-4f,", "500Mbps-1f,", "500Mbps-4f,"}; !slices.Equal(goodput, want) {
		t.Errorf("goodput cases %v, want %v", goodput, want)
	}
	want := map[string]int{met: 32, missed: 5, noTarget: 19, missing: 0}
	for k, v := range want {
		if rep.Verdicts[k] != v {
			t.Errorf("verdicts %v, want %v", rep.Verdicts, want)
			break
		}
	}
	// Areas come in the table's order, each once.
	var order []string
	for _, f := range rep.Figures {
		if len(order) == 0 || order[len(order)-1] != f.Area {
			order = append(order, f.Area)
		}
	}
	if !slices.Equal(order, allAreas()) {
		t.Errorf("areas in order %v", order)
	}
}

func TestReportFailedAndMissing(t *testing.T) {
	rep := reportOf(t, "failed.log")
	if rep.OK {
		t.Error("a failed command and a failed benchmark: want not OK")
	}
	if len(rep.Areas) != 2 || rep.Areas[0].Area != "routing" || rep.Areas[1].Area != "shaping" {
		t.Fatalf("areas %+v: want only those in the log", rep.Areas)
	}
	probs := strings.Join(rep.Areas[0].Problems, "\n")
	for _, w := range []string{"the command failed: exit 1 after 1m46s",
		"BenchmarkBIRD100k failed: bench_privileged_test.go:54: BIRD did not load 100000 routes"} {
		if !strings.Contains(probs, w) {
			t.Errorf("routing problems %q: want %q", probs, w)
		}
	}
	if len(rep.Areas[1].Problems) != 0 {
		t.Errorf("shaping problems %v: its benchmarks all reported", rep.Areas[1].Problems)
	}
	pipe := find(t, rep, "100k prefixes from BIRD, learned + installed")
	if pipe.Verdict != missing || pipe.Opencen != nil || pipe.Ratio != nil || !slices.Equal(pipe.Missing, []string{"speaker-s", "ipbatch-s", "gobgp-s"}) {
		t.Errorf("pipeline row %+v", pipe)
	}
	if f := find(t, rep, "failover to the twin gateway, p95"); f.Verdict != missed || !near(f.Opencen, 1204) {
		t.Errorf("p95 row %+v", f)
	}
	// tbf and htb missing: a row within the range cannot be judged, one
	// below 0.95 is missed whatever they are.
	if f := find(t, rep, "goodput 10Mbps-1f, share of allocation"); f.Verdict != missing || !near(f.Opencen, 0.9712) ||
		!slices.Equal(f.Missing, []string{"tbf-ratio-10Mbps-1f", "htb-ratio-10Mbps-1f"}) {
		t.Errorf("goodput row %+v", f)
	}
	if f := find(t, rep, "goodput 500Mbps-1f, share of allocation"); f.Verdict != missed {
		t.Errorf("goodput row %+v", f)
	}
	// A renamed metric: its row is missing, and the new name is listed.
	if f := find(t, rep, "throughput with the program, no limit / without"); f.Verdict != missing || !slices.Equal(f.Missing, []string{"ratio"}) {
		t.Errorf("unlimited row %+v", f)
	}
	if !slices.Equal(rep.Unlisted, []string{"shaping BenchmarkUnlimitedOverhead throughput-ratio"}) {
		t.Errorf("unlisted %v", rep.Unlisted)
	}
}

// A benchmark absent from the log (asked for with --only): its rows say
// missing, a wildcard row once, and the area says which did not report.
func TestReportAbsentArea(t *testing.T) {
	rep, err := buildReport(parseFile(t, "split.log"), []string{"shaping", "agent"}, true, "split.log")
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK {
		t.Error("want not OK")
	}
	f := find(t, rep, "goodput (every case), share of allocation")
	if f.Verdict != missing || !slices.Equal(f.Missing, []string{"ratio-*", "tbf-ratio-*", "htb-ratio-*"}) {
		t.Errorf("goodput row %+v", f)
	}
	if got := rep.Areas[0].Problems; len(got) != 5 || got[0] != "BenchmarkGoodput did not report (skipped, or the run stopped before it)" {
		t.Errorf("shaping problems %q", got)
	}
	// split.log holds no pipeline benchmark: only it is absent.
	if got := rep.Areas[1].Problems; len(got) != 1 || !strings.Contains(got[0], "BenchmarkPipeline100k did not report") {
		t.Errorf("agent problems %q", got)
	}
}

func TestReportText(t *testing.T) {
	for _, name := range []string{"all", "failed"} {
		var b bytes.Buffer
		if err := reportOf(t, name+".log").writeText(&b); err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join("testdata", name+".txt")
		if *update {
			if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if b.String() != string(want) {
			t.Errorf("%s report differs from %s (go test -update to rewrite):\n%s", name, golden, b.String())
		}
	}
}

func TestRunFromLog(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want []string // in standard output
	}{
		{[]string{"--from-log", "testdata/all.log"}, 0, []string{"every benchmark ran", "32 met, 5 MISSED"}},
		{[]string{"--from-log", "testdata/failed.log"}, 1, []string{"routing: BenchmarkBIRD100k failed", "NOT every benchmark ran"}},
		{[]string{"--from-log", "testdata/all.log", "--only", "agent"}, 0, []string{"agent  routing pipeline", "idle cend"}},
		{[]string{"--from-log", "testdata/split.log", "--only", "dataplane"}, 1, []string{"dataplane: BenchmarkThroughput did not report"}},
		{[]string{"--from-log", "testdata/all.log", "--only", "nope"}, 2, nil},
		{[]string{"--from-log", "testdata/all.log", "extra"}, 2, nil},
		{[]string{"--from-log", filepath.Join(dir, "absent.log")}, 1, nil},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, &out, &errb)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d; stderr %s", c.args, code, c.code, errb.String())
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, out.String())
			}
		}
		if strings.Contains(strings.Join(c.args, " "), "--only agent") && strings.Contains(out.String(), "dataplane") {
			t.Errorf("--only agent reported other areas:\n%s", out.String())
		}
	}
}

func TestJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--from-log", "testdata/failed.log", "--json", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		OK    bool `json:"ok"`
		Areas []struct {
			Area     string   `json:"area"`
			Command  string   `json:"command"`
			Exit     *int     `json:"exit"`
			Problems []string `json:"problems"`
		} `json:"areas"`
		Figures []struct {
			Area, Figure, Benchmark, Unit, Target, Verdict string
			Opencen, Ratio                                 *float64
			Baselines                                      []struct {
				Name  string
				Value *float64
			}
			Missing []string
		} `json:"figures"`
		Verdicts map[string]int `json:"verdicts"`
		Unlisted []string       `json:"unlisted"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v:\n%s", err, b)
	}
	if got.OK || len(got.Areas) != 2 || got.Areas[0].Exit == nil || *got.Areas[0].Exit != 1 ||
		!strings.HasPrefix(got.Areas[0].Command, "go test ") || len(got.Areas[0].Problems) != 2 {
		t.Errorf("report head: %+v", got)
	}
	if len(got.Figures) != 36 || got.Verdicts[missing] != 14 || len(got.Unlisted) != 1 {
		t.Errorf("%d figures, verdicts %v, unlisted %v", len(got.Figures), got.Verdicts, got.Unlisted)
	}
	first := got.Figures[0]
	if first.Area != "routing" || first.Benchmark != "BenchmarkBIRD100k" || first.Opencen != nil || first.Verdict != "missing" ||
		first.Target != "ratio <= 2 and < 10 s" || len(first.Missing) != 3 || first.Baselines[0].Value != nil {
		t.Errorf("first figure %+v", first)
	}
	for _, f := range got.Figures {
		if strings.HasPrefix(f.Figure, " ") {
			t.Errorf("figure %q: JSON figures carry no indentation", f.Figure)
		}
		if f.Figure == "p99 RTT under load at 100Mbps" && (f.Opencen == nil || *f.Opencen != 1.52 || f.Baselines[0].Name != "htb" ||
			*f.Baselines[0].Value != 4.87 || f.Unit != "ms" || f.Verdict != "met") {
			t.Errorf("latency figure %+v", f)
		}
	}
	// --json - writes it after the text report.
	out.Reset()
	if code := run(context.Background(), []string{"--from-log", "testdata/all.log", "--json", "-"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if i := strings.Index(out.String(), "\n{\n"); i < 0 || !json.Valid([]byte(out.String()[i:])) {
		t.Errorf("no valid JSON after the text:\n%s", out.String())
	}
}

func TestNaturalCompare(t *testing.T) {
	in := []string{"500Mbps-1f", "100Mbps-4f", "10Mbps-4f", "1Gbps-1f", "10Mbps-1f", "100000", "1000"}
	slices.SortFunc(in, naturalCompare)
	want := []string{"1Gbps-1f", "10Mbps-1f", "10Mbps-4f", "100Mbps-4f", "500Mbps-1f", "1000", "100000"}
	if !slices.Equal(in, want) {
		t.Errorf("got %v, want %v", in, want)
	}
}

func TestNum(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, c := range []struct {
		v    *float64
		unit string
		want string
	}{
		{nil, "s", "missing"}, {f(0), "", "0"}, {f(1012.4), "Mbit/s", "1012 Mbit/s"}, {f(57.15), "MB", "57.1 MB"},
		{f(3.067), "%", "3.07 %"}, {f(0.95612), "", "0.956"}, {f(0.0004123), "s", "0.000412 s"},
	} {
		if got := num(c.v, c.unit); got != c.want {
			t.Errorf("num(%v, %q) = %q, want %q", val(c.v), c.unit, got, c.want)
		}
	}
}

func TestReportMarkdown(t *testing.T) {
	rep := reportOf(t, "all.log")
	var b strings.Builder
	when := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	if err := rep.writeMarkdown(&b, when, machine{Kernel: "6.18.0", CPUs: 2, Model: "a CPU", Memory: "24 GiB"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# opencen benchmarks",
		"- measured: 2026-12-03 12:00 UTC",
		"- machine: Linux 6.18.0, 2 CPUs (a CPU), 24 GiB of memory",
		"## dataplane",
		"| two gateways, entering at the twin (handed off) | 1650 Mbit/s | one gateway 1824 Mbit/s | 0.885 | ratio >= 0.9 | MISSED |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}
