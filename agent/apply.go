package agent

import (
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
)

// The desired values are the desired package's own plain types, shaped
// like each subsystem's input: turning one into the other is a copy.

// applyBuf keeps the dataplane's route lists for the next reconcile to
// fill: a direct route per learned on-premises prefix, rebuilt on every
// reconcile.
type applyBuf struct {
	desired desired.Buffers
	direct  []dataplane.DirectRoute
}

// toDataplane is t as the dataplane's desired state, valid until buf's
// next use.
func toDataplane(t desired.Tunnel, buf *applyBuf) dataplane.Desired {
	out := dataplane.Desired{PrivateKey: t.PrivateKey, ListenPort: t.ListenPort, Addresses: t.Addresses, Routes: t.Routes}
	out.Peers = make([]dataplane.Peer, len(t.Peers))
	for i, p := range t.Peers {
		out.Peers[i] = dataplane.Peer(p)
	}
	if cap(buf.direct) < len(t.DirectRoutes) {
		buf.direct = make([]dataplane.DirectRoute, 0, len(t.DirectRoutes))
	}
	out.DirectRoutes = buf.direct[:0]
	for _, r := range t.DirectRoutes {
		out.DirectRoutes = append(out.DirectRoutes, dataplane.DirectRoute(r))
	}
	buf.direct = out.DirectRoutes
	for _, h := range t.Handoffs {
		out.Handoffs = append(out.Handoffs, dataplane.Handoff(h))
	}
	return out
}

// toRouting is r as the BGP speaker's desired state.
func toRouting(r desired.Routing) routing.Desired {
	out := routing.Desired{
		RouterID: r.RouterID, LocalAddress: r.LocalAddress, Region: r.Region, InstanceASN: r.InstanceASN,
		ProtectedPrefixes: r.ProtectedPrefixes, Connected: r.Connected, HandoffAddresses: r.HandoffAddresses,
	}
	for _, g := range r.Gateways {
		gp := routing.GatewayPeer{Name: g.Name, Region: g.Region, Address: g.Address}
		for _, e := range g.Entitled {
			kind := routing.KindVPC
			if e.VBR {
				kind = routing.KindVBR
			}
			gp.Entitled = append(gp.Entitled, routing.Entitlement{Network: e.Network, Region: e.Region, Kind: kind, Prefixes: e.Prefixes})
		}
		out.Gateways = append(out.Gateways, gp)
	}
	for _, o := range r.Originate {
		out.Originate = append(out.Originate, routing.Origin(o))
	}
	for _, v := range r.VBRs {
		out.VBRs = append(out.VBRs, routing.VBRSession(v))
	}
	for _, n := range r.InstanceCIDRs {
		out.InstanceCIDRs = append(out.InstanceCIDRs, routing.NamedPrefix(n))
	}
	return out
}

// toShaping is s as the shaper's desired state.
func toShaping(s desired.Shaping) shaping.Desired {
	out := shaping.Desired{Regions: make(map[string]shaping.Rate, len(s.Regions)), Prefixes: s.Prefixes, ControlAddrs: s.ControlAddrs}
	for region, rate := range s.Regions {
		out.Regions[region] = shaping.Rate(rate)
	}
	return out
}

// fromRouting is a batch's learned route as the desired package reads it.
func fromRouting(r routing.LearnedRoute) desired.Route { return desired.Route(r) }
