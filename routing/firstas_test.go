package routing

import (
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// TestFirstAS: what a VBR's router sends is learned only when its AS path
// starts with the router's AS; the GoBGP policy carries one statement per
// VBR refusing the rest, before the import table. Gateways' paths are not
// checked.
func TestFirstAS(t *testing.T) {
	d := desiredA(179)
	f := newFilter(&d)
	vbr, asn := d.VBRs[0].Neighbor, d.VBRs[0].PeerASN
	path := func(segs ...bgp.AsPathParamInterface) []bgp.PathAttributeInterface {
		return []bgp.PathAttributeInterface{bgp.NewPathAttributeAsPath(segs)}
	}
	seq := func(asns ...uint32) bgp.AsPathParamInterface {
		return bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, asns)
	}
	for _, c := range []struct {
		name  string
		peer  netip.Addr
		attrs []bgp.PathAttributeInterface
		want  bool
	}{
		{"the router's AS first", vbr, path(seq(asn, 64999)), true},
		{"another AS first", vbr, path(seq(64999, asn)), false},
		{"an empty AS path", vbr, path(), false},
		{"an empty segment", vbr, path(seq()), false},
		{"no AS path", vbr, nil, false},
		{"a gateway's empty path", d.Gateways[0].Address, path(), true},
	} {
		if got := f.firstASOK(c.peer, c.attrs); got != c.want {
			t.Errorf("%s: firstASOK = %v, want %v", c.name, got, c.want)
		}
	}
	req := buildPolicies(&d)
	stmts := req.Policies[0].Statements
	if len(stmts) < 2 || stmts[1].Name != "vbr0-first-as" || stmts[1].Conditions.AsPathSet == nil {
		t.Fatalf("import policy statements %+v, want vbr0-first-as second", stmts)
	}
}
