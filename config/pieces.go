package config

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/internal/netipx"
)

// Piece is one part of a VPC CIDR and the gateway of its region dealt it.
type Piece struct {
	Prefix  netip.Prefix
	Gateway string
}

// PieceCount is how many pieces a VPC CIDR of a region with n gateways is
// cut into: one for a lone gateway, else the power of two at or above 8n
// (at least 16, at most 256), so that weights are honoured closely and
// neighbouring addresses have different gateways.
func PieceCount(n int) int {
	if n <= 1 {
		return 1
	}
	c := 16
	for c < 8*n && c < 256 {
		c *= 2
	}
	return c
}

// VPCPieces cuts cidr, a VPC CIDR of region, into PieceCount pieces (fewer
// when it holds fewer addresses) and deals them to the region's gateways
// in proportion to their weight, interleaved (smooth weighted round robin
// over the gateways in name order): with equal weights the gateways take
// turns. This is the static part of where a VPC's traffic enters and
// leaves the CEN (each piece's home); which gateways are up decides the
// rest (a dead gateway's pieces go to the others).
func (c *Config) VPCPieces(cidr netip.Prefix, region string) []Piece {
	gws := slices.Clone(c.GatewaysIn(region))
	if len(gws) == 0 {
		return nil
	}
	slices.SortFunc(gws, func(a, b *Gateway) int { return cmp.Compare(a.Name, b.Name) })
	parts := netipx.Split(cidr, bitsFor(PieceCount(len(gws))))
	current := make([]int64, len(gws))
	var total int64
	for _, g := range gws {
		total += int64(max(g.Weight, 1))
	}
	out := make([]Piece, len(parts))
	for i, p := range parts {
		best := 0
		for j, g := range gws {
			current[j] += int64(max(g.Weight, 1))
			if current[j] > current[best] {
				best = j
			}
		}
		current[best] -= total
		out[i] = Piece{Prefix: p, Gateway: gws[best].Name}
	}
	return out
}

// bitsFor is log2 of a power of two.
func bitsFor(n int) int {
	k := 0
	for 1<<k < n {
		k++
	}
	return k
}
