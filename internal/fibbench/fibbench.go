// Package fibbench is the baseline the routing benchmarks measure the
// kernel's share against: `ip -batch` installing routes.
package fibbench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// IPBatch times `ip -n NAMESPACE -batch` adding a blackhole route (protocol
// 250, not opencen's) for every prefix. dir holds the batch file.
func IPBatch(namespace string, prefixes []netip.Prefix, dir string) (time.Duration, error) {
	var sb strings.Builder
	for _, p := range prefixes {
		fmt.Fprintf(&sb, "route add blackhole %s proto 250\n", p)
	}
	f := filepath.Join(dir, "routes.batch")
	if err := os.WriteFile(f, []byte(sb.String()), 0o600); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if out, err := exec.Command("ip", "-n", namespace, "-batch", f).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("ip -batch: %v: %s", err, out)
	}
	return time.Since(t0), nil
}
