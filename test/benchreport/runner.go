package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type runOptions struct {
	goCmd   string
	areas   []string // names, run in the table's order
	logPath string
	out     io.Writer // the terminal
}

// runAreas runs each selected area's command from the module's root, one
// after the other, its output streamed to o.out and saved to the log
// between marker lines. A command that fails does not stop the others; an
// interrupt does (the commands get it too, and clean up their namespaces),
// and the areas left are marked as not run. The error is for what stops
// the run itself, not for a failing benchmark: that is in the log.
func runAreas(ctx context.Context, o runOptions) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	lf, err := os.Create(o.logPath)
	if err != nil {
		return fmt.Errorf("create the log: %w", err)
	}
	w := io.MultiWriter(o.out, lf)
	for _, a := range areas {
		if !slices.Contains(o.areas, a.name) {
			continue
		}
		command := shellJoin(append([]string{o.goCmd}, a.args...))
		fmt.Fprintf(w, "%sstart %s: %s\n", marker, a.name, command)
		if ctx.Err() != nil {
			fmt.Fprintf(w, "%send %s: exit -1: interrupted before it started\n", marker, a.name)
			continue
		}
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, o.goCmd, a.args...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = w, w // the same writer: one goroutine writes
		// An interrupt reaches go test as an interrupt, so its tests run
		// their cleanups (namespaces, qdiscs), and then it exits.
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 2 * time.Minute
		err := cmd.Run()
		took := time.Since(t0).Round(time.Second)
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			fmt.Fprintf(w, "%send %s: exit 0 after %s\n", marker, a.name, took)
		case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
			fmt.Fprintf(w, "%send %s: exit %d after %s\n", marker, a.name, exitErr.ExitCode(), took)
		default:
			fmt.Fprintf(w, "%send %s: exit -1 after %s: %s\n", marker, a.name, took, oneLine(err.Error()))
		}
	}
	if err := lf.Close(); err != nil {
		return fmt.Errorf("write the log: %w", err)
	}
	return nil
}

// moduleRoot is the folder of opencen's go.mod, looked for from the
// working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the module: %w", err)
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok && strings.TrimSpace(m) == module {
					f.Close()
					return dir, nil
				}
			}
			f.Close()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find the module: no go.mod of %s in the working directory or above", module)
		}
		dir = parent
	}
}

// shellJoin writes a command so that it can be pasted into a shell.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$^*?[]{}()<>|&;\\`!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
