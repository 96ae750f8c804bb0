package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Verdicts of a row.
const (
	met      = "met"
	missed   = "MISSED"
	noTarget = "no target"
	missing  = "missing"
)

// report is the whole report: the table's rows evaluated against one log,
// and what went wrong in the runs. It is also the JSON written by --json.
type report struct {
	Log      string         `json:"log,omitempty"`
	OK       bool           `json:"ok"` // every command succeeded and every benchmark reported
	Areas    []areaReport   `json:"areas"`
	Figures  []figure       `json:"figures"`
	Verdicts map[string]int `json:"verdicts"`
	// Unlisted names metrics (and benchmarks) the log holds that no row
	// names: new, or renamed under the table's feet.
	Unlisted []string `json:"unlisted,omitempty"`
}

type areaReport struct {
	Area     string   `json:"area"`
	Command  string   `json:"command,omitempty"`
	Exit     *int     `json:"exit,omitempty"` // absent when the log has no runner markers
	Problems []string `json:"problems,omitempty"`
}

// figure is one row of the report.
type figure struct {
	Area      string          `json:"area"`
	Figure    string          `json:"figure"`
	Benchmark string          `json:"benchmark"`
	Opencen   *float64        `json:"opencen"`
	Unit      string          `json:"unit,omitempty"`
	Baselines []baselineValue `json:"baselines,omitempty"`
	Ratio     *float64        `json:"ratio"`
	Target    string          `json:"target,omitempty"`
	Verdict   string          `json:"verdict"`
	Missing   []string        `json:"missing,omitempty"` // metrics the row names that the log lacks

	hasValue, hasRatio bool
	indent             string // of a sub-row, in the text table only
}

type baselineValue struct {
	Name  string   `json:"name"`
	Value *float64 `json:"value"`
}

// buildReport evaluates the table against a log. names are the areas to
// report, in any order; when explicit is false (no --only) an area absent
// from the log is left out rather than reported as missing.
func buildReport(lg *benchLog, names []string, explicit bool, logName string) (*report, error) {
	present := lg.areas()
	var sel []area
	for _, a := range areas {
		if slices.Contains(names, a.name) && (explicit || present[a.name]) {
			sel = append(sel, a)
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("no benchmark output of %s in %s", strings.Join(names, ", "), logName)
	}
	rep := &report{Log: logName, OK: true, Verdicts: map[string]int{met: 0, missed: 0, noTarget: 0, missing: 0}}
	for _, a := range sel {
		used := map[string]map[string]bool{} // bench → metrics some row names
		for _, r := range rows {
			if r.area != a.name {
				continue
			}
			res := lg.result(a.name, r.bench)
			if r.also != "" {
				res = withAlso(res, lg, r.also)
			}
			if used[r.bench] == nil {
				used[r.bench] = map[string]bool{}
			}
			for _, c := range expand(r, res) {
				f := evaluate(c, res, used[r.bench])
				rep.Figures = append(rep.Figures, f)
				rep.Verdicts[f.Verdict]++
			}
		}
		ar := lg.problems(a, used)
		if len(ar.Problems) > 0 {
			rep.OK = false
		}
		rep.Areas = append(rep.Areas, ar)
		rep.Unlisted = append(rep.Unlisted, lg.unlisted(a.name, used)...)
	}
	return rep, nil
}

// withAlso is res with the metrics of another benchmark of the run added
// as "BenchmarkName:metric" (see row.also); nil when neither reported.
func withAlso(res *benchResult, lg *benchLog, also string) *benchResult {
	areaName, bench, _ := strings.Cut(also, "/")
	other := lg.result(areaName, bench)
	if other == nil {
		return res
	}
	merged := benchResult{metrics: map[string]float64{}}
	if res != nil {
		merged = *res
		merged.metrics = maps.Clone(res.metrics)
	}
	for k, v := range other.metrics {
		merged.metrics[bench+":"+k] = v
	}
	if res == nil {
		// The row's own benchmark did not report: its metrics stay missing.
		merged.bench = ""
	}
	return &merged
}

// areas are the areas the log has any output of.
func (lg *benchLog) areas() map[string]bool {
	seen := map[string]bool{}
	for _, r := range lg.runs {
		seen[r.area] = true
	}
	for _, r := range lg.results {
		seen[areaOf(r.area, r.pkg)] = true
	}
	for _, f := range lg.fails {
		seen[areaOf(f.area, f.pkg)] = true
	}
	for _, p := range lg.pkgs {
		seen[areaOf("", p)] = true
	}
	return seen
}

// areaOf is the area of a line of output: its marker's, else its package's.
func areaOf(marked, pkg string) string {
	if marked != "" {
		return marked
	}
	for _, a := range areas {
		if a.holds(pkg) {
			return a.name
		}
	}
	return ""
}

// result is the benchmark's last result in the area, or nil.
func (lg *benchLog) result(areaName, bench string) *benchResult {
	for i := len(lg.results) - 1; i >= 0; i-- {
		if r := &lg.results[i]; r.bench == bench && areaOf(r.area, r.pkg) == areaName {
			return r
		}
	}
	return nil
}

// problems says what went wrong in an area's run: its command's exit,
// failed packages, and each benchmark of the table that did not report.
func (lg *benchLog) problems(a area, used map[string]map[string]bool) areaReport {
	ar := areaReport{Area: a.name}
	for _, r := range lg.runs {
		if r.area != a.name {
			continue
		}
		ar.Command = r.command
		exit := r.exit
		ar.Exit = &exit
		switch {
		case !r.ended:
			ar.Problems = append(ar.Problems, "the command did not finish (interrupted?)")
		case r.exit < 0:
			ar.Problems = append(ar.Problems, strings.TrimSuffix("the command did not complete: "+r.note, ": "))
		case r.exit != 0:
			ar.Problems = append(ar.Problems, strings.TrimSpace(fmt.Sprintf("the command failed: exit %d %s", r.exit, r.note)))
		}
	}
	failedBench := map[string]bool{}
	for _, r := range rows {
		if r.area != a.name || failedBench[r.bench] || lg.result(a.name, r.bench) != nil {
			continue
		}
		failedBench[r.bench] = true
		p := r.bench + " did not report (skipped, or the run stopped before it)"
		for _, f := range lg.fails {
			if f.bench == r.bench && areaOf(f.area, f.pkg) == a.name {
				verb := map[string]string{"FAIL": "failed", "SKIP": "skipped"}[f.kind]
				p = strings.TrimSuffix(r.bench+" "+verb+": "+f.reason, ": ")
			}
		}
		ar.Problems = append(ar.Problems, p)
	}
	for _, pf := range lg.pkgFails {
		if areaOf(pf.area, pf.pkg) != a.name {
			continue
		}
		// A failed benchmark fails its package too: say so only when
		// there is more to say.
		if pf.reason != "" || !lg.benchFailedIn(pf.pkg) {
			ar.Problems = append(ar.Problems, strings.TrimSuffix(pf.pkg+" failed: "+pf.reason, ": "))
		}
	}
	return ar
}

func (lg *benchLog) benchFailedIn(pkg string) bool {
	for _, f := range lg.fails {
		if f.pkg == pkg && f.kind == "FAIL" {
			return true
		}
	}
	return false
}

// unlisted names the area's benchmarks and metrics no row names.
func (lg *benchLog) unlisted(areaName string, used map[string]map[string]bool) []string {
	var out []string
	done := map[string]bool{}
	for i := len(lg.results) - 1; i >= 0; i-- {
		r := lg.results[i]
		if areaOf(r.area, r.pkg) != areaName || done[r.bench] {
			continue
		}
		done[r.bench] = true
		u, known := used[r.bench]
		if !known {
			out = append(out, areaName+" "+r.bench+" (no row)")
			continue
		}
		for _, unit := range r.units {
			if !u[unit] && !standardUnit(unit) {
				out = append(out, areaName+" "+r.bench+" "+unit)
			}
		}
	}
	slices.Sort(out)
	return out
}

// standardUnit: what go test reports of every benchmark itself.
func standardUnit(u string) bool {
	return u == "ns/op" || u == "B/op" || u == "allocs/op" || u == "MB/s"
}

// expand makes the rows of a wildcard row, one per case the benchmark
// reported, in natural order (10Mbps, then 100Mbps); other rows are
// returned as they are.
func expand(r row, res *benchResult) []row {
	key := r.value
	if key == "" {
		key = r.ratio
	}
	first, _, _ := strings.Cut(key, " ")
	pre, suf, wild := strings.Cut(first, "*")
	if !wild {
		return []row{r}
	}
	var cases []string
	if res != nil {
		for _, u := range res.units {
			if len(u) > len(pre)+len(suf) && strings.HasPrefix(u, pre) && strings.HasSuffix(u, suf) {
				cases = append(cases, u[len(pre):len(u)-len(suf)])
			}
		}
	}
	if len(cases) == 0 {
		// Nothing to expand: one row, its metrics missing.
		c := r
		c.figure = strings.ReplaceAll(r.figure, "*", "(every case)")
		return []row{c}
	}
	slices.SortFunc(cases, naturalCompare)
	out := make([]row, 0, len(cases))
	for _, cs := range cases {
		c := r
		c.figure = strings.ReplaceAll(r.figure, "*", cs)
		c.value = strings.ReplaceAll(r.value, "*", cs)
		c.ratio = strings.ReplaceAll(r.ratio, "*", cs)
		c.baselines = make([]baseline, len(r.baselines))
		for i, b := range r.baselines {
			c.baselines[i] = baseline{b.name, strings.ReplaceAll(b.expr, "*", cs)}
		}
		out = append(out, c)
	}
	return out
}

// evaluate computes one row from its benchmark's result (nil when the
// benchmark did not report), noting in used the metrics it names.
func evaluate(r row, res *benchResult, used map[string]bool) figure {
	var m map[string]float64
	if res != nil {
		m = res.metrics
	}
	f := figure{Area: r.area, Benchmark: r.bench, Unit: r.unit, hasValue: r.value != "", hasRatio: r.ratio != noRatio}
	f.indent = r.figure[:len(r.figure)-len(strings.TrimLeft(r.figure, " "))]
	f.Figure = strings.TrimSpace(r.figure)
	eval := func(expr string) *float64 {
		v, miss := evalExpr(expr, m, used)
		for _, x := range miss {
			if !slices.Contains(f.Missing, x) {
				f.Missing = append(f.Missing, x)
			}
		}
		return v
	}
	if r.value != "" {
		f.Opencen = eval(r.value)
	}
	bases := make([]*float64, len(r.baselines))
	for i, b := range r.baselines {
		bases[i] = eval(b.expr)
		f.Baselines = append(f.Baselines, baselineValue{Name: b.name, Value: bases[i]})
	}
	switch {
	case r.ratio == noRatio:
	case r.ratio != "":
		f.Ratio = eval(r.ratio)
	case r.value != "" && len(bases) > 0:
		f.Ratio = finite(f.Opencen, bases[0], func(a, b float64) float64 { return a / b })
	default:
		f.hasRatio = false
	}
	// A condition that fails makes the row MISSED even when another cannot
	// be judged; otherwise any missing metric makes it missing.
	var texts []string
	failed, unknown := false, len(f.Missing) > 0
	for _, c := range r.target {
		texts = append(texts, c.text(r))
		ok, known := c.holds(f.Opencen, f.Ratio, bases)
		failed = failed || known && !ok
		unknown = unknown || !known
	}
	f.Target = strings.Join(texts, " and ")
	switch {
	case failed:
		f.Verdict = missed
	case unknown:
		f.Verdict = missing
	case len(r.target) == 0:
		f.Verdict = noTarget
	default:
		f.Verdict = met
	}
	return f
}

// evalExpr computes an expression of metrics left to right; it is nil when
// a metric is missing or the result is not a finite number.
func evalExpr(expr string, m map[string]float64, used map[string]bool) (*float64, []string) {
	tok := strings.Fields(expr)
	var acc float64
	var miss []string
	for i := 0; i < len(tok); i += 2 {
		used[tok[i]] = true
		x, ok := m[tok[i]]
		if !ok {
			miss = append(miss, tok[i])
			continue
		}
		if i == 0 {
			acc = x
			continue
		}
		switch tok[i-1] {
		case "+":
			acc += x
		case "-":
			acc -= x
		case "*":
			acc *= x
		case "/":
			acc /= x
		}
	}
	if len(miss) > 0 || math.IsNaN(acc) || math.IsInf(acc, 0) {
		return nil, miss
	}
	return &acc, nil
}

func finite(a, b *float64, op func(a, b float64) float64) *float64 {
	if a == nil || b == nil {
		return nil
	}
	v := op(*a, *b)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// writeText prints the report as one table grouped by area, then what went
// wrong.
func (rep *report) writeText(w io.Writer) error {
	fmt.Fprintf(w, "\nopencen benchmarks: each figure beside its baseline from the same run")
	if rep.Log != "" {
		fmt.Fprintf(w, " (log: %s)", rep.Log)
	}
	fmt.Fprintf(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tFIGURE\tOPENCEN\tBASELINE (SAME RUN)\tRATIO\tTARGET\tVERDICT")
	last := ""
	for _, f := range rep.Figures {
		a := f.Area
		if a == last {
			a = ""
		}
		last = f.Area
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\t%s\t%s\n", a, f.indent, f.Figure, f.valueCell(), f.baselineCell(),
			f.ratioCell(), cell(f.Target), f.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	v := rep.Verdicts
	fmt.Fprintf(w, "\n%d met, %d MISSED, %d no target, %d missing\n", v[met], v[missed], v[noTarget], v[missing])
	for _, a := range rep.Areas {
		for _, p := range a.Problems {
			fmt.Fprintf(w, "%s: %s\n", a.Area, p)
		}
	}
	if len(rep.Unlisted) > 0 {
		fmt.Fprintf(w, "in the log but in no row of test/benchreport/table.go: %s\n", strings.Join(rep.Unlisted, ", "))
	}
	if rep.OK {
		fmt.Fprintln(w, "every benchmark ran")
	} else {
		fmt.Fprintln(w, "NOT every benchmark ran: see above")
	}
	return nil
}

func (f figure) valueCell() string {
	if !f.hasValue {
		return "-"
	}
	return num(f.Opencen, f.Unit)
}

func (f figure) baselineCell() string {
	if len(f.Baselines) == 0 {
		return "-"
	}
	s := make([]string, len(f.Baselines))
	for i, b := range f.Baselines {
		s[i] = b.Name + " " + num(b.Value, f.Unit)
	}
	return strings.Join(s, ", ")
}

func (f figure) ratioCell() string {
	switch {
	case !f.hasRatio:
		return "-"
	case f.Ratio == nil && len(f.Missing) == 0:
		return "n/a" // a baseline of zero
	}
	return num(f.Ratio, "")
}

func cell(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// num formats a figure with three significant digits or more.
func num(v *float64, unit string) string {
	if v == nil {
		return missing
	}
	var s string
	switch a := math.Abs(*v); {
	case a == 0 || a >= 100:
		s = strconv.FormatFloat(*v, 'f', 0, 64)
	case a >= 10:
		s = strconv.FormatFloat(*v, 'f', 1, 64)
	case a >= 1:
		s = strconv.FormatFloat(*v, 'f', 2, 64)
	case a >= 0.001:
		s = strconv.FormatFloat(*v, 'f', 3, 64)
	default:
		s = strconv.FormatFloat(*v, 'g', 3, 64)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

// writeJSON writes the report for tools.
func (rep *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(rep)
}

// naturalCompare orders strings with their runs of digits as numbers.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digits(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
