package agent

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// secrets are what the agent read from key and password files. They live
// only in memory and are passed to the subsystems, never formatted.
type secrets struct {
	privateKey wgtypes.Key
	passwords  map[string]string // VBR network -> TCP-MD5 password
}

// learned is the routing layer's table of learned routes, by prefix.
type learned map[netip.Prefix]routing.LearnedRoute

// dataplaneDesired turns the gateway's desired state and the learned routes
// into what its WireGuard device and kernel routes should be.
func dataplaneDesired(cfg *config.Config, d *config.Desired, sec secrets, routes learned) dataplane.Desired {
	return dataplaneDesiredInto(cfg, d, sec, routes, nil)
}

// desiredBuf keeps the route lists of the last dataplane desired state for
// the next one to fill (dataplane.Set copies what it keeps): one entry
// per learned route, rebuilt on every reconcile.
type desiredBuf struct {
	routes []dataplane.Route
	direct []dataplane.DirectRoute
	vias   []netip.Addr
}

// dataplaneDesiredInto is dataplaneDesired, filling buf's memory when it
// is not nil; the result is valid until buf's next use.
func dataplaneDesiredInto(cfg *config.Config, d *config.Desired, sec secrets, routes learned, buf *desiredBuf) dataplane.Desired {
	out := dataplane.Desired{
		PrivateKey: sec.privateKey,
		ListenPort: int(d.ListenPort),
		Addresses:  []netip.Prefix{netip.PrefixFrom(d.TunnelAddress, d.TunnelAddress.BitLen())},
	}
	h := newHomes(cfg)
	tunnels := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		tunnels[p.TunnelAddress] = true
		out.Peers = append(out.Peers, dataplane.Peer{
			Name:       p.Name,
			PublicKey:  wgtypes.Key(p.PublicKey),
			Endpoint:   p.Endpoint,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.TunnelAddress, p.TunnelAddress.BitLen())},
			// Everything inside an accept range only the peer's VBRs may
			// announce into is homed at the peer: one AllowedIPs entry
			// for the range, not one per learned prefix, so 100,000
			// on-premises prefixes never rewrite the peer.
			HomeRanges: h.soleRanges(cfg, p.TunnelAddress),
		})
	}
	self := d.TunnelAddress
	for _, o := range d.Originate {
		if o.Prefix.Addr().Is4() && h.of(o.Prefix) == self {
			out.Sources = append(out.Sources, o.Prefix)
		}
	}
	// On-premises prefixes come in thousands: each source is a policy
	// rule, which the kernel walks in order for every packet. An accept
	// range that only this gateway's VBRs may announce, and that holds no
	// VPC CIDR, homes everything inside it here: one rule covers it.
	sole := h.soleRanges(cfg, self)
	out.Sources = append(out.Sources, sole...)
	out.SourcesComplete = h.homesAllLocal(d, self)
	// In map order: the dataplane's result does not depend on it, and
	// sorting 100,000 routes per reconcile cost more than building them.
	// The via lists share one array.
	n, direct := 0, 0
	for _, r := range routes {
		n += len(r.NextHops)
		if r.Direct {
			direct++
		}
	}
	if buf == nil {
		buf = &desiredBuf{}
	}
	vias := reuse(buf.vias, n)
	out.Routes = reuse(buf.routes, len(routes)-direct)
	out.DirectRoutes = reuse(buf.direct, direct)
	defer func() { buf.routes, buf.direct, buf.vias = out.Routes, out.DirectRoutes, vias }()
	for _, r := range routes {
		if r.Direct {
			start := len(vias)
			vias = append(vias, r.NextHops...)
			out.DirectRoutes = append(out.DirectRoutes, dataplane.DirectRoute{Prefix: r.Prefix, Via: vias[start:len(vias):len(vias)]})
			if r.Prefix.Addr().Is4() && !coveredBy(r.Prefix, sole) && h.of(r.Prefix) == self {
				out.Sources = append(out.Sources, r.Prefix)
			}
			continue
		}
		start := len(vias)
		for _, nh := range r.NextHops {
			if tunnels[nh] {
				vias = append(vias, nh)
			}
		}
		if via := vias[start:len(vias):len(vias)]; len(via) > 0 {
			rt := dataplane.Route{Prefix: r.Prefix, Via: via}
			if home := h.of(r.Prefix); tunnels[home] {
				rt.Home = home
			}
			out.Routes = append(out.Routes, rt)
		}
	}
	return out
}

// homes binds every CEN prefix to one gateway, its home, computed from the
// config alone so that every gateway computes the same one: the prefix
// sits in the home's WireGuard AllowedIPs everywhere, so traffic from the
// prefix that enters the CEN at its home can travel plain WireGuard, and
// only traffic entering through another gateway of the region needs the
// overlay (see the dataplane docs). A VPC CIDR's candidates are its
// region's gateways; an on-premises prefix's are the gateways holding a
// VBR whose accept list admits it. Only IPv4 tunnel addresses take part.
type homes struct {
	vpc  map[netip.Prefix][]netip.Addr
	vbrs []vbrHolder
}

type vbrHolder struct {
	addr netip.Addr
	ent  config.Entitlement // VBRs only
}

func newHomes(cfg *config.Config) homes {
	h := homes{vpc: map[netip.Prefix][]netip.Addr{}}
	for _, g := range cfg.Gateways {
		if !g.TunnelAddress.Is4() {
			continue
		}
		e := cfg.Entitlement(g.Name)
		for _, o := range e.VPCs {
			h.vpc[o.Prefix] = append(h.vpc[o.Prefix], g.TunnelAddress)
		}
		if len(e.VBRs) > 0 {
			h.vbrs = append(h.vbrs, vbrHolder{addr: g.TunnelAddress, ent: config.Entitlement{VBRs: e.VBRs}})
		}
	}
	return h
}

// soleRanges are the IPv4 accept prefixes of self's VBRs that no other
// gateway's VBR may announce into and that overlap no VPC CIDR: every
// prefix inside one has self as its only candidate, hence its home.
func (h homes) soleRanges(cfg *config.Config, self netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range h.vbrs {
		if v.addr != self {
			continue
		}
		for _, e := range v.ent.VBRs {
			if e.Any {
				continue
			}
			for _, a := range e.Accept {
				if a.Addr().Is4() && h.alone(a, self) && !overlapsVPC(cfg, a) && !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// homesAllLocal reports whether self is the home of everything it may
// send into the CEN from: every IPv4 VPC CIDR of its region, and every
// prefix its VBRs may announce (no other gateway's VBR may announce the
// same). Then its dataplane needs no fast-path rules (see
// dataplane.Desired.SourcesComplete): true of a region's only gateway
// unless VBR accept lists overlap across gateways.
func (h homes) homesAllLocal(d *config.Desired, self netip.Addr) bool {
	if !self.Is4() {
		return false
	}
	for _, o := range d.Originate {
		if o.Prefix.Addr().Is4() && h.of(o.Prefix) != self {
			return false
		}
	}
	for _, v := range d.VBRs {
		if v.AcceptAny {
			for _, other := range h.vbrs {
				if other.addr != self {
					return false
				}
			}
			continue
		}
		for _, a := range v.Accept {
			if a.Addr().Is4() && !h.alone(a, self) {
				return false
			}
		}
	}
	return true
}

// alone reports whether no VBR of a gateway other than self may announce
// anything inside a.
func (h homes) alone(a netip.Prefix, self netip.Addr) bool {
	for _, v := range h.vbrs {
		if v.addr != self && mayAnnounceInto(v.ent.VBRs, a) {
			return false
		}
	}
	return true
}

// mayAnnounceInto reports whether one of vbrs may announce a prefix
// inside a: one without an accept list, or one whose accept list
// overlaps a.
func mayAnnounceInto(vbrs []config.VBREntitlement, a netip.Prefix) bool {
	for _, e := range vbrs {
		if e.Any {
			return true
		}
		for _, b := range e.Accept {
			if b.Overlaps(a) {
				return true
			}
		}
	}
	return false
}

func overlapsVPC(cfg *config.Config, a netip.Prefix) bool {
	for _, n := range cfg.Networks {
		if n.Type != config.VPC {
			continue
		}
		for _, c := range n.CIDRs {
			if c.Overlaps(a) {
				return true
			}
		}
	}
	return false
}

func coveredBy(p netip.Prefix, ranges []netip.Prefix) bool {
	for _, r := range ranges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// of returns prefix's home, or the zero address when no gateway may
// announce it.
func (h homes) of(prefix netip.Prefix) netip.Addr {
	if c, ok := h.vpc[prefix]; ok {
		return dataplane.PickGateway(prefix, c)
	}
	var c []netip.Addr
	for _, v := range h.vbrs {
		if _, ok := v.ent.Allows(prefix); ok {
			c = append(c, v.addr)
		}
	}
	if len(c) == 0 {
		return netip.Addr{}
	}
	return dataplane.PickGateway(prefix, c)
}

// routingDesired is what the gateway's BGP speaker should do.
func routingDesired(cfg *config.Config, d *config.Desired, sec secrets) routing.Desired {
	out := routing.Desired{
		RouterID:     d.TunnelAddress,
		LocalAddress: d.TunnelAddress,
		Region:       d.Region,
		InstanceASN:  d.InstanceASN,
	}
	for _, p := range d.Peers {
		gp := routing.GatewayPeer{Name: p.Name, Region: p.Region, Address: p.TunnelAddress}
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
			gp.Entitled = append(gp.Entitled, routing.Entitlement{Network: n, Region: p.Region, Kind: routing.KindVPC, Prefixes: byNetwork[n]})
		}
		for _, v := range p.Entitled.VBRs {
			e := routing.Entitlement{Network: v.Network, Region: p.Region, Kind: routing.KindVBR}
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
			out.Originate = append(out.Originate, routing.Origin{Prefix: o.Prefix, Region: d.Region, Network: o.Network})
		}
	}
	for _, v := range d.VBRs {
		if !v.Neighbor.Is4() {
			continue
		}
		s := routing.VBRSession{
			Network:     v.Network,
			Region:      d.Region,
			Neighbor:    v.Neighbor,
			PeerASN:     v.PeerASN,
			MaxPrefixes: v.MaxPrefixes,
			Password:    sec.passwords[v.Network],
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
				out.InstanceCIDRs = append(out.InstanceCIDRs, routing.NamedPrefix{Prefix: p, Region: n.Region, Network: n.Name})
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

// shapingDesired is what the shaper should enforce: this gateway's rate
// toward every other region, and which prefix lives in which region (its
// own region included, so the longest match decides).
func shapingDesired(cfg *config.Config, d *config.Desired, routes learned) shaping.Desired {
	out := shaping.Desired{Regions: map[string]shaping.Rate{}, Prefixes: map[netip.Prefix]string{}}
	for _, e := range d.Egress {
		out.Regions[e.Region] = shaping.Rate(e.Rate)
	}
	for _, n := range cfg.Networks {
		for _, p := range n.CIDRs {
			out.Prefixes[p] = n.Region
		}
	}
	// A range whose every prefix can only come from one region is one
	// entry of the shaper's trie, not one per learned prefix.
	ranges := regionRanges(cfg)
	for a, region := range ranges {
		if _, ok := out.Prefixes[a]; !ok {
			out.Prefixes[a] = region
		}
	}
	for p, r := range routes {
		if _, ok := out.Prefixes[p]; ok || r.OriginRegion == "" || inRegionRange(ranges, p, r.OriginRegion) {
			continue
		}
		out.Prefixes[p] = r.OriginRegion
	}
	for _, g := range cfg.Gateways {
		out.ControlAddrs = append(out.ControlAddrs, g.TunnelAddress)
	}
	return out
}

// regionRanges are the VBR accept ranges that only VBRs of one region may
// announce into and that overlap no VPC CIDR, with that region: every
// prefix the instance can learn inside one belongs to it.
func regionRanges(cfg *config.Config) map[netip.Prefix]string {
	type holder struct {
		region string
		vbrs   []config.VBREntitlement
	}
	var holders []holder
	for _, g := range cfg.Gateways {
		if e := cfg.Entitlement(g.Name); len(e.VBRs) > 0 {
			holders = append(holders, holder{g.Region, e.VBRs})
		}
	}
	othersReach := func(a netip.Prefix, region string) bool {
		for _, h := range holders {
			if h.region != region && mayAnnounceInto(h.vbrs, a) {
				return true
			}
		}
		return false
	}
	out := map[netip.Prefix]string{}
	for _, h := range holders {
		for _, v := range h.vbrs {
			for _, a := range v.Accept {
				if !overlapsVPC(cfg, a) && !othersReach(a, h.region) {
					out[a] = h.region
				}
			}
		}
	}
	return out
}

// inRegionRange reports whether p lies in a range of region.
func inRegionRange(ranges map[netip.Prefix]string, p netip.Prefix, region string) bool {
	for a, r := range ranges { // a handful
		if r == region && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return true
		}
	}
	return false
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

func sortedRoutes(routes learned) []routing.LearnedRoute {
	out := make([]routing.LearnedRoute, 0, len(routes))
	for _, r := range routes {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b routing.LearnedRoute) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	return out
}

// reuse returns s emptied when it can hold n, else a new slice for n.
func reuse[T any](s []T, n int) []T {
	if cap(s) >= n {
		clear(s[:cap(s)])
		return s[:0]
	}
	return make([]T, 0, n)
}
