package shaping

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// progPin is where the program of device dev is pinned.
func progPin(dir, dev string) string { return filepath.Join(dir, "ocsh_shape_prog_"+dev) }

// pin pins the maps and every device's program under opts.PinPath, in
// place of whatever is pinned there, for inspection: nothing reads them
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
				return fmt.Errorf("remove stale pin %s: %w", e.Name(), err)
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
