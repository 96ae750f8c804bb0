package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/opencen/opencen/internal/procx"
	"github.com/opencen/opencen/internal/wgdev"
)

// UAPIDir is where userspace WireGuard devices' UAPI sockets live, one
// folder for every namespace of the host.
const UAPIDir = wgdev.UAPIDir

// hostOps is what the dataplane needs from the host besides netlink and
// WireGuard: helper processes, UAPI socket files and sysctls. The real
// implementation is *host; tests use a stateful fake.
type hostOps interface {
	// startHelper starts a detached helper serving device name in the
	// target namespace and returns its pid.
	startHelper(name string, mtu int) (int, error)
	// findHelper returns the pid of a running helper for name, or 0.
	findHelper(name string) int
	// stopHelper stops the helper with pid and waits for it to exit.
	stopHelper(name string, pid int) error
	// socketState reports whether name's UAPI socket exists and answers.
	socketState(name string) sockState
	// removeSocket deletes name's UAPI socket file; absent is success.
	removeSocket(name string) error
	// removeState deletes the helper's pid and log files.
	removeState(name string) error
	// logTail returns the end of the helper's log, for errors.
	logTail(name string) string
	// setSysctl writes a /proc/sys key (dotted) in the target namespace.
	setSysctl(key, value string) error
}

type sockState int

const (
	sockNone  sockState = iota // no socket file
	sockStale                  // a file nobody listens on
	sockLive                   // a listening device
)

// host is the real hostOps for one network namespace.
type host struct {
	nsPath    string // "" = the calling process's namespace
	stateDir  string
	helperCmd []string
	log       *slog.Logger

	mu       sync.Mutex
	children map[int]chan struct{} // helpers this process started, closed on exit
}

// inNetNS runs fn on an OS thread switched into the namespace at path
// (directly when path is empty). Sockets opened and processes forked in fn
// belong to that namespace. If the thread cannot be switched back it is
// left locked, so the runtime discards it instead of reusing it.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func (h *host) pidFile(name string) string { return filepath.Join(h.stateDir, name+".pid") }
func (h *host) logFile(name string) string { return filepath.Join(h.stateDir, name+".log") }

func (h *host) startHelper(name string, mtu int) (int, error) {
	if len(h.helperCmd) == 0 {
		return 0, errors.New("no helper command configured")
	}
	if err := os.MkdirAll(h.stateDir, 0o700); err != nil {
		return 0, fmt.Errorf("create state dir: %w", err)
	}
	// A log left past its bound by helpers before moves aside first; the
	// helper bounds it while it runs (CappedLog).
	if fi, err := os.Stat(h.logFile(name)); err == nil && fi.Size() > HelperLogMax {
		_ = os.Rename(h.logFile(name), h.logFile(name)+".1")
	}
	logf, err := os.OpenFile(h.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open helper log: %w", err)
	}
	defer logf.Close()
	args := append(append([]string{}, h.helperCmd[1:]...), "--device", name, "--mtu", strconv.Itoa(mtu))
	cmd := exec.Command(h.helperCmd[0], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	// A session of its own: no signal sent to the agent's process group
	// or terminal reaches the device.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Forked from a thread inside the target namespace, the helper is born
	// there, so its TUN and UDP sockets are too.
	if err := inNetNS(h.nsPath, cmd.Start); err != nil {
		return 0, fmt.Errorf("start helper %s: %w", h.helperCmd[0], err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	h.mu.Lock()
	if h.children == nil {
		h.children = map[int]chan struct{}{}
	}
	h.children[pid] = exited
	h.mu.Unlock()
	go func() {
		// Reap it if it exits while we run; otherwise it outlives us.
		_ = cmd.Wait()
		close(exited)
		h.mu.Lock()
		delete(h.children, pid)
		h.mu.Unlock()
	}()
	if err := os.WriteFile(h.pidFile(name), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		h.log.Warn("write helper pid file", "err", err)
	}
	// Start returns once exec has begun, but the kernel sets the new
	// command line a moment later: until then /proc/PID/cmdline is empty
	// and findHelper would take the helper for gone.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && procx.Alive(pid) && !helperArgsMatch(pid, name); {
		time.Sleep(time.Millisecond)
	}
	return pid, nil
}

// helperArgsMatch reports whether pid is alive and runs a helper for name.
func helperArgsMatch(pid int, name string) bool {
	if !procx.Alive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte("\x00--device\x00"+name+"\x00"))
}

func (h *host) findHelper(name string) int {
	if b, err := os.ReadFile(h.pidFile(name)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && helperArgsMatch(pid, name) {
			return pid
		}
	}
	// The pid file may be gone (another state dir, a wiped /run); the
	// command line identifies the helper too.
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && pid != os.Getpid() && helperArgsMatch(pid, name) {
			return pid
		}
	}
	return 0
}

func (h *host) stopHelper(name string, pid int) error {
	if !helperArgsMatch(pid, name) {
		return nil // already gone, or the pid is another process now: not ours
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop helper %d: %w", pid, err)
	}
	if h.waitExit(pid, 5*time.Second) {
		return nil
	}
	h.log.Warn("helper ignored SIGTERM, killing", "pid", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill helper %d: %w", pid, err)
	}
	if !h.waitExit(pid, 5*time.Second) {
		return fmt.Errorf("helper %d did not exit", pid)
	}
	return nil
}

func (h *host) waitExit(pid int, d time.Duration) bool {
	h.mu.Lock()
	exited := h.children[pid]
	h.mu.Unlock()
	deadline := time.After(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if exited != nil {
			select {
			case <-exited:
				return true
			default:
			}
		} else if !procx.Alive(pid) {
			return true
		}
		select {
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}

func socketPath(name string) string { return wgdev.Socket(name) }

func (h *host) socketState(name string) sockState {
	p := socketPath(name)
	if _, err := os.Lstat(p); err != nil {
		return sockNone
	}
	c, err := net.DialTimeout("unix", p, time.Second)
	if err != nil {
		return sockStale
	}
	c.Close()
	return sockLive
}

func (h *host) removeSocket(name string) error {
	if err := os.Remove(socketPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove uapi socket: %w", err)
	}
	return nil
}

func (h *host) removeState(name string) error {
	var errs []error
	for _, p := range []string{h.pidFile(name), h.logFile(name), h.logFile(name) + ".1"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *host) setSysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return inNetNS(h.nsPath, func() error {
		// /proc/sys/net resolves to the namespace of the opening thread.
		cur, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(cur)) == value {
			return nil
		}
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// helperLogTail returns the end of a helper's log for error messages.
func (h *host) logTail(name string) string {
	b, err := os.ReadFile(h.logFile(name))
	if err != nil {
		return ""
	}
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return strings.TrimSpace(string(b))
}
