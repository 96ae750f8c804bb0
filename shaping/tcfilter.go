package shaping

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PathTC: the program runs as a direct-action cls_bpf filter on the egress
// of a clsact qdisc, where kernels without TCX (older than 6.6) run tc
// programs. It runs at the same point of the transmit path as TCX, ahead
// of the root qdisc, so its skb->priority picks the HTB class the same way.
// The filter of ours has this priority, handle and name.
const (
	tcPriority = 0xce0
	tcHandle   = 0xce0
	tcName     = "opencen-shaper"
)

// clsact is the clsact qdisc of device ifindex.
func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

// ensureClsact gives the device a clsact qdisc unless it has one (one
// per device, shared with anyone else's tc programs).
func (k *kernel) ensureClsact(ifindex int) error {
	if err := k.nl.QdiscAdd(clsact(ifindex)); err != nil && !errors.Is(err, unix.EEXIST) {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%w: add clsact qdisc: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return nil
}

// setFilter runs prog at the egress of ifindex: in the filter old (its
// program replaced in one step), or in a filter of ours made or replaced.
func (k *kernel) setFilter(ifindex int, prog *ebpf.Program, old *netlink.BpfFilter) error {
	attrs := netlink.FilterAttrs{
		LinkIndex: ifindex,
		Parent:    netlink.HANDLE_MIN_EGRESS,
		Handle:    tcHandle,
		Priority:  tcPriority,
		Protocol:  unix.ETH_P_ALL,
	}
	if old != nil {
		attrs = old.FilterAttrs
	}
	f := &netlink.BpfFilter{FilterAttrs: attrs, Fd: prog.FD(), Name: tcName, DirectAction: true}
	if err := k.nl.FilterReplace(f); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%w: add cls_bpf filter: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("set tc egress filter: %w", err)
	}
	return nil
}

// dropIdleClsact deletes the device's clsact qdisc when no filter is left
// on either of its hooks: the shaper made it, and an empty clsact does
// nothing. One that still holds someone's filter stays.
func (k *kernel) dropIdleClsact(ifindex int) error {
	lk := linkAt(ifindex)
	for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		fs, err := listRetry(func() ([]netlink.Filter, error) { return k.nl.FilterList(lk, parent) })
		if err != nil {
			return nil // no clsact (or no device): nothing to drop
		}
		if len(fs) > 0 {
			return nil
		}
	}
	if err := k.nl.QdiscDel(clsact(ifindex)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}
