package procx

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("this process: not alive")
	}
	for _, pid := range []int{0, -1, 1 << 30} {
		if Alive(pid) {
			t.Errorf("pid %d: alive", pid)
		}
	}
}

// TestZombieNotAlive: a child that exited and is not yet reaped is a
// zombie, and a zombie is not alive.
func TestZombieNotAlive(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skipf("no true(1) to run: %v", err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("exited child %d still alive after 5 s", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		t.Fatalf("child %d reaped before the check: %v", pid, err)
	}
}
