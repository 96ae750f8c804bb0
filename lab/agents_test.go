package lab

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/procx"
)

// TestUpWithAgents brings a lab up with the test binary standing in for
// cend (TestMain), restarts one agent, kills a gateway the way the demo
// does, and takes the lab down.
func TestUpWithAgents(t *testing.T) {
	o := privileged(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("OCL_FAKE_CEND", "1")
	o.Cend = self
	o.CendShaper = "tc"
	o.StartTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range l.Gateways {
		rep, err := readFakeReport(g)
		if err != nil {
			t.Fatalf("%s: agent did not report: %v", g.Name, err)
		}
		if rep.Gateway != g.Name || rep.Metrics != "127.0.0.1:9469" || rep.LogFormat != "text" || rep.Shaper != "tc" {
			t.Errorf("%s: agent flags %+v", g.Name, rep)
		}
		if rep.BPFFS {
			t.Errorf("%s: the agent found a bpffs the lab prepared at /sys/fs/bpf", g.Name)
		}
		if !strings.Contains(strings.Join(rep.Addrs, " "), g.UnderlayAddr.String()) {
			t.Errorf("%s: agent runs outside its namespace: addresses %v", g.Name, rep.Addrs)
		}
	}
	st, err := Status(o)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Up() || len(st.Agents) != len(l.Gateways) {
		t.Fatalf("agents not all alive:\n%s", st)
	}
	loaded, err := Load(o)
	if err != nil || len(loaded.Gateways) != len(l.Gateways) || loaded.Gateways[0].PID != l.Gateways[0].PID {
		t.Fatalf("Load: %v", err)
	}
	checkRestartAgent(t, ctx, l, self)
	checkKillGateway(t, ctx, l)
	checkDownStopsAgents(t, ctx, l, o)
}

// readFakeReport reads what the stand-in cend of gateway g reported.
func readFakeReport(g Gateway) (fakeReport, error) {
	var rep fakeReport
	b, err := os.ReadFile(filepath.Join(g.StateDir, "fake.json"))
	if err != nil {
		return rep, err
	}
	return rep, json.Unmarshal(b, &rep)
}

// checkRestartAgent: a restarted agent gets the flags the lab is brought
// up with.
func checkRestartAgent(t *testing.T, ctx context.Context, l *Lab, cend string) {
	t.Helper()
	if err := l.StopAgent(ctx, "gw-shanghai-1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sh, _ := l.Gateway("gw-shanghai-1")
	os.Remove(filepath.Join(sh.StateDir, "fake.json"))
	if err := l.StartAgent(ctx, "gw-shanghai-1", cend); err != nil {
		t.Fatal(err)
	}
	if rep, err := readFakeReport(sh); err != nil || rep.Shaper != "tc" || rep.BPFFS {
		t.Errorf("restarted agent: %+v (%v), want --shaper tc and no bpffs prepared", rep, err)
	}
}

// checkKillGateway: a gateway killed the way the demo does is gone from
// the underlay, and its twin still serves the region.
func checkKillGateway(t *testing.T, ctx context.Context, l *Lab) {
	t.Helper()
	if err := ping(ctx, l, "gw-beijing-1", "10.255.0.12"); err != nil {
		t.Fatalf("underlay to gw-beijing-2, ahead of the kill: %v", err)
	}
	pid := l.Gateways[1].PID
	if err := l.KillGateway(ctx, "gw-beijing-2"); err != nil {
		t.Fatal(err)
	}
	if procx.Alive(pid) {
		t.Error("KillGateway left cend running")
	}
	if err := ping(ctx, l, "gw-beijing-1", "10.255.0.12"); err == nil {
		t.Error("a killed gateway still answers on the underlay")
	}
	if err := ping(ctx, l, "vpc-beijing", "10.1.0.1"); err != nil {
		t.Errorf("the surviving gateway is out of reach: %v", err)
	}
}

// checkDownStopsAgents: Down stops every agent and removes the state dir,
// with nothing mounted below it.
func checkDownStopsAgents(t *testing.T, ctx context.Context, l *Lab, o Options) {
	t.Helper()
	var pids []int
	for _, g := range l.Gateways {
		if g.PID != 0 {
			pids = append(pids, g.PID)
		}
	}
	if err := Down(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if procx.Alive(p) {
			t.Errorf("agent pid %d survived Down", p)
		}
	}
	if m := mountsUnder(o.StateDir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if _, err := os.Stat(o.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
}
