package shaping

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/opencen/opencen/internal/nsdo"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// progName is the kernel name of the shaping program (ocsh_shape in
// bpf/shaper.c): how a program attached at a device's egress is known to
// be ours, whoever attached it.
const progName = "ocsh_shape"

// kernel is the kernel state of one network namespace that the shaper
// works on: netlink for links, qdiscs and filters; the namespace itself
// for the BPF calls that name a device by ifindex (TCX attach, detach,
// query), which act in the namespace of the calling thread.
type kernel struct {
	nl  *netlink.Handle
	ns  netns.NsHandle
	log *slog.Logger
}

// openKernel opens the calling thread's network namespace.
func openKernel(log *slog.Logger) (*kernel, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current netns: %w", err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &kernel{nl: nl, ns: ns, log: log}, nil
}

func (k *kernel) close() {
	k.nl.Close()
	k.ns.Close()
}

// in runs fn on a thread inside the kernel's namespace.
func (k *kernel) in(fn func() error) error { return nsdo.In(k.ns, fn) }

// attachment is a program of ours found at the egress of a device.
type attachment struct {
	ifindex int
	hook    Path          // PathTCX or PathTC
	prog    *ebpf.Program // a descriptor of the attached program
	// linkID is set for a TCX attachment made through a link (as agents
	// that pin their links make them); plain attachments have none.
	linkID link.ID
	filter *netlink.BpfFilter // PathTC: the filter that runs it
}

func (a *attachment) String() string {
	if a.hook == PathTCX && a.linkID != 0 {
		return fmt.Sprintf("tcx link %d on ifindex %d", a.linkID, a.ifindex)
	}
	return fmt.Sprintf("%s on ifindex %d", a.hook, a.ifindex)
}

func closeAll(as []*attachment) {
	for _, a := range as {
		a.prog.Close()
	}
}

// scan finds every program of ours attached at the egress of any device
// of the namespace, at TCX and at tc: the kernel, not a pin, says what is
// attached, so a bpffs that died with an agent's mount namespace loses
// nothing.
func (k *kernel) scan() ([]*attachment, error) {
	links, err := listRetry(k.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []*attachment
	for _, lk := range links {
		found, err := k.attachedTo(lk)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// attachedTo finds the programs of ours at the egress of one device.
func (k *kernel) attachedTo(lk netlink.Link) ([]*attachment, error) {
	idx := lk.Attrs().Index
	var out []*attachment
	var res *link.QueryResult
	err := k.in(func() (err error) {
		res, err = link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXEgress})
		return err
	})
	switch {
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL):
		// No TCX on this kernel: nothing can be attached there.
	case errors.Is(err, unix.ENODEV):
		return nil, nil // the device went away meanwhile
	case err != nil:
		return nil, fmt.Errorf("query tcx egress of %s: %w", lk.Attrs().Name, err)
	default:
		for _, p := range res.Programs {
			if prog := ours(p.ID); prog != nil {
				id, _ := p.LinkID()
				out = append(out, &attachment{ifindex: idx, hook: PathTCX, prog: prog, linkID: id})
			}
		}
	}
	filters, err := listRetry(func() ([]netlink.Filter, error) { return k.nl.FilterList(lk, netlink.HANDLE_MIN_EGRESS) })
	if err != nil {
		// No clsact qdisc: no tc egress filters either.
		return out, nil
	}
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || bf.Id == 0 {
			continue
		}
		if prog := ours(ebpf.ProgramID(bf.Id)); prog != nil {
			out = append(out, &attachment{ifindex: idx, hook: PathTC, prog: prog, filter: bf})
		}
	}
	return out, nil
}

// ours opens program id when it is the shaping program, else returns nil.
func ours(id ebpf.ProgramID) *ebpf.Program {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil
	}
	if info, err := p.Info(); err == nil && info.Name == progName {
		return p
	}
	p.Close()
	return nil
}

// attachNew attaches prog at the egress of ifindex at hook.
func (k *kernel) attachNew(hook Path, ifindex int, prog *ebpf.Program) error {
	if hook == PathTC {
		if err := k.ensureClsact(ifindex); err != nil {
			return err
		}
		return k.setFilter(ifindex, prog, nil)
	}
	err := k.in(func() error {
		// A plain attachment, not a link: it stays until detached or the
		// device goes, whatever becomes of this process and its mounts.
		return link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: ebpf.AttachTCXEgress})
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: attach at tcx: %w", ErrUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("attach at tcx egress: %w", err)
	}
	return nil
}

// replace swaps the program of attachment a for prog in one step: the
// device is never without the shaper, nor with two.
func (k *kernel) replace(a *attachment, prog *ebpf.Program) error {
	if a.hook == PathTC {
		return k.setFilter(a.ifindex, prog, a.filter)
	}
	err := k.in(func() error {
		return link.RawAttachProgram(link.RawAttachProgramOptions{
			Target: a.ifindex, Program: prog, Attach: ebpf.AttachTCXEgress, Anchor: link.ReplaceProgram(a.prog),
		})
	})
	if err != nil {
		return fmt.Errorf("replace the program at tcx egress: %w", err)
	}
	return nil
}

// detach removes attachment a; one already gone is success.
func (k *kernel) detach(a *attachment) error {
	switch {
	case a.hook == PathTC:
		if err := k.nl.FilterDel(a.filter); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete tc filter: %w", err)
		}
		return k.dropIdleClsact(a.ifindex)
	case a.linkID != 0:
		l, err := link.NewFromID(a.linkID)
		if err != nil {
			return nil // released meanwhile
		}
		defer l.Close()
		if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
			return fmt.Errorf("detach tcx link %d: %w", a.linkID, err)
		}
		return nil
	}
	err := k.in(func() error {
		return link.RawDetachProgram(link.RawDetachProgramOptions{Target: a.ifindex, Program: a.prog, Attach: ebpf.AttachTCXEgress})
	})
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("detach from tcx egress: %w", err)
	}
	return nil
}

// removeAll detaches every program of ours in the namespace and removes
// the HTB qdisc of ours from every device: what a shaper leaves, in any
// mode, whether or not its agent got to start one.
func (k *kernel) removeAll() error {
	found, err := k.scan()
	if err != nil {
		return err
	}
	defer closeAll(found)
	var errs []error
	for _, a := range found {
		if err := k.detach(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
	}
	links, err := listRetry(k.nl.LinkList)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	for _, lk := range links {
		if err := k.deleteQdisc(lk.Attrs().Index); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", lk.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// Remove takes away every trace of a kernel shaper in the calling thread's
// network namespace: each program of ours at TCX or tc egress on any
// device, the HTB qdiscs of ours, clsact qdiscs it leaves empty, and the
// pins under pinPath (empty: none). It is for a gateway that shapes in
// userspace, or that cleans up without having started a Shaper; what is
// already gone is success.
func Remove(pinPath string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k, err := openKernel(log)
	if err != nil {
		return err
	}
	defer k.close()
	return errors.Join(k.removeAll(), removePins(pinPath, log))
}

// listRetry retries a netlink dump that a concurrent change interrupted.
func listRetry[T any](list func() ([]T, error)) ([]T, error) {
	for range 5 {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return list()
}
