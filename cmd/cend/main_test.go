package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrors: a bad --shaper, or the helper without its device, is bad
// usage (exit 2), said while nothing is read or touched yet.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "/nonexistent.yaml", "--gateway", "g", "--shaper", "xdp"}, `--shaper "xdp": use auto, tcx, tc or userspace`},
		{[]string{"wireguard-device"}, "--device is required"},
		{[]string{"wireguard-device", "--device", "ocw0", "extra"}, `unexpected argument "extra"`},
	} {
		var stderr bytes.Buffer
		if code := run(c.args, &stderr); code != exitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("cend %q: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), exitUsage, c.want)
		}
	}
}

// TestVersion: cend --version names the version and the commit.
func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runWith([]string{"--version"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "cend ") ||
		!strings.Contains(stdout.String(), "(commit ") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

// TestCheckWithoutAConfig: --check needs --config and --gateway (bad
// usage), and a file that does not validate fails its config line.
func TestCheckWithoutAConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runWith([]string{"--check"}, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "--config and --gateway are required") {
		t.Errorf("--check alone: exit %d, %q", code, stderr.String())
	}
	bad := filepath.Join(t.TempDir(), "cen.yaml")
	if err := os.WriteFile(bad, []byte("instance: {name: t}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	code := runWith([]string{"--check", "--config", bad, "--gateway", "a"}, &stdout, &stderr)
	if code != exitFailure || !strings.Contains(stdout.String(), "fail  config       1 error(s), the first: "+bad+":1:1: gateways is missing") {
		t.Errorf("bad config: exit %d:\n%s", code, stdout.String())
	}
}
