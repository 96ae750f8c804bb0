package routing

import (
	"errors"
	"fmt"
	"hash/fnv"
)

// Tags: every CEN route carries two BGP large communities,
// INSTANCE_ASN:1:hash(region) and INSTANCE_ASN:2:hash(network), so any
// gateway (and cenctl, and the on-prem router) can tell where it came from.
// A third, INSTANCE_ASN:3:0, marks a gateway's handoff address (a host
// route only its region's gateways receive).
const (
	tagRegion  uint32 = 1
	tagNetwork uint32 = 2
	tagHandoff uint32 = 3
)

// nameID hashes a region or network name into a large community value.
// Every gateway reads the same config, so every gateway can map it back.
func nameID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	if v := h.Sum32(); v != 0 {
		return v
	}
	return 1
}

// nameTable maps tag values back to names.
type nameTable struct {
	regions  map[uint32]string
	networks map[uint32]string
}

func newNameTable(d *Desired) (*nameTable, error) {
	t := &nameTable{regions: map[uint32]string{}, networks: map[uint32]string{}}
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
		add(t.regions, "region", region)
		add(t.networks, "network", network)
	}
	add(t.regions, "region", d.Region)
	for _, g := range d.Gateways {
		add(t.regions, "region", g.Region)
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
	return t, errors.Join(errs...)
}

// tagCommunities are the large communities marking a route's origin.
func tagCommunities(asn uint32, region, network string) []string {
	return []string{
		fmt.Sprintf("%d:%d:%d", asn, tagRegion, nameID(region)),
		fmt.Sprintf("%d:%d:%d", asn, tagNetwork, nameID(network)),
	}
}
