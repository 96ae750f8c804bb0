package desired

import (
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/netipx"
)

// TunnelOf turns the gateway's part of the config and what it knows into
// what its WireGuard device, kernel routes and handoffs should be.
func TunnelOf(cfg *config.Config, d *config.Desired, sec Secrets, v View) config.TunnelState {
	return TunnelInto(cfg, d, sec, v, nil)
}

// Buffers keep the route lists of the last tunnel state for the next one to
// fill (the dataplane copies what it keeps): one entry per learned route,
// rebuilt on every reconcile.
type Buffers struct {
	routes []netip.Prefix
	direct []config.DirectRoute
	vias   []netip.Addr
}

// TunnelInto is TunnelOf, filling buf's memory when it is not nil; the
// result is valid until buf's next use.
func TunnelInto(cfg *config.Config, d *config.Desired, sec Secrets, v View, buf *Buffers) config.TunnelState {
	if buf == nil {
		buf = &Buffers{}
	}
	b := newTunnelBuilder(cfg, d, sec, v)
	b.remoteRoutes(buf)
	b.localPrefixes()
	return b.finish()
}

// tunnelBuilder gathers a tunnel state: peers by tunnel address, the
// prefixes homed at each, and the local prefixes homed at each twin.
type tunnelBuilder struct {
	cfg     *config.Config
	d       *config.Desired
	v       View
	h       homes
	out     config.TunnelState
	peerIdx map[netip.Addr]int // tunnel address -> index in out.Peers
	sole    map[netip.Addr][]netip.Prefix
	vpcs    map[netip.Prefix]string // every VPC CIDR -> its region
	handoff map[netip.Addr][]netip.Prefix
}

func newTunnelBuilder(cfg *config.Config, d *config.Desired, sec Secrets, v View) *tunnelBuilder {
	b := &tunnelBuilder{cfg: cfg, d: d, v: v, h: newHomes(cfg), peerIdx: map[netip.Addr]int{},
		sole: soleRanges(cfg), vpcs: map[netip.Prefix]string{}, handoff: map[netip.Addr][]netip.Prefix{}}
	b.out = config.TunnelState{
		PrivateKey: sec.PrivateKey,
		ListenPort: int(d.ListenPort),
		Addresses:  TunnelHosts(d.TunnelAddress),
	}
	for _, o := range d.Originate {
		b.out.LANPrefixes = append(b.out.LANPrefixes, o.Prefix)
	}
	for _, v := range d.VBRs {
		b.out.VBRNeighbors = append(b.out.VBRNeighbors, v.Neighbor)
	}
	for _, p := range d.Peers {
		b.peerIdx[p.TunnelAddress] = len(b.out.Peers)
		b.out.Peers = append(b.out.Peers, config.TunnelPeer{
			Name:            p.Name,
			PublicKey:       wgtypes.Key(p.PublicKey),
			Endpoint:        p.Endpoint,
			TunnelAddresses: TunnelHosts(p.TunnelAddress),
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

// TunnelHosts are a gateway's tunnel addresses as host prefixes: the
// configured IPv4 one and the IPv6 one derived from it.
func TunnelHosts(a4 netip.Addr) []netip.Prefix {
	out := []netip.Prefix{netipx.Host(a4)}
	if a6 := config.TunnelAddress6(a4); a6.IsValid() {
		out = append(out, netipx.Host(a6))
	}
	return out
}

// allow homes p at the peer with tunnel address home; nothing for self.
func (b *tunnelBuilder) allow(home netip.Addr, p netip.Prefix) {
	if i, ok := b.peerIdx[home]; ok {
		b.out.Peers[i].AllowedIPs = append(b.out.Peers[i].AllowedIPs, p)
	}
}

// remoteRoutes turns the learned routes into kernel routes (through the
// tunnel, or direct to a VBR's router) and homes what they carry.
func (b *tunnelBuilder) remoteRoutes(buf *Buffers) {
	n, direct := 0, 0
	for _, r := range b.v.Routes {
		n += len(r.NextHops)
		if r.Direct {
			direct++
		}
	}
	vias := reuse(buf.vias, n)
	b.out.Routes = reuse(buf.routes, len(b.v.Routes)-direct)
	b.out.DirectRoutes = reuse(buf.direct, direct)
	// In map order: the dataplane's result does not depend on it, and
	// sorting 100,000 routes per reconcile cost more than building them.
	for _, r := range b.v.Routes {
		if r.Direct {
			start := len(vias)
			vias = append(vias, r.NextHops...)
			b.out.DirectRoutes = append(b.out.DirectRoutes, config.DirectRoute{Prefix: r.Prefix, Via: vias[start:len(vias):len(vias)]})
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
func (b *tunnelBuilder) inSoleRange(p netip.Prefix, via []netip.Addr) bool {
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
func (b *tunnelBuilder) onPremCandidates(r config.LearnedRoute) []netip.Addr {
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
func (b *tunnelBuilder) twinUp(a netip.Addr) bool {
	if a == b.d.TunnelAddress {
		return true
	}
	g, ok := b.h.byAddr[a]
	return ok && g.region == b.d.Region && len(b.v.LAN[a]) > 0
}

// homeLocal homes a local prefix among candidates: at a twin it goes
// into the twin's AllowedIPs and is handed off to it.
func (b *tunnelBuilder) homeLocal(p netip.Prefix, candidates []netip.Addr) {
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
func (b *tunnelBuilder) localPrefixes() {
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
func (b *tunnelBuilder) finish() config.TunnelState {
	for i := range b.out.Peers {
		a := b.out.Peers[i].AllowedIPs
		slices.SortFunc(a, netipx.ComparePrefix)
		b.out.Peers[i].AllowedIPs = slices.Compact(a)
	}
	for _, p := range b.d.Peers {
		srcs := b.handoff[p.TunnelAddress]
		if len(srcs) == 0 || len(b.v.LAN[p.TunnelAddress]) == 0 {
			continue
		}
		slices.SortFunc(srcs, netipx.ComparePrefix)
		b.out.Handoffs = append(b.out.Handoffs, config.Handoff{Twin: p.Name, Via: b.v.LAN[p.TunnelAddress], Sources: slices.Compact(srcs)})
	}
	return b.out
}

// MissingHandoffs names the twins whose BGP session is up but which
// announce no LAN address: they cannot be handed their prefixes' traffic,
// so this gateway takes them for down (and their receivers drop what they
// send for the prefixes the config deals them).
func MissingHandoffs(d *config.Desired, v View) []string {
	var out []string
	for _, p := range d.Peers {
		if p.Region == d.Region && !v.Down[p.Name] && len(v.LAN[p.TunnelAddress]) == 0 {
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
		if _, ok := netipx.OverlapsAny(a, n.CIDRs); ok {
			return true
		}
	}
	return false
}

// reuse returns s emptied when it can hold n, else a new slice for n.
func reuse[T any](s []T, n int) []T {
	if cap(s) >= n {
		clear(s[:cap(s)])
		return s[:0]
	}
	return make([]T, 0, n)
}

// LANAddresses gathers the twins' LAN addresses, by twin tunnel address,
// from their handoff announcements (Route.Handoff) in each of sets.
func LANAddresses(sets ...Routes) map[netip.Addr][]netip.Addr {
	out := map[netip.Addr][]netip.Addr{}
	for _, routes := range sets {
		for p, r := range routes {
			for _, nh := range r.NextHops {
				if !slices.Contains(out[nh], p.Addr()) {
					out[nh] = append(out[nh], p.Addr())
				}
			}
		}
	}
	for _, l := range out {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	return out
}
