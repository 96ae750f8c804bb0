package main

import (
	"strconv"
	"strings"
)

// This file is the report's definition, and the only place that knows
// which benchmark reports what: the areas and their commands, and one row
// per figure. When a benchmark's metric is renamed, change its name here;
// the report lists any metric it finds that no row names ("not in the
// table"), so a rename shows up rather than vanishing.

const module = "github.com/opencen/opencen"

// area is one issue's benchmarks and the command that runs them. The
// arguments are those of the Makefile's bench-<name> target (a test in
// this package checks that they agree).
type area struct {
	name string
	args []string // for the go command
}

var areas = []area{
	{"dataplane", []string{"test", "-count=1", "-run", "^$", "-bench", ".", "-benchtime", "1x", "./dataplane/..."}},
	{"routing", []string{"test", "-count=1", "-run", "^$", "-bench", ".", "-benchtime", "1x", "./routing/..."}},
	{"shaping", []string{"test", "-count=1", "-run", "^$", "-bench", ".", "-benchtime", "1x", "./shaping/..."}},
	{"agent", []string{"test", "-count=1", "-run", "^$", "-bench", "IdleAgent|Pipeline100k", "-benchtime", "1x", "./test/"}},
	{"config", []string{"test", "-count=1", "-run", "^$", "-bench", "Validate100k", "-benchtime", "1x", "./cmd/cenctl/"}},
}

// holds reports whether the package with import path pkg is one this
// area's command tests: the last argument is its package pattern.
func (a area) holds(pkg string) bool {
	pat := a.args[len(a.args)-1]
	dir, recursive := strings.CutSuffix(pat, "/...")
	dir = strings.TrimSuffix(strings.TrimPrefix(dir, "./"), "/")
	root := module + "/" + dir
	return pkg == root || recursive && strings.HasPrefix(pkg, root+"/")
}

// row is one figure of the report.
//
// Expressions name metrics as the benchmark reports them (the unit given to
// b.ReportMetric) and may combine them left to right with " + ", " - ",
// " * " or " / " (spaces required: metric names hold '/' and '-'). A "*" in
// the first metric of value (or of ratio when there is no value) makes a
// row per case: one for every metric of the benchmark it matches, with the
// case put for "*" everywhere in the row, figure included.
type row struct {
	area      string
	bench     string // without the -N suffix go test adds
	figure    string
	value     string // opencen's figure; "" when the row only has a ratio
	unit      string
	baselines []baseline
	// ratio is what the benchmark itself reports as the ratio; "" means
	// value over the first baseline, noRatio means no ratio column.
	ratio  string
	target []cond // all must hold; none means no target
	// also names another benchmark of the same run, "area/BenchmarkName",
	// whose metrics the expressions may use as "BenchmarkName:metric".
	also string
}

// baseline is a same-run measurement to compare opencen's figure with.
type baseline struct {
	name string
	expr string
}

const noRatio = "-"

var rows = []row{
	// Dataplane: TCP throughput through the tunnel on every path of a
	// two-gateway region, each against a one-gateway region's plain path
	// in the same run (the median of interleaved rounds' ratios: on a
	// shared machine one lucky run decides a best-against-best ratio);
	// route installation.
	{area: "dataplane", bench: "BenchmarkThroughput", figure: "TCP throughput, one-gateway region (the baseline)",
		value: "single_gw_Mbps", unit: "Mbit/s"},
	{area: "dataplane", bench: "BenchmarkThroughput", figure: "  two gateways, entering at the source's home",
		value: "enter_home_Mbps", unit: "Mbit/s", baselines: []baseline{{"one gateway", "single_gw_Mbps"}},
		ratio: "enter_home_ratio_vs_single_gw", target: []cond{ratioAtLeast(0.9)}},
	{area: "dataplane", bench: "BenchmarkThroughput", figure: "  two gateways, entering at the twin (handed off)",
		value: "enter_twin_Mbps", unit: "Mbit/s", baselines: []baseline{{"one gateway", "single_gw_Mbps"}},
		ratio: "enter_twin_ratio_vs_single_gw", target: []cond{ratioAtLeast(0.9)}},
	{area: "dataplane", bench: "BenchmarkThroughput", figure: "  two gateways, answering through the first twin",
		value: "answers_a1_Mbps", unit: "Mbit/s", baselines: []baseline{{"one gateway", "single_gw_Mbps"}},
		ratio: "answers_a1_ratio_vs_single_gw", target: []cond{ratioAtLeast(0.9)}},
	{area: "dataplane", bench: "BenchmarkThroughput", figure: "  two gateways, answering through the second twin",
		value: "answers_a2_Mbps", unit: "Mbit/s", baselines: []baseline{{"one gateway", "single_gw_Mbps"}},
		ratio: "answers_a2_ratio_vs_single_gw", target: []cond{ratioAtLeast(0.9)}},
	{area: "dataplane", bench: "BenchmarkRouteInstall", figure: "install 100k routes (ratio: speed)",
		value: "opencen_s", unit: "s", baselines: []baseline{{"ip -batch", "ip-batch_s"}},
		ratio: "speed_ratio_vs_ip-batch", target: []cond{ratioAtLeast(0.8)}},
	{area: "dataplane", bench: "BenchmarkSetLargeRouteSet", figure: "Set of 100k prefixes, first",
		value: "first_set_s", unit: "s"},
	{area: "dataplane", bench: "BenchmarkSetLargeRouteSet", figure: "Set of 100k prefixes, identical again",
		value: "identical_set_s", unit: "s"},

	// Routing: 100k prefixes from BIRD (each receiver alone in its
	// process), failover, and the in-process run beside plain GoBGP. The
	// pipeline is the Speaker's learning plus installing the routes, which
	// ip -batch stands for on both sides.
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "100k prefixes from BIRD, learned + installed",
		value: "speaker-s + ipbatch-s", unit: "s", baselines: []baseline{{"GoBGP + ip -batch", "gobgp-s + ipbatch-s"}},
		target: []cond{ratioAtMost(2), valueBelow(10)}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "  of which learned by the Speaker",
		value: "speaker-s", unit: "s", baselines: []baseline{{"GoBGP", "gobgp-s"}}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "Speaker process RSS per route (BIRD)",
		value: "rss-B/route", unit: "B", target: []cond{valueAtMost(1536)}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "Speaker process heap per route (BIRD)",
		value: "heap-B/route", unit: "B", target: []cond{valueAtMost(1536)}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "100k IPv6 prefixes from BIRD, learned + installed",
		value: "speaker6-s + ipbatch6-s", unit: "s", baselines: []baseline{{"GoBGP + ip -batch", "gobgp6-s + ipbatch6-s"}},
		target: []cond{ratioAtMost(2), valueBelow(10)}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "  of which learned by the Speaker (IPv6)",
		value: "speaker6-s", unit: "s", baselines: []baseline{{"GoBGP", "gobgp6-s"}}},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "Speaker process RSS per IPv6 route (BIRD)",
		value: "rss6-B/route", unit: "B"},
	{area: "routing", bench: "BenchmarkBIRD100k", figure: "Speaker process heap per IPv6 route (BIRD)",
		value: "heap6-B/route", unit: "B"},
	{area: "routing", bench: "BenchmarkFailover", figure: "failover to the twin gateway, p50",
		value: "p50-ms", unit: "ms", target: []cond{valueBelow(1000)}},
	{area: "routing", bench: "BenchmarkFailover", figure: "failover to the twin gateway, p95",
		value: "p95-ms", unit: "ms", target: []cond{valueBelow(1000)}},
	{area: "routing", bench: "BenchmarkLearn100k", figure: "100k prefixes in-process, learned",
		value: "speaker-s", unit: "s", baselines: []baseline{{"GoBGP", "baseline-s"}}},
	{area: "routing", bench: "BenchmarkLearn100k", figure: "Speaker RSS growth per route (in-process)",
		value: "rss-B/route", unit: "B", target: []cond{valueAtMost(1536)}},
	{area: "routing", bench: "BenchmarkLearn100k", figure: "Speaker heap per route (in-process)",
		value: "heap-B/route", unit: "B", target: []cond{valueAtMost(1536)}},
	{area: "routing", bench: "BenchmarkLearn100k", figure: "  sender's own heap per route (excluded)",
		value: "sender-heap-B/route", unit: "B"},
	{area: "routing", bench: "BenchmarkLearn100k", figure: "convergence for one new prefix",
		value: "converge-ms", unit: "ms"},

	// Shaping: goodput against the allocation beside tc's shapers,
	// latency under load beside htb, program cost beside a lookup-only
	// program, and throughput with the program but no limit.
	{area: "shaping", bench: "BenchmarkGoodput", figure: "goodput *, share of allocation",
		value: "ratio-*", baselines: []baseline{{"tbf", "tbf-ratio-*"}, {"htb", "htb-ratio-*"}},
		ratio: noRatio, target: []cond{valueIn(0.95, 1), valueAtLeastBestBaseline(1)}},
	{area: "shaping", bench: "BenchmarkLatencyUnderLoad", figure: "p99 RTT under load at *",
		value: "p99ms-*", unit: "ms", baselines: []baseline{{"htb", "htb-p99ms-*"}},
		target: []cond{valueAtMostBaseline()}},
	{area: "shaping", bench: "BenchmarkProgramCost", figure: "program cost, * prefixes",
		value: "ns/pkt-*", unit: "ns/pkt", baselines: []baseline{{"lookup only", "ns/pkt-* / ratio-*"}},
		ratio: "ratio-*", target: []cond{ratioAtMost(1.5)}},
	{area: "shaping", bench: "BenchmarkUnlimitedOverhead", figure: "throughput with the program, no limit / without",
		ratio: "ratio", target: []cond{ratioAtLeast(0.95)}},

	// Shaping, per --shaper mode, on one WireGuard tunnel (wireguard-go on
	// a TUN): goodput at 100 Mbps, p99 RTT under that load beside the idle
	// tunnel's, and one flow to an unlimited region with the mode's shaper
	// against without it (median of paired runs).
	{area: "shaping", bench: "BenchmarkModes", figure: "* mode: goodput at 100 Mbps, share of allocation",
		value: "*-goodput-ratio", ratio: noRatio, target: []cond{valueIn(0.95, 1)}},
	{area: "shaping", bench: "BenchmarkModes", figure: "* mode: p99 RTT under load at 100 Mbps",
		value: "*-p99ms-load", unit: "ms", baselines: []baseline{{"idle tunnel", "*-p99ms-idle"}}},
	{area: "shaping", bench: "BenchmarkModes", figure: "tcx mode: unlimited class, with / without",
		value: "tcx-unlimited-with-Mbps", unit: "Mbit/s", baselines: []baseline{{"without", "tcx-unlimited-without-Mbps"}},
		ratio: "tcx-unlimited-ratio", target: []cond{ratioAtLeast(0.95)}},
	{area: "shaping", bench: "BenchmarkModes", figure: "tc mode: unlimited class, with / without",
		value: "tc-unlimited-with-Mbps", unit: "Mbit/s", baselines: []baseline{{"without", "tc-unlimited-without-Mbps"}},
		ratio: "tc-unlimited-ratio", target: []cond{ratioAtLeast(0.95)}},
	{area: "shaping", bench: "BenchmarkModes", figure: "userspace mode: unlimited class, with / without",
		value: "userspace-unlimited-with-Mbps", unit: "Mbit/s", baselines: []baseline{{"without", "userspace-unlimited-without-Mbps"}},
		ratio: "userspace-unlimited-ratio", target: []cond{ratioAtLeast(0.90)}},

	// The routing pipeline end to end (issue 4): real cend processes, BIRD
	// announcing 100k prefixes over a VBR, until all are in a remote
	// region's gateway's kernel; its baselines are bare GoBGP receiving
	// them from BIRD (the routing area's run) and ip -batch installing
	// them (measured beside the pipeline).
	{area: "agent", bench: "BenchmarkPipeline100k", figure: "routing pipeline: 100k from BIRD to a remote FIB",
		value: "pipeline-s", unit: "s", baselines: []baseline{{"GoBGP + ip -batch", "BenchmarkBIRD100k:gobgp-s + ipbatch-s"}},
		also: "routing/BenchmarkBIRD100k", target: []cond{ratioAtMost(2), valueBelow(10)}},
	{area: "agent", bench: "BenchmarkPipeline100k", figure: "  of which BIRD's own reconfigure",
		value: "bird-configure-s", unit: "s"},
	{area: "agent", bench: "BenchmarkPipeline100k", figure: "  receiving cend's RSS per route (whole agent)",
		value: "receiver-rss-B/route", unit: "B"},
	{area: "agent", bench: "BenchmarkPipeline100k", figure: "routing pipeline: 100k IPv6 from BIRD to a remote FIB",
		value: "pipeline6-s", unit: "s", baselines: []baseline{{"GoBGP + ip -batch", "BenchmarkBIRD100k:gobgp6-s + ipbatch6-s"}},
		also: "routing/BenchmarkBIRD100k", target: []cond{ratioAtMost(2), valueBelow(10)}},
	{area: "agent", bench: "BenchmarkPipeline100k", figure: "  receiving cend's RSS per IPv6 route (whole agent)",
		value: "receiver-rss6-B/route", unit: "B"},

	// Agent: one idle cend with ten peers, and its WireGuard helper.
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "idle cend, 10 peers: RSS",
		value: "agent-rss-MB", unit: "MB", target: []cond{valueBelow(60)}},
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "idle cend, 10 peers: CPU of one core",
		value: "agent-cpu-%", unit: "%", target: []cond{valueBelow(1)}},
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "  with a /metrics scrape every 15 s",
		value: "agent-cpu-scraped-%", unit: "%", target: []cond{valueBelow(1)}},
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "one /metrics scrape: CPU",
		value: "scrape-cpu-ms", unit: "ms", baselines: []baseline{{"a status request", "status-cpu-ms"}},
		ratio: "ratio-scrape-vs-status"},
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "  its WireGuard helper: RSS",
		value: "helper-rss-MB", unit: "MB"},
	{area: "agent", bench: "BenchmarkIdleAgent", figure: "  its WireGuard helper: CPU of one core",
		value: "helper-cpu-%", unit: "%"},

	// Config: cenctl validate of 100,000 VPCs (every overlap check
	// included) beside decoding the file's YAML alone.
	{area: "config", bench: "BenchmarkValidate100k", figure: "cenctl validate, 100k networks",
		value: "validate-s", unit: "s", baselines: []baseline{{"YAML decode alone", "yaml-decode-s"}},
		ratio: "ratio-vs-yaml-decode", target: []cond{valueBelow(2)}},
}

// cond is one condition of a target: opencen's value (or the row's ratio)
// against a limit, or against the row's baselines.
type cond struct {
	on      operand
	op      string  // "<", "<=", ">=", ">", or "in" for lo <= x <= hi
	lo, hi  float64 // the limit (lo); for "in" the range; for bestBase the cap
	against against
}

type operand int

const (
	onValue operand = iota
	onRatio
)

type against int

const (
	limit     against = iota // the constant lo (and hi)
	firstBase                // the row's first baseline
	bestBase                 // the largest baseline, each capped at lo
)

func ratioAtLeast(x float64) cond { return cond{on: onRatio, op: ">=", lo: x} }
func ratioAtMost(x float64) cond  { return cond{on: onRatio, op: "<=", lo: x} }
func valueBelow(x float64) cond   { return cond{on: onValue, op: "<", lo: x} }
func valueAtMost(x float64) cond  { return cond{on: onValue, op: "<=", lo: x} }
func valueIn(lo, hi float64) cond { return cond{on: onValue, op: "in", lo: lo, hi: hi} }

// valueAtMostBaseline: opencen's value no larger than the first baseline's.
func valueAtMostBaseline() cond { return cond{on: onValue, op: "<=", against: firstBase} }

// valueAtLeastBestBaseline: opencen's value at least the best baseline's,
// each baseline counted as at most capAt (an overshoot is no better).
func valueAtLeastBestBaseline(capAt float64) cond {
	return cond{on: onValue, op: ">=", lo: capAt, against: bestBase}
}

// text is the condition as the report prints it.
func (c cond) text(r row) string {
	var b strings.Builder
	if c.on == onRatio {
		b.WriteString("ratio ")
	}
	num := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	switch {
	case c.against == firstBase && len(r.baselines) > 0:
		b.WriteString(c.op + " " + r.baselines[0].name)
		return b.String()
	case c.against == bestBase:
		names := make([]string, len(r.baselines))
		for i, bl := range r.baselines {
			names[i] = bl.name
		}
		b.WriteString(c.op + " best of " + strings.Join(names, "/"))
		return b.String()
	case c.op == "in":
		b.WriteString(num(c.lo) + " to " + num(c.hi))
	default:
		b.WriteString(c.op + " " + num(c.lo))
	}
	if c.on == onValue && r.unit != "" {
		b.WriteString(" " + r.unit)
	}
	return b.String()
}

// holds reports whether the condition is met, given opencen's value, the
// ratio and the baselines; known is false when a figure it needs is
// missing.
func (c cond) holds(value, ratio *float64, bases []*float64) (met, known bool) {
	x := value
	if c.on == onRatio {
		x = ratio
	}
	if x == nil {
		return false, false
	}
	lim := c.lo
	switch c.against {
	case firstBase:
		if len(bases) == 0 || bases[0] == nil {
			return false, false
		}
		lim = *bases[0]
	case bestBase:
		if len(bases) == 0 {
			return false, false
		}
		best := 0.0
		for i, bv := range bases {
			if bv == nil {
				return false, false
			}
			if v := min(*bv, c.lo); i == 0 || v > best {
				best = v
			}
		}
		lim = best
	}
	switch c.op {
	case "<":
		return *x < lim, true
	case "<=":
		return *x <= lim, true
	case ">":
		return *x > lim, true
	case ">=":
		return *x >= lim, true
	case "in":
		return *x >= c.lo && *x <= c.hi, true
	}
	return false, false
}
