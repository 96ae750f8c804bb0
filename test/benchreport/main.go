// Command benchreport runs opencen's benchmarks (make bench) and prints one
// report: every figure beside its baseline from the same run and its
// target, with a verdict (met, MISSED, no target, or missing), grouped by
// the issue area that set it.
//
//	go run ./test/benchreport [--only dataplane,routing,shaping,agent] [--log bench.log] [--json FILE]
//	go run ./test/benchreport --from-log bench.log [--only ...] [--json FILE]
//
// Each area's go test command (the same as make bench-<area>) runs in turn;
// its output streams to the terminal and into the log, between marker
// lines saying which area it is and how its command ended. The report is
// built from the log, so --from-log rebuilds it later without running
// anything. What the report shows, row by row, is declared in table.go.
//
// Exit status: 0 when every benchmark ran, whether or not it met its target
// (a missed target is a finding, not a failure); 1 when a command failed,
// a benchmark did not report, or the run is interrupted, each named in
// the report; 2 for bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var names []string
	for _, a := range areas {
		names = append(names, a.name)
	}
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("only", "", "run (or report) only these areas, comma-separated: "+strings.Join(names, ","))
	fromLog := fs.String("from-log", "", "build the report from this saved log and run nothing")
	logPath := fs.String("log", "bench.log", "save the benchmarks' output to this file")
	jsonPath := fs.String("json", "", "also write the report as JSON to this file (- for standard output)")
	goCmd := fs.String("go", "go", "the go command to run the benchmarks with")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./test/benchreport [flags]\n\nRuns the benchmarks of make bench and prints one report.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "benchreport: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	sel := names
	if *only != "" {
		sel = nil
		for n := range strings.SplitSeq(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(names, n) {
				fmt.Fprintf(stderr, "benchreport: --only: no area %q (areas: %s)\n", n, strings.Join(names, ", "))
				return 2
			}
			sel = append(sel, n)
		}
	}

	logName := *fromLog
	if logName == "" {
		logName = *logPath
		if err := runAreas(ctx, runOptions{goCmd: *goCmd, areas: sel, logPath: logName, out: stdout}); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
	}
	f, err := os.Open(logName)
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	lg, err := parseLog(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	// A run reports every area it ran; a log may hold fewer areas than
	// all, and without --only only those it holds are reported.
	rep, err := buildReport(lg, sel, *only != "" || *fromLog == "", logName)
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	if err := rep.writeText(stdout); err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	if *jsonPath != "" {
		if err := writeJSONFile(rep, *jsonPath, stdout); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
	}
	if !rep.OK {
		return 1
	}
	return 0
}

func writeJSONFile(rep *report, path string, stdout io.Writer) error {
	if path == "-" {
		return rep.writeJSON(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.writeJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
