package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/testutil"
)

// TestMain doubles as a stand-in cend for TestUpWithAgents: with
// OCL_FAKE_CEND=1 the test binary parses cend's flags, checks the lab's
// config and key, records where it runs and serves its socket until
// signalled. It proves the lab starts each agent in the right namespace
// with the right flags, without needing the real agent.
func TestMain(m *testing.M) {
	if os.Getenv("OCL_FAKE_CEND") == "1" {
		os.Exit(fakeCend(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type fakeReport struct {
	Gateway, Metrics, LogFormat, Shaper string
	Addrs                               []string
	// BPFFS is whether /sys/fs/bpf is a bpf filesystem when the agent
	// started: the lab prepares nothing an operator would not.
	BPFFS bool
}

func fakeCend(args []string) int {
	fs := flag.NewFlagSet("cend", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "")
	gw := fs.String("gateway", "", "")
	sock := fs.String("socket", "", "")
	metrics := fs.String("metrics-addr", "", "")
	stateDir := fs.String("state-dir", "", "")
	logFormat := fs.String("log-format", "", "")
	shaper := fs.String("shaper", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	g, ok := cfg.Gateway(*gw)
	if !ok {
		fmt.Fprintln(os.Stderr, "fake cend: no gateway", *gw)
		return 1
	}
	if fi, err := os.Stat(g.PrivateKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		fmt.Fprintln(os.Stderr, "fake cend: key file not 0600:", err)
		return 1
	}
	var st unix.Statfs_t
	rep := fakeReport{Gateway: *gw, Metrics: *metrics, LogFormat: *logFormat, Shaper: *shaper,
		BPFFS: unix.Statfs("/sys/fs/bpf", &st) == nil && st.Type == unix.BPF_FS_MAGIC}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		rep.Addrs = append(rep.Addrs, a.String())
	}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(filepath.Join(*stateDir, "fake.json"), b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake cend:", err)
		return 1
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(5 * time.Minute): // bounded even if nobody stops it
	}
	ln.Close()
	return 0
}

// privileged skips unless root and returns options for a lab of the
// test's own: a random prefix and state dir, torn down in cleanup.
func privileged(t *testing.T) Options {
	t.Helper()
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "bird", "birdc", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the lab test needs %s: %v", tool, err)
		}
	}
	o := Options{
		Config:   labConfig,
		StateDir: filepath.Join(t.TempDir(), "state"),
		Prefix:   fmt.Sprintf("ocl-t%04x-", rand.IntN(0x10000)),
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o := o
		o.Logger = nil // t.Log after the test ends would panic
		if err := Down(ctx, o); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left := labNamespaces(o.Prefix); len(left) > 0 {
			t.Errorf("cleanup left namespaces %v", left)
		}
	})
	return o
}

// mountsUnder lists the mount points below dir: the agents mount their
// bpffs in the mount namespaces ip netns exec gives them, so none of
// theirs shows here.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(out)
}

// upPrivileged brings up a lab of the test's own (see privileged), with a
// context that ends after timeout or with the test.
func upPrivileged(t *testing.T, timeout time.Duration) (context.Context, *Lab, Options) {
	t.Helper()
	o := privileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, l, o
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ping(ctx context.Context, l *Lab, from, to string) error {
	_, err := l.Exec(ctx, from, "ping", "-c", "1", "-W", "1", "-q", to)
	return err
}
