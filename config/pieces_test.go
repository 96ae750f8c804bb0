package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestVPCPieces(t *testing.T) {
	gw := func(name string, w uint32) Gateway { return Gateway{Name: name, Region: "r", Weight: w} }
	for _, c := range []struct {
		gws  []Gateway
		cidr string
		want string // gateway per piece, by first letter
		bits int    // length of each piece
	}{
		{[]Gateway{gw("a", 1)}, "10.1.0.0/16", "a", 16},
		{[]Gateway{gw("b", 1), gw("a", 1)}, "10.1.0.0/16", "abababababababab", 20},
		{[]Gateway{gw("a", 3), gw("b", 1)}, "10.1.0.0/16", "aabaaabaaabaaaba", 20},
		{[]Gateway{gw("a", 1), gw("b", 1), gw("c", 1)}, "10.1.0.0/16", "abcabcabcabcabcabcabcabcabcabcab", 21},
		{[]Gateway{gw("a", 1), gw("b", 1)}, "10.0.0.0/30", "abab", 32},
		{[]Gateway{gw("a", 1), gw("b", 1)}, "fd00:1::/48", "abababababababab", 52},
	} {
		cfg := &Config{Gateways: c.gws}
		ps := cfg.VPCPieces(netip.MustParsePrefix(c.cidr), "r")
		var got strings.Builder
		next := netip.MustParsePrefix(c.cidr).Addr()
		for i, p := range ps {
			got.WriteString(p.Gateway)
			if p.Prefix.Bits() != c.bits {
				t.Errorf("%s piece %d: %s, want /%d", c.cidr, i, p.Prefix, c.bits)
			}
			if p.Prefix.Addr() != next {
				t.Errorf("%s piece %d starts at %s, want %s (pieces must tile the CIDR)", c.cidr, i, p.Prefix.Addr(), next)
			}
			next = lastOf(p.Prefix).Next()
		}
		if got.String() != c.want {
			t.Errorf("%s over %v: dealt %s, want %s", c.cidr, c.gws, got.String(), c.want)
		}
	}
	if ps := (&Config{}).VPCPieces(netip.MustParsePrefix("10.0.0.0/8"), "r"); ps != nil {
		t.Errorf("no gateway: %v", ps)
	}
	if fmt.Sprint(PieceCount(1), PieceCount(2), PieceCount(3), PieceCount(40)) != "1 16 32 256" {
		t.Errorf("piece counts %d %d %d %d", PieceCount(1), PieceCount(2), PieceCount(3), PieceCount(40))
	}
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
