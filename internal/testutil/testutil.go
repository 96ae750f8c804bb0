// Package testutil holds what opencen's tests repeat: the root check of
// privileged tests, throwaway network namespaces, and the part of
// iperf3's JSON result the tests read. Only tests import it.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencen/opencen/internal/iperf3"
	"github.com/opencen/opencen/internal/nsdo"
)

// rootSkipMessage is what every privileged test says when it skips.
const rootSkipMessage = "skipped, not root: this privileged test creates network namespaces, links, routes, " +
	"BPF programs and processes inside them, which needs root; run it as root (make test, CI), where nothing skips"

// RequireRoot skips tb unless it runs as root. As root it does nothing,
// so a privileged test never skips where the suite runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip(rootSkipMessage)
	}
}

// Suffix is n random bytes in hex: names a test creates on the host
// (namespaces, links) carry one, so that concurrent runs never collide.
func Suffix(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// NewNetNS creates a named network namespace, prefix followed by eight
// random hex digits, with its loopback up, and deletes it when the test
// ends. It returns the name; the namespace's path is /run/netns/NAME.
// Anything left running in it keeps the namespace itself alive after the
// name is gone: a test that starts processes there stops them in a
// cleanup of its own, registered after this call (cleanups run in the
// reverse order of their registration).
func NewNetNS(tb testing.TB, prefix string) string {
	tb.Helper()
	name := prefix + Suffix(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
		if _, serr := os.Stat(filepath.Join("/run/netns", name)); err != nil && serr == nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		tb.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return name
}

// InNetNS runs fn on a thread inside the named network namespace: the
// sockets fn opens, and the links and routes it reads or changes through
// package-level netlink calls, are that namespace's.
func InNetNS(name string, fn func() error) error { return nsdo.InNamed(name, fn) }

// Iperf3Result is the part of `iperf3 -c ... -J`'s output the tests read.
type Iperf3Result = iperf3.Result
