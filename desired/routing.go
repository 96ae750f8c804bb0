package desired

import (
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/netipx"
)

// ConnectedAndHandoff derives from the gateway's own addresses (outside
// its tunnel) the subnets connected to it, which are never learned, and
// its handoff addresses: those inside its region's VPC CIDRs.
func ConnectedAndHandoff(d *config.Desired, local []netip.Prefix) (connected []netip.Prefix, handoff []netip.Addr) {
	for _, a := range local {
		if !a.Addr().Is4() {
			continue // BGP carries IPv4 only for now (see routing docs)
		}
		if m := a.Masked(); !slices.Contains(connected, m) {
			connected = append(connected, m)
		}
		for _, o := range d.Originate {
			if o.Prefix.Contains(a.Addr()) && !slices.Contains(handoff, a.Addr()) {
				handoff = append(handoff, a.Addr())
			}
		}
	}
	slices.SortFunc(connected, netipx.ComparePrefix)
	slices.SortFunc(handoff, netip.Addr.Compare)
	return connected, handoff
}

// RoutingOf is what the gateway's BGP speaker should do; connected and
// handoff come from ConnectedAndHandoff.
func RoutingOf(cfg *config.Config, d *config.Desired, sec Secrets, connected []netip.Prefix, handoff []netip.Addr) config.SpeakerState {
	out := config.SpeakerState{
		Connected:        connected,
		HandoffAddresses: handoff,
		RouterID:         d.TunnelAddress,
		LocalAddress:     d.TunnelAddress,
		Region:           d.Region,
		InstanceASN:      d.InstanceASN,
	}
	for _, p := range d.Peers {
		gp := config.GatewayPeer{Name: p.Name, Region: p.Region, Address: p.TunnelAddress}
		byNetwork := map[string][]netip.Prefix{}
		var order []string
		for _, o := range p.Entitled.VPCs {
			if !o.Prefix.Addr().Is4() {
				continue // BGP carries IPv4 only for now (see routing docs)
			}
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
				e.Prefixes = ipv4Only(v.Accept)
				if len(e.Prefixes) == 0 {
					continue // only IPv6 accepted: nothing BGP can carry yet
				}
			}
			gp.Entitled = append(gp.Entitled, e)
		}
		out.Gateways = append(out.Gateways, gp)
	}
	for _, o := range d.Originate {
		if o.Prefix.Addr().Is4() {
			out.Originate = append(out.Originate, config.NamedPrefix{Prefix: o.Prefix, Region: d.Region, Network: o.Network})
		}
	}
	for _, v := range d.VBRs {
		if !v.Neighbor.Is4() {
			continue
		}
		s := config.VBRPeer{
			Network:     v.Network,
			Region:      d.Region,
			Neighbor:    v.Neighbor,
			PeerASN:     v.PeerASN,
			MaxPrefixes: v.MaxPrefixes,
			Password:    sec.Passwords[v.Network],
			BFD:         v.BFD,
		}
		if !v.AcceptAny {
			s.Accept = ipv4Only(v.Accept)
		}
		out.VBRs = append(out.VBRs, s)
	}
	for _, n := range cfg.Networks {
		for _, p := range n.CIDRs {
			if p.Addr().Is4() {
				out.InstanceCIDRs = append(out.InstanceCIDRs, config.NamedPrefix{Prefix: p, Region: n.Region, Network: n.Name})
			}
		}
	}
	for _, g := range cfg.Gateways {
		if g.TunnelAddress.Is4() {
			out.ProtectedPrefixes = append(out.ProtectedPrefixes, netip.PrefixFrom(g.TunnelAddress, 32))
		}
		if a := g.Endpoint.Addr(); a.Is4() {
			out.ProtectedPrefixes = append(out.ProtectedPrefixes, netip.PrefixFrom(a, 32))
		}
	}
	return out
}

func ipv4Only(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
}
