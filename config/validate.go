package config

import (
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/internal/netipx"
)

// validate checks every rule of SPEC section 2 and the cross-references of
// section 3 that need no host. It records each problem at the offending
// value; for a duplicate or an overlap, at its second occurrence.
func validate(p *problems, c *Config) {
	v := validator{p: p, c: c}
	v.catalogue()
	v.gateways()
	v.networks()
	v.packages()
	v.interconnections()
}

type validator struct {
	p *problems
	c *Config
}

func (v validator) catalogue() {
	c := v.c
	c.regions = map[string]Region{}
	c.areas = map[string]Area{}
	for _, a := range BuiltinAreas() {
		c.areas[a.ID] = a
		for _, r := range a.Regions {
			c.regions[r.ID] = r
		}
	}
	for _, a := range c.Areas {
		if a.ID == "" {
			continue
		}
		if prev, dup := c.areas[a.ID]; dup {
			if prev.BuiltIn {
				v.p.add(v.areaPos(a), "area %s is built in; give your own area another id", a.ID)
			} else {
				v.p.add(v.areaPos(a), "area %s is defined twice", a.ID)
			}
			continue
		}
		c.areas[a.ID] = a
		for _, r := range a.Regions {
			if r.ID == "" {
				continue
			}
			if prev, dup := c.regions[r.ID]; dup {
				v.p.add(v.regionPos(r), "region %s is already in area %s; region ids are unique across all areas", r.ID, prev.Area)
				continue
			}
			c.regions[r.ID] = r
		}
	}
}

func (v validator) areaPos(a Area) Pos     { return a.pos }
func (v validator) regionPos(r Region) Pos { return r.pos }

func (v validator) regionKnown(id string, at Pos, what string) bool {
	if id == "" {
		return false
	}
	if _, ok := v.c.regions[id]; ok {
		return true
	}
	v.p.add(at, "%s %s is not a known region%s; add it under areas to define your own", what, id, suggest(id, slices.Collect(maps.Keys(v.c.regions))))
	return false
}

func (v validator) gateways() {
	c := v.c
	names := map[string]Pos{}
	endpoints := map[netip.AddrPort]string{}
	keys := map[Key]string{}
	tunnels := map[netip.Addr]string{}
	// Configured addresses are claimed first so that a derived address that
	// collides with one is the one reported.
	for i := range c.Gateways {
		g := &c.Gateways[i]
		if g.TunnelAddress.IsValid() {
			if other, dup := tunnels[g.TunnelAddress]; dup {
				v.p.add(g.pos.of("tunnel_address"), "gateway %s tunnel_address %s is already gateway %s's; each gateway needs its own", g.Name, g.TunnelAddress, other)
			} else {
				tunnels[g.TunnelAddress] = g.Name
			}
		}
	}
	for i := range c.Gateways {
		g := &c.Gateways[i]
		duplicate := false
		if g.Name != "" {
			if _, duplicate = names[g.Name]; duplicate {
				v.p.add(g.pos.of("name"), "gateway name %s is used twice; gateway names are unique", g.Name)
			}
			names[g.Name] = g.pos.of("name")
		}
		v.regionKnown(g.Region, g.pos.of("region"), "gateway "+g.Name+" region")
		if g.Endpoint.IsValid() {
			if other, dup := endpoints[g.Endpoint]; dup {
				v.p.add(g.pos.of("endpoint"), "gateway %s endpoint %s is already gateway %s's; each gateway needs its own address:port", g.Name, g.Endpoint, other)
			}
			endpoints[g.Endpoint] = g.Name
		}
		if _, set := g.pos["public_key"]; set && g.PublicKey != (Key{}) {
			if other, dup := keys[g.PublicKey]; dup {
				v.p.add(g.pos.of("public_key"), "gateway %s public_key is already gateway %s's; each gateway needs its own key pair", g.Name, other)
			}
			keys[g.PublicKey] = g.Name
		}
		if !g.TunnelAddress.IsValid() && g.Name != "" && !duplicate {
			if _, set := g.pos["tunnel_address"]; set {
				continue // already reported as malformed
			}
			g.TunnelAddress, g.TunnelAddressDerived = DeriveTunnelAddress(g.Name), true
			if other, dup := tunnels[g.TunnelAddress]; dup {
				v.p.add(g.pos.of("name"), "gateway %s's derived tunnel address %s collides with gateway %s's; set tunnel_address for one of them", g.Name, g.TunnelAddress, other)
			} else {
				tunnels[g.TunnelAddress] = g.Name
			}
		}
	}
}

// TunnelPrefix is the range tunnel addresses are derived from: the shared
// address space of RFC 6598, which customer networks rarely use.
var TunnelPrefix = netip.MustParsePrefix("100.64.0.0/10")

// DeriveTunnelAddress gives a gateway with no tunnel_address an overlay
// address that depends on its name alone, so adding, removing or reordering
// other gateways never renumbers it. A collision is a config error that
// names both gateways.
func DeriveTunnelAddress(gateway string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(gateway))
	host := h.Sum32() & (1<<22 - 1)
	// Avoid .0 and .255, which some tools treat as network or broadcast.
	if last := host & 0xff; last == 0 || last == 0xff {
		host ^= 1
	}
	base := TunnelPrefix.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// TunnelPrefix6 holds the gateways' IPv6 tunnel addresses, each the IPv4
// tunnel address embedded in its last 32 bits (RFC 6052 style), so the two
// never disagree. fd63:656e is "cen" in a unique local prefix.
var TunnelPrefix6 = netip.MustParsePrefix("fd63:656e::/96")

// TunnelAddress6 is the IPv6 tunnel address of the gateway whose IPv4
// tunnel address is a4.
func TunnelAddress6(a4 netip.Addr) netip.Addr {
	if !a4.Is4() {
		return netip.Addr{}
	}
	b := TunnelPrefix6.Addr().As16()
	v4 := a4.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

type ownedPrefix struct {
	prefix  netip.Prefix
	network string
	at      Pos
}

func (v validator) networks() {
	c := v.c
	names := map[string]bool{}
	cidrs := make([]ownedPrefix, 0, len(c.Networks))
	sessions := map[string]string{} // gateway/neighbor -> network
	for i := range c.Networks {
		n := &c.Networks[i]
		if n.Name != "" {
			if names[n.Name] {
				v.p.add(n.pos.of("name"), "network name %s is used twice; network names are unique", n.Name)
			}
			names[n.Name] = true
		}
		regionOK := v.regionKnown(n.Region, n.pos.of("region"), "network "+n.Name+" region")
		gws := c.GatewaysIn(n.Region)
		if regionOK && len(gws) == 0 {
			v.p.add(n.pos.of("region"), "network %s is in region %s, which has no gateway; add a gateway there or move the network", n.Name, n.Region)
		}
		cidrs = v.networkCIDRs(n, cidrs)
		if n.Type == VBR {
			v.vbrGateway(n, gws)
			v.vbrSession(n, sessions)
		}
	}
	v.cidrOverlaps(cidrs)
	v.cenAddressesOutside(cidrs)
}

// networkCIDRs checks n's CIDRs on their own and returns cidrs with them
// added; overlaps are found once every network's are in (cidrOverlaps).
func (v validator) networkCIDRs(n *Network, cidrs []ownedPrefix) []ownedPrefix {
	for j, p := range n.CIDRs {
		at := n.cidrPos[j]
		if p.Bits() == 0 {
			v.p.add(at, "network %s cidr %s is a default route; a VPC's CIDRs must be specific", n.Name, p)
			continue
		}
		cidrs = append(cidrs, ownedPrefix{prefix: p, network: n.Name, at: at})
	}
	return cidrs
}

// cidrOverlaps reports every CIDR that overlaps one ahead of it in the
// file, at the later one, naming the first it overlaps.
func (v validator) cidrOverlaps(cidrs []ownedPrefix) {
	prefixes := make([]netip.Prefix, len(cidrs))
	for i, o := range cidrs {
		prefixes[i] = o.prefix
	}
	for i, j := range netipx.FirstOverlaps(prefixes) {
		if j < 0 {
			continue
		}
		p, o := cidrs[i], cidrs[j]
		if o.network == p.network {
			v.p.add(p.at, "network %s cidr %s overlaps its own cidr %s", p.network, p.prefix, o.prefix)
		} else {
			v.p.add(p.at, "network %s cidr %s overlaps network %s's cidr %s: a route conflict; give them disjoint CIDRs", p.network, p.prefix, o.network, o.prefix)
		}
	}
}

// vbrGateway checks (or, in a region with one gateway, fills in) the
// gateway holding a VBR's session.
func (v validator) vbrGateway(n *Network, gws []*Gateway) {
	c := v.c
	switch {
	case n.Gateway != "":
		g, ok := c.Gateway(n.Gateway)
		if !ok {
			v.p.add(n.pos.of("gateway"), "network %s gateway %s is not a gateway of this instance%s", n.Name, n.Gateway, suggest(n.Gateway, gatewayNames(c)))
		} else if g.Region != n.Region {
			v.p.add(n.pos.of("gateway"), "network %s gateway %s is in region %s, not the VBR's region %s; pick one of %s's gateways", n.Name, g.Name, g.Region, n.Region, n.Region)
		}
	case len(gws) == 1:
		n.Gateway = gws[0].Name
	case len(gws) > 1:
		v.p.add(n.pos.of("region"), "network %s: region %s has %d gateways; say which holds the BGP session with gateway: %s", n.Name, n.Region, len(gws), gws[0].Name)
	}
}

// vbrSession checks a VBR's BGP session: eBGP, and one network per
// neighbor of a gateway.
func (v validator) vbrSession(n *Network, sessions map[string]string) {
	b := n.BGP
	if b == nil {
		return
	}
	if b.PeerASN != 0 && b.PeerASN == v.c.Instance.ASN {
		v.p.add(b.pos.of("peer_asn"), "network %s bgp peer_asn %d is the instance's own ASN; a VBR session is eBGP, so the on-premises router needs another ASN", n.Name, b.PeerASN)
	}
	if b.Neighbor.IsValid() && n.Gateway != "" {
		key := n.Gateway + "/" + b.Neighbor.String()
		if other, dup := sessions[key]; dup {
			v.p.add(b.pos.of("neighbor"), "network %s bgp neighbor %s on gateway %s is already network %s's session", n.Name, b.Neighbor, n.Gateway, other)
		}
		sessions[key] = n.Name
	}
}

// cenAddressesOutside keeps the addresses the CEN itself uses (VBR
// neighbors, tunnel addresses, endpoints) outside the networks it routes.
func (v validator) cenAddressesOutside(cidrs []ownedPrefix) {
	c := v.c
	for i := range c.Networks {
		n := &c.Networks[i]
		if n.BGP == nil || !n.BGP.Neighbor.IsValid() {
			continue
		}
		if o, in := within(cidrs, n.BGP.Neighbor); in {
			v.p.add(n.BGP.pos.of("neighbor"), "network %s bgp neighbor %s lies inside network %s's cidr %s; the on-premises router is reached directly, not across the CEN", n.Name, n.BGP.Neighbor, o.network, o.prefix)
		}
	}
	for i := range c.Gateways {
		g := &c.Gateways[i]
		at, hint := g.pos.of("tunnel_address"), "pick an address outside every network's CIDRs"
		if g.TunnelAddressDerived {
			at, hint = g.pos.of("name"), "set tunnel_address outside every network's CIDRs"
		}
		if o, in := within(cidrs, g.TunnelAddress); in {
			v.p.add(at, "gateway %s tunnel address %s lies inside network %s's cidr %s; %s", g.Name, g.TunnelAddress, o.network, o.prefix, hint)
		}
		if a6 := TunnelAddress6(g.TunnelAddress); a6.IsValid() {
			if o, in := within(cidrs, a6); in {
				v.p.add(at, "gateway %s's IPv6 tunnel address %s lies inside network %s's cidr %s; keep IPv6 CIDRs outside %s", g.Name, a6, o.network, o.prefix, TunnelPrefix6)
			}
		}
		if o, in := within(cidrs, g.Endpoint.Addr()); in {
			v.p.add(g.pos.of("endpoint"), "gateway %s endpoint %s lies inside network %s's cidr %s; the underlay must stay outside the CEN's CIDRs", g.Name, g.Endpoint.Addr(), o.network, o.prefix)
		}
	}
}

func within(prefixes []ownedPrefix, a netip.Addr) (ownedPrefix, bool) {
	if !a.IsValid() {
		return ownedPrefix{}, false
	}
	for _, o := range prefixes {
		if o.prefix.Contains(a) {
			return o, true
		}
	}
	return ownedPrefix{}, false
}

func gatewayNames(c *Config) []string {
	out := make([]string, len(c.Gateways))
	for i, g := range c.Gateways {
		out[i] = g.Name
	}
	return out
}

func (v validator) packages() {
	names := map[string]bool{}
	for i := range v.c.Packages {
		pk := &v.c.Packages[i]
		if pk.Name != "" {
			if names[pk.Name] {
				v.p.add(pk.pos.of("name"), "bandwidth package name %s is used twice; package names are unique", pk.Name)
			}
			names[pk.Name] = true
		}
		for j, a := range pk.Areas {
			if a == "" {
				continue
			}
			if _, ok := v.c.areas[a]; !ok {
				v.p.add(pk.pos.of(areaKey(j)), "bandwidth package %s area %s is not a known area%s", pk.Name, a, suggest(a, slices.Collect(maps.Keys(v.c.areas))))
			}
		}
	}
}

func areaKey(i int) string   { return []string{"areas.0", "areas.1"}[i] }
func regionKey(i int) string { return []string{"regions.0", "regions.1"}[i] }

func (v validator) interconnections() {
	c := v.c
	type drawn struct {
		pkg  string
		line int
	}
	pairs := map[[2]string]drawn{}
	sums := map[string]Bandwidth{}
	crossed := map[string]Pos{} // package -> the interconnection that took it over
	for i := range c.Interconnections {
		ic := &c.Interconnections[i]
		a, b := ic.Regions[0], ic.Regions[1]
		if a == "" || b == "" {
			continue
		}
		known := v.regionKnown(a, ic.pos.of(regionKey(0)), "interconnection region")
		known = v.regionKnown(b, ic.pos.of(regionKey(1)), "interconnection region") && known
		if a == b {
			v.p.add(ic.pos.of(regionKey(1)), "interconnection joins region %s to itself; same-region traffic is never limited and needs no interconnection", a)
			continue
		}
		key := PairOf(a, b)
		if prev, dup := pairs[key]; dup {
			if prev.pkg == ic.Package {
				v.p.add(ic.pos.of("regions"), "region pair %s<->%s is listed twice (first at line %d); give it one interconnection", key[0], key[1], prev.line)
			} else {
				v.p.add(ic.pos.of("regions"), "region pair %s<->%s already draws from package %s (line %d); a pair draws from at most one package", key[0], key[1], prev.pkg, prev.line)
			}
			continue
		}
		pairs[key] = drawn{ic.Package, ic.pos.of("regions").Line}
		if ic.Package == "" {
			continue
		}
		pk := c.pkg(ic.Package)
		if pk == nil {
			v.p.add(ic.pos.of("package"), "interconnection %s<->%s draws from package %s, which is not defined%s", a, b, ic.Package, suggest(ic.Package, packageNames(c)))
			continue
		}
		if known {
			ra, rb := c.regions[a].Area, c.regions[b].Area
			pa, pb := pk.Areas[0], pk.Areas[1]
			if !(ra == pa && rb == pb || ra == pb && rb == pa) {
				v.p.add(ic.pos.of("package"), "interconnection %s<->%s joins areas %s and %s, but package %s is for %s and %s; use a package bought for %s + %s", a, b, ra, rb, pk.Name, pa, pb, ra, rb)
				continue
			}
		}
		if ic.Bandwidth == 0 || pk.Bandwidth == 0 {
			continue
		}
		prev := sums[pk.Name]
		sums[pk.Name] = prev + ic.Bandwidth
		if prev <= pk.Bandwidth && prev+ic.Bandwidth > pk.Bandwidth {
			crossed[pk.Name] = ic.pos.of("bandwidth")
		}
	}
	for name, at := range crossed {
		v.p.add(at, "interconnections drawn from package %s sum to %s, above its bandwidth of %s; lower them or buy a larger package", name, sums[name], c.pkg(name).Bandwidth)
	}
}

func (c *Config) pkg(name string) *Package {
	for i := range c.Packages {
		if c.Packages[i].Name == name {
			return &c.Packages[i]
		}
	}
	return nil
}

func packageNames(c *Config) []string {
	out := make([]string, len(c.Packages))
	for i, p := range c.Packages {
		out[i] = p.Name
	}
	return out
}

// PairOf returns a region pair in lexical order, the form pairs are keyed
// and printed in.
func PairOf(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}
