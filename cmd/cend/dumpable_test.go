package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
)

// nobody is the unprivileged uid the processes of this test run as: a
// process of the same uid, without CAP_SYS_PTRACE, is what the
// non-dumpable mark keeps out.
const nobody = 65534

// TestMemoryClosedToItsOwnUID: cend holds the gateway's private key and
// session passwords, so a process of its own uid may not read its
// environment (nor its memory, nor ptrace it). Checked against the real
// binary, held while it opens its config (a FIFO nobody writes), beside a
// plain process of the same uid whose environment the same reader does
// read.
func TestMemoryClosedToItsOwnUID(t *testing.T) {
	testutil.RequireRoot(t)
	// Not t.TempDir: its parent is closed to other uids.
	dir, err := os.MkdirTemp("", "cend-dumpable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "cend")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fifo := filepath.Join(dir, "config.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(fifo, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	readable := func(pid int) (bool, string) {
		cmd := exec.Command("cat", "/proc/"+strconv.Itoa(pid)+"/environ")
		cmd.SysProcAttr = asNobody()
		out, err := cmd.CombinedOutput()
		return err == nil, strings.TrimSpace(string(out))
	}

	plain := startAsNobody(t, "sleep", "30")
	if ok, out := readable(plain); !ok {
		t.Fatalf("a plain process of uid %d: its environment unreadable by the same uid (%s); the check below proves nothing", nobody, out)
	}
	cend := startAsNobody(t, bin, "--config", fifo, "--gateway", "gw-1")
	// cend closes itself in main's first lines, then blocks opening the
	// FIFO: readable at most until then.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok, out := readable(cend)
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cend's environment still readable by a process of its own uid after 5 s: %.60q", out)
		}
	}
}

func asNobody() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
}

// startAsNobody starts name as uid nobody and kills it when the test ends.
func startAsNobody(t *testing.T, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = asNobody()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}
