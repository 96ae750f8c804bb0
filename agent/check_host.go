package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/capx"
	"github.com/opencen/opencen/shaping"
	"golang.org/x/sys/unix"
)

// hostProbe is host over the running kernel.
type hostProbe struct{}

func (hostProbe) caps() (capx.Set, error) { return capx.Effective() }

func (hostProbe) kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func (hostProbe) sysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	return strings.TrimSpace(string(b)), err
}

// clockSynced reports whether the kernel's clock discipline (NTP, chrony,
// systemd-timesyncd) holds the clock synchronised.
func (hostProbe) clockSynced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx) // a zero Modes only reads
	if err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, nil
}

func (hostProbe) bpffs(path string) (bool, error) { return shaping.IsBPFFS(path) }

func (hostProbe) nftables() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	_, err = c.ListTables()
	return err
}

func (hostProbe) support(a *Agent, device string) hostSupport { return a.probeHost(device) }
func (hostProbe) kernelWG() bool                              { return kernelWireGuard() }

// kernelVersion is the major and minor number of a kernel release such as
// "6.1.0-18-amd64".
func kernelVersion(release string) (major, minor int, err error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("kernel release %q is not MAJOR.MINOR...", release)
	}
	major, err1 := strconv.Atoi(parts[0])
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	minor, err2 := strconv.Atoi(digits)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: %w", release, err)
	}
	return major, minor, nil
}

// checkKernel names the kernel and what its version means for opencen:
// TCX from 6.6; in-kernel WireGuard from 5.6.
func checkKernel(h host, add func(CheckResult)) {
	rel, err := h.kernelRelease()
	if err != nil {
		add(CheckResult{Name: "kernel", Status: CheckFail, Detail: err.Error()})
		return
	}
	major, minor, err := kernelVersion(rel)
	if err != nil {
		add(CheckResult{Name: "kernel", Status: CheckWarn, Detail: err.Error()})
		return
	}
	at := func(ma, mi int) bool { return major > ma || major == ma && minor >= mi }
	switch {
	case at(6, 6):
		add(CheckResult{Name: "kernel", Status: CheckOK, Detail: "Linux " + rel + ": TCX (6.6 or later)"})
	case at(5, 6):
		add(CheckResult{Name: "kernel", Status: CheckOK, Detail: "Linux " + rel + ": no TCX (it needs 6.6), so the kernel shaper attaches as a tc filter"})
	default:
		add(CheckResult{Name: "kernel", Status: CheckWarn, Detail: "Linux " + rel + " predates in-kernel WireGuard (5.6) and TCX (6.6); opencen is tested on Debian 12's 6.1 and later",
			Fix: "upgrade the kernel"})
	}
}

func checkBPFFS(h host, opts Options, add func(CheckResult)) {
	if opts.Shaper == "userspace" {
		add(CheckResult{Name: "bpffs", Status: CheckOK, Detail: "not needed: --shaper userspace loads no eBPF program"})
		return
	}
	ok, err := h.bpffs(shaping.BPFFSRoot)
	switch {
	case err != nil:
		add(CheckResult{Name: "bpffs", Status: CheckWarn, Detail: err.Error(), Fix: "cend mounts a bpf filesystem at " + shaping.BPFFSRoot + " at start; create the folder"})
	case ok:
		add(CheckResult{Name: "bpffs", Status: CheckOK, Detail: shaping.BPFFSRoot + " is a bpf filesystem"})
	default:
		add(CheckResult{Name: "bpffs", Status: CheckWarn, Detail: shaping.BPFFSRoot + " is not a bpf filesystem: cend mounts one there at start, and the shaper's pins go with cend's mount namespace",
			Fix: "mount -t bpf bpf " + shaping.BPFFSRoot + " (systemd does at boot)"})
	}
}

func checkNFTables(h host, add func(CheckResult)) {
	if err := h.nftables(); err != nil {
		add(CheckResult{Name: "nftables", Status: CheckFail, Detail: "nf_tables does not answer: " + err.Error() + "; the guard that keeps tenants from forging gateway addresses needs it",
			Fix: "load nf_tables (modprobe nf_tables); Debian's kernels have it"})
		return
	}
	add(CheckResult{Name: "nftables", Status: CheckOK, Detail: "nf_tables answers (the guard against forged gateway addresses)"})
}

// checkForwarding reads the sysctls a gateway needs: forwarding, which
// cend turns on itself, and a reverse-path filter that would drop a reply
// coming back through the region's other gateway.
func checkForwarding(h host, cfg *config.Config, d *config.Desired, add func(CheckResult)) {
	var off []string
	for _, name := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if v, err := h.sysctl(name); err == nil && v != "1" {
			off = append(off, name+"="+v)
		}
	}
	if len(off) > 0 {
		add(CheckResult{Name: "forwarding", Status: CheckWarn, Detail: strings.Join(off, ", ") + ": cend turns forwarding on when it starts",
			Fix: "to have it from boot, put net.ipv4.ip_forward=1 and net.ipv6.conf.all.forwarding=1 in /etc/sysctl.d/"})
	} else {
		add(CheckResult{Name: "forwarding", Status: CheckOK, Detail: "IPv4 and IPv6 forwarding on"})
	}
	if cfg == nil || d == nil || len(cfg.GatewaysIn(d.Region)) < 2 {
		return
	}
	if v, err := h.sysctl("net.ipv4.conf.all.rp_filter"); err == nil && v == "1" {
		add(CheckResult{Name: "rp_filter", Status: CheckWarn, Detail: "net.ipv4.conf.all.rp_filter=1 (strict) drops replies that come back through region " + d.Region + "'s other gateway",
			Fix: "sysctl -w net.ipv4.conf.all.rp_filter=2 (loose), and in /etc/sysctl.d/"})
	}
}

// checkClock: WireGuard refuses a handshake whose timestamp is not newer
// than the last it accepted, so a clock that jumps back stalls tunnels.
func checkClock(h host, add func(CheckResult)) {
	synced, err := h.clockSynced()
	switch {
	case err != nil:
		add(CheckResult{Name: "clock", Status: CheckWarn, Detail: err.Error()})
	case synced:
		add(CheckResult{Name: "clock", Status: CheckOK, Detail: "synchronised"})
	default:
		add(CheckResult{Name: "clock", Status: CheckWarn, Detail: "not synchronised: a clock set back makes peers refuse this gateway's WireGuard handshakes until it catches up",
			Fix: "run a time service: apt-get install systemd-timesyncd (or chrony)"})
	}
}
