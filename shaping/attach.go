package shaping

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// egress is one shaped device and the program built for it.
type egress struct {
	name    string
	index   int
	l2      int // link-layer header length in front of IP: 14 or 0
	mtu     int
	prog    *ebpf.Program // built with this l2; objs.OcshShape for the first device
	ownProg bool          // prog is not one of objs' (close it apart)
}

// findDevice looks device name up: its index, MTU and link-layer header.
func (k *kernel) findDevice(name string) (*egress, error) {
	lk, err := k.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find interface %q: %w", name, err)
	}
	d := &egress{name: name, index: lk.Attrs().Index, mtu: lk.Attrs().MTU}
	switch lk.Attrs().EncapType {
	case "ether":
		d.l2 = 14
	case "none":
		d.l2 = 0
	default:
		return nil, fmt.Errorf("interface %q: unsupported link type %q (want an L3 tunnel or ethernet)", name, lk.Attrs().EncapType)
	}
	return d, nil
}

// attach gives every listed device exactly one attachment of its program
// at opts.Attach:
//
//   - a device whose program of ours sits at that hook already has it
//     replaced in one step (never two, never none);
//   - a device without one is first cleared of ours at the other hook,
//     then attached: a mode change leaves a moment without the shaper,
//     never one with two;
//   - then every other program of ours in the namespace is detached:
//     duplicates, the other hook of a replaced device, devices not listed
//     (with their HTB qdisc).
func (s *Shaper) attach(found []*attachment) error {
	done := map[*attachment]bool{}
	for _, d := range s.devs {
		if err := s.attachDevice(d, found, done); err != nil {
			return fmt.Errorf("%q: %w", d.name, err)
		}
	}
	var errs []error
	for _, a := range found {
		if done[a] {
			continue
		}
		listed := false
		for _, d := range s.devs {
			listed = listed || d.index == a.ifindex
		}
		s.log.Warn("detaching a shaper program not wanted here", "attachment", a.String(), "listed_device", listed)
		if err := s.detach(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
		if !listed {
			if err := s.deleteQdisc(a.ifindex); err != nil {
				errs = append(errs, fmt.Errorf("ifindex %d, not listed: %w", a.ifindex, err))
			}
		}
	}
	return errors.Join(errs...)
}

// attachDevice gives device d its program at opts.Attach, replacing the
// first plain attachment of ours found there, else detaching ours at the
// other hook first. The attachments it replaced or detached go into done.
func (s *Shaper) attachDevice(d *egress, found []*attachment, done map[*attachment]bool) error {
	for _, a := range found {
		if a.ifindex == d.index && a.hook == s.opts.Attach && a.linkID == 0 {
			if err := s.replace(a, d.prog); err != nil {
				return err
			}
			done[a] = true
			s.log.Info("replaced the running shaper program", "interface", d.name)
			return nil
		}
	}
	for _, a := range found {
		if a.ifindex != d.index {
			continue
		}
		if err := s.detach(a); err != nil {
			return err
		}
		done[a] = true
		s.log.Info("detached the shaper from the hook it moves from", "interface", d.name, "from", a.String())
	}
	if err := s.attachNew(s.opts.Attach, d.index, d.prog); err != nil {
		return err
	}
	s.log.Info("attached the shaper", "interface", d.name)
	return nil
}
