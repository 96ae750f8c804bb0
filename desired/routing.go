package desired

import (
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/netipx"
)

// ConnectedAndHandoff derives from the gateway's own links (outside its
// tunnel) the subnets connected to it, which are never learned, and its
// handoff addresses: those inside its region's VPC CIDRs.
func ConnectedAndHandoff(d *config.Desired, links []config.LinkAddresses) (connected []netip.Prefix, handoff []netip.Addr) {
	for _, l := range links {
		for _, a := range l.Addrs {
			if m := a.Masked(); !slices.Contains(connected, m) {
				connected = append(connected, m)
			}
			for _, o := range d.Originate {
				if o.Prefix.Contains(a.Addr()) && !slices.Contains(handoff, a.Addr()) {
					handoff = append(handoff, a.Addr())
				}
			}
		}
	}
	slices.SortFunc(connected, netipx.ComparePrefix)
	slices.SortFunc(handoff, netip.Addr.Compare)
	return connected, handoff
}

// RoutingOf is what the gateway's BGP speaker should do; connected and
// handoff come from ConnectedAndHandoff, links are the gateway's own.
func RoutingOf(cfg *config.Config, d *config.Desired, sec Secrets, links []config.LinkAddresses, connected []netip.Prefix, handoff []netip.Addr) config.SpeakerState {
	out := config.SpeakerState{
		Connected:        connected,
		HandoffAddresses: handoff,
		RouterID:         d.TunnelAddress,
		LocalAddress:     d.TunnelAddress,
		Region:           d.Region,
		InstanceASN:      d.InstanceASN,
	}
	for _, p := range d.Peers {
		out.Gateways = append(out.Gateways, gatewayPeer(p))
	}
	for _, o := range d.Originate {
		out.Originate = append(out.Originate, config.NamedPrefix{Prefix: o.Prefix, Region: d.Region, Network: o.Network})
	}
	for _, v := range d.VBRs {
		s := config.VBRPeer{
			Network:            v.Network,
			Region:             d.Region,
			Neighbor:           v.Neighbor,
			PeerASN:            v.PeerASN,
			MaxPrefixes:        v.MaxPrefixes,
			MaxPrefixesRestart: v.MaxPrefixesRestart,
			TTLSecurity:        v.TTLSecurity,
			Password:           sec.Passwords[v.Network],
			BFD:                v.BFD,
			LinkAddresses:      linkAddressesTo(links, v.Neighbor),
		}
		if !v.AcceptAny {
			// Not nil, even when empty: nil would admit any prefix.
			s.Accept = append([]netip.Prefix{}, v.Accept...)
		}
		out.VBRs = append(out.VBRs, s)
	}
	for _, n := range cfg.Networks {
		for _, p := range n.CIDRs {
			out.InstanceCIDRs = append(out.InstanceCIDRs, config.NamedPrefix{Prefix: p, Region: n.Region, Network: n.Name})
		}
	}
	for _, n := range cfg.Networks {
		if n.BGP != nil {
			out.RouterAddresses = append(out.RouterAddresses, netipx.Host(n.BGP.Neighbor))
		}
	}
	for _, g := range cfg.Gateways {
		out.ProtectedPrefixes = append(out.ProtectedPrefixes, TunnelHosts(g.TunnelAddress)...)
		if a := g.Endpoint.Addr(); a.IsValid() {
			out.ProtectedPrefixes = append(out.ProtectedPrefixes, netipx.Host(a))
		}
	}
	return out
}

// gatewayPeer is peer p with what it may announce: its region's VPC CIDRs
// exactly (grouped by network, in the config's order) and its VBRs' accept
// ranges.
func gatewayPeer(p config.Peer) config.GatewayPeer {
	gp := config.GatewayPeer{Name: p.Name, Region: p.Region, Address: p.TunnelAddress, MaxPrefixes: p.Entitled.MaxPrefixes()}
	byNetwork := map[string][]netip.Prefix{}
	var order []string
	for _, o := range p.Entitled.VPCs {
		if _, ok := byNetwork[o.Network]; !ok {
			order = append(order, o.Network)
		}
		byNetwork[o.Network] = append(byNetwork[o.Network], o.Prefix)
	}
	for _, n := range order {
		gp.Entitled = append(gp.Entitled, config.NetworkEntitlement{Network: n, Region: p.Region, Kind: config.KindVPC, Prefixes: byNetwork[n]})
	}
	for _, v := range p.Entitled.VBRs {
		e := config.NetworkEntitlement{Network: v.Network, Region: p.Region, Kind: config.KindVBR}
		if !v.Any {
			e.Prefixes = append([]netip.Prefix{}, v.Accept...)
		}
		gp.Entitled = append(gp.Entitled, e)
	}
	return gp
}

// linkAddressesTo are the gateway's addresses, at most one per family,
// on the link whose subnet holds neighbor: the next hop it announces to
// the router in each family. None when no link holds it (the router is
// then reached through a route, and the session's own address is the only
// next hop).
func linkAddressesTo(links []config.LinkAddresses, neighbor netip.Addr) []netip.Prefix {
	for _, l := range links {
		if !slices.ContainsFunc(l.Addrs, func(a netip.Prefix) bool { return a.Contains(neighbor) }) {
			continue
		}
		var out []netip.Prefix
		var have4, have6 bool
		for _, a := range l.Addrs {
			switch {
			case a.Addr().Is4() && !have4:
				have4 = true
				out = append(out, a)
			case a.Addr().Is6() && !have6:
				have6 = true
				out = append(out, a)
			}
		}
		return out
	}
	return nil
}
