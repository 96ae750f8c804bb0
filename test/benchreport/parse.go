package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// The runner brackets each area's command in the log with these lines, so
// that a saved log says which area its lines belong to and how each
// command ended:
//
//	### benchreport: start routing: go test -count=1 -run ^$ -bench . -benchtime 1x ./routing/...
//	### benchreport: end routing: exit 1 after 4m2s
//
// A log without them (the output of make bench-routing, say) is read too:
// areas then come from the packages the output names.
const marker = "### benchreport: "

var (
	startRE  = regexp.MustCompile(`^### benchreport: start (\S+): (.*)$`)
	endRE    = regexp.MustCompile(`^### benchreport: end (\S+): exit (-?\d+)(.*)$`)
	benchRE  = regexp.MustCompile(`^(Benchmark\S*)(?:\s+(.*))?$`)
	failRE   = regexp.MustCompile(`^\s*--- (FAIL|SKIP): (Benchmark\S*)`)
	pkgOKRE  = regexp.MustCompile(`^ok  \t(\S+)`)
	pkgBadRE = regexp.MustCompile(`^FAIL\t(\S+)(.*)$`)
	procsRE  = regexp.MustCompile(`^(.+)-(\d+)$`)
)

// benchLog is what a log of benchmark runs holds.
type benchLog struct {
	runs     []areaRun
	results  []benchResult
	fails    []benchFail
	pkgFails []pkgFail
	pkgs     []string // packages named by pkg:, ok or FAIL lines
}

// areaRun is one area's command as the markers show it.
type areaRun struct {
	area    string
	command string
	ended   bool
	exit    int
	note    string // the end marker's text after the exit status
}

// benchResult is one result line of go test -bench.
type benchResult struct {
	area    string // from the markers; "" in a log without them
	pkg     string
	name    string // as printed: BenchmarkThroughput-2
	bench   string // without the -N (GOMAXPROCS) suffix
	iters   int64
	units   []string // in the order printed
	metrics map[string]float64
}

// benchFail is a benchmark that failed (or, with -v, skipped).
type benchFail struct {
	area, pkg, bench string
	kind             string // FAIL or SKIP
	reason           string // the first line of its output
}

// pkgFail is a package whose test binary failed: a benchmark failed, it
// panicked, or it did not build.
type pkgFail struct {
	area, pkg string
	reason    string
}

// parseLog reads go test -bench output, possibly several runs with the
// runner's markers between them. It never fails on content: lines it does
// not know are the benchmarks' own output.
func parseLog(r io.Reader) (*benchLog, error) {
	p := &parser{lg: &benchLog{}, failing: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		p.line(strings.TrimRight(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark log: %w", err)
	}
	p.endBlock("")
	return p.lg, nil
}

type parser struct {
	lg   *benchLog
	area string // the marker's area, "" outside markers
	pkg  string // from the last pkg: line of this package's block
	// Indexes of the results and failures of the package block under way:
	// a benchmark that fails ahead of any result prints its failure ahead
	// of the block's pkg: line, so the package is known only at the
	// block's end (its ok or FAIL line).
	blockResults, blockFails []int
	blockPanic               string
	pending                  string // a benchmark name printed without its results yet
	failing                  int    // index of a failure still wanting its reason, or -1
}

func (p *parser) line(l string) {
	if p.failing >= 0 {
		if reason := strings.TrimSpace(l); strings.HasPrefix(l, "    ") && reason != "" {
			p.lg.fails[p.failing].reason = reason
			p.failing = -1
			return
		}
		p.failing = -1
	}
	switch {
	case strings.HasPrefix(l, marker):
		p.marker(l)
	case strings.HasPrefix(l, "pkg: "):
		p.pkg = strings.TrimSpace(strings.TrimPrefix(l, "pkg: "))
		for _, i := range p.blockResults {
			p.lg.results[i].pkg = p.pkg
		}
		for _, i := range p.blockFails {
			p.lg.fails[i].pkg = p.pkg
		}
	case failRE.MatchString(l):
		m := failRE.FindStringSubmatch(l)
		p.lg.fails = append(p.lg.fails, benchFail{area: p.area, pkg: p.pkg, bench: stripProcs(m[2]), kind: m[1]})
		p.blockFails = append(p.blockFails, len(p.lg.fails)-1)
		p.failing = len(p.lg.fails) - 1
		p.pending = ""
	case pkgOKRE.MatchString(l):
		p.endBlock(pkgOKRE.FindStringSubmatch(l)[1])
	case pkgBadRE.MatchString(l):
		m := pkgBadRE.FindStringSubmatch(l)
		reason := p.blockPanic
		if strings.Contains(m[2], "[build failed]") {
			reason = "build failed"
		} else if strings.Contains(m[2], "[setup failed]") {
			reason = "setup failed"
		}
		p.lg.pkgFails = append(p.lg.pkgFails, pkgFail{area: p.area, pkg: m[1], reason: reason})
		p.endBlock(m[1])
	case strings.HasPrefix(l, "panic: ") && p.blockPanic == "":
		p.blockPanic = l
	case benchRE.MatchString(l):
		m := benchRE.FindStringSubmatch(l)
		if iters, units, metrics, ok := parseFields(strings.Fields(m[2])); ok {
			p.result(m[1], iters, units, metrics)
		} else {
			// go test prints the name, then runs the benchmark (for all
			// but a -benchtime 1x run), so what the benchmark prints
			// comes between the name and its results.
			p.pending = m[1]
		}
	case p.pending != "":
		if iters, units, metrics, ok := parseFields(strings.Fields(l)); ok {
			p.result(p.pending, iters, units, metrics)
		}
	}
}

func (p *parser) marker(l string) {
	if m := startRE.FindStringSubmatch(l); m != nil {
		p.endBlock("")
		p.area = m[1]
		p.lg.runs = append(p.lg.runs, areaRun{area: m[1], command: m[2]})
		return
	}
	if m := endRE.FindStringSubmatch(l); m != nil {
		p.endBlock("")
		for i := len(p.lg.runs) - 1; i >= 0; i-- {
			if r := &p.lg.runs[i]; r.area == m[1] && !r.ended {
				r.ended = true
				r.exit, _ = strconv.Atoi(m[2])
				r.note = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m[3]), ":"))
				break
			}
		}
		p.area = ""
	}
}

func (p *parser) result(name string, iters int64, units []string, metrics map[string]float64) {
	p.lg.results = append(p.lg.results, benchResult{area: p.area, pkg: p.pkg, name: name, bench: stripProcs(name),
		iters: iters, units: units, metrics: metrics})
	p.blockResults = append(p.blockResults, len(p.lg.results)-1)
	p.pending = ""
}

// endBlock closes a package's output: pkg, when known, is the package its
// ok or FAIL line names.
func (p *parser) endBlock(pkg string) {
	if pkg != "" {
		for _, i := range p.blockResults {
			p.lg.results[i].pkg = pkg
		}
		for _, i := range p.blockFails {
			p.lg.fails[i].pkg = pkg
		}
		p.seen(pkg)
	}
	if p.pkg != "" {
		p.seen(p.pkg)
	}
	p.blockResults, p.blockFails = nil, nil
	p.blockPanic, p.pending, p.pkg = "", "", ""
	p.failing = -1
}

func (p *parser) seen(pkg string) {
	for _, s := range p.lg.pkgs {
		if s == pkg {
			return
		}
	}
	p.lg.pkgs = append(p.lg.pkgs, pkg)
}

// parseFields reads what follows a benchmark's name on its result line:
// the iteration count, then value-unit pairs, as many as it reported.
func parseFields(f []string) (iters int64, units []string, metrics map[string]float64, ok bool) {
	if len(f) < 3 || len(f)%2 == 0 {
		return 0, nil, nil, false
	}
	iters, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, nil, nil, false
	}
	metrics = make(map[string]float64, len(f)/2)
	for i := 1; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, nil, nil, false
		}
		units = append(units, f[i+1])
		metrics[f[i+1]] = v
	}
	return iters, units, metrics, true
}

// stripProcs removes the -N suffix go test adds to a benchmark's name
// when GOMAXPROCS is above one.
func stripProcs(name string) string {
	if m := procsRE.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return name
}
