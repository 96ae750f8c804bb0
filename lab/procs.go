package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/procx"
)

// The lab's processes (agents and BIRDs): finding them by the state dir
// their command lines name, stopping them, and talking to BIRD.

// recordedProcesses are the agents and routers the state file of dir
// names that still run with a command line pointing into dir: a PID
// taken over by an unrelated process is left alone.
func recordedProcesses(dir string) map[int]bool {
	pids := map[int]bool{}
	l, err := readState(dir)
	if err != nil {
		return pids
	}
	for _, g := range l.Gateways {
		if g.PID != 0 && cmdlineMentions(g.PID, dir) {
			pids[g.PID] = true
		}
	}
	for _, rt := range l.Routers {
		if rt.PID != 0 && cmdlineMentions(rt.PID, dir) {
			pids[rt.PID] = true
		}
	}
	return pids
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// cmdlineMentions guards against PID reuse: a recorded PID is killed only
// if that process still names the state dir.
func cmdlineMentions(pid int, dir string) bool {
	for _, a := range cmdline(pid) {
		if strings.HasPrefix(a, dir+"/") {
			return true
		}
	}
	return false
}

// stateDirProcesses finds agents and BIRDs whose arguments point into the
// state dir, even when their namespace is already gone.
func stateDirProcesses(dir, cend string) []int {
	names := []string{"bird", "cend"}
	if cend != "" {
		names = append(names, filepath.Base(cend))
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args := cmdline(pid)
		if len(args) == 0 || !slices.Contains(names, filepath.Base(args[0])) {
			continue
		}
		if cmdlineMentions(pid, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// killAll sends SIGTERM, waits up to three seconds, then SIGKILLs what is
// left and waits up to two more.
func killAll(ctx context.Context, pids map[int]bool) error {
	if len(pids) == 0 {
		return nil
	}
	for p := range pids {
		_ = unix.Kill(p, unix.SIGTERM)
	}
	if waitGone(ctx, pids, 3*time.Second) {
		return nil
	}
	for p := range pids {
		if procx.Alive(p) {
			_ = unix.Kill(p, unix.SIGKILL)
		}
	}
	if waitGone(ctx, pids, 2*time.Second) {
		return nil
	}
	var left []string
	for p := range pids {
		if procx.Alive(p) {
			left = append(left, strconv.Itoa(p))
		}
	}
	return fmt.Errorf("processes %s survived SIGKILL", strings.Join(left, ", "))
}

func waitGone(ctx context.Context, pids map[int]bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		all := true
		for p := range pids {
			if procx.Alive(p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// birdc runs a BIRD client command against a router's socket, bounded in
// time.
func birdc(ctx context.Context, socket string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", socket}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("birdc -s %s %s: %w: %s", socket, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}
