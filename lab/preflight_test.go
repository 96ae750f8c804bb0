package lab

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/opencen/opencen/internal/capx"
)

// TestCheckHost: a machine that cannot run the demo gets one error naming
// everything it lacks (root, namespaces, iperf3 and ping with their
// packages), and the demo's tools are asked for only when it measures.
func TestCheckHost(t *testing.T) {
	root := func() (capx.Set, error) { return ^capx.Set(0), nil }
	user := func() (capx.Set, error) { return 0, nil }
	has := func(missing ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			if slices.Contains(missing, name) {
				return "", exec.ErrNotFound
			}
			return "/usr/bin/" + name, nil
		}
	}
	netnsOK := func() error { return nil }
	for _, c := range []struct {
		name          string
		h             hostProbe
		bird, measure bool
		want, wantNot []string
	}{
		{"everything there", hostProbe{has(), root, netnsOK}, true, true, nil, nil},
		{"a fresh machine, not root", hostProbe{has("iperf3", "ping", "bird", "birdc"), user, netnsOK}, true, true,
			[]string{"runs without root (CAP_NET_ADMIN, CAP_SYS_ADMIN)", "sudo make demo",
				"ping, bird, birdc, iperf3 not found (Debian: apt-get install iputils-ping bird2 iperf3; as root, make deps installs them)"}, nil},
		{"no namespaces", hostProbe{has(), root, func() error { return errors.New("operation not permitted") }}, true, true,
			[]string{"no new network namespace (operation not permitted)"}, nil},
		{"lab up needs no iperf3", hostProbe{has("iperf3"), root, netnsOK}, true, false, nil, nil},
		{"no VBR, no BIRD", hostProbe{has("bird", "birdc", "ping"), root, netnsOK}, false, true,
			[]string{"ping not found (Debian: apt-get install iputils-ping;"}, []string{"bird"}},
	} {
		err := c.h.check(c.bird, c.measure)
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrHostCannot) || strings.Count(err.Error(), "\n") > 0 {
			t.Fatalf("%s: %v; want one line wrapping ErrHostCannot", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
		for _, w := range c.wantNot {
			if strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q names %q", c.name, err, w)
			}
		}
	}
}
