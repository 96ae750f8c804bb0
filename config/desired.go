package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/opencen/opencen/internal/netipx"
)

// Desired is what one gateway should have, computed from the config alone
// (learned routes are folded in by the agent). It is plain data: the
// dataplane, routing and shaping subsystems each take the part they need.
type Desired struct {
	Instance       string
	InstanceASN    uint32
	Gateway        string
	Region         string
	Area           string
	TunnelAddress  netip.Addr
	ListenPort     uint16
	PrivateKeyFile string
	// Peers is every other gateway of the instance, by name.
	Peers []Peer
	// Originate is what this gateway announces: its region's VPC CIDRs.
	Originate []Origin
	// Egress is this gateway's rate toward every other region that has a
	// gateway, by region. Traffic within the region is unlimited and has no
	// entry.
	Egress []EgressRate
	// VBRs are the eBGP sessions this gateway holds.
	VBRs []VBRSessionState
}

// Peer is another gateway, with what it may announce.
type Peer struct {
	Name          string
	Region        string
	Endpoint      netip.AddrPort
	PublicKey     Key
	TunnelAddress netip.Addr
	Entitled      Entitlement
}

// Entitlement is what a gateway may originate: its region's VPC CIDRs, and
// what the on-premises routers of the VBRs it holds may announce.
type Entitlement struct {
	VPCs []Origin
	VBRs []VBREntitlement
}

// VBREntitlement is one VBR's allowance. Any is true when its accept list
// is omitted; otherwise each Accept entry admits its more-specifics.
type VBREntitlement struct {
	Network     string
	Accept      []netip.Prefix
	Any         bool
	MaxPrefixes uint32 // the VBR session's own limit
}

// What a gateway may send beyond its prefixes: a few handoff addresses per
// VPC CIDR (one per LAN address of the gateway inside it), and slack for
// what a config change adds before every gateway has it.
const (
	handoffsPerVPCCIDR = 16
	gatewayLimitSlack  = 64
)

// MaxPrefixes is the most a gateway with this entitlement can legitimately
// announce in one address family: its VPC CIDRs with their handoff
// addresses, and everything its VBRs may pass on.
func (e Entitlement) MaxPrefixes() uint32 {
	n := uint64(len(e.VPCs))*(1+handoffsPerVPCCIDR) + gatewayLimitSlack
	for _, v := range e.VBRs {
		n += uint64(v.MaxPrefixes)
	}
	return uint32(min(n, math.MaxUint32))
}

// Allows reports whether the gateway may originate prefix, and for which
// network. VPC CIDRs match exactly; VBR prefixes by their accept list. A
// VBR with no accept list allows anything here: conflicts with the
// instance's own CIDRs are the routing layer's to refuse (rule 6).
func (e Entitlement) Allows(prefix netip.Prefix) (network string, ok bool) {
	for _, o := range e.VPCs {
		if o.Prefix == prefix {
			return o.Network, true
		}
	}
	for _, v := range e.VBRs {
		if v.Any {
			return v.Network, true
		}
		if netipx.CoveredBy(prefix, v.Accept) {
			return v.Network, true
		}
	}
	return "", false
}

// Origin is a prefix and the network it belongs to.
type Origin struct {
	Prefix  netip.Prefix
	Network string
}

// EgressRate is a gateway's share of its region's bandwidth toward Region.
type EgressRate struct {
	Region   string
	Rate     Bandwidth
	PairRate Bandwidth // the whole pair's bandwidth, ahead of the split
	Source   string    // SourcePackage or SourceDefault
	Package  string
}

// VBRSessionState is an eBGP session with an on-premises router.
type VBRSessionState struct {
	Network string
	VBRSession
}

// DesiredOptions are the run-time facts the derivation takes besides the
// config.
type DesiredOptions struct {
	// Down names gateways known to be down: their region's bandwidth is
	// split among the others (SPEC section 3).
	Down map[string]bool
}

// Desired computes one gateway's desired state. It is a pure function of
// the config and the options.
func (c *Config) Desired(gateway string, opts DesiredOptions) (*Desired, error) {
	self, ok := c.Gateway(gateway)
	if !ok {
		return nil, fmt.Errorf("gateway %q is not in %s; it has %s", gateway, c.File, strings.Join(gatewayNames(c), ", "))
	}
	region, _ := c.Region(self.Region)
	d := &Desired{
		Instance:       c.Instance.Name,
		InstanceASN:    c.Instance.ASN,
		Gateway:        self.Name,
		Region:         self.Region,
		Area:           region.Area,
		TunnelAddress:  self.TunnelAddress,
		ListenPort:     self.Endpoint.Port(),
		PrivateKeyFile: self.PrivateKeyFile,
		Originate:      c.vpcOrigins(self.Region),
	}
	for _, g := range c.Gateways {
		if g.Name == self.Name {
			continue
		}
		d.Peers = append(d.Peers, Peer{
			Name:          g.Name,
			Region:        g.Region,
			Endpoint:      g.Endpoint,
			PublicKey:     g.PublicKey,
			TunnelAddress: g.TunnelAddress,
			Entitled:      c.Entitlement(g.Name),
		})
	}
	slices.SortFunc(d.Peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })

	var totalWeight uint64
	for _, g := range c.GatewaysIn(self.Region) {
		if g.Name == self.Name || !opts.Down[g.Name] {
			totalWeight += uint64(g.Weight)
		}
	}
	for _, r := range c.gatewayRegions() {
		if r == self.Region {
			continue
		}
		p := c.Pair(self.Region, r)
		rate := p.Bandwidth
		if p.Source == SourcePackage {
			rate = share(p.Bandwidth, uint64(self.Weight), totalWeight)
		}
		d.Egress = append(d.Egress, EgressRate{Region: r, Rate: rate, PairRate: p.Bandwidth, Source: p.Source, Package: p.Package})
	}
	for _, n := range c.Networks {
		if n.Type == VBR && n.Gateway == self.Name && n.BGP != nil {
			d.VBRs = append(d.VBRs, VBRSessionState{Network: n.Name, VBRSession: *n.BGP})
		}
	}
	return d, nil
}

// Entitlement returns what a gateway may originate.
func (c *Config) Entitlement(gateway string) Entitlement {
	g, ok := c.Gateway(gateway)
	if !ok {
		return Entitlement{}
	}
	e := Entitlement{VPCs: c.vpcOrigins(g.Region)}
	for _, n := range c.Networks {
		if n.Type == VBR && n.Gateway == g.Name && n.BGP != nil {
			e.VBRs = append(e.VBRs, VBREntitlement{Network: n.Name, Accept: slices.Clone(n.BGP.Accept), Any: n.BGP.AcceptAny,
				MaxPrefixes: n.BGP.MaxPrefixes})
		}
	}
	return e
}

func (c *Config) vpcOrigins(region string) []Origin {
	var out []Origin
	for _, n := range c.Networks {
		if n.Type == VPC && n.Region == region {
			for _, p := range n.CIDRs {
				out = append(out, Origin{Prefix: p, Network: n.Name})
			}
		}
	}
	slices.SortFunc(out, func(a, b Origin) int { return netipx.ComparePrefix(a.Prefix, b.Prefix) })
	return out
}

func (c *Config) gatewayRegions() []string {
	var out []string
	for _, g := range c.Gateways {
		if !slices.Contains(out, g.Region) {
			out = append(out, g.Region)
		}
	}
	slices.Sort(out)
	return out
}
