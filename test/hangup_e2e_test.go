package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHangupWhileStarting: SIGHUPs sent to cend from the moment its Go
// runtime handles signals until it is up (a `systemctl reload` racing the
// start) neither kill it nor stop its start; it is then up, applied, and
// still answers a SIGHUP.
func TestHangupWhileStarting(t *testing.T) {
	s := newSolo(t)
	cend := binary(t, "cend")
	s.start(cend)
	pid := s.cmd.Process.Pid
	// `ip netns exec` becomes cend in the same process: wait until it has,
	// and its runtime catches SIGHUP; the few package initialisers then
	// take well under the margin below.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if !s.alive() {
			t.Fatalf("cend exited: %v", s.exitErr())
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if filepath.Base(exe) == filepath.Base(cend) && catches(t, pid, syscall.SIGHUP) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cend not running with its signal handlers after 10s (process %q)", exe)
		}
	}
	time.Sleep(5 * time.Millisecond)
	stop, sent := make(chan struct{}), make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if s.cmd.Process.Signal(syscall.SIGHUP) == nil {
					n++
				}
			}
		}
	}()
	func() {
		defer close(stop)
		s.waitUp(60 * time.Second)
	}()
	t.Logf("%d SIGHUPs while cend started", <-sent)
	s.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(time.Second)
	s.waitUp(30 * time.Second)
}

// catches reports whether process pid has a handler for sig
// (/proc/PID/status, SigCgt).
func catches(t *testing.T, pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("SigCgt %q: %v", v, err)
			}
			return mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}
