package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// Describe tells a person how to reach every host of the lab, in both
// address families.
func (l *Lab) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "opencen lab: config %s, state %s\n", l.ConfigFile, l.StateDir)
	if len(l.UnderlayDelays) > 0 {
		fmt.Fprintf(&b, "underlay %s: netem delay per region %v\n", l.Underlay, l.UnderlayDelays)
	} else {
		fmt.Fprintf(&b, "underlay %s: flat (no netem in this kernel)\n", l.Underlay)
	}
	b.WriteString("\ngateways:\n")
	for _, g := range l.Gateways {
		fmt.Fprintf(&b, "  %-20s %-14s ns %-24s underlay %s lan %v\n", g.Name, g.Region, g.Namespace, g.UnderlayAddr, g.LANAddrs)
		if g.PID != 0 {
			fmt.Fprintf(&b, "  %-20s cenctl --socket %s status\n", "", g.Socket)
			fmt.Fprintf(&b, "  %-20s cend pid %d, log %s, metrics: ip netns exec %s curl -s http://%s/metrics\n", "", g.PID, g.LogFile, g.Namespace, g.MetricsAddr)
		} else {
			fmt.Fprintf(&b, "  %-20s no agent (lab built without cend)\n", "")
		}
	}
	b.WriteString("\nhosts:\n")
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "  %-20s %-6s %-14s ns %-24s address %s via %s\n", h.Name, h.Kind, h.Region, h.Namespace,
			joinValid(h.Address, h.Address6), joinAddrs(append(append([]netip.Addr{}, h.NextHops...), h.NextHops6...)))
	}
	for _, r := range l.Routers {
		fmt.Fprintf(&b, "  %-20s router AS%d ns %s, eBGP over %s %s -> %s (%s) AS%d with ipv4 and ipv6 channels; link also %s -> %s; announces %v\n",
			r.Name, r.ASN, r.Namespace, familyName(r.Address.Addr().Is6()), r.Address.Addr(), r.GatewayAddress.Addr(), r.Gateway, r.PeerASN,
			r.OtherAddress.Addr(), r.OtherGatewayAddress.Addr(), r.Announce)
		fmt.Fprintf(&b, "  %-20s birdc -s %s show protocols all %s\n", "", r.Socket, BGPProtocol)
	}
	b.WriteString("\ntry:\n")
	for i, h := range l.Hosts {
		for _, o := range l.Hosts[i+1:] {
			if h.Address.IsValid() && o.Address.IsValid() {
				fmt.Fprintf(&b, "  ip netns exec %s ping -c 3 %s    # %s -> %s\n", h.Namespace, o.Address.Addr(), h.Name, o.Name)
			}
			if h.Address6.IsValid() && o.Address6.IsValid() {
				fmt.Fprintf(&b, "  ip netns exec %s ping -6 -c 3 %s    # %s -> %s, IPv6\n", h.Namespace, o.Address6.Addr(), h.Name, o.Name)
			}
		}
	}
	return b.String()
}

// familyName is "IPv4" or "IPv6".
func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// joinValid lists the valid prefixes among ps, space-separated.
func joinValid(ps ...netip.Prefix) string {
	var out []string
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, " ")
}

// joinAddrs lists addresses, comma-separated.
func joinAddrs(as []netip.Addr) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return strings.Join(out, ",")
}
