package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/nsdo"
	"github.com/opencen/opencen/shaping"
	"github.com/vishvananda/netlink"
)

// shaper is what the agent drives: the eBPF *shaping.Shaper (tcx, tc), or
// the *shaping.Remote of the userspace WireGuard helper (userspace).
type shaper interface {
	Set(shaping.Desired) error
	Counters() (map[string]shaping.Counters, error)
	Close(cleanup bool) error
}

var (
	_ shaper = (*shaping.Shaper)(nil)
	_ shaper = (*shaping.Remote)(nil)
)

// hostSupport is what the choice of shaping path depends on: for each
// path, nil when the host can enforce through it, else what it lacks.
type hostSupport struct {
	tcx, tc error
	// userspace: nil when the WireGuard device is (or will be) the
	// userspace helper.
	userspace error
}

// chooseShaper picks the shaping path for the --shaper value want.
// Forced, a path the host lacks is an error naming what it lacks; auto
// takes tcx, else tc, else userspace, and is an error when none can
// enforce. It never picks a path that would not shape.
func chooseShaper(want shaping.Path, h hostSupport) (shaping.Path, error) {
	lacks := map[shaping.Path]error{shaping.PathTCX: h.tcx, shaping.PathTC: h.tc, shaping.PathUserspace: h.userspace}
	switch want {
	case shaping.PathTCX, shaping.PathTC, shaping.PathUserspace:
		if err := lacks[want]; err != nil {
			return "", fmt.Errorf("--shaper %s: this host cannot shape that way: %w", want, err)
		}
		return want, nil
	case shaping.PathAuto, "":
		for _, p := range []shaping.Path{shaping.PathTCX, shaping.PathTC, shaping.PathUserspace} {
			if lacks[p] == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("no shaper can enforce on this host, so cend does not start: tcx: %v; tc: %v; userspace: %v. "+
			"--shaper userspace runs userspace WireGuard, which then shapes what it forwards", h.tcx, h.tc, h.userspace)
	}
	return "", fmt.Errorf("--shaper %q: want auto, tcx, tc or userspace", want)
}

// probeHost finds what the host supports, changing nothing: the kernel
// hooks are tried in a scratch namespace, the WireGuard device is looked
// at where it is, or kernel WireGuard tried in a scratch namespace.
func (a *Agent) probeHost(device string) hostSupport {
	sup := shaping.Probe()
	h := hostSupport{tcx: sup.TCX, tc: sup.TC}
	if lk, err := netlink.LinkByName(device); err == nil {
		if lk.Type() == "wireguard" {
			h.userspace = fmt.Errorf("the WireGuard device %s is the kernel module's (cend --cleanup removes it)", device)
		}
		return h
	}
	switch a.opts.WireGuardMode {
	case dataplane.ModeUserspace:
	case dataplane.ModeKernel:
		h.userspace = errors.New("the WireGuard device is forced to the kernel module")
	default:
		if kernelWireGuard() {
			h.userspace = errors.New("the host has the WireGuard kernel module, which the tunnel uses")
		}
	}
	if a.opts.Shaper == shaping.PathUserspace {
		// Forced, the tunnel runs in userspace whatever the host has.
		h.userspace = nil
	}
	return h
}

// kernelWireGuard reports whether a kernel WireGuard device can be made,
// trying it in a scratch namespace.
func kernelWireGuard() bool {
	err := nsdo.Scratch(func() error {
		return netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "ocwprobe"}})
	})
	return err == nil
}

// Prepare decides how this gateway shapes (Options.Shaper against what the
// host supports) while nothing is changed yet: when no path can enforce, or
// the one asked for cannot, it returns an error that names what the host
// lacks and the flag, and the agent must not start. Run calls it when the
// caller did not.
func (a *Agent) Prepare() error {
	if a.shPath != "" {
		return nil
	}
	cfg := a.snapshotConfig()
	device := dataplane.DeviceName(cfg.Instance.Name + "/" + a.opts.Gateway)
	p, err := chooseShaper(a.opts.Shaper, a.probe(device))
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.shPath = p
	a.mu.Unlock()
	return nil
}

// wireGuardMode is the dataplane's mode: userspace when the shaping is.
func (a *Agent) wireGuardMode() dataplane.Mode {
	if a.shPath == shaping.PathUserspace {
		return dataplane.ModeUserspace
	}
	return a.opts.WireGuardMode
}

// mountBPFFS gives a kernel shaper a bpffs at /sys/fs/bpf for its pins,
// mounting one where there is none (under `ip netns exec` it lives in
// this process's mount namespace and goes with it: nothing depends on
// it).
func (a *Agent) mountBPFFS() error {
	if a.shPath == shaping.PathUserspace || a.opts.PinPath != "" {
		return nil
	}
	mounted, err := shaping.EnsureBPFFS(shaping.BPFFSRoot)
	if err != nil {
		return fmt.Errorf("shaping: %w", err)
	}
	if mounted {
		a.bpffsMounted = true
		a.log.Info("mounted a bpf filesystem", "path", shaping.BPFFSRoot)
	}
	return nil
}

// startShaper starts the shaper of the path Prepare chose. Whatever shaper
// another path left is removed first (a restart may change the path):
// never two shapers at once.
func (a *Agent) startShaper(helper bool) error {
	if err := a.newShaper(helper); err != nil {
		return err
	}
	a.mu.Lock()
	a.shDevices = a.shapedDevices()
	a.mu.Unlock()
	a.log.Info("shaping path", "mode", a.shPath, "devices", a.shDevices)
	return nil
}

func (a *Agent) newShaper(helper bool) error {
	log := a.log.With("subsystem", subShaping)
	device := a.dp.Device()
	remote := shaping.NewRemote(shaping.SocketPath(device))
	if a.shPath == shaping.PathUserspace {
		if err := shaping.Remove(a.pinPath(), log); err != nil {
			return fmt.Errorf("remove the kernel shaper: %w", err)
		}
		if _, err := remote.Counters(); err != nil {
			return fmt.Errorf("the WireGuard helper of %s has no userspace shaper (a cend without one started it; cend --cleanup stops it): %w", device, err)
		}
		a.setSubsystem(func() { a.sh = remote })
		return nil
	}
	if helper {
		if err := remote.Close(true); err != nil {
			return fmt.Errorf("empty the WireGuard helper's shaper: %w", err)
		}
	}
	s, err := shaping.New(shaping.Options{Interfaces: a.shapedDevices(), Attach: a.shPath, PinPath: a.pinPath(), Logger: log})
	if err != nil {
		return err
	}
	a.setSubsystem(func() { a.sh = s })
	return nil
}

// shapedDevices are the devices whose egress the shaper acts at: all CEN
// traffic leaves through the WireGuard device, with its real destinations
// visible (for the userspace shaper, the helper's TUN is that device).
func (a *Agent) shapedDevices() []string { return []string{a.dp.Device()} }

// removeShaper takes away a kernel shaper that the agent did not get to
// start (a failed start, then --cleanup): Close(true) does it otherwise.
func (a *Agent) removeShaper() error {
	if a.dp == nil || a.shPath == shaping.PathUserspace {
		return nil
	}
	return shaping.Remove(a.pinPath(), a.log.With("subsystem", subShaping))
}

// releaseBPFFS unmounts the bpffs this agent mounted, once nothing is left
// in it.
func (a *Agent) releaseBPFFS() error {
	if !a.bpffsMounted {
		return nil
	}
	_ = os.Remove(filepath.Dir(a.pinPath()))
	return shaping.ReleaseBPFFS(shaping.BPFFSRoot)
}

// pinPath is the bpffs folder of this gateway's shaper.
func (a *Agent) pinPath() string {
	if a.opts.PinPath != "" {
		return a.opts.PinPath
	}
	return filepath.Join(shaping.BPFFSRoot, "opencen", a.dp.Device())
}

// logLeftInPlace says, after a start that fails once the tunnel is
// made, what stays for the next cend to adopt (or cend --cleanup to
// remove).
func (a *Agent) logLeftInPlace(err error) {
	if a.dp == nil || a.opts.Cleanup {
		return
	}
	var parts []string
	if st, serr := a.dp.Status(); serr == nil && st.Device != "" {
		d := fmt.Sprintf("WireGuard device %s (%s)", st.Device, st.Mode)
		if st.HelperPID != 0 {
			d += fmt.Sprintf(" and its helper, pid %d", st.HelperPID)
		}
		parts = append(parts, d, "its routes and addresses")
	}
	if a.sh != nil {
		parts = append(parts, fmt.Sprintf("the %s shaper of %s", a.shPath, strings.Join(a.shapedDevices(), ", ")))
	} else if a.shPath != shaping.PathUserspace {
		parts = append(parts, "any shaper program attached to its device")
	}
	a.log.Error("start failed; left in place for the next cend to adopt, or for cend --cleanup to remove",
		"left", strings.Join(parts, "; "), "err", err)
}
