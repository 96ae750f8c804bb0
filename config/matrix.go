package config

import (
	"math/bits"
	"slices"
)

// Where a pair's bandwidth comes from.
const (
	SourcePackage = "package"
	SourceDefault = "default"
)

// PairBandwidth is the effective bandwidth of one region pair, each
// direction on its own (SPEC section 2, rule 5).
type PairBandwidth struct {
	Regions   [2]string `json:"regions"` // lexical order
	Bandwidth Bandwidth `json:"bandwidth_bps"`
	Source    string    `json:"source"`
	Package   string    `json:"package,omitempty"`
}

// UsedRegions returns, sorted, the regions that have a gateway or a network.
func (c *Config) UsedRegions() []string {
	seen := map[string]bool{}
	for _, g := range c.Gateways {
		seen[g.Region] = true
	}
	for _, n := range c.Networks {
		seen[n.Region] = true
	}
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Pair returns the bandwidth between two distinct regions: its
// interconnection's, or the 1 Kbps default.
func (c *Config) Pair(a, b string) PairBandwidth {
	key := PairOf(a, b)
	for _, ic := range c.Interconnections {
		if PairOf(ic.Regions[0], ic.Regions[1]) == key {
			return PairBandwidth{Regions: key, Bandwidth: ic.Bandwidth, Source: SourcePackage, Package: ic.Package}
		}
	}
	return PairBandwidth{Regions: key, Bandwidth: DefaultBandwidth, Source: SourceDefault}
}

// Matrix is the effective bandwidth of every unordered pair of distinct
// regions that have a gateway or a network, sorted by pair. Same-region
// traffic is unlimited and has no row.
func (c *Config) Matrix() []PairBandwidth {
	regions := c.UsedRegions()
	var out []PairBandwidth
	for i, a := range regions {
		for _, b := range regions[i+1:] {
			out = append(out, c.Pair(a, b))
		}
	}
	return out
}

// share returns bw * weight / total without overflow, and at least 1 bps so
// that no gateway is left with a rate of zero.
func share(bw Bandwidth, weight, total uint64) Bandwidth {
	if total == 0 {
		return bw
	}
	hi, lo := bits.Mul64(uint64(bw), weight)
	q, _ := bits.Div64(hi, lo, total) // weight <= total, so hi < total
	return Bandwidth(max(q, 1))
}
