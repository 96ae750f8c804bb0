package agent

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/capx"
	"github.com/opencen/opencen/shaping"
)

// CheckStatus is the verdict of one preflight check.
type CheckStatus string

// The verdicts: ok, warn (cend starts, but the operator should look), fail
// (cend would refuse to start, or run without doing its job).
const (
	CheckOK   CheckStatus = "ok"
	CheckWarn CheckStatus = "warn"
	CheckFail CheckStatus = "fail"
)

// CheckResult is one preflight check: what it finds and, when it is not
// ok, what to do.
type CheckResult struct {
	Name   string
	Status CheckStatus
	Detail string
	Fix    string
}

// String is the check's one line: verdict, name, finding, fix.
func (r CheckResult) String() string {
	s := fmt.Sprintf("%-4s  %-12s %s", r.Status, r.Name, r.Detail)
	if r.Fix != "" {
		s += "; fix: " + r.Fix
	}
	return s
}

// NeededCaps are the capabilities cend runs with, and the cend@ unit's
// bounding set: CAP_NET_ADMIN for links, addresses, routes, WireGuard, tc
// and nftables; CAP_SYS_ADMIN for the scratch network namespaces the
// probes run in, the gateway namespace a lab's helper enters and a bpffs
// mount (and it makes the process BPF- and perfmon-capable, as CAP_BPF and
// CAP_PERFMON do on kernels that know them); CAP_NET_BIND_SERVICE for
// BGP's port 179.
func NeededCaps(bgpPort int32) []capx.Cap {
	caps := []capx.Cap{capx.NetAdmin, capx.SysAdmin}
	if bgpPort == 0 || bgpPort < 1024 {
		caps = append(caps, capx.NetBindService)
	}
	return caps
}

// CheckCaps returns an error naming the capabilities the process lacks to
// run a gateway, and how to get them.
func CheckCaps(bgpPort int32) error {
	have, err := capx.Effective()
	if err != nil {
		return err
	}
	if missing := have.Missing(NeededCaps(bgpPort)...); len(missing) > 0 {
		return fmt.Errorf("cend manages tunnels, routes and eBPF programs and lacks %s: run it as root, or from the cend@ systemd unit", capx.Join(missing))
	}
	return nil
}

// host is what the preflight reads of the machine; hostProbe is the real
// one, tests give fakes.
type host interface {
	caps() (capx.Set, error)
	kernelRelease() (string, error)
	sysctl(name string) (string, error)
	clockSynced() (bool, error)
	bpffs(path string) (bool, error)
	nftables() error
	// support is what the agent's shaper choice sees (Agent.probeHost);
	// kernelWG whether a kernel WireGuard device can be made.
	support(a *Agent, device string) hostSupport
	kernelWG() bool
}

// Check is cend --check: a preflight of the host and the config that
// changes nothing, one result per check, in a fixed order. It reuses what
// cend runs at start (config.Load, readSecrets, probeHost, chooseShaper),
// so a host that passes starts.
func Check(opts Options) []CheckResult {
	return check(opts, hostProbe{})
}

func check(opts Options, h host) []CheckResult {
	if opts.BGPPort == 0 {
		opts.BGPPort = 179
	}
	var out []CheckResult
	add := func(r CheckResult) { out = append(out, r) }
	privileged := checkPrivileges(h, opts.BGPPort, add)
	checkKernel(h, add)
	cfg, d := checkConfig(opts, add)
	device := ""
	if cfg != nil {
		device = dataplane.DeviceName(cfg.Instance.Name + "/" + opts.Gateway)
	}
	if !privileged {
		for _, name := range []string{"wireguard", "shaping", "nftables"} {
			add(CheckResult{Name: name, Status: CheckWarn, Detail: "not probed: probing needs the capabilities above", Fix: "run cend --check as root"})
		}
	} else {
		a := &Agent{opts: opts}
		checkWireGuard(h, a, device, add)
		checkShaping(h, a, device, add)
		checkNFTables(h, add)
	}
	checkBPFFS(h, opts, add)
	checkForwarding(h, cfg, d, add)
	checkClock(h, add)
	return out
}

// Failed reports whether any check failed.
func Failed(results []CheckResult) bool {
	for _, r := range results {
		if r.Status == CheckFail {
			return true
		}
	}
	return false
}

func checkPrivileges(h host, bgpPort int32, add func(CheckResult)) bool {
	have, err := h.caps()
	if err != nil {
		add(CheckResult{Name: "privileges", Status: CheckFail, Detail: err.Error()})
		return false
	}
	need := NeededCaps(bgpPort)
	if missing := have.Missing(need...); len(missing) > 0 {
		add(CheckResult{Name: "privileges", Status: CheckFail, Detail: "lacks " + capx.Join(missing),
			Fix: "run cend as root, or from the cend@ systemd unit, which grants them"})
		return false
	}
	add(CheckResult{Name: "privileges", Status: CheckOK, Detail: "holds " + capx.Join(need)})
	return true
}

// checkConfig loads the config, finds the gateway in it and reads its
// secrets as cend does at start.
func checkConfig(opts Options, add func(CheckResult)) (*config.Config, *config.Desired) {
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		var list config.ErrorList
		detail := err.Error()
		if errors.As(err, &list) {
			detail = fmt.Sprintf("%d error(s), the first: %s", len(list), list[0])
		}
		add(CheckResult{Name: "config", Status: CheckFail, Detail: detail, Fix: "cenctl validate " + opts.ConfigPath + " lists every error"})
		return nil, nil
	}
	add(configPermissions(opts.ConfigPath, cfg))
	d, err := cfg.Desired(opts.Gateway, config.DesiredOptions{})
	if err != nil {
		add(CheckResult{Name: "gateway", Status: CheckFail, Detail: err.Error(), Fix: "give --gateway one of the file's gateways"})
		return cfg, nil
	}
	add(CheckResult{Name: "gateway", Status: CheckOK, Detail: fmt.Sprintf("%s in region %s, %d peer(s), %d VBR session(s)", d.Gateway, d.Region, len(d.Peers), len(d.VBRs))})
	if _, err := readSecrets(cfg, d); err != nil {
		add(CheckResult{Name: "secrets", Status: CheckFail, Detail: strings.ReplaceAll(err.Error(), "\n", "; "),
			Fix: "each key and password file must exist, be mode 0600 and hold what the config says"})
	} else {
		add(CheckResult{Name: "secrets", Status: CheckOK, Detail: "private key " + d.PrivateKeyFile + " is private and matches public_key"})
	}
	return cfg, d
}

// configPermissions: the config decides where traffic goes, so only its
// owner may write it.
func configPermissions(path string, cfg *config.Config) CheckResult {
	r := CheckResult{Name: "config", Status: CheckOK, Detail: fmt.Sprintf("%s is valid: instance %s, %d gateway(s), %d network(s)", path, cfg.Instance.Name, len(cfg.Gateways), len(cfg.Networks))}
	fi, err := os.Stat(path)
	if err != nil {
		return CheckResult{Name: "config", Status: CheckFail, Detail: err.Error()}
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		r.Status, r.Detail, r.Fix = CheckWarn, fmt.Sprintf("%s is valid, but mode %04o lets others change where traffic goes", path, perm), "chmod go-w "+path
	}
	return r
}

func checkWireGuard(h host, a *Agent, device string, add func(CheckResult)) {
	switch {
	case a.opts.Shaper == shaping.PathUserspace:
		add(CheckResult{Name: "wireguard", Status: CheckOK, Detail: "userspace (wireguard-go helper): --shaper userspace runs the tunnel there"})
	case h.kernelWG():
		add(CheckResult{Name: "wireguard", Status: CheckOK, Detail: "kernel module"})
	default:
		add(CheckResult{Name: "wireguard", Status: CheckOK, Detail: "userspace (wireguard-go helper): this kernel makes no WireGuard device (no module)"})
	}
}

// checkShaping says which mode --shaper picks here, and why not the
// others.
func checkShaping(h host, a *Agent, device string, add func(CheckResult)) {
	sup := h.support(a, device)
	want := a.opts.Shaper
	if want == "" {
		want = shaping.PathAuto
	}
	p, err := chooseShaper(want, sup)
	if err != nil {
		add(CheckResult{Name: "shaping", Status: CheckFail, Detail: err.Error(), Fix: "see README, Shaping modes, for what each mode needs"})
		return
	}
	var why []string
	for _, c := range []struct {
		p   shaping.Path
		err error
	}{{shaping.PathTCX, sup.tcx}, {shaping.PathTC, sup.tc}, {shaping.PathUserspace, sup.userspace}} {
		if c.p != p && c.err != nil {
			why = append(why, fmt.Sprintf("%s: %v", c.p, c.err))
		}
	}
	detail := fmt.Sprintf("--shaper %s shapes with %s", want, p)
	if len(why) > 0 {
		detail += " (" + strings.Join(why, "; ") + ")"
	}
	add(CheckResult{Name: "shaping", Status: CheckOK, Detail: detail})
}
