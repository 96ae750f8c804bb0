package shaping

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Pin names under Options.PinPath. Maps are pinned by their own names
// (ocsh_cfg, ocsh_state, ...) and shared by every device; each device has
// its program and its TCX link, named after it.
const (
	pinProgPrefix = "ocsh_shape_prog_" // + device name
	pinLinkPrefix = "ocsh_shape_link_" // + device name
	// The names of the single-device shaper before Options.Interfaces.
	// New adopts a link pinned so (for the device it is attached to, if
	// that device is still listed) and moves it to the per-device name.
	legacyPinProg = "ocsh_shape_prog"
	legacyPinLink = "ocsh_shape_link"
)

func progPin(dir, dev string) string { return filepath.Join(dir, pinProgPrefix+dev) }
func linkPin(dir, dev string) string { return filepath.Join(dir, pinLinkPrefix+dev) }

// egress is one shaped device: its program and its TCX link.
type egress struct {
	name    string
	index   int
	l2      int // link-layer header length in front of IP: 14 or 0
	mtu     int
	prog    *ebpf.Program // built with this l2; objs.OcshShape for the first device
	ownProg bool          // prog is not one of objs' (close it apart)
	link    link.Link
}

func (s *Shaper) findDevice(name string) (*egress, error) {
	lk, err := s.nl.LinkByName(name)
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

// pinProgs pins each device's program (for inspection: the links hold
// the programs) and removes the program pins of devices no longer listed.
func (s *Shaper) pinProgs() error {
	want := map[string]bool{}
	for _, d := range s.devs {
		path := progPin(s.opts.PinPath, d.name)
		want[filepath.Base(path)] = true
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace pinned program of %q: %w", d.name, err)
		}
		if err := d.prog.Pin(path); err != nil {
			return fmt.Errorf("pin program of %q: %w", d.name, err)
		}
	}
	ents, err := os.ReadDir(s.opts.PinPath)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if want[n] || (n != legacyPinProg && !strings.HasPrefix(n, pinProgPrefix)) {
			continue
		}
		if err := os.Remove(filepath.Join(s.opts.PinPath, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old program pin %s: %w", n, err)
		}
	}
	return nil
}

// pinnedLink is a TCX link found under PinPath.
type pinnedLink struct {
	name    string // file name
	link    link.Link
	ifindex int // the device it is attached to at egress; 0 if none (stale)
}

// pinnedLinks loads every link pinned under our names.
func (s *Shaper) pinnedLinks() ([]*pinnedLink, error) {
	ents, err := os.ReadDir(s.opts.PinPath)
	if err != nil {
		return nil, fmt.Errorf("read pin directory: %w", err)
	}
	var out []*pinnedLink
	for _, e := range ents {
		n := e.Name()
		if n != legacyPinLink && !strings.HasPrefix(n, pinLinkPrefix) {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(s.opts.PinPath, n), nil)
		if err != nil {
			for _, p := range out {
				p.link.Close()
			}
			return nil, fmt.Errorf("load pinned link %s: %w", n, err)
		}
		p := &pinnedLink{name: n, link: l}
		// A link whose device is gone reports ifindex 0.
		if info, err := l.Info(); err == nil && info.Type == link.TCXType {
			if tcx := info.TCX(); tcx != nil && ebpf.AttachType(tcx.AttachType) == ebpf.AttachTCXEgress {
				p.ifindex = int(tcx.Ifindex)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// attach gives every device exactly one TCX egress link running its
// program, pinned as ocsh_shape_link_<device>:
//
//   - a pinned link attached to the device is adopted and updated in place
//     (never a second attachment, no moment without one), whatever its
//     name: the per-device name first, then the legacy single-device
//     ocsh_shape_link, then any other (a renamed device); it is moved to
//     the device's name;
//   - a device without one gets a new link;
//   - then (add before delete) every other pinned link is unpinned and
//     closed, which detaches it: links of devices no longer listed (their
//     htb qdisc, if ours, goes too), stale links of deleted devices,
//     duplicates.
func (s *Shaper) attach() error {
	pinned, err := s.pinnedLinks()
	if err != nil {
		return err
	}
	used := map[*pinnedLink]bool{}
	defer func() {
		// Descriptors of links not adopted: their pins are gone by now
		// unless this failed, and then they stay as they were.
		for _, p := range pinned {
			if !used[p] {
				p.link.Close()
			}
		}
	}()
	listed := map[int]bool{}
	for _, d := range s.devs {
		listed[d.index] = true
		var best *pinnedLink
		rank := func(p *pinnedLink) int {
			switch p.name {
			case pinLinkPrefix + d.name:
				return 0
			case legacyPinLink:
				return 1
			}
			return 2
		}
		for _, p := range pinned {
			if p.ifindex == d.index && (best == nil || rank(p) < rank(best)) {
				best = p
			}
		}
		if best != nil {
			if err := best.link.Update(d.prog); err != nil {
				return fmt.Errorf("update adopted link of %q: %w", d.name, err)
			}
			used[best] = true
			d.link = best.link
			s.log.Info("adopted pinned shaper link", "interface", d.name, "pin", best.name)
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: d.index,
			Program:   d.prog,
			Attach:    ebpf.AttachTCXEgress,
		})
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("%w: attach tcx: %w", ErrUnsupported, err)
			}
			return fmt.Errorf("attach tcx egress of %q: %w", d.name, err)
		}
		d.link = l
		s.log.Info("attached shaper at tcx egress", "interface", d.name)
	}
	var errs []error
	for _, p := range pinned {
		if used[p] {
			continue
		}
		switch {
		case p.ifindex == 0:
			s.log.Warn("removing stale pinned shaper link: its device is gone", "pin", p.name)
		case listed[p.ifindex]:
			s.log.Warn("detaching a duplicate shaper link", "pin", p.name, "ifindex", p.ifindex)
		default:
			s.log.Info("detaching the shaper from a device no longer listed", "pin", p.name, "ifindex", p.ifindex)
			if err := s.deleteQdisc(p.ifindex); err != nil {
				errs = append(errs, fmt.Errorf("device %d no longer shaped: %w", p.ifindex, err))
			}
		}
		if err := p.link.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link %s: %w", p.name, err))
		}
	}
	for _, d := range s.devs {
		// A new link is pinned, an adopted one renamed in place (atomic:
		// it never stops being pinned).
		if err := d.link.Pin(linkPin(s.opts.PinPath, d.name)); err != nil {
			errs = append(errs, fmt.Errorf("pin link of %q: %w", d.name, err))
		}
	}
	return errors.Join(errs...)
}
