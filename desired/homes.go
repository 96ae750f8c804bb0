package desired

import (
	"cmp"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/config"
)

// homes binds every CEN prefix to one gateway, its home: the prefix sits
// in the home's WireGuard AllowedIPs on every other gateway, so packets
// from it are accepted only when the home sends them, and packets to it
// are sent to the home. Every gateway computes the same homes from the
// config and from which gateways are up (see the dataplane docs):
//
//   - A VPC CIDR of a region with several gateways is cut into pieces,
//     dealt out to the region's gateways in proportion to their weight
//     (config.VPCPieces); a piece whose gateway is down goes to the best
//     of the live ones by weighted rendezvous hashing.
//   - Any other prefix (on-premises) goes to the best of the gateways
//     that announce it, by the same hashing.
//
// Rendezvous hashing never sends a piece around a loop even while two
// gateways disagree on who is up: each handoff goes to a gateway with a
// higher score for that piece.
type homes struct {
	cfg     *config.Config
	byAddr  map[netip.Addr]homeGateway
	byName  map[string]homeGateway
	regions map[string][]homeGateway // sorted by name
}

type homeGateway struct {
	name   string
	region string
	addr   netip.Addr
	weight uint32
}

// homedPrefix is a prefix and the tunnel address of its home.
type homedPrefix struct {
	prefix netip.Prefix
	home   netip.Addr
}

func newHomes(cfg *config.Config) homes {
	h := homes{cfg: cfg, byAddr: map[netip.Addr]homeGateway{}, byName: map[string]homeGateway{}, regions: map[string][]homeGateway{}}
	for _, g := range cfg.Gateways {
		hg := homeGateway{name: g.Name, region: g.Region, addr: g.TunnelAddress, weight: max(g.Weight, 1)}
		h.byAddr[g.TunnelAddress] = hg
		h.byName[g.Name] = hg
		h.regions[g.Region] = append(h.regions[g.Region], hg)
	}
	for r := range h.regions {
		slices.SortFunc(h.regions[r], func(a, b homeGateway) int { return cmp.Compare(a.name, b.name) })
	}
	return h
}

// vpcPieces gives each piece of cidr, a VPC CIDR of region, its home:
// the gateway config.VPCPieces dealt it, or, when that one is not up, the
// best of those that are. It returns nothing when none is up.
func (h homes) vpcPieces(cidr netip.Prefix, region string, up func(netip.Addr) bool) []homedPrefix {
	var live []netip.Addr
	for _, g := range h.regions[region] {
		if up(g.addr) {
			live = append(live, g.addr)
		}
	}
	if len(live) == 0 {
		return nil
	}
	pieces := h.cfg.VPCPieces(cidr, region)
	out := make([]homedPrefix, len(pieces))
	for i, p := range pieces {
		home := h.byName[p.Gateway].addr
		if !up(home) {
			home = h.best(p.Prefix, live)
		}
		out[i] = homedPrefix{prefix: p.Prefix, home: home}
	}
	return out
}

// best is the candidate with the highest weighted rendezvous score for
// key; the zero address when there is none.
func (h homes) best(key netip.Prefix, candidates []netip.Addr) netip.Addr {
	var best netip.Addr
	bestScore := math.Inf(-1)
	for _, c := range candidates {
		w := uint32(1)
		g, ok := h.byAddr[c]
		if ok {
			w = g.weight
		}
		s := score(key, g.name, c, w)
		if s > bestScore || (s == bestScore && c.Less(best)) {
			best, bestScore = c, s
		}
	}
	return best
}

// score is weighted rendezvous hashing (Schindelhauer and Schomaker): a
// uniform hash u in (0,1) of the key and the gateway, -weight/ln(u). The
// gateway with the highest score wins; the chance of each is its share of
// the total weight.
func score(key netip.Prefix, name string, addr netip.Addr, weight uint32) float64 {
	f := fnv.New64a()
	b, _ := key.MarshalBinary()
	f.Write(b)
	f.Write([]byte(name))
	a := addr.As16()
	f.Write(a[:])
	x := f.Sum64()
	// FNV's low bits depend only on the input's low bits: mix them all in
	// (murmur3's finaliser), then take the top 53 bits.
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -float64(weight) / math.Log(u)
}
