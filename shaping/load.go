package shaping

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// shaperObjects are the objects of the first load. The .bss section
// (clock_override, the clock probe's samples) is shared by the programs of
// every device like the maps, so the test clock drives them all.
type shaperObjects struct {
	bpfObjects
	Bss *ebpf.Map `ebpf:".bss"`
}

func (o *shaperObjects) Close() {
	o.bpfObjects.Close()
	if o.Bss != nil {
		o.Bss.Close()
	}
}

// load loads the programs, one per device (each knows its device's
// link-layer header length), all on the same maps: the adopted ones when
// there are and they fit this binary's layout.
func (s *Shaper) load(adopted map[string]*ebpf.Map, from *attachment) error {
	spec, err := loadBpf()
	if err != nil {
		return fmt.Errorf("load program spec: %w", err)
	}
	if err := s.setClock(spec); err != nil {
		return err
	}
	for i, d := range s.devs {
		if err := spec.Variables["l2_len"].Set(uint32(d.l2)); err != nil {
			return fmt.Errorf("set l2_len: %w", err)
		}
		if i == 0 {
			err = s.loadFirst(spec, adopted, from)
			d.prog = s.objs.OcshShape
		} else {
			var o struct {
				Shape *ebpf.Program `ebpf:"ocsh_shape"`
			}
			err = spec.LoadAndAssign(&o, &ebpf.CollectionOptions{MapReplacements: s.sharedMaps()})
			d.prog, d.ownProg = o.Shape, true
		}
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: load program: %w", ErrUnsupported, err)
			}
			return fmt.Errorf("load program for %q: %w", d.name, err)
		}
	}
	return s.readIDs()
}

// setClock sets the program's clock: bpf_ktime_get_ns with
// Options.PreciseClock, else jiffies times the tick length measured here.
func (s *Shaper) setClock(spec *ebpf.CollectionSpec) error {
	precise := uint32(0)
	if s.opts.PreciseClock {
		precise = 1
	} else {
		npj, err := nsPerJiffy()
		if err != nil {
			return err
		}
		if err := spec.Variables["ns_per_jiffy"].Set(npj); err != nil {
			return fmt.Errorf("set ns_per_jiffy: %w", err)
		}
		s.log.Debug("shaper clock", "ns_per_jiffy", npj)
	}
	if err := spec.Variables["precise_clock"].Set(precise); err != nil {
		return fmt.Errorf("set precise_clock: %w", err)
	}
	return nil
}

// loadFirst loads the objects of the first device on the adopted maps, or
// on fresh ones when the adopted maps have another layout.
func (s *Shaper) loadFirst(spec *ebpf.CollectionSpec, adopted map[string]*ebpf.Map, from *attachment) error {
	err := spec.LoadAndAssign(&s.objs, &ebpf.CollectionOptions{MapReplacements: adopted})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		s.log.Warn("the running shaper's maps have another layout: starting with fresh buckets and counters", "from", from.String(), "err", err)
		return spec.LoadAndAssign(&s.objs, nil)
	}
	if err == nil && from != nil {
		s.log.Info("adopted the running shaper's buckets and counters", "from", from.String())
	}
	return err
}

// readIDs learns which bucket index is which region from the (possibly
// adopted) configuration array.
func (s *Shaper) readIDs() error {
	s.mirror.ids = map[string]uint32{}
	var id uint32
	var c bpfBucketCfg
	it := s.objs.OcshCfg.Iterate()
	for it.Next(&id, &c) {
		if name := cString(c.Region[:]); name != "" && id > 0 {
			s.mirror.ids[name] = id
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read region ids: %w", err)
	}
	return nil
}

// sharedMaps are the maps every device's program uses: all but .rodata,
// which holds the device's constants.
func (s *Shaper) sharedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpfMapOcshPrefix4: s.objs.OcshPrefix4,
		bpfMapOcshPrefix6: s.objs.OcshPrefix6,
		bpfMapOcshCfg:     s.objs.OcshCfg,
		bpfMapOcshState:   s.objs.OcshState,
		bpfMapOcshStats:   s.objs.OcshStats,
		".bss":            s.objs.Bss,
	}
}
