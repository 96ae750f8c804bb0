package shaping

import (
	"errors"
	"net/netip"
	"sort"
)

// The userspace shaper's classification, the program's in Go: the
// addresses of a packet, and the longest prefix that holds its destination.

var errNotIP = errors.New("not an ip packet")

// parseIP reads what classification needs: the source and destination
// addresses of an IPv4 or IPv6 packet.
func parseIP(p []byte) (src, dst netip.Addr, err error) {
	if len(p) < 1 {
		return src, dst, errNotIP
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return src, dst, errNotIP
		}
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), nil
	case 6:
		if len(p) < 40 {
			return src, dst, errNotIP
		}
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), nil
	}
	return src, dst, errNotIP
}

// prefixTable is a longest-prefix-match table: one map per prefix length
// in use, searched from the longest.
type prefixTable struct {
	lens4, lens6 []int
	byLen        map[int]map[netip.Prefix]string
}

func newPrefixTable(m map[netip.Prefix]string) prefixTable {
	t := prefixTable{byLen: map[int]map[netip.Prefix]string{}}
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for p, r := range m {
		key := p.Bits()
		if p.Addr().Is6() {
			key += 1000
			if !seen6[p.Bits()] {
				seen6[p.Bits()] = true
				t.lens6 = append(t.lens6, p.Bits())
			}
		} else if !seen4[p.Bits()] {
			seen4[p.Bits()] = true
			t.lens4 = append(t.lens4, p.Bits())
		}
		if t.byLen[key] == nil {
			t.byLen[key] = map[netip.Prefix]string{}
		}
		t.byLen[key][p] = r
	}
	sort.Sort(sort.Reverse(sort.IntSlice(t.lens4)))
	sort.Sort(sort.Reverse(sort.IntSlice(t.lens6)))
	return t
}

func (t prefixTable) lookup(a netip.Addr) (string, bool) {
	a = a.Unmap()
	lens, off := t.lens4, 0
	if a.Is6() {
		lens, off = t.lens6, 1000
	}
	for _, n := range lens {
		p, _ := a.Prefix(n)
		if r, ok := t.byLen[n+off][p]; ok {
			return r, true
		}
	}
	return "", false
}
