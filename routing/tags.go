package routing

import (
	"errors"
	"fmt"
	"hash/fnv"
)

// Tags: every CEN route carries two BGP large communities,
// INSTANCE_ASN:1:hash(region) and INSTANCE_ASN:2:hash(network), so the
// on-premises router and anyone reading a RIB can tell where it came from.
// A gateway itself takes a route's origin from the config (what the peer
// is entitled to), never from the tags a peer sent.
// A third, INSTANCE_ASN:3:0, marks a gateway's handoff address (a host
// route only its region's gateways receive).
const (
	tagRegion  uint32 = 1
	tagNetwork uint32 = 2
	tagHandoff uint32 = 3
)

// nameID hashes a region or network name into a large community value.
// Two names of one kind must not share a value (checkTagCollisions).
func nameID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	if v := h.Sum32(); v != 0 {
		return v
	}
	return 1
}

// checkTagCollisions refuses two regions, or two networks, whose names
// hash to the same tag: their routes would read alike.
func checkTagCollisions(d *Desired) error {
	regions, networks := map[uint32]string{}, map[uint32]string{}
	var errs []error
	add := func(m map[uint32]string, kind, name string) {
		if name == "" {
			return
		}
		id := nameID(name)
		if prev, ok := m[id]; ok && prev != name {
			errs = append(errs, fmt.Errorf("%w: %s names %q and %q hash to the same tag %d; rename one", ErrInvalid, kind, prev, name, id))
			return
		}
		m[id] = name
	}
	both := func(region, network string) {
		add(regions, "region", region)
		add(networks, "network", network)
	}
	add(regions, "region", d.Region)
	for _, g := range d.Gateways {
		add(regions, "region", g.Region)
		for _, e := range g.Entitled {
			both(e.Region, e.Network)
		}
	}
	for _, o := range d.Originate {
		both(o.Region, o.Network)
	}
	for _, v := range d.VBRs {
		both(v.Region, v.Network)
	}
	for _, n := range d.InstanceCIDRs {
		both(n.Region, n.Network)
	}
	return errors.Join(errs...)
}

// tagCommunities are the large communities marking a route's origin.
func tagCommunities(asn uint32, region, network string) []string {
	return []string{
		fmt.Sprintf("%d:%d:%d", asn, tagRegion, nameID(region)),
		fmt.Sprintf("%d:%d:%d", asn, tagNetwork, nameID(network)),
	}
}
