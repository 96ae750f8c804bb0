package shaping

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// lpmFlagControl matches FLAG_CONTROL in bpf/shaper.c.
const lpmFlagControl = 1

func (s *Shaper) setPrefixes(d Desired) []error {
	var errs []error
	want4 := map[bpfLpm4Key]bpfLpmVal{}
	want6 := map[bpfLpm6Key]bpfLpmVal{}
	put := func(p netip.Prefix, v bpfLpmVal) {
		if p.Addr().Is4() {
			want4[lpm4(p)] = v
		} else {
			want6[lpm6(p)] = v
		}
	}
	for p, name := range d.Prefixes {
		put(p, bpfLpmVal{Region: s.mirror.ids[name]})
	}
	// Gateways' tunnel addresses are host entries flagged as control,
	// carrying the region of the prefix that covers them.
	table := newPrefixTable(d.Prefixes)
	for _, a := range d.ControlAddrs {
		a = a.Unmap()
		v := bpfLpmVal{Flags: lpmFlagControl}
		if name, ok := table.lookup(a); ok {
			v.Region = s.mirror.ids[name]
		}
		put(netip.PrefixFrom(a, a.BitLen()), v)
	}
	errs = append(errs, syncMap(s.objs.OcshPrefix4, want4, &s.mirror.lpm4, "ipv4 prefix")...)
	errs = append(errs, syncMap(s.objs.OcshPrefix6, want6, &s.mirror.lpm6, "ipv6 prefix")...)
	return errs
}

// syncMap makes m hold exactly want, writing only the differences from
// *mirror, what m is known to hold (read from m when nil). After a failed
// write the mirror is dropped, and the next sync reads m again.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V, mirror *map[K]V, what string) []error {
	var errs []error
	if *mirror == nil {
		have := map[K]V{}
		var k K
		var v V
		it := m.Iterate()
		for it.Next(&k, &v) {
			have[k] = v
		}
		if err := it.Err(); err != nil {
			return []error{fmt.Errorf("read %ss: %w", what, err)}
		}
		*mirror = have
	}
	have := *mirror
	for k, v := range want {
		if h, ok := have[k]; ok && h == v {
			continue
		}
		if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", what, err))
			continue
		}
		have[k] = v
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
			continue
		}
		delete(have, k)
	}
	if len(errs) > 0 {
		*mirror = nil
	}
	return errs
}

func lpm4(p netip.Prefix) bpfLpm4Key {
	a := p.Addr().As4()
	// The trie compares the address in network byte order; the key field
	// is a u32 marshalled in host (little-endian) order, so keep the bytes.
	return bpfLpm4Key{Prefixlen: uint32(p.Bits()), Addr: uint32(a[0]) | uint32(a[1])<<8 | uint32(a[2])<<16 | uint32(a[3])<<24}
}

func lpm6(p netip.Prefix) bpfLpm6Key {
	return bpfLpm6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

// regionKey is a region id as the configuration array holds it: 63 bytes
// at most (maxRegionName, checked by Desired.validate) and a NUL.
func regionKey(name string) [64]int8 {
	var k [64]int8
	for i := 0; i < len(name) && i < len(k)-1; i++ {
		k[i] = int8(name[i])
	}
	return k
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
