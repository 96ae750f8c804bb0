package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adoptEnv names the file (0600, it holds a private key) with the spec of
// the second process in TestAdoptionBySecondProcess.
const adoptEnv = "OCDP_ADOPT_SPEC"

type adoptSpec struct {
	Device, NetNS, StateDir string
	HelperCommand           []string
	Desired                 Desired
}

// adoptChild is the second agent: it opens the dataplane, applies the same
// desired state, prints the helper pid it adopted and exits without
// cleanup, as a restarted cend would.
func adoptChild(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var spec adoptSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dp, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Device: spec.Device, NetNS: spec.NetNS, StateDir: spec.StateDir, HelperCommand: spec.HelperCommand,
		ResyncInterval: -1,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "new:", err)
		return 1
	}
	if err := dp.Set(context.Background(), spec.Desired); err != nil {
		fmt.Fprintln(os.Stderr, "set:", err)
		return 1
	}
	st, err := dp.Status()
	if err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
		return 1
	}
	fmt.Println(st.HelperPID)
	if err := dp.Close(false); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

// runAgent runs adoptChild in a new process, as a cend start or restart,
// and returns the helper pid it reports.
func runAgent(t *testing.T, specFile string) int {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), adoptEnv+"="+specFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("agent process: %v\n%s", err, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid == 0 {
		t.Fatalf("agent process printed %q, want a helper pid", out)
	}
	return pid
}

// TestAdoptionBySecondProcess: one agent process brings gw0 up and exits
// without cleanup (its helper is orphaned and keeps forwarding); a second
// agent process adopts the device while gw1 pings gw0 at 100 pps, and not
// one packet is lost.
func TestAdoptionBySecondProcess(t *testing.T) {
	l := newLab(t, 2)
	ctx := context.Background()
	if err := l.open(1).Set(ctx, l.desired(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp, err := New(l.options(0))
		if err != nil {
			t.Error(err)
		} else if err := dp.Close(true); err != nil {
			t.Errorf("Close(true) after adoption: %v", err)
		}
		killHelper(t, l.stateDir, l.device(0))
	})
	spec := adoptSpec{Device: l.device(0), NetNS: nsPath(l.gws[0].ns), StateDir: l.stateDir,
		HelperCommand: []string{os.Args[0], "wireguard-device"}, Desired: l.desired(0)}
	b, _ := json.Marshal(spec)
	specFile := t.TempDir() + "/spec.json"
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	pidFirst := runAgent(t, specFile)
	if !helperArgsMatch(pidFirst, l.device(0)) {
		t.Fatalf("helper %d did not outlive the agent that started it", pidFirst)
	}
	l.pingMesh()

	// 100 pps for 5 s from gw1 to gw0's VPC address, across the restart.
	const count = 500
	p := newPinger(t, l.gws[1].ns)
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := p.ping(lanHost(l.gws[0]), count, 10*time.Millisecond, 2*time.Second)
		res <- result{n, err}
	}()
	time.Sleep(time.Second)
	pidSecond := runAgent(t, specFile)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != count {
		t.Errorf("ping across the restart: %d of %d answered, %d lost", r.n, count, count-r.n)
	}
	if pidSecond != pidFirst {
		t.Errorf("second agent runs helper %d, want the running one %d (adopt, not replace)", pidSecond, pidFirst)
	}
	if !helperArgsMatch(pidFirst, l.device(0)) {
		t.Errorf("helper %d is no longer running", pidFirst)
	}
	dp, err := New(l.options(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Close(true); err != nil {
		t.Fatalf("Close(true) after adoption: %v", err)
	}
	if helperArgsMatch(pidFirst, l.device(0)) {
		t.Errorf("helper %d still running after Close(true)", pidFirst)
	}
}
