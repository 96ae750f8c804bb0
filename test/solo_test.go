package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/testutil"
)

// soloConfig is oneVBRConfig, of which the test runs gw-1 in a namespace
// of its own, with the VBR's router in a second namespace across a veth.
// No accept list: the built-in refusals are what keeps a default route or
// a conflict out.
const soloConfig = oneVBRConfig + "      max_prefixes: 1000\n"

// solo is one cend (gw-1 of soloConfig) run as an operator runs it, `ip
// netns exec NS cend ...` in a namespace holding nothing but the link to
// its VBR's router, whose namespace is router.
type solo struct {
	t             *testing.T
	ns, router    string
	config        string
	socket, state string
	instance      string
	cmd           *exec.Cmd
	out           *syncBuffer
	exited        chan error
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newSolo writes soloConfig and builds the two namespaces; start runs
// cend.
func newSolo(t *testing.T) *solo {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	s := &solo{t: t, instance: "cen-solo-" + testutil.Suffix(3), socket: filepath.Join(dir, "cend.sock"), state: filepath.Join(dir, "state")}
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	k1, k2 := genKey(t), genKey(t)
	writeMode(t, filepath.Join(dir, "keys", "gw-1.key"), k1.String()+"\n", 0o600)
	writeMode(t, filepath.Join(dir, "keys", "gw-2.key"), k2.String()+"\n", 0o600)
	s.config = filepath.Join(dir, "cen.yaml")
	writeMode(t, s.config, fmt.Sprintf(soloConfig, s.instance, k1.PublicKey(), k2.PublicKey()), 0o644)
	// The UAPI socket of a helper killed with the namespace stays behind:
	// registered ahead of the namespaces, this runs last.
	uapi := filepath.Join(dataplane.UAPIDir, dataplane.DeviceName(s.instance+"/gw-1")+".sock")
	t.Cleanup(func() { os.Remove(uapi) })
	s.ns, s.router = testNetns(t), testNetns(t)
	gw, rt := "ocso"+testutil.Suffix(3), "ocsr"+testutil.Suffix(3)
	for _, args := range [][]string{
		{"link", "add", gw, "netns", s.ns, "type", "veth", "peer", "name", rt, "netns", s.router},
		{"-n", s.ns, "addr", "add", "172.30.0.1/30", "dev", gw},
		{"-n", s.router, "addr", "add", "172.30.0.2/30", "dev", rt},
		{"-n", s.ns, "link", "set", gw, "up"},
		{"-n", s.router, "link", "set", rt, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	return s
}

// start runs cend (the binary given) in the gateway's namespace and stops
// it when the test ends.
func (s *solo) start(cend string) {
	t := s.t
	s.cmd = exec.Command("ip", "netns", "exec", s.ns, cend, "--config", s.config, "--gateway", "gw-1",
		"--socket", s.socket, "--state-dir", s.state, "--metrics-addr", "", "--log-format", "text")
	s.out = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.alive() {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(20 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
		if t.Failed() {
			t.Logf("cend's output:\n%s", lastLines(s.out.String(), 60))
		}
	})
}

// alive reports whether cend still runs.
func (s *solo) alive() bool {
	select {
	case err := <-s.exited:
		s.exited <- err
		return false
	default:
		return true
	}
}

// exitErr is how cend ended, once alive says it has; the value stays for
// the next reader (the cleanup).
func (s *solo) exitErr() error {
	err := <-s.exited
	s.exited <- err
	return err
}

// waitUp waits until cend answers on its socket with every subsystem
// applied.
func (s *solo) waitUp(timeout time.Duration) {
	s.t.Helper()
	eventually(s.t, timeout, "cend up", func() error {
		if !s.alive() {
			s.t.Fatalf("cend exited: %v\n%s", s.exitErr(), lastLines(s.out.String(), 40))
		}
		return allApplied(s.t, s.socket)
	})
}

// peer returns the VBR session as cenctl peers shows it.
func (s *solo) peer() api.Peer {
	s.t.Helper()
	var peers []api.Peer
	cenctlJSON(s.t, s.socket, &peers, "peers")
	for _, p := range peers {
		if p.Name == "idc-1" {
			return p
		}
	}
	s.t.Fatalf("no session idc-1 in %+v", peers)
	return api.Peer{}
}

// kernelRoutes lists the destinations of opencen's routes (protocol 79)
// in the gateway's namespace.
func (s *solo) kernelRoutes() map[string]bool {
	s.t.Helper()
	out, err := exec.Command("ip", "-n", s.ns, "-4", "route", "show", "proto", "79").CombinedOutput()
	if err != nil {
		s.t.Fatalf("ip route: %v: %s", err, out)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			dst := f[0]
			if dst == "default" {
				dst = "0.0.0.0/0"
			} else if !strings.Contains(dst, "/") {
				dst += "/32"
			}
			got[dst] = true
		}
	}
	return got
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
