package lab

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
)

// The lab's addressing: where in a config's prefixes the lab puts its
// underlay, hosts, gateways' LAN ports, VBR links and on-premises LANs.

// commonPrefix is the longest prefix holding every address, at most /24
// (IPv4) or /64 (IPv6) long so that the underlay is an ordinary subnet.
func commonPrefix(addrs []netip.Addr) (netip.Prefix, error) {
	if len(addrs) == 0 {
		return netip.Prefix{}, errors.New("no gateway endpoints")
	}
	first := addrs[0].Unmap()
	bits := 24
	if first.Is6() {
		bits = 64
	}
	for _, a := range addrs[1:] {
		a = a.Unmap()
		if a.Is4() != first.Is4() {
			return netip.Prefix{}, fmt.Errorf("gateway endpoints %s and %s: the lab needs every endpoint in one address family", first, a)
		}
		for bits > 0 {
			p, _ := first.Prefix(bits)
			if p.Contains(a) {
				break
			}
			bits--
		}
	}
	if bits < 8 {
		return netip.Prefix{}, fmt.Errorf("gateway endpoints span /%d: the lab needs them in one subnet of /8 or longer", bits)
	}
	return first.Prefix(bits)
}

// homedAddrs are a VPC host's addresses besides primary: for every other
// gateway of the region, host number 10 of the first piece of cidr dealt
// to it, with cidr's length.
func homedAddrs(cfg *config.Config, cidr netip.Prefix, region string, primary netip.Prefix) ([]netip.Prefix, error) {
	seen := map[string]bool{}
	var out []netip.Prefix
	for _, p := range cfg.VPCPieces(cidr, region) {
		if seen[p.Gateway] {
			continue
		}
		seen[p.Gateway] = true
		a, err := hostAddr(p.Prefix, 10)
		if err != nil {
			return nil, err
		}
		if a.Addr() != primary.Addr() {
			out = append(out, netip.PrefixFrom(a.Addr(), cidr.Bits()))
		}
	}
	return out, nil
}

// hostAddr is the n-th address of p with p's length, refusing the
// network's last address and anything outside p.
func hostAddr(p netip.Prefix, n uint64) (netip.Prefix, error) {
	return nthAddr(p, new(big.Int).SetUint64(n))
}

// nthAddr is hostAddr for an n of any size (the n-th /64 of an IPv6
// prefix lies past 2^64).
func nthAddr(p netip.Prefix, n *big.Int) (netip.Prefix, error) {
	p = p.Masked()
	size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
	if new(big.Int).Add(n, big.NewInt(1)).Cmp(size) >= 0 {
		return netip.Prefix{}, fmt.Errorf("%s is too small for the lab's address .%s (want /%d or shorter)", p, n, p.Addr().BitLen()-5)
	}
	v := new(big.Int).SetBytes(p.Addr().AsSlice())
	v.Add(v, n)
	b := v.FillBytes(make([]byte, p.Addr().BitLen()/8))
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, p.Bits()), nil
}

// linkPair places a VBR neighbor and its gateway on one point-to-point
// subnet: the /30 (or /126) holding the neighbor when it is a usable
// address there (the gateway takes the other one), else the /31 (/127).
func linkPair(neighbor netip.Addr) (router, gateway netip.Prefix, err error) {
	neighbor = neighbor.Unmap()
	bits := neighbor.BitLen()
	p30, _ := neighbor.Prefix(bits - 2)
	last := neighbor.AsSlice()[bits/8-1] & 3
	b := neighbor.AsSlice()
	switch last {
	case 1, 2:
		b[len(b)-1] ^= 3 // .1 <-> .2
		g, _ := netip.AddrFromSlice(b)
		return netip.PrefixFrom(neighbor, p30.Bits()), netip.PrefixFrom(g, p30.Bits()), nil
	default:
		b[len(b)-1] ^= 1 // /31 partner
		g, _ := netip.AddrFromSlice(b)
		return netip.PrefixFrom(neighbor, bits-1), netip.PrefixFrom(g, bits-1), nil
	}
}

// The lab's on-premises subnets: a /24 (IPv4) or a /64 (IPv6) each.
const (
	onPremUnit4 = 24
	onPremUnit6 = 64
)

// Where the lab puts an on-premises network when its VBR may announce any
// prefix (no accept list). Both are private space (RFC 1918, RFC 4193).
var (
	anyOnPrem4 = netip.MustParsePrefix("192.168.0.0/16")
	anyOnPrem6 = netip.MustParsePrefix("fd00:192:168::/48")
)

// onPremPrefixes picks the on-premises LAN of one family (its first
// address is the router's, host number 10 the host's) and an extra
// announced prefix from what the VBR may announce: the second and the
// 101st /24 (IPv4) or /64 (IPv6) of the first accept entry of that family,
// so both are inside the accept list. An accept list with no entry of the
// family gives no LAN of that family (both invalid, no error): that family
// cannot reach the data centre.
func onPremPrefixes(accept []netip.Prefix, any, v6 bool) (lan, extra netip.Prefix, err error) {
	base, unit := anyOnPrem4, onPremUnit4
	if v6 {
		base, unit = anyOnPrem6, onPremUnit6
	}
	if !any {
		i := slices.IndexFunc(accept, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
		if i < 0 {
			return lan, extra, nil
		}
		base = accept[i].Masked()
	}
	if base.Bits() > unit {
		if base.Bits() > base.Addr().BitLen()-4 {
			return lan, extra, fmt.Errorf("accept %s is too small for an on-premises LAN (want /%d or shorter)", base, base.Addr().BitLen()-4)
		}
		r, err := hostAddr(base, 1)
		return r, extra, err
	}
	units := new(big.Int).Lsh(big.NewInt(1), uint(unit-base.Bits()))
	nth := func(i int64) netip.Prefix {
		n := new(big.Int).Lsh(big.NewInt(i), uint(base.Addr().BitLen()-unit))
		p, _ := nthAddr(base, n)
		return netip.PrefixFrom(p.Addr(), unit)
	}
	lanIdx := int64(0)
	if units.Cmp(big.NewInt(1)) > 0 {
		lanIdx = 1
	}
	r, err := hostAddr(nth(lanIdx), 1)
	if err != nil {
		return lan, extra, err
	}
	switch {
	case units.Cmp(big.NewInt(100)) > 0:
		extra = nth(100)
	case units.Cmp(big.NewInt(2)) > 0:
		extra = nth(units.Int64() - 1)
	}
	if extra.IsValid() {
		extra, _ = hostAddr(extra, 1)
	}
	return r, extra, nil
}

// linkPrefix6 holds the IPv6 side of a VBR link whose session runs over
// IPv4: each end's IPv4 address embedded in the last 32 bits, so the /30
// (or /31) of the session maps onto a /126 (or /127) of the same ends.
// fd6c:6162 is "lab" in a unique local prefix, apart from the gateways'
// tunnel prefix (config.TunnelPrefix6).
var linkPrefix6 = netip.MustParsePrefix("fd6c:6162::/96")

// otherFamily is the address of the other family the lab gives the end of
// a VBR link whose session address is a: for IPv4, a inside linkPrefix6;
// for IPv6, its last 32 bits, which must make a private IPv4 address
// (write such a neighbor as fd6c:6162::172.31.0.2).
func otherFamily(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	if a.Is4() {
		b := linkPrefix6.Addr().As16()
		v4 := a.As4()
		copy(b[12:], v4[:])
		return netip.AddrFrom16(b), nil
	}
	b := a.As16()
	v4 := netip.AddrFrom4([4]byte(b[12:]))
	if !v4.IsPrivate() {
		return netip.Addr{}, fmt.Errorf("neighbor %s: the lab gives the link IPv4 addresses from the neighbor's last 32 bits, here %s, which is not a private IPv4 address; write the neighbor like %s", a, v4, "fd6c:6162::172.31.0.2")
	}
	return v4, nil
}
