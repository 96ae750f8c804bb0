package shaping

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/opencen/opencen/internal/nsdo"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Support says which kernel hooks can run the shaper: nil where one can,
// else what the host lacks.
type Support struct {
	TCX error
	TC  error
}

// Probe loads the shaping program and attaches it at TCX and as a tc
// filter on the loopback device of a scratch network namespace, then lets
// the namespace go: it tells what a host can enforce without changing
// anything of the host's. It needs root.
func Probe() Support {
	var s Support
	err := nsdo.Scratch(func() error {
		spec, err := loadBpf()
		if err != nil {
			return fmt.Errorf("program spec: %w", err)
		}
		// Any tick length loads; the probe never runs the program.
		if err := spec.Variables["ns_per_jiffy"].Set(uint64(4_000_000)); err != nil {
			return err
		}
		var objs bpfObjects
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			return fmt.Errorf("load the shaping program: %w", err)
		}
		defer objs.Close()
		const lo = 1 // the loopback device is ifindex 1 in every namespace
		l, err := link.AttachTCX(link.TCXOptions{Interface: lo, Program: objs.OcshShape, Attach: ebpf.AttachTCXEgress})
		switch {
		case errors.Is(err, ebpf.ErrNotSupported):
			s.TCX = errors.New("no TCX (it needs Linux 6.6 or later)")
		case err != nil:
			s.TCX = fmt.Errorf("attach at tcx: %w", err)
		default:
			l.Close()
		}
		nl, err := netlink.NewHandle()
		if err != nil {
			s.TC = fmt.Errorf("netlink: %w", err)
			return nil
		}
		defer nl.Close()
		k := &kernel{nl: nl}
		if err := k.ensureClsact(lo); err != nil {
			s.TC = fmt.Errorf("no clsact qdisc (sch_ingress): %w", err)
			return nil
		}
		if err := k.setFilter(lo, objs.OcshShape, nil); err != nil {
			s.TC = fmt.Errorf("no direct-action cls_bpf filter (cls_bpf): %w", err)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (run as root)", err)
		}
		s.TCX, s.TC = err, err
	}
	return s
}
