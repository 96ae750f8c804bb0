package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machine describes where the benchmarks ran, for the report's head.
type machine struct {
	Kernel string
	CPUs   int
	Model  string
	Memory string
}

func thisMachine() machine {
	m := machine{CPUs: runtime.NumCPU()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.Memory = fmt.Sprintf("%.0f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	return m
}

// writeMarkdown writes the report as BENCHMARKS.md: the figures the docs
// link to instead of quoting numbers, each with its baseline from the same
// run, its target and verdict, and when and where it is measured.
func (rep *report) writeMarkdown(w io.Writer, when time.Time, m machine) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# opencen benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`go run ./test/benchreport --markdown BENCHMARKS.md`) from its log; do not edit by hand. ")
	fmt.Fprintf(&b, "Every figure stands beside its baseline measured in the same run: on a shared machine, absolute figures move from run to run, ratios much less.\n\n")
	fmt.Fprintf(&b, "- measured: %s\n", when.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: Linux %s, %d CPUs (%s), %s of memory\n", m.Kernel, m.CPUs, m.Model, m.Memory)
	fmt.Fprintf(&b, "- verdicts: %d met, %d missed, %d without a target, %d missing\n\n", rep.Verdicts[met], rep.Verdicts[missed], rep.Verdicts[noTarget], rep.Verdicts[missing])
	last := ""
	for _, f := range rep.Figures {
		if f.Area != last {
			fmt.Fprintf(&b, "\n## %s\n\n| figure | opencen | baseline (same run) | ratio | target | verdict |\n|---|---|---|---|---|---|\n", f.Area)
			last = f.Area
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdCell(strings.TrimSpace(f.Figure)), mdCell(f.valueCell()), mdCell(f.baselineCell()),
			mdCell(f.ratioCell()), mdCell(cell(f.Target)), f.Verdict)
	}
	for _, a := range rep.Areas {
		for _, p := range a.Problems {
			fmt.Fprintf(&b, "\n%s: %s\n", a.Area, p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdCell escapes what would break a Markdown table cell.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func writeMarkdownFile(rep *report, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := rep.writeMarkdown(f, time.Now(), thisMachine()); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
