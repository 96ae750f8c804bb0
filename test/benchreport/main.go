// Command benchreport runs opencen's benchmarks (make bench) and prints one
// report: every figure beside its baseline from the same run and its
// target, with a verdict (met, MISSED, no target, or missing), grouped by
// the issue area that set it.
//
//	go run ./test/benchreport [--only dataplane,routing,shaping,agent] [--log bench.log] [--json FILE] [--markdown BENCHMARKS.md]
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

// flags are benchreport's command line.
type flags struct {
	areas    []string // selected areas
	only     bool     // --only is given
	fromLog  string
	logPath  string
	jsonPath string
	goCmd    string
	mdPath   string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, code := parseFlags(args, stderr)
	if code >= 0 {
		return code
	}
	rep, err := produce(ctx, f, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// parseFlags reads the command line; code is the exit code when the
// command should stop (help or a usage error), -1 otherwise.
func parseFlags(args []string, stderr io.Writer) (f flags, code int) {
	var names []string
	for _, a := range areas {
		names = append(names, a.name)
	}
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("only", "", "run (or report) only these areas, comma-separated: "+strings.Join(names, ","))
	fs.StringVar(&f.fromLog, "from-log", "", "build the report from this saved log and run nothing")
	fs.StringVar(&f.logPath, "log", "bench.log", "save the benchmarks' output to this file")
	fs.StringVar(&f.jsonPath, "json", "", "also write the report as JSON to this file (- for standard output)")
	fs.StringVar(&f.goCmd, "go", "go", "the go command to run the benchmarks with")
	fs.StringVar(&f.mdPath, "markdown", "", "also write the report as Markdown to this file (make bench: BENCHMARKS.md)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./test/benchreport [flags]\n\nRuns the benchmarks of make bench and prints one report.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, 0
		}
		return f, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "benchreport: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return f, 2
	}
	f.areas, f.only = names, *only != ""
	if f.only {
		f.areas = nil
		for n := range strings.SplitSeq(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(names, n) {
				fmt.Fprintf(stderr, "benchreport: --only: no area %q (areas: %s)\n", n, strings.Join(names, ", "))
				return f, 2
			}
			f.areas = append(f.areas, n)
		}
	}
	return f, -1
}

// produce runs the benchmarks (or reads a saved log), prints the report
// and writes the files asked for.
func produce(ctx context.Context, f flags, stdout io.Writer) (*report, error) {
	logName := f.fromLog
	if logName == "" {
		logName = f.logPath
		if err := runAreas(ctx, runOptions{goCmd: f.goCmd, areas: f.areas, logPath: logName, out: stdout}); err != nil {
			return nil, err
		}
	}
	file, err := os.Open(logName)
	if err != nil {
		return nil, err
	}
	lg, err := parseLog(file)
	file.Close()
	if err != nil {
		return nil, err
	}
	// A run reports every area it ran; a log may hold fewer areas than
	// all, and without --only only those it holds are reported.
	rep, err := buildReport(lg, f.areas, f.only || f.fromLog == "", logName)
	if err != nil {
		return nil, err
	}
	if err := rep.writeText(stdout); err != nil {
		return nil, err
	}
	if f.jsonPath != "" {
		if err := writeJSONFile(rep, f.jsonPath, stdout); err != nil {
			return nil, err
		}
	}
	if f.mdPath != "" {
		if err := writeMarkdownFile(rep, f.mdPath); err != nil {
			return nil, err
		}
	}
	return rep, nil
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
