package shaping

import "net/netip"

type (
	netipPrefix = netip.Prefix
	netipAddr   = netip.Addr
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
