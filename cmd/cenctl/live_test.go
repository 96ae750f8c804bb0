package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
)

// fakeGateway serves the control socket's documents on a unix socket at
// path, as cend does, the bandwidth counters growing with each request;
// it returns how many requests it answered.
func fakeGateway(t *testing.T, path, name string) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		json.NewEncoder(w).Encode(api.Status{Instance: "cen-test", Gateway: name, Region: "cn-beijing"})
	})
	mux.HandleFunc("/v1/bandwidth", func(w http.ResponseWriter, _ *http.Request) {
		i := uint64(n.Add(1))
		json.NewEncoder(w).Encode([]api.Bandwidth{{Region: "us-west-1", AllocationBps: 60e6, PairBps: 60e6, Source: "package",
			Package: "bwp", RateBps: 1e6, PassedBytes: 1000 * i, PassedPackets: i, SampledAt: time.Now()}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &n
}

// TestWatchIntoAPipe: --watch into something that is not a terminal writes
// no terminal control codes; with -o json it writes JSON Lines, one
// compact document per refresh.
func TestWatchIntoAPipe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "gw.sock")
	fakeGateway(t, sock, "gw-a")
	out, errOut, code := cenctl(t, "bandwidth", "--socket", sock, "--watch", "--count", "3", "--interval", "100ms", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || strings.Contains(out, "\x1b") {
		t.Fatalf("want 3 JSON lines and no escape codes, got %d lines:\n%q", len(lines), out)
	}
	var last uint64
	for i, l := range lines {
		var rows []api.Bandwidth
		if err := json.Unmarshal([]byte(l), &rows); err != nil || len(rows) != 1 || rows[0].PassedBytes <= last {
			t.Errorf("line %d is not the next refresh's document (%v): %s", i, err, l)
			continue
		}
		last = rows[0].PassedBytes
	}

	out, errOut, code = cenctl(t, "bandwidth", "--socket", sock, "--watch", "--count", "2", "--interval", "100ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "\x1b") || strings.Count(out, "TO REGION") != 2 {
		t.Errorf("text --watch into a pipe: want two tables and no escape codes:\n%q", out)
	}
}

// TestSocketDiscovery: without --socket, cenctl talks to --gateway NAME's
// socket in /run/opencen, else $OPENCEN_SOCKET, else the only socket
// there; several is bad usage naming them, none a failure saying what to
// give.
func TestSocketDiscovery(t *testing.T) {
	dir := t.TempDir()
	old := runDir
	runDir = dir
	t.Cleanup(func() { runDir = old })
	t.Setenv("OPENCEN_SOCKET", "")

	status := func(args ...string) (string, string, int) {
		return cenctl(t, append([]string{"status", "-o", "json"}, args...)...)
	}
	if _, errOut, code := status(); code != exitFailure || !strings.Contains(errOut, "no gateway's control socket in "+dir) {
		t.Errorf("no socket: exit %d, %q", code, errOut)
	}
	fakeGateway(t, filepath.Join(dir, "gw-a.sock"), "gw-a")
	if err := os.WriteFile(filepath.Join(dir, "notes.sock"), nil, 0o600); err != nil { // not a socket
		t.Fatal(err)
	}
	if out, errOut, code := status(); code != 0 || !strings.Contains(out, `"gateway": "gw-a"`) {
		t.Errorf("the only socket: exit %d, %s%s", code, out, errOut)
	}
	fakeGateway(t, filepath.Join(dir, "gw-b.sock"), "gw-b")
	if _, errOut, code := status(); code != exitUsage || !strings.Contains(errOut, "several gateways (gw-a, gw-b); say which with --gateway NAME") {
		t.Errorf("two sockets: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"--gateway", "gw-b"}, {"--socket", filepath.Join(dir, "gw-b.sock")}} {
		if out, errOut, code := status(args...); code != 0 || !strings.Contains(out, `"gateway": "gw-b"`) {
			t.Errorf("%q: exit %d, %s%s", args, code, out, errOut)
		}
	}
	t.Setenv("OPENCEN_SOCKET", filepath.Join(dir, "gw-a.sock"))
	if out, errOut, code := status(); code != 0 || !strings.Contains(out, `"gateway": "gw-a"`) {
		t.Errorf("$OPENCEN_SOCKET: exit %d, %s%s", code, out, errOut)
	}
	if out, _, code := status("--gateway", "gw-b"); code != 0 || !strings.Contains(out, `"gateway": "gw-b"`) {
		t.Errorf("--gateway ahead of $OPENCEN_SOCKET: exit %d, %s", code, out)
	}
	for _, args := range [][]string{{"--gateway", "../etc/x"}, {"--gateway", "gw-a", "--socket", "/x.sock"}} {
		if _, errOut, code := status(args...); code != exitUsage {
			t.Errorf("%q: exit %d, %q; want 2", args, code, errOut)
		}
	}
}

// TestVersion: cenctl version names the version and the commit.
func TestVersion(t *testing.T) {
	out, _, code := cenctl(t, "version")
	if code != 0 || !strings.HasPrefix(out, "cenctl ") || !strings.Contains(out, "(commit ") {
		t.Errorf("exit %d: %q", code, out)
	}
}
