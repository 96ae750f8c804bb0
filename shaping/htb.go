package shaping

import (
	"errors"
	"fmt"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// htbMajor is the handle of the root HTB qdisc this package installs
// (0xce0:); classes are 0xce0:<bucket index>. The handle marks the qdisc
// as ours: cleanup deletes a root qdisc only when it carries it.
const htbMajor = 0xce0

// The HTB classes of a bucket index: the region's class (its rate) and
// its two leaves, small packets (served first) and bulk.
func classID(id uint32) uint32      { return netlink.MakeHandle(htbMajor, uint16(id)) }
func smallClassID(id uint32) uint32 { return netlink.MakeHandle(htbMajor, uint16(0x1000|id)) }
func bulkClassID(id uint32) uint32  { return netlink.MakeHandle(htbMajor, uint16(0x2000|id)) }

// directQlen bounds the direct queue that carries unshaped traffic
// (HTB's default class 0 sends it straight to the device).
const directQlen = 1000

// setClasses makes the root qdisc of every device our HTB and gives every
// shaped region a class of its rate with two leaves (small packets at
// priority 0, bulk at 1, each allowed the whole rate, the bulk leaf up to
// the device's share when there are several devices), so the debt a
// bucket runs into in ModeQueue waits in a queue drained at the bucket's
// rate, and a ping does not wait behind it. Every device gets the full
// rate: the bucket, shared by the devices, bounds what all of them are
// handed together (see the package doc). It goes on past a device that
// fails.
func (s *Shaper) setClasses(cfgs map[uint32]bpfBucketCfg) error {
	var errs []error
	for i, d := range s.devs {
		if err := s.setDeviceClasses(i, d, cfgs); err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", d.name, err))
		}
	}
	return errors.Join(errs...)
}

// setDeviceClasses gives device i the classes of cfgs and nothing else of
// ours: its HTB root when any region is shaped, none when none is.
func (s *Shaper) setDeviceClasses(i int, d *egress, cfgs map[uint32]bpfBucketCfg) error {
	want := map[uint32]*netlink.HtbClass{}
	for id, c := range cfgs {
		if c.Rate == 0 || c.Classid == 0 {
			continue
		}
		for _, cl := range d.htbClasses(id, c, s.share(id, i)) {
			want[cl.Handle] = cl
		}
	}
	var errs []error
	if len(want) > 0 {
		if err := s.ensureQdisc(d); err != nil {
			return err
		}
	}
	raised, err := s.ensureQueueLen(d, cfgs)
	if err != nil {
		errs = append(errs, err)
	}
	classes, err := s.ourClasses(d.index)
	if err != nil {
		return err
	}
	have := map[uint32]*netlink.HtbClass{}
	for _, c := range classes {
		if h, ok := c.(*netlink.HtbClass); ok {
			have[h.Handle] = h
		}
	}
	errs = append(errs, s.updateClasses(d, want, have, raised)...)
	// Leaves first, then their parents.
	for _, h := range sortedHandles(have, true) {
		if _, ok := want[h]; ok {
			continue
		}
		if err := s.nl.ClassDel(have[h]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete htb class %x: %w", h, err))
		}
	}
	if len(want) == 0 {
		if err := s.deleteQdisc(d.index); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// updateClasses adds the classes of want that d lacks and changes those
// that differ from have, parents (minor < 0x1000) first, then their
// leaves. With raised (the device's queue length went up) every leaf gets
// a fresh FIFO.
func (s *Shaper) updateClasses(d *egress, want, have map[uint32]*netlink.HtbClass, raised bool) []error {
	var errs []error
	down := map[uint32]bool{} // regions whose rate goes down, by bucket index
	for _, h := range sortedHandles(want, false) {
		c, old := want[h], have[h]
		var err error
		switch {
		case old == nil:
			if err = s.nl.ClassAdd(c); err != nil {
				err = fmt.Errorf("add htb class %x: %w", h, err)
			}
		case sameClass(old, c):
			if raised && h&0xffff >= 0x1000 {
				// An unchanged leaf keeps the FIFO limit of its
				// creation: a fresh FIFO takes the device's new queue
				// length.
				err = s.flushLeaf(d, h)
			}
		default:
			err = s.changeClass(d, old, c, raised, down)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// sameClass reports whether a class has what c asks for.
func sameClass(old, c *netlink.HtbClass) bool {
	return old.Rate == c.Rate && old.Ceil == c.Ceil && old.Buffer == c.Buffer && old.Cbuffer == c.Cbuffer && old.Prio == c.Prio
}

// changeClass changes old into c. A region's class whose rate goes down is
// recorded in down, so that its leaves (which come after it) drop their
// backlog.
func (s *Shaper) changeClass(d *egress, old, c *netlink.HtbClass, raised bool, down map[uint32]bool) error {
	h := c.Handle
	if err := s.nl.ClassChange(c); err != nil {
		return fmt.Errorf("change htb class %x: %w", h, err)
	}
	minor := h & 0xffff
	if minor < 0x1000 && c.Rate < old.Rate {
		down[minor] = true
	}
	if minor >= 0x1000 && (down[minor&0xfff] || raised) {
		// A leaf keeps what it queued at the old rate and would
		// drain it at the new one: from 20 Mbps to 1 Kbps, 100 ms of
		// backlog takes half an hour. Drop that backlog instead.
		// (Not when only the balancer's share moved: that backlog
		// is the region's debt, still due at the region's rate.)
		// A raised queue length also needs a fresh FIFO.
		return s.flushLeaf(d, h)
	}
	return nil
}

// ourClasses lists the classes of ours on device ifindex: those numbered
// under our qdisc's major. A device without classes has none.
func (k *kernel) ourClasses(ifindex int) ([]netlink.Class, error) {
	classes, err := k.nl.ClassList(linkAt(ifindex), 0)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("list htb classes: %w", err)
	}
	var out []netlink.Class
	for _, c := range classes {
		if c.Attrs().Handle>>16 == htbMajor {
			out = append(out, c)
		}
	}
	return out, nil
}

// linkAt names device ifindex to the netlink calls that need only its
// index.
func linkAt(ifindex int) netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
}

// maxQueueLen bounds the device queue length the shaper asks for.
const maxQueueLen = 100_000

// ensureQueueLen raises the device's transmit queue length so that an HTB
// leaf's FIFO (created with the device's queue length as its limit) holds
// what the program may admit ahead of the rate: burst plus queue bytes in
// packets of half the MTU. Otherwise the FIFO, not the program, drops
// first: a TUN's default of 500 packets is 11 ms at 500 Mbps, where the
// program allows 100 ms. It never lowers the length, and reports whether
// it raised it (existing leaves then need a fresh FIFO).
func (s *Shaper) ensureQueueLen(d *egress, cfgs map[uint32]bpfBucketCfg) (bool, error) {
	need := 0
	half := uint64(max(d.mtu/2, 1))
	for _, c := range cfgs {
		if c.Rate == 0 || c.Classid == 0 {
			continue
		}
		bytes := (c.Burst + c.Queue) / unitsPerByte
		need = max(need, int(min((bytes+half-1)/half, maxQueueLen)))
	}
	lk, err := s.nl.LinkByIndex(d.index)
	if err != nil {
		return false, fmt.Errorf("interface %q: %w", d.name, err)
	}
	if lk.Attrs().TxQLen >= need {
		return false, nil
	}
	if err := s.nl.LinkSetTxQLen(lk, need); err != nil {
		return false, fmt.Errorf("interface %q: set queue length %d: %w", d.name, need, err)
	}
	s.log.Info("raised the device queue length for the shaper's queues", "interface", d.name, "from", lk.Attrs().TxQLen, "to", need)
	return true, nil
}

// flushLeaf drops the packets queued in a leaf class by replacing its
// queue with a fresh FIFO (handle: the leaf's minor as major, unique on the
// device and never our root's).
func (s *Shaper) flushLeaf(d *egress, leaf uint32) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: d.index, Parent: leaf, Handle: netlink.MakeHandle(uint16(leaf&0xffff), 0)},
		QdiscType:  "pfifo",
	}
	if err := s.nl.QdiscReplace(q); err != nil {
		return fmt.Errorf("replace the queue of htb leaf %x: %w", leaf, err)
	}
	return nil
}

func sortedHandles(m map[uint32]*netlink.HtbClass, desc bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if desc {
			return out[i] > out[j]
		}
		return out[i] < out[j]
	})
	return out
}

// htbClasses are the classes of one bucket on device d. On an Ethernet
// device HTB charges the 14-byte header the bucket does not, so the rate
// is raised by (mtu+14)/mtu: a full-size packet then drains at exactly the
// bucket's rate, and the bucket, not HTB, stays the authority on the rate.
// On an L3 device (l2 0) the rate is the bucket's. share (0-1] is the
// part of the rate the bulk leaf may use on this device (1 with a single
// device; see balance.go).
func (d *egress) htbClasses(id uint32, c bpfBucketCfg, share float64) []*netlink.HtbClass {
	rate := c.Rate
	if d.l2 > 0 {
		rate = rate * uint64(d.mtu+d.l2) / uint64(d.mtu)
	}
	bulkCeil := rate
	if share < 1 {
		bulkCeil = max(uint64(float64(rate)*share), 8)
	}
	burst := min(c.Burst/unitsPerByte, 1<<31)
	quantum := min(max(rate/8/10, uint64(d.mtu+d.l2)), 200000)
	class := func(handle, parent uint32, r, ceil uint64, prio uint32) *netlink.HtbClass {
		return netlink.NewHtbClass(netlink.ClassAttrs{
			LinkIndex: d.index,
			Parent:    parent,
			Handle:    handle,
		}, netlink.HtbClassAttrs{
			Rate:    max(r, 8),
			Ceil:    ceil,
			Buffer:  uint32(burst),
			Cbuffer: uint32(burst),
			Quantum: uint32(quantum),
			Prio:    prio,
		})
	}
	// The leaves' guaranteed rates split the region's (1/10 small, 9/10
	// bulk); each may borrow up to all of it, the bulk leaf up to its
	// device's share.
	return []*netlink.HtbClass{
		class(classID(id), netlink.MakeHandle(htbMajor, 0), rate, rate, 0),
		class(smallClassID(id), classID(id), rate/10, rate, 0),
		class(bulkClassID(id), classID(id), min(rate-rate/10, bulkCeil), bulkCeil, 1),
	}
}

// rootQdisc is the root qdisc of device ifindex; nil when it has none.
func (k *kernel) rootQdisc(ifindex int) (netlink.Qdisc, error) {
	qs, err := k.nl.QdiscList(linkAt(ifindex))
	if err != nil {
		return nil, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q, nil
		}
	}
	return nil, nil
}

// ensureQdisc makes our HTB the root qdisc of d.
func (s *Shaper) ensureQdisc(d *egress) error {
	q, err := s.rootQdisc(d.index)
	if err != nil {
		return err
	}
	if h, ok := q.(*netlink.Htb); ok && h.Handle == netlink.MakeHandle(htbMajor, 0) {
		return nil
	}
	if q != nil && q.Type() != "noqueue" {
		s.log.Warn("replacing the root qdisc of the device with the shaper's htb", "interface", d.name, "qdisc", q.Type())
	}
	qlen := uint32(directQlen)
	htb := netlink.NewHtb(netlink.QdiscAttrs{
		LinkIndex: d.index,
		Parent:    netlink.HANDLE_ROOT,
		Handle:    netlink.MakeHandle(htbMajor, 0),
	})
	htb.DirectQlen = &qlen
	if err := s.nl.QdiscReplace(htb); err != nil {
		return fmt.Errorf("install htb root qdisc: %w", err)
	}
	return nil
}

// deleteQdisc removes the root qdisc of the device if it is ours (it
// carries our handle).
func (k *kernel) deleteQdisc(ifindex int) error {
	q, err := k.rootQdisc(ifindex)
	if err != nil || q == nil {
		return err
	}
	if q.Attrs().Handle != netlink.MakeHandle(htbMajor, 0) {
		return nil
	}
	if err := k.nl.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete htb root qdisc: %w", err)
	}
	return nil
}
