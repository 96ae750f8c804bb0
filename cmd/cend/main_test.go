package main

import (
	"bytes"
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
