package agent

import (
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/netipx"
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

// view is what the agent knows at a reconcile besides the config: the
// learned routes, which gateways of its region are down, and the twins'
// LAN addresses (learned over BGP) for handoffs.
type view struct {
	routes learned
	down   map[string]bool
	lan    map[netip.Addr][]netip.Addr // twin tunnel address -> its LAN addresses
}

// dataplaneDesired turns the gateway's desired state and what it knows
// into what its WireGuard device, kernel routes and handoffs should be.
func dataplaneDesired(cfg *config.Config, d *config.Desired, sec secrets, v view) dataplane.Desired {
	return dataplaneDesiredInto(cfg, d, sec, v, nil)
}

// desiredBuf keeps the route lists of the last dataplane desired state for
// the next one to fill (dataplane.Set copies what it keeps): one entry
// per learned route, rebuilt on every reconcile.
type desiredBuf struct {
	routes []netip.Prefix
	direct []dataplane.DirectRoute
	vias   []netip.Addr
}

// dataplaneDesiredInto is dataplaneDesired, filling buf's memory when it
// is not nil; the result is valid until buf's next use.
func dataplaneDesiredInto(cfg *config.Config, d *config.Desired, sec secrets, v view, buf *desiredBuf) dataplane.Desired {
	if buf == nil {
		buf = &desiredBuf{}
	}
	b := newDesiredBuilder(cfg, d, sec, v)
	b.remoteRoutes(buf)
	b.localPrefixes()
	return b.finish()
}

// desiredBuilder gathers a dataplane.Desired: peers by tunnel address, the
// prefixes homed at each, and the local prefixes homed at each twin.
type desiredBuilder struct {
	cfg     *config.Config
	d       *config.Desired
	v       view
	h       homes
	out     dataplane.Desired
	peerIdx map[netip.Addr]int // tunnel address -> index in out.Peers
	sole    map[netip.Addr][]netip.Prefix
	vpcs    map[netip.Prefix]string // every VPC CIDR -> its region
	handoff map[netip.Addr][]netip.Prefix
}

func newDesiredBuilder(cfg *config.Config, d *config.Desired, sec secrets, v view) *desiredBuilder {
	b := &desiredBuilder{cfg: cfg, d: d, v: v, h: newHomes(cfg), peerIdx: map[netip.Addr]int{},
		sole: soleRanges(cfg), vpcs: map[netip.Prefix]string{}, handoff: map[netip.Addr][]netip.Prefix{}}
	b.out = dataplane.Desired{
		PrivateKey: sec.privateKey,
		ListenPort: int(d.ListenPort),
		Addresses:  []netip.Prefix{netipx.Host(d.TunnelAddress)},
	}
	for _, p := range d.Peers {
		b.peerIdx[p.TunnelAddress] = len(b.out.Peers)
		b.out.Peers = append(b.out.Peers, dataplane.Peer{
			Name:            p.Name,
			PublicKey:       wgtypes.Key(p.PublicKey),
			Endpoint:        p.Endpoint,
			TunnelAddresses: []netip.Prefix{netipx.Host(p.TunnelAddress)},
			// Everything inside an accept range only the peer's VBRs may
			// announce into is homed at the peer: one AllowedIPs entry
			// for the range, not one per learned prefix, so 100,000
			// on-premises prefixes never rewrite the peer.
			AllowedIPs: slices.Clone(b.sole[p.TunnelAddress]),
		})
	}
	for _, n := range cfg.Networks {
		if n.Type == config.VPC {
			for _, c := range n.CIDRs {
				b.vpcs[c] = n.Region
			}
		}
	}
	return b
}

// allow homes p at the peer with tunnel address home; nothing for self.
func (b *desiredBuilder) allow(home netip.Addr, p netip.Prefix) {
	if i, ok := b.peerIdx[home]; ok {
		b.out.Peers[i].AllowedIPs = append(b.out.Peers[i].AllowedIPs, p)
	}
}

// remoteRoutes turns the learned routes into kernel routes (through the
// tunnel, or direct to a VBR's router) and homes what they carry.
func (b *desiredBuilder) remoteRoutes(buf *desiredBuf) {
	n, direct := 0, 0
	for _, r := range b.v.routes {
		n += len(r.NextHops)
		if r.Direct {
			direct++
		}
	}
	vias := reuse(buf.vias, n)
	b.out.Routes = reuse(buf.routes, len(b.v.routes)-direct)
	b.out.DirectRoutes = reuse(buf.direct, direct)
	// In map order: the dataplane's result does not depend on it, and
	// sorting 100,000 routes per reconcile cost more than building them.
	for _, r := range b.v.routes {
		if r.Direct {
			start := len(vias)
			vias = append(vias, r.NextHops...)
			b.out.DirectRoutes = append(b.out.DirectRoutes, dataplane.DirectRoute{Prefix: r.Prefix, Via: vias[start:len(vias):len(vias)]})
			b.homeLocal(r.Prefix, b.onPremCandidates(r))
			continue
		}
		start := len(vias)
		for _, nh := range r.NextHops {
			if _, ok := b.peerIdx[nh]; ok {
				vias = append(vias, nh)
			}
		}
		via := vias[start:len(vias):len(vias)]
		if len(via) == 0 {
			continue
		}
		b.out.Routes = append(b.out.Routes, r.Prefix)
		if region, ok := b.vpcs[r.Prefix]; ok {
			for _, piece := range b.h.vpcPieces(r.Prefix, region, func(a netip.Addr) bool { return slices.Contains(via, a) }) {
				b.allow(piece.home, piece.prefix)
			}
			continue
		}
		if b.inSoleRange(r.Prefix, via) {
			continue
		}
		b.allow(b.h.best(r.Prefix, via), r.Prefix)
	}
	buf.routes, buf.direct, buf.vias = b.out.Routes, b.out.DirectRoutes, vias
}

// inSoleRange reports whether p lies in a range only one of via may
// announce into: that peer's AllowedIPs hold the range already.
func (b *desiredBuilder) inSoleRange(p netip.Prefix, via []netip.Addr) bool {
	for _, g := range via {
		if netipx.CoveredBy(p, b.sole[g]) {
			return true
		}
	}
	return false
}

// onPremCandidates are the gateways that may be the home of an
// on-premises prefix this gateway learned from its own VBR: itself and
// the twins, up, that announce it too.
func (b *desiredBuilder) onPremCandidates(r routing.LearnedRoute) []netip.Addr {
	out := []netip.Addr{b.d.TunnelAddress}
	for _, g := range r.Gateways {
		if b.twinUp(g) {
			out = append(out, g)
		}
	}
	return out
}

// twinUp reports whether a is this gateway or a twin that can be a home:
// one whose handoff addresses BGP carries. Those routes, like the VPC
// CIDRs the other regions see, stay while the twin's agent restarts
// (graceful restart keeps them, its tunnels keep forwarding) and go when
// it dies, so every gateway agrees on who is up.
func (b *desiredBuilder) twinUp(a netip.Addr) bool {
	if a == b.d.TunnelAddress {
		return true
	}
	g, ok := b.h.byAddr[a]
	return ok && g.region == b.d.Region && len(b.v.lan[a]) > 0
}

// homeLocal homes a local prefix among candidates: at a twin it goes
// into the twin's AllowedIPs and is handed off to it.
func (b *desiredBuilder) homeLocal(p netip.Prefix, candidates []netip.Addr) {
	home := b.d.TunnelAddress
	if len(candidates) > 1 {
		home = b.h.best(p, candidates)
	}
	if home != b.d.TunnelAddress {
		b.allow(home, p)
		b.handoff[home] = append(b.handoff[home], p)
	}
}

// localPrefixes homes the pieces of the region's own VPC CIDRs.
func (b *desiredBuilder) localPrefixes() {
	for _, o := range b.d.Originate {
		for _, piece := range b.h.vpcPieces(o.Prefix, b.d.Region, b.twinUp) {
			if piece.home != b.d.TunnelAddress {
				b.allow(piece.home, piece.prefix)
				b.handoff[piece.home] = append(b.handoff[piece.home], piece.prefix)
			}
		}
	}
}

// finish sorts and dedups each peer's AllowedIPs and builds the handoffs
// of the twins whose LAN addresses are known (without one, a twin's
// sources take the tunnel from here, which its receivers refuse: the
// agent reports it).
func (b *desiredBuilder) finish() dataplane.Desired {
	for i := range b.out.Peers {
		a := b.out.Peers[i].AllowedIPs
		slices.SortFunc(a, netipx.ComparePrefix)
		b.out.Peers[i].AllowedIPs = slices.Compact(a)
	}
	for _, p := range b.d.Peers {
		srcs := b.handoff[p.TunnelAddress]
		if len(srcs) == 0 || len(b.v.lan[p.TunnelAddress]) == 0 {
			continue
		}
		slices.SortFunc(srcs, netipx.ComparePrefix)
		b.out.Handoffs = append(b.out.Handoffs, dataplane.Handoff{Twin: p.Name, Via: b.v.lan[p.TunnelAddress], Sources: slices.Compact(srcs)})
	}
	return b.out
}

// missingHandoffs names the twins whose BGP session is up but which
// announce no LAN address: they cannot be handed their prefixes' traffic,
// so this gateway takes them for down (and their receivers drop what they
// send for the prefixes the config deals them).
func missingHandoffs(d *config.Desired, v view) []string {
	var out []string
	for _, p := range d.Peers {
		if p.Region == d.Region && !v.down[p.Name] && len(v.lan[p.TunnelAddress]) == 0 {
			out = append(out, p.Name)
		}
	}
	return out
}

// soleRanges are, by gateway, the accept prefixes of its VBRs that no
// other gateway's VBR may announce into and that overlap no VPC CIDR:
// every prefix inside one has that gateway as its only candidate, hence
// its home.
func soleRanges(cfg *config.Config) map[netip.Addr][]netip.Prefix {
	type holder struct {
		addr netip.Addr
		vbrs []config.VBREntitlement
	}
	var holders []holder
	for _, g := range cfg.Gateways {
		if e := cfg.Entitlement(g.Name); len(e.VBRs) > 0 {
			holders = append(holders, holder{g.TunnelAddress, e.VBRs})
		}
	}
	out := map[netip.Addr][]netip.Prefix{}
	for _, h := range holders {
		for _, v := range h.vbrs {
			for _, a := range v.Accept {
				alone := true
				for _, o := range holders {
					if o.addr != h.addr && mayAnnounceInto(o.vbrs, a) {
						alone = false
					}
				}
				if alone && !overlapsVPC(cfg, a) && !slices.Contains(out[h.addr], a) {
					out[h.addr] = append(out[h.addr], a)
				}
			}
		}
	}
	return out
}

// mayAnnounceInto reports whether one of vbrs may announce a prefix
// inside a: one without an accept list, or one whose accept list
// overlaps a.
func mayAnnounceInto(vbrs []config.VBREntitlement, a netip.Prefix) bool {
	for _, e := range vbrs {
		if e.Any {
			return true
		}
		if _, ok := netipx.OverlapsAny(a, e.Accept); ok {
			return true
		}
	}
	return false
}

func overlapsVPC(cfg *config.Config, a netip.Prefix) bool {
	for _, n := range cfg.Networks {
		if n.Type != config.VPC {
			continue
		}
		if _, ok := netipx.OverlapsAny(a, n.CIDRs); ok {
			return true
		}
	}
	return false
}

// lanAddrs are the twins' LAN addresses by their tunnel address; a.mu is
// held.
func (a *Agent) lanAddrs() map[netip.Addr][]netip.Addr {
	out := map[netip.Addr][]netip.Addr{}
	add := func(p netip.Prefix, r routing.LearnedRoute) {
		for _, nh := range r.NextHops {
			if !slices.Contains(out[nh], p.Addr()) {
				out[nh] = append(out[nh], p.Addr())
			}
		}
	}
	for p, r := range a.handoffs {
		add(p, r)
	}
	if !a.synced {
		// After a restart, the addresses kept until BGP has them again:
		// the handoffs in place stay.
		for p, r := range a.staleHandoffs {
			add(p, r)
		}
	}
	for _, l := range out {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	return out
}

// connectedAndHandoff derives from the gateway's own addresses (outside
// its tunnel) the subnets connected to it, which are never learned, and
// its handoff addresses: those inside its region's VPC CIDRs.
func connectedAndHandoff(d *config.Desired, local []netip.Prefix) (connected []netip.Prefix, handoff []netip.Addr) {
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
		if r == region && netipx.Covers(a, p) {
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
		return netipx.ComparePrefix(a.Prefix, b.Prefix)
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
