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

// directQlen bounds the direct queue that carries unshaped traffic
// (HTB's default class 0 sends it straight to the device).
const directQlen = 1000

// setClasses makes the device's root qdisc our HTB and gives every shaped
// region a class of its rate with two leaves (small packets at priority 0,
// bulk at 1, each allowed the whole rate), so the debt a bucket runs into
// in ModeQueue waits in a queue drained at the bucket's rate, and a ping
// does not wait behind it.
func (s *Shaper) setClasses(cfgs map[uint32]bpfBucketCfg) error {
	want := map[uint32]*netlink.HtbClass{}
	for id, c := range cfgs {
		if c.Rate == 0 || c.Classid == 0 {
			continue
		}
		for _, cl := range s.htbClasses(id, c) {
			want[cl.Handle] = cl
		}
	}
	var errs []error
	if len(want) > 0 {
		if err := s.ensureQdisc(); err != nil {
			return err
		}
	}
	have := map[uint32]*netlink.HtbClass{}
	lk := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: s.ifindex}}
	classes, err := s.nl.ClassList(lk, 0)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("list htb classes: %w", err)
	}
	for _, c := range classes {
		// Ours are the ones numbered under our qdisc's major.
		if h, ok := c.(*netlink.HtbClass); ok && h.Handle>>16 == htbMajor {
			have[h.Handle] = h
		}
	}
	// Parents (minor < 0x1000) before their leaves.
	for _, h := range sortedHandles(want, false) {
		c := want[h]
		if old, ok := have[h]; ok {
			if old.Rate == c.Rate && old.Ceil == c.Ceil && old.Buffer == c.Buffer && old.Cbuffer == c.Cbuffer && old.Prio == c.Prio {
				continue
			}
			if err := s.nl.ClassChange(c); err != nil {
				errs = append(errs, fmt.Errorf("change htb class %x: %w", h, err))
				continue
			}
			if c.Rate < old.Rate && h&0xffff >= 0x1000 {
				// A leaf keeps what it queued at the old rate and would
				// drain it at the new one: from 20 Mbps to 1 Kbps, 100 ms of
				// backlog takes half an hour. Drop that backlog instead.
				if err := s.flushLeaf(h); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if err := s.nl.ClassAdd(c); err != nil {
			errs = append(errs, fmt.Errorf("add htb class %x: %w", h, err))
		}
	}
	// Leaves before their parents.
	for _, h := range sortedHandles(have, true) {
		if _, ok := want[h]; ok {
			continue
		}
		if err := s.nl.ClassDel(have[h]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete htb class %x: %w", h, err))
		}
	}
	if len(want) == 0 {
		if err := s.deleteQdisc(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// flushLeaf drops the packets queued in a leaf class by replacing its
// queue with a fresh FIFO (handle: the leaf's minor as major, unique on the
// device and never our root's).
func (s *Shaper) flushLeaf(leaf uint32) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: s.ifindex, Parent: leaf, Handle: netlink.MakeHandle(uint16(leaf&0xffff), 0)},
		QdiscType:  "pfifo",
	}
	if err := s.nl.QdiscReplace(q); err != nil {
		return fmt.Errorf("flush htb leaf %x after a rate decrease: %w", leaf, err)
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

// htbClasses are the classes of one bucket. On an Ethernet device HTB
// charges the 14-byte header the bucket does not, so the rate is raised by
// (mtu+14)/mtu: a full-size packet then drains at exactly the bucket's
// rate, and the bucket, not HTB, stays the authority on the rate.
func (s *Shaper) htbClasses(id uint32, c bpfBucketCfg) []*netlink.HtbClass {
	rate := c.Rate
	if s.l2 > 0 {
		rate = rate * uint64(s.mtu+s.l2) / uint64(s.mtu)
	}
	burst := min(c.Burst/unitsPerByte, 1<<31)
	quantum := min(max(rate/8/10, uint64(s.mtu+s.l2)), 200000)
	class := func(handle, parent uint32, r uint64, prio uint32) *netlink.HtbClass {
		return netlink.NewHtbClass(netlink.ClassAttrs{
			LinkIndex: s.ifindex,
			Parent:    parent,
			Handle:    handle,
		}, netlink.HtbClassAttrs{
			Rate:    max(r, 8),
			Ceil:    rate,
			Buffer:  uint32(burst),
			Cbuffer: uint32(burst),
			Quantum: uint32(quantum),
			Prio:    prio,
		})
	}
	// The leaves' guaranteed rates split the region's (1/10 small, 9/10
	// bulk); each may borrow up to all of it.
	return []*netlink.HtbClass{
		class(classID(id), netlink.MakeHandle(htbMajor, 0), rate, 0),
		class(smallClassID(id), classID(id), rate/10, 0),
		class(bulkClassID(id), classID(id), rate-rate/10, 1),
	}
}

func (s *Shaper) rootQdisc() (netlink.Qdisc, error) {
	lk := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: s.ifindex}}
	qs, err := s.nl.QdiscList(lk)
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

func (s *Shaper) ensureQdisc() error {
	q, err := s.rootQdisc()
	if err != nil {
		return err
	}
	if h, ok := q.(*netlink.Htb); ok && h.Handle == netlink.MakeHandle(htbMajor, 0) {
		return nil
	}
	if q != nil && q.Type() != "noqueue" {
		s.log.Warn("replacing the root qdisc of the tunnel device with the shaper's htb", "was", q.Type())
	}
	qlen := uint32(directQlen)
	htb := netlink.NewHtb(netlink.QdiscAttrs{
		LinkIndex: s.ifindex,
		Parent:    netlink.HANDLE_ROOT,
		Handle:    netlink.MakeHandle(htbMajor, 0),
	})
	htb.DirectQlen = &qlen
	if err := s.nl.QdiscReplace(htb); err != nil {
		return fmt.Errorf("install htb root qdisc: %w", err)
	}
	return nil
}

// deleteQdisc removes the root qdisc if it is ours.
func (s *Shaper) deleteQdisc() error {
	q, err := s.rootQdisc()
	if err != nil || q == nil {
		return err
	}
	if q.Attrs().Handle != netlink.MakeHandle(htbMajor, 0) {
		return nil
	}
	if err := s.nl.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete htb root qdisc: %w", err)
	}
	return nil
}
