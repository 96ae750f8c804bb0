package routing

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/uuid"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// originRec is one path this gateway originates: the id GoBGP gave it,
// to withdraw it, and what it announces, to tell a change.
type originRec struct {
	id  uuid.UUID
	key string
}

// originPath builds the announcement of one VPC CIDR, tagged with its
// region and network, or with o.Network empty, of one handoff address,
// tagged with its region and as a handoff.
func originPath(d *Desired, o Origin) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(o.Prefix)
	if err != nil {
		return nil, err
	}
	// An unspecified next hop makes GoBGP use each session's own local
	// address: the tunnel address toward gateways (next-hop-self; for
	// IPv6 the IPv4-mapped tunnel address, as receivers route by the
	// session, not the next hop), the VBR link address toward the on-prem
	// router (export policy sets the other family's, see policy.go).
	family, unspecified := bgp.RF_IPv4_UC, netip.IPv4Unspecified()
	if o.Prefix.Addr().Is6() {
		family, unspecified = bgp.RF_IPv6_UC, netip.IPv6Unspecified()
	}
	var nh bgp.PathAttributeInterface
	if family == bgp.RF_IPv4_UC {
		nh, err = bgp.NewPathAttributeNextHop(unspecified)
	} else {
		nh, err = bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, unspecified)
	}
	if err != nil {
		return nil, err
	}
	second := bgp.NewLargeCommunity(d.InstanceASN, tagNetwork, nameID(o.Network))
	if o.Network == "" {
		second = bgp.NewLargeCommunity(d.InstanceASN, tagHandoff, 0)
	}
	lc := bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{
		bgp.NewLargeCommunity(d.InstanceASN, tagRegion, nameID(o.Region)), second,
	})
	return &apiutil.Path{
		Family: family,
		Nlri:   nlri,
		Attrs:  []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh, lc},
	}, nil
}

func (s *Speaker) setOrigins(d *Desired) []error {
	var errs []error
	want := map[netip.Prefix]Origin{}
	for _, o := range d.Originate {
		want[o.Prefix] = o
	}
	for _, a := range d.HandoffAddresses {
		want[netip.PrefixFrom(a, a.BitLen())] = Origin{Prefix: netip.PrefixFrom(a, a.BitLen()), Region: d.Region}
	}
	for p, o := range want {
		key := fmt.Sprintf("%s|%s|%s", o.Region, o.Network, d.LocalAddress)
		if rec, ok := s.bgp.paths[p]; ok && rec.key == key {
			continue
		}
		path, err := originPath(d, o)
		if err != nil {
			errs = append(errs, fmt.Errorf("routing: originate %s: %w", p, err))
			continue
		}
		// Adding the same prefix again replaces the old path in place, so
		// peers see one update, not a withdraw and an announce.
		res, err := s.bgp.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err == nil && len(res) == 1 && res[0].Error != nil {
			err = res[0].Error
		}
		if err != nil || len(res) != 1 {
			errs = append(errs, fmt.Errorf("routing: originate %s: %w", p, errors.Join(err, errors.New("no path id returned"))))
			continue
		}
		s.bgp.paths[p] = originRec{id: res[0].UUID, key: key}
	}
	for p, rec := range s.bgp.paths {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.bgp.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{rec.id}}); err != nil {
			errs = append(errs, fmt.Errorf("routing: withdraw %s: %w", p, err))
			continue
		}
		delete(s.bgp.paths, p)
	}
	return errs
}
