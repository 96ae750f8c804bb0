package lab

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"

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
	p = p.Masked()
	size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
	if new(big.Int).SetUint64(n+1).Cmp(size) >= 0 {
		return netip.Prefix{}, fmt.Errorf("%s is too small for the lab's address .%d (want /%d or shorter)", p, n, p.Addr().BitLen()-5)
	}
	v := new(big.Int).SetBytes(p.Addr().AsSlice())
	v.Add(v, new(big.Int).SetUint64(n))
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

// onPremPrefixes picks the on-premises LAN (its first address is the
// router's, .10 the host's) and an extra announced prefix from what the VBR
// may announce: the second /24 and the 101st /24 of the first accept
// entry, so both are inside the accept list.
func onPremPrefixes(accept []netip.Prefix, any bool) (lan, extra netip.Prefix, err error) {
	base := netip.MustParsePrefix("192.168.0.0/16")
	if !any {
		if len(accept) == 0 {
			return lan, extra, errors.New("accept list is empty, so the router may announce nothing")
		}
		base = accept[0].Masked()
	}
	if !base.Addr().Is4() {
		return lan, extra, fmt.Errorf("accept %s: the lab's on-premises network is IPv4 only", base)
	}
	if base.Bits() > 24 {
		if base.Bits() > 28 {
			return lan, extra, fmt.Errorf("accept %s is too small for an on-premises LAN (want /28 or shorter)", base)
		}
		r, err := hostAddr(base, 1)
		return r, extra, err
	}
	n24 := uint64(1) << (24 - base.Bits())
	nth := func(i uint64) netip.Prefix {
		p, _ := hostAddr(netip.PrefixFrom(base.Addr(), base.Bits()), i*256)
		return netip.PrefixFrom(p.Addr(), 24)
	}
	lanIdx := uint64(0)
	if n24 > 1 {
		lanIdx = 1
	}
	r, err := hostAddr(nth(lanIdx), 1)
	if err != nil {
		return lan, extra, err
	}
	switch {
	case n24 > 100:
		extra = nth(100)
	case n24 > 2:
		extra = nth(n24 - 1)
	}
	if extra.IsValid() {
		extra, _ = hostAddr(extra, 1)
	}
	return r, extra, nil
}
