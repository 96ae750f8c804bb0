// Package netipx holds the prefix arithmetic every package of opencen
// needs: one order of prefixes and one meaning of containment.
package netipx

import (
	"cmp"
	"net/netip"
)

// ComparePrefix orders prefixes by address, then by length (shorter
// first): IPv4 ahead of IPv6, a supernet ahead of its more-specifics.
func ComparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Covers reports whether outer holds every address of inner (inner equal
// to outer or one of its more-specifics). Prefixes of different families
// never cover each other.
func Covers(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// CoveredBy reports whether one of list covers p.
func CoveredBy(p netip.Prefix, list []netip.Prefix) bool {
	for _, o := range list {
		if Covers(o, p) {
			return true
		}
	}
	return false
}

// OverlapsAny reports whether p overlaps one of list, and which.
func OverlapsAny(p netip.Prefix, list []netip.Prefix) (netip.Prefix, bool) {
	for _, o := range list {
		if o.Overlaps(p) {
			return o, true
		}
	}
	return netip.Prefix{}, false
}

// Host is a's host prefix: /32 or /128.
func Host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// Split divides p into 2^k equal more-specifics in address order. k is
// clamped so that no part is longer than a host prefix.
func Split(p netip.Prefix, k int) []netip.Prefix {
	p = p.Masked()
	k = max(0, min(k, p.Addr().BitLen()-p.Bits()))
	out := make([]netip.Prefix, 0, 1<<k)
	bits := p.Bits() + k
	a := p.Addr()
	for range 1 << k {
		part := netip.PrefixFrom(a, bits)
		out = append(out, part)
		a = next(lastAddr(part))
	}
	return out
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// next is a+1, wrapping at the top of the family's space.
func next(a netip.Addr) netip.Addr {
	if n := a.Next(); n.IsValid() {
		return n
	}
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
