package test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
)

// BenchmarkIdleAgent measures one idle cend with ten peers (eleven
// gateways, all sessions up, no traffic): its resident memory, and its CPU
// over 30 s as a share of one core, beside the same for its WireGuard
// helper process. Targets (issue 6): under 60 MB and under 1% of a core.
func BenchmarkIdleAgent(b *testing.B) {
	l, _ := upLab(b, "testdata/idle.yaml")
	g, _ := l.Gateway("gw-1")
	eventually(b, 90*time.Second, "gw-1 has ten established peers", func() error {
		// The agent may not listen yet: a refused cenctl is retried, not
		// fatal (cenctlJSON would stop the benchmark at once).
		r := runCenctl(b, "--socket", g.Socket, "peers", "-o", "json")
		if r.code != 0 {
			return fmt.Errorf("cenctl peers: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
		}
		var peers []api.Peer
		if err := json.Unmarshal([]byte(r.stdout), &peers); err != nil {
			return fmt.Errorf("cenctl peers: %w", err)
		}
		up := 0
		for _, p := range peers {
			if p.BGPState == "established" {
				up++
			}
		}
		if up != 10 {
			return fmt.Errorf("%d of %d established", up, len(peers))
		}
		return nil
	})
	time.Sleep(5 * time.Second) // let start-up work settle
	helper := helperPID(b, g.StateDir)
	const window = 30 * time.Second
	b.ResetTimer()
	for range b.N {
		c0, h0 := cpuTicks(b, g.PID), cpuTicks(b, helper)
		time.Sleep(window)
		c1, h1 := cpuTicks(b, g.PID), cpuTicks(b, helper)
		ticks := float64(window.Seconds() * 100) // USER_HZ
		agentCPU, helperCPU := float64(c1-c0)/ticks*100, float64(h1-h0)/ticks*100
		agentRSS, helperRSS := rssMB(b, g.PID), rssMB(b, helper)
		b.ReportMetric(agentRSS, "agent-rss-MB")
		b.ReportMetric(agentCPU, "agent-cpu-%")
		b.ReportMetric(helperRSS, "helper-rss-MB")
		b.ReportMetric(helperCPU, "helper-cpu-%")
		b.Logf("idle cend with 10 peers over %s: RSS %.1f MB (target < 60), CPU %.2f%% of a core (target < 1%%); its WireGuard helper: RSS %.1f MB, CPU %.2f%%",
			window, agentRSS, agentCPU, helperRSS, helperCPU)
	}
}

func helperPID(t testing.TB, stateDir string) int {
	t.Helper()
	files, _ := os.ReadDir(stateDir + "/dataplane")
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".pid") {
			b, _ := os.ReadFile(stateDir + "/dataplane/" + f.Name())
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no helper pid file in %s/dataplane", stateDir)
	return 0
}

// cpuTicks is a process's user+system time in clock ticks.
func cpuTicks(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces: fields count from after its ')'.
	fields := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return utime + stime
}

func rssMB(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
