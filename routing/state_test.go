package routing

import (
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// TestSetSameDesiredRecomputesNothing: the agent sets the routing state
// on every reconcile; only a change may make the speaker recompute its
// learned routes (100,000 of them, in a burst).
func TestSetSameDesiredRecomputesNothing(t *testing.T) {
	st := newState(testLogger(t), Options{})
	set := func(d Desired) {
		t.Helper()
		st.setDesired(&d, newFilter(&d))
	}
	d := desiredA(1179)
	set(cloneDesired(d))
	for i := range 3 {
		st.learned.rib[netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)] = &ribEntry{}
	}
	clear(st.learned.dirty)

	set(cloneDesired(d))
	if len(st.learned.dirty) != 0 {
		t.Errorf("the same desired state again marked %d routes for recomputation", len(st.learned.dirty))
	}
	changed := cloneDesired(d)
	changed.Originate[0].Network = "renamed"
	set(changed)
	if len(st.learned.dirty) != 3 {
		t.Errorf("a changed desired state marked %d of 3 routes for recomputation", len(st.learned.dirty))
	}
}

// TestOriginFromConfigNotTags: a gateway of r-b tags its VPC route with
// the receiver's own region and another network; the learned route still
// names r-b and vpc-b, the origin its entitlement gives it (same-region
// traffic is not shaped, so the tag would buy the sender free bandwidth).
func TestOriginFromConfigNotTags(t *testing.T) {
	st := newState(testLogger(t), Options{})
	d := desiredA(1179)
	st.setDesired(&d, newFilter(&d))
	nlri, _ := bgp.NewIPAddrPrefix(vpcB)
	nh, _ := bgp.NewPathAttributeNextHop(addrB)
	forged := bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{
		bgp.NewLargeCommunity(testASN, tagRegion, nameID("r-a")),
		bgp.NewLargeCommunity(testASN, tagNetwork, nameID("vpc-a")),
	})
	st.applyBest([]*apiutil.Path{{Family: bgp.RF_IPv4_UC, Nlri: nlri, PeerAddress: addrB, PeerASN: testASN,
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nh, forged}}})
	r, ok := st.route(vpcB, st.learned.rib[vpcB])
	if !ok {
		t.Fatal("gw-b's own VPC CIDR was not learned")
	}
	if r.OriginRegion != "r-b" || r.OriginNetwork != "vpc-b" {
		t.Errorf("origin %s/%s, want r-b/vpc-b (from the config, not the route's tags)", r.OriginRegion, r.OriginNetwork)
	}
}
