package test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
)

// upLab builds a lab of the config with a cend per gateway, in namespaces
// named for this test alone, and removes it all when the test ends.
func upLab(t testing.TB, configFile string) (*lab.Lab, lab.Options) {
	t.Helper()
	return testLab(t, configFile, true, "")
}

// upLabAgents is upLab, without starting the agents unless agents is set
// (opts.Cend still names the binary, for lab.StartAgent).
func upLabAgents(t testing.TB, configFile string, agents bool) (*lab.Lab, lab.Options) {
	t.Helper()
	return testLab(t, configFile, agents, "")
}

// upLabShaper is upLab with every cend started with --shaper shaper (its
// default when empty).
func upLabShaper(t testing.TB, configFile, shaper string) (*lab.Lab, lab.Options) {
	t.Helper()
	return testLab(t, configFile, true, shaper)
}

func testLab(t testing.TB, configFile string, agents bool, shaper string) (*lab.Lab, lab.Options) {
	t.Helper()
	testutil.RequireRoot(t)
	return testLabCend(t, configFile, agents, shaper, binary(t, "cend"))
}

// testLabCend is testLab with cend the command each gateway runs.
func testLabCend(t testing.TB, configFile string, agents bool, shaper, cend string) (*lab.Lab, lab.Options) {
	t.Helper()
	testutil.RequireRoot(t)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "lab.log"))
	if err != nil {
		t.Fatal(err)
	}
	opts := lab.Options{
		Config:     configFile,
		StateDir:   filepath.Join(t.TempDir(), "lab"),
		Cend:       cend,
		Prefix:     "ocl-e" + testutil.Suffix(3) + "-",
		CendShaper: shaper,
		Logger:     slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	upOpts := opts
	if !agents {
		upOpts.Cend = ""
	}
	l, err := lab.Up(ctx, upOpts)
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, opts.StateDir)
		}
		if err := lab.Down(context.Background(), opts); err != nil {
			t.Errorf("lab down: %v", err)
		}
		// Nothing of the lab's left in the host-wide UAPI folder, a killed
		// gateway's included.
		if cfg, err := config.Load(configFile); err == nil {
			for _, g := range cfg.Gateways {
				sock := filepath.Join(dataplane.UAPIDir, dataplane.DeviceName(cfg.Instance.Name+"/"+g.Name)+".sock")
				if _, err := os.Stat(sock); err == nil {
					t.Errorf("lab down left %s's uapi socket %s", g.Name, sock)
				}
			}
		}
	})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l, opts
}

// dumpLogs prints the tail of every agent log of a failed test.
func dumpLogs(t testing.TB, stateDir string) {
	logs, _ := filepath.Glob(filepath.Join(stateDir, "*", "cend.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		t.Logf("--- %s\n%s", f, strings.Join(lines, "\n"))
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping sends count echoes from a lab host to addr at interval and returns
// how many it sent and how many came back. Bounded: -c and -w.
func ping(t *testing.T, l *lab.Lab, from, addr string, count int, interval time.Duration) (sent, received int) {
	t.Helper()
	deadline := int(time.Duration(count)*interval/time.Second) + 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(deadline+5)*time.Second)
	defer cancel()
	out, _ := l.Exec(ctx, from, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-W", "1", "-w", strconv.Itoa(deadline), addr)
	m := pingSummary.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ping %s -> %s: %s", from, addr, out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// eventually retries check until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// gatewayOf returns the lab's gateway name, failing the test without one.
func gatewayOf(t testing.TB, l *lab.Lab, name string) lab.Gateway {
	t.Helper()
	g, ok := l.Gateway(name)
	if !ok {
		t.Fatalf("no gateway %s", name)
	}
	return g
}

// waitEstablished waits until every BGP session of each named gateway is
// established (30 s each).
func waitEstablished(t testing.TB, l *lab.Lab, names ...string) {
	t.Helper()
	for _, name := range names {
		socket := gatewayOf(t, l, name).Socket
		eventually(t, 30*time.Second, name+" has every session established", func() error {
			var peers []api.Peer
			cenctlJSON(t, socket, &peers, "peers")
			for _, p := range peers {
				if p.BGPState != "established" {
					return fmt.Errorf("%s is %s", p.Name, p.BGPState)
				}
			}
			return nil
		})
	}
}

// cenctlJSON runs a cenctl read command against a gateway's socket and
// decodes its JSON.
func cenctlJSON(t testing.TB, socket string, out any, args ...string) {
	t.Helper()
	r := runCenctl(t, append(append([]string{"--socket", socket}, args...), "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("cenctl %v: exit %d: %s", args, r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		t.Fatalf("cenctl %v: %v\n%s", args, err, r.stdout)
	}
}

// runCleanup stops a gateway's agent and runs cend --cleanup in its place,
// as an operator would (ip netns exec, extra flags appended), until it is
// up, then stops it and wants it to exit 0.
func runCleanup(t *testing.T, l *lab.Lab, opts lab.Options, g lab.Gateway, extra ...string) {
	t.Helper()
	if err := l.StopAgent(context.Background(), g.Name, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", g.Namespace, opts.Cend, "--config", l.ConfigFile, "--gateway", g.Name,
		"--socket", g.Socket, "--metrics-addr", "", "--state-dir", g.StateDir, "--cleanup"}, extra...)
	cmd := exec.Command("ip", args...)
	logf, _ := os.OpenFile(g.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-waitErr
		}
	}()
	eventually(t, 20*time.Second, "cend --cleanup up", func() error {
		return allApplied(t, g.Socket)
	})
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-waitErr:
		stopped = true
		if err != nil {
			t.Errorf("cend --cleanup exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cend --cleanup did not stop")
	}
}

// ownInstance writes a copy of a lab config whose instance has a name of
// this run's own: WireGuard device names derive from it and must be
// unique on the host, so two labs of the same config (another package's
// tests, a second checkout's) can run at once.
func ownInstance(t testing.TB, configFile string) string {
	t.Helper()
	b, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^(instance:\n  name: )(\S+)$`)
	if !re.Match(b) {
		t.Fatalf("%s: no instance name on the second line", configFile)
	}
	out := re.ReplaceAll(b, []byte("${1}${2}-"+testutil.Suffix(3)))
	path := filepath.Join(t.TempDir(), filepath.Base(configFile))
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// allApplied reports, through cenctl status on socket, whether the agent
// there has applied every subsystem.
func allApplied(t testing.TB, socket string) error {
	var st api.Status
	r := runCenctl(t, "--socket", socket, "status", "-o", "json")
	if r.code != 0 {
		return fmt.Errorf("status: %s", r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		return err
	}
	for _, s := range st.Subsystems {
		if s.LastApplied.IsZero() {
			return fmt.Errorf("%s not applied yet", s.Name)
		}
	}
	return nil
}
