package desired

import (
	"net/netip"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/netipx"
)

// ShapingOf is what the shaper should enforce: this gateway's rate
// toward every other region, and which prefix lives in which region (its
// own region included, so the longest match decides).
func ShapingOf(cfg *config.Config, d *config.Desired, routes Routes) Shaping {
	out := Shaping{Regions: map[string]uint64{}, Prefixes: map[netip.Prefix]string{}}
	for _, e := range d.Egress {
		out.Regions[e.Region] = uint64(e.Rate)
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
		for _, h := range TunnelHosts(g.TunnelAddress) {
			out.ControlAddrs = append(out.ControlAddrs, h.Addr())
		}
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
