package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencen/opencen/agent/api"
)

// serveReload answers POST /v1/reload on a socket with res.
func serveReload(t *testing.T, res api.ReloadResult) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cend.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/reload" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(res)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

// TestReloadReportsEverything: cenctl reload exits 0 on a reload applied
// cleanly; one applied but failing to apply, and one rejected, print their
// errors on stderr and exit 1, in text and in JSON.
func TestReloadReportsEverything(t *testing.T) {
	for _, c := range []struct {
		name     string
		res      api.ReloadResult
		code     int
		inStderr []string
	}{
		{"applied", api.ReloadResult{Applied: true, Generation: 2, Changes: []string{"peer added: gw-3"}}, 0, nil},
		{"applied, but", api.ReloadResult{Applied: true, Generation: 3, Errors: []string{"applied, but: dataplane: set link up: no such device"}}, 1,
			[]string{"config generation 3 is in place, but applying it failed", "applied, but: dataplane: set link up: no such device"}},
		{"rejected", api.ReloadResult{Applied: false, Generation: 3, Errors: []string{"cen.yaml:4:5: unknown region"}}, 1,
			[]string{"reload rejected", "cen.yaml:4:5: unknown region"}},
	} {
		sock := serveReload(t, c.res)
		out, errOut, code := cenctl(t, "--socket", sock, "reload")
		if code != c.code {
			t.Errorf("%s: exit %d, want %d (stdout %q, stderr %q)", c.name, code, c.code, out, errOut)
		}
		for _, want := range c.inStderr {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: stderr lacks %q: %q", c.name, want, errOut)
			}
		}
		if c.res.Applied && !strings.Contains(out, "reloaded: config generation") {
			t.Errorf("%s: stdout %q", c.name, out)
		}
		_, _, code = cenctl(t, "--socket", sock, "reload", "-o", "json")
		if code != c.code {
			t.Errorf("%s, -o json: exit %d, want %d", c.name, code, c.code)
		}
	}
}
