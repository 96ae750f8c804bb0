package shaping

import (
	"slices"

	"github.com/cilium/ebpf"
)

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
