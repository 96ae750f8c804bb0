package lab

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/opencen/opencen/internal/capx"
	"github.com/opencen/opencen/internal/nsdo"
)

// ErrHostCannot is what CheckHost's error wraps: this machine cannot run
// the lab (or the demo), and nothing is built yet.
var ErrHostCannot = errors.New("this machine cannot run the lab")

// tool is a command the lab runs and the Debian package that has it.
type tool struct{ name, pkg string }

var (
	labTools     = []tool{{"ip", "iproute2"}, {"sh", "dash"}, {"ping", "iputils-ping"}}
	birdTools    = []tool{{"bird", "bird2"}, {"birdc", "bird2"}}
	measureTools = []tool{{"iperf3", "iperf3"}}
)

// hostProbe is what CheckHost looks at; tests give fakes.
type hostProbe struct {
	lookPath func(string) (string, error)
	caps     func() (capx.Set, error)
	netns    func() error // makes and drops a scratch network namespace
}

var realHost = hostProbe{
	lookPath: exec.LookPath,
	caps:     capx.Effective,
	netns:    func() error { return nsdo.Scratch(func() error { return nil }) },
}

// CheckHost says, in one error, everything this machine lacks to build the
// lab (with bird, its on-premises routers; with measure, the demo's
// measurements), while nothing is built yet: the privileges, network
// namespaces, and the commands, with the Debian packages that have them.
func CheckHost(bird, measure bool) error { return realHost.check(bird, measure) }

func (h hostProbe) check(bird, measure bool) error {
	var problems []string
	privileged := false
	if have, err := h.caps(); err != nil {
		problems = append(problems, err.Error())
	} else if missing := have.Missing(capx.NetAdmin, capx.SysAdmin); len(missing) > 0 {
		problems = append(problems, "it runs without root ("+capx.Join(missing)+"), and the lab builds network namespaces: run it as root (sudo make demo)")
	} else {
		privileged = true
	}
	if privileged {
		if err := h.netns(); err != nil {
			problems = append(problems, fmt.Sprintf("the kernel gives no new network namespace (%v): run it on a machine or VM, or a container allowed to make them", err))
		}
	}
	need := labTools
	if bird {
		need = append(need, birdTools...)
	}
	if measure {
		need = append(need, measureTools...)
	}
	var cmds, pkgs []string
	for _, t := range need {
		if _, err := h.lookPath(t.name); err != nil {
			cmds = append(cmds, t.name)
			if !strings.Contains(strings.Join(pkgs, " "), t.pkg) {
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	if len(cmds) > 0 {
		problems = append(problems, fmt.Sprintf("%s not found (Debian: apt-get install %s; as root, make deps installs them)",
			strings.Join(cmds, ", "), strings.Join(pkgs, " ")))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrHostCannot, strings.Join(problems, "; "))
}
