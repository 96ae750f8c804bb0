package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// guardSpecOf resolves want's guard against the kernel's links: the LANs
// are the links holding an address inside one of want.LANPrefixes, a
// VBR's link the one the kernel routes its router through, the underlay
// the links toward the peers' endpoints. A link that is both a LAN (or a
// VBR link) and the underlay, as on a gateway with one interface, counts
// as a LAN: forwarding cannot tell the two apart by interface there, and
// what reaches such a gateway from the underlay is the provider's
// filtering to keep out. A router or endpoint with no route is left out
// (nothing reaches it, nothing comes from it).
func (d *Dataplane) guardSpecOf(want Desired, dev netlink.Link) (guardSpec, error) {
	g := guardSpec{dev: d.name, gateways: gatewayAddrs(want)}
	for _, a := range want.Addresses {
		g.self = append(g.self, a.Addr())
	}
	devIdx := dev.Attrs().Index
	names := map[int]string{}
	name := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		l, err := d.nl.LinkByIndex(idx)
		if err != nil {
			return ""
		}
		names[idx] = l.Attrs().Name
		return names[idx]
	}
	attached := map[string]bool{}
	addrs, err := d.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return g, fmt.Errorf("guard: list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.LinkIndex == devIdx || !slices.ContainsFunc(want.LANPrefixes, func(p netip.Prefix) bool { return p.Contains(ip.Unmap()) }) {
			continue
		}
		if n := name(a.LinkIndex); n != "" {
			attached[n] = true
		}
	}
	for _, nb := range want.VBRNeighbors {
		if idx, connected := d.routeLink(nb); connected && idx != devIdx {
			if n := name(idx); n != "" {
				attached[n] = true
				g.vbrs = append(g.vbrs, vbrLink{neighbor: nb, link: n})
			}
		}
	}
	underlay := map[string]bool{}
	seen := map[netip.Addr]bool{}
	for _, p := range want.Peers {
		ep := p.Endpoint.Addr().Unmap()
		if !p.Endpoint.IsValid() || seen[ep] {
			continue
		}
		seen[ep] = true
		if idx, _ := d.routeLink(ep); idx != 0 && idx != devIdx {
			if n := name(idx); n != "" && !attached[n] {
				underlay[n] = true
			}
		}
	}
	g.attached, g.underlay = sortedKeys(attached), sortedKeys(underlay)
	slices.SortFunc(g.vbrs, func(a, b vbrLink) int { return cmp.Or(a.neighbor.Compare(b.neighbor), cmp.Compare(a.link, b.link)) })
	return g, nil
}

// routeLink is the index of the link the kernel sends to a through, or 0
// when it has no route or a is local, and whether a is on that link's
// subnet (no gateway between).
func (d *Dataplane) routeLink(a netip.Addr) (int, bool) {
	rs, err := d.nl.RouteGet(a.AsSlice())
	if err != nil || len(rs) == 0 || rs[0].Type == unix.RTN_LOCAL {
		if err != nil && !errors.Is(err, unix.ENETUNREACH) && !errors.Is(err, unix.EHOSTUNREACH) {
			d.log.Debug("guard: no route", "to", a, "err", err)
		}
		return 0, false
	}
	return rs[0].LinkIndex, rs[0].LinkIndex != 0 && len(rs[0].Gw) == 0 && rs[0].Via == nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
