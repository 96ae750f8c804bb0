package shaping

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
)

// Desired is everything the shaper of one gateway should enforce on its
// tunnel device's egress. It is plain data: the agent computes it from the
// config (rates of this gateway's share per destination region) and the
// routes (which prefix lives in which region).
type Desired struct {
	// Regions maps a destination region id (e.g. "us-west-1") to the egress
	// rate this gateway may send toward it, in bits per second; 0 means
	// unlimited (counted, never dropped). A region absent from Regions is
	// not shaped and not counted: this gateway's own region belongs here
	// only by absence.
	Regions map[string]Rate
	// Prefixes maps every CEN prefix to the region that holds it, the
	// gateway's own region included, so that the longest match decides
	// (10.0.0.0/8 in one region and 10.1.0.0/16 in another both work).
	// Prefixes must have no host bits set. Traffic to an address that
	// matches no prefix is not CEN traffic and passes untouched.
	Prefixes map[netip.Prefix]string
	// ControlAddrs are the addresses of all gateways of the instance
	// (their tunnel addresses, IPv4 and IPv6). A packet whose source and
	// destination are both in this set, and which the gateway itself sent,
	// is its own control traffic (BGP, BFD, probes) and is never shaped.
	// No port is exempt: a tenant's traffic is charged whatever its port.
	ControlAddrs []netip.Addr
}

// Counters are one destination region's totals since its bucket's creation.
// Bytes are IP bytes, the headers of every GSO segment included.
type Counters struct {
	PassedBytes    uint64
	PassedPackets  uint64
	DroppedBytes   uint64
	DroppedPackets uint64
}

// maxRegionName is the longest region id, in bytes.
const maxRegionName = 63

// validate checks d; it reports every problem it finds.
func (d Desired) validate() error {
	var errs []error
	for _, name := range sortedKeys(d.Regions) {
		if err := checkRegionName(name); err != nil {
			errs = append(errs, fmt.Errorf("regions: %w", err))
		}
		if r := d.Regions[name]; r > MaxRate {
			errs = append(errs, fmt.Errorf("regions: region %q: rate %d bps is above the maximum %s", name, uint64(r), MaxRate))
		}
	}
	for p, name := range d.Prefixes {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("prefixes: invalid prefix %v for region %q", p, name))
		case p != p.Masked():
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q has host bits set (want %v)", p, name, p.Masked()))
		case p.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q is IPv4-mapped IPv6; write it as IPv4", p, name))
		case p.Addr().Zone() != "":
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q has a zone", p, name))
		}
		if err := checkRegionName(name); err != nil {
			errs = append(errs, fmt.Errorf("prefixes: prefix %v: %w", p, err))
		}
	}
	for _, a := range d.ControlAddrs {
		if !a.IsValid() {
			errs = append(errs, errors.New("control_addrs: invalid address"))
		}
	}
	return errors.Join(errs...)
}

func checkRegionName(name string) error {
	if name == "" {
		return errors.New("empty region id")
	}
	if len(name) > maxRegionName {
		return fmt.Errorf("region id %q is longer than %d bytes", name, maxRegionName)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return fmt.Errorf("region id %q contains a NUL byte", name)
		}
	}
	return nil
}

// regionNames is every region d mentions, sorted.
func (d Desired) regionNames() []string {
	set := map[string]bool{}
	for n := range d.Regions {
		set[n] = true
	}
	for _, n := range d.Prefixes {
		set[n] = true
	}
	return sortedKeys(set)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// equal reports whether d and o ask for the same.
func (d Desired) equal(o Desired) bool {
	return maps.Equal(d.Regions, o.Regions) && maps.Equal(d.Prefixes, o.Prefixes) && slices.Equal(d.ControlAddrs, o.ControlAddrs)
}

// clone is a copy of d that shares nothing with it.
func (d Desired) clone() Desired {
	return Desired{Regions: maps.Clone(d.Regions), Prefixes: maps.Clone(d.Prefixes), ControlAddrs: slices.Clone(d.ControlAddrs)}
}
