package shaping

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Path is how a gateway shapes: the eBPF program at TCX or at tc, or the
// userspace WireGuard helper (see [TUN]).
type Path string

// The shaping paths of `cend --shaper`.
const (
	// PathAuto picks the first of TCX, tc and userspace that the host
	// supports.
	PathAuto Path = "auto"
	// PathTCX attaches the program at TCX egress (Linux 6.6 and later).
	PathTCX Path = "tcx"
	// PathTC attaches the program as a direct-action cls_bpf filter on a
	// clsact qdisc's egress, for kernels without TCX.
	PathTC Path = "tc"
	// PathUserspace shapes in the userspace WireGuard helper, on the
	// packets it reads from its TUN.
	PathUserspace Path = "userspace"
)

// Paths lists the values of Path, PathAuto first.
var Paths = []Path{PathAuto, PathTCX, PathTC, PathUserspace}

// Options configure a Shaper.
type Options struct {
	// Interfaces are the devices whose egress is shaped, all with one set
	// of buckets: a region's rate holds for the sum of what leaves through
	// all of them. Ethernet and L3 devices may be mixed. Required, unless
	// Interface is set.
	Interfaces []string
	// Interface is the shorthand for a single device: Interfaces
	// []string{Interface}. Setting both is an error unless they say the
	// same.
	Interface string
	// Attach is the hook: PathTCX (default) or PathTC.
	Attach Path
	// PinPath is a bpffs directory where the maps and programs are pinned
	// for inspection (bpftool), e.g. /sys/fs/bpf/opencen/DEVICE; if it is
	// not on a bpffs, New mounts one there. Nothing depends on the pins:
	// New finds a running shaper by what is attached to the devices.
	// Empty: no pins.
	PinPath string
	// Mode is ModeQueue (default) or ModePolice.
	Mode Mode
	// QueueDelay bounds the queue per region in ModeQueue (default
	// DefaultQueueDelay).
	QueueDelay time.Duration
	// PreciseClock makes the program read bpf_ktime_get_ns instead of the
	// tick-resolution jiffies. See the package doc for what each costs.
	PreciseClock bool
	// Logger receives lifecycle messages (default: discard).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	switch {
	case len(o.Interfaces) == 0 && o.Interface == "":
		return errors.New("options: interfaces are required")
	case len(o.Interfaces) == 0:
		o.Interfaces = []string{o.Interface}
	case o.Interface != "" && !slices.Equal(o.Interfaces, []string{o.Interface}):
		return fmt.Errorf("options: interface %q and interfaces %q both set and differ", o.Interface, o.Interfaces)
	default:
		o.Interfaces = slices.Clone(o.Interfaces)
	}
	seen := map[string]bool{}
	for _, name := range o.Interfaces {
		if name == "" || strings.ContainsAny(name, "/ \t\n") {
			return fmt.Errorf("options: invalid interface name %q", name)
		}
		if seen[name] {
			return fmt.Errorf("options: interface %q listed twice", name)
		}
		seen[name] = true
	}
	switch o.Attach {
	case "":
		o.Attach = PathTCX
	case PathTCX, PathTC:
	default:
		return fmt.Errorf("options: attach %q: want tcx or tc", o.Attach)
	}
	if o.Mode != ModeQueue && o.Mode != ModePolice {
		return fmt.Errorf("options: unknown mode %d", int(o.Mode))
	}
	if o.QueueDelay < 0 || o.QueueDelay > time.Second {
		return fmt.Errorf("options: queue delay %v outside 0-1s", o.QueueDelay)
	}
	if o.QueueDelay == 0 {
		o.QueueDelay = DefaultQueueDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
