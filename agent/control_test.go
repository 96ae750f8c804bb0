package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/routing"
)

type fakeSource struct {
	reloads int
	resets  []string
}

func (f *fakeSource) Status() api.Status         { return api.Status{Gateway: "gw-1", Region: "cn-beijing"} }
func (f *fakeSource) Peers() []api.Peer          { return nil }
func (f *fakeSource) Routes() []api.Route        { return []api.Route{{Prefix: "10.0.0.0/16"}} }
func (f *fakeSource) Bandwidth() []api.Bandwidth { panic("a handler bug") }
func (f *fakeSource) Reload(context.Context) api.ReloadResult {
	f.reloads++
	return api.ReloadResult{Applied: true, Generation: 1 + f.reloads}
}

// ResetPeer knows one session, idc-1, tripped once.
func (f *fakeSource) ResetPeer(_ context.Context, name string) error {
	switch {
	case name != "idc-1":
		return routing.ErrUnknownSession
	case slices.Contains(f.resets, name):
		return routing.ErrNotTripped
	}
	f.resets = append(f.resets, name)
	return nil
}

func startControl(t *testing.T) (string, *fakeSource, *bytes.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "cend.sock")
	src := &fakeSource{}
	var logs bytes.Buffer
	cs, err := ListenControl(path, src, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	go cs.Serve()
	t.Cleanup(func() { cs.Close() })
	return path, src, &logs
}

func rawRequest(t *testing.T, path, method, url, body string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	req, _ := http.NewRequest(method, "http://cend"+url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestControlSocket(t *testing.T) {
	path, src, logs := startControl(t)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}
	c := api.NewClient(path)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Gateway != "gw-1" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	peers, err := c.Peers(ctx)
	if err != nil || peers == nil || len(peers) != 0 {
		t.Errorf("peers = %#v, %v; want an empty list", peers, err)
	}
	if res, err := c.Reload(ctx); err != nil || !res.Applied || src.reloads != 1 {
		t.Errorf("reload = %+v, %v", res, err)
	}

	bad := []struct {
		method, url, body string
		code              int
		want              string
	}{
		{"GET", "/v1/nope", "", 404, "no such request"},
		{"DELETE", "/v1/status", "", 405, "takes GET, not DELETE"},
		{"GET", "/v1/reload", "", 405, "takes POST"},
		{"GET", "/v1/status?all=1", "", 400, "takes no parameters"},
		{"POST", "/v1/reload", `{"config":"/etc/shadow"}`, 400, "reload takes no body"},
		{"GET", "/v1/bandwidth", "", 500, "internal error"},
		{"POST", "/v1/peers/reset", "", 400, "?name=NAME"},
		{"GET", "/v1/peers/reset?name=idc-1", "", 405, "takes POST"},
		{"POST", "/v1/peers/reset?name=idc-9", "", 404, `no BGP session named \"idc-9\"`},
	}
	for _, b := range bad {
		code, body := rawRequest(t, path, b.method, b.url, b.body)
		if code != b.code || !strings.Contains(body, b.want) {
			t.Errorf("%s %s: %d %q; want %d %q", b.method, b.url, code, body, b.code, b.want)
		}
	}
	if src.reloads != 1 || len(src.resets) != 0 {
		t.Error("a bad request reloaded or reset")
	}
	if r, err := c.ResetPeer(ctx, "idc-1"); err != nil || r.Name != "idc-1" {
		t.Errorf("reset of a tripped session: %+v, %v", r, err)
	}
	if _, err := c.ResetPeer(ctx, "idc-1"); err == nil || !strings.Contains(err.Error(), "not shut down by max_prefixes") {
		t.Errorf("reset of a session that is up: %v", err)
	}
	if !strings.Contains(logs.String(), "control request failed") {
		t.Error("the handler panic was not logged")
	}
	// Still serving after every bad request.
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("socket died after bad requests: %v", err)
	}
	// A second agent may not steal a live socket.
	if _, err := ListenControl(path, src, testLogger(logs)); err == nil || !strings.Contains(err.Error(), "another cend") {
		t.Errorf("second listener: %v", err)
	}
}

func TestControlSocketReplacesAStaleOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cend.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, with nobody behind it
	var logs bytes.Buffer
	cs, err := ListenControl(path, &fakeSource{}, testLogger(&logs))
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	cs.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("Close left the socket behind")
	}
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := ListenControl(path, &fakeSource{}, testLogger(&logs)); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
	if _, err := api.NewClient(filepath.Join(dir, "none.sock")).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot reach cend") {
		t.Errorf("unreachable gateway: %v", err)
	}
}
