package shaping

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

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

// sharedMapNames are the maps a running shaper's state lives in.
var sharedMapNames = []string{bpfMapOcshPrefix4, bpfMapOcshPrefix6, bpfMapOcshCfg, bpfMapOcshState, bpfMapOcshStats}

// adoptMaps opens the maps of a running shaper: those of the program
// attached to the first listed device that has one (the hook asked for
// first), else of any device. It returns nil when no attached program has
// them all.
func (s *Shaper) adoptMaps(found []*attachment) (map[string]*ebpf.Map, *attachment) {
	rank := func(a *attachment) int {
		for i, d := range s.devs {
			if d.index == a.ifindex {
				if a.hook == s.opts.Attach {
					return 2 * i
				}
				return 2*i + 1
			}
		}
		return 2 * len(s.devs)
	}
	var best *attachment
	for _, a := range found {
		if best == nil || rank(a) < rank(best) {
			best = a
		}
	}
	for _, a := range append([]*attachment{best}, found...) {
		if a == nil {
			continue
		}
		if maps := programMaps(a.prog); maps != nil {
			return maps, a
		}
	}
	return nil, nil
}

// programMaps opens the shared maps prog uses, by name; nil unless it
// uses them all.
func programMaps(prog *ebpf.Program) map[string]*ebpf.Map {
	info, err := prog.Info()
	if err != nil {
		return nil
	}
	ids, ok := info.MapIDs()
	if !ok {
		return nil
	}
	out := map[string]*ebpf.Map{}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err != nil || out[mi.Name] != nil {
			m.Close()
			continue
		}
		out[mi.Name] = m
	}
	for name, m := range out {
		if !slices.Contains(sharedMapNames, name) {
			m.Close()
			delete(out, name)
		}
	}
	if len(out) != len(sharedMapNames) {
		for _, m := range out {
			m.Close()
		}
		return nil
	}
	return out
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
//     duplicates, the other hook of a replaced device, devices no longer
//     listed (with their HTB qdisc).
func (s *Shaper) attach(found []*attachment) error {
	done := map[*attachment]bool{}
	for _, d := range s.devs {
		var same *attachment
		for _, a := range found {
			if a.ifindex == d.index && a.hook == s.opts.Attach && a.linkID == 0 && same == nil {
				same = a
			}
		}
		if same != nil {
			if err := s.replace(same, d.prog); err != nil {
				return fmt.Errorf("%q: %w", d.name, err)
			}
			done[same] = true
			s.log.Info("replaced the running shaper program", "interface", d.name)
			continue
		}
		for _, a := range found {
			if a.ifindex != d.index {
				continue
			}
			if err := s.detach(a); err != nil {
				return fmt.Errorf("%q: %w", d.name, err)
			}
			done[a] = true
			s.log.Info("detached the shaper from the hook it moves from", "interface", d.name, "from", a.String())
		}
		if err := s.attachNew(s.opts.Attach, d.index, d.prog); err != nil {
			return fmt.Errorf("%q: %w", d.name, err)
		}
		s.log.Info("attached the shaper", "interface", d.name)
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
				errs = append(errs, fmt.Errorf("ifindex %d no longer shaped: %w", a.ifindex, err))
			}
		}
	}
	return errors.Join(errs...)
}

// progPin is where the program of device dev is pinned.
func progPin(dir, dev string) string { return filepath.Join(dir, "ocsh_shape_prog_"+dev) }

// pin pins the maps and every device's program under opts.PinPath, in
// place of whatever was pinned there, for inspection: nothing reads them
// back. Other files in the folder (pins of devices not listed, of other
// layouts) are removed.
func (s *Shaper) pin() error {
	dir := s.opts.PinPath
	if dir == "" {
		return nil
	}
	mounted, err := EnsureBPFFS(dir)
	if err != nil {
		return err
	}
	if mounted {
		s.log.Info("mounted a bpffs for the shaper's pins", "path", dir)
	}
	want := map[string]bool{}
	pinOne := func(path string, pin func(string) error) error {
		want[filepath.Base(path)] = true
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace pin %s: %w", path, err)
		}
		if err := pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", path, err)
		}
		return nil
	}
	for name, m := range s.sharedMaps() {
		if name == ".bss" {
			continue
		}
		if err := pinOne(filepath.Join(dir, name), m.Pin); err != nil {
			return err
		}
	}
	for _, d := range s.devs {
		if err := pinOne(progPin(dir, d.name), d.prog.Pin); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	for _, e := range ents {
		if !want[e.Name()] && !bpffsPreloaded[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove old pin %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// removePins removes the pin folder dir with what it holds, and the bpffs
// mounted on it for them, if any. Unpinning detaches nothing: the programs
// are attached without links.
func removePins(dir string, log *slog.Logger) error {
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if bpffsPreloaded[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin %s: %w", e.Name(), err))
		}
	}
	if err := ReleaseBPFFS(dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		// A folder that still holds others' files stays.
		log.Debug("pin directory kept", "path", dir, "err", err)
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
