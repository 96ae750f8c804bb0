package routing

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestHandoffAddressesStayInTheRegion: twins tell each other their LAN
// addresses (host routes inside their region's VPC CIDR, marked as
// handoffs); the gateway of the other region and a VBR router never see
// them, and nobody takes one for a route.
func TestHandoffAddressesStayInTheRegion(t *testing.T) {
	port := freePort(t)
	onprem := rawRouter(t, addrOnprem, 65010, port, addrA, testASN)
	a := startNode(t, port, desiredA(port))
	db := desiredB(addrB, addrC, "gw-c")
	db.HandoffAddresses = []netip.Addr{ma("10.2.0.2")}
	dc := desiredB(addrC, addrB, "gw-b")
	dc.HandoffAddresses = []netip.Addr{ma("10.2.0.3")}
	b := startNode(t, port, db)
	c := startNode(t, port, dc)

	for _, tc := range []struct {
		n    *node
		p    netip.Prefix
		from netip.Addr
	}{{c, mp("10.2.0.2/32"), addrB}, {b, mp("10.2.0.3/32"), addrC}} {
		waitFor(t, 30*time.Second, fmt.Sprintf("handoff address %s", tc.p), func() bool {
			r, ok := tc.n.route(tc.p)
			return ok && r.Handoff && slices.Equal(r.NextHops, []netip.Addr{tc.from}) && r.OriginRegion == "r-b"
		})
	}
	// A has everything else by now: vpc-b through both twins.
	waitFor(t, 30*time.Second, "vpc-b at A", func() bool {
		r, ok := a.route(vpcB)
		return ok && len(r.NextHops) == 2
	})
	time.Sleep(500 * time.Millisecond)
	for _, p := range []netip.Prefix{mp("10.2.0.2/32"), mp("10.2.0.3/32")} {
		if r, ok := a.route(p); ok {
			t.Errorf("the other region's gateway learned handoff address %s: %+v", p, r)
		}
		if _, ok := rawTable(t, onprem)[p]; ok {
			t.Errorf("the VBR router got handoff address %s", p)
		}
	}
	if _, ok := rawTable(t, onprem)[vpcB]; !ok {
		t.Error("the VBR router did not get vpc-b: the export test proves nothing")
	}
	// A host route inside the region's VPC from a gateway of another
	// region is a hijack, not a handoff address.
	if v := newFilter(&db).classify(addrA, mp("10.1.0.7/32")); v.reason != ReasonHijack {
		t.Errorf("gw-a announcing a host route of its own VPC to r-b: %+v, want a hijack", v)
	}
}

// TestTwinAnnouncementsAndConnected: twins that both hold a VBR announcing
// the same on-premises prefix each learn it direct, with the other twin
// among its Gateways; a prefix overlapping a subnet connected to the
// gateway is refused with reason connected, a VBR router's address (any
// VBR's, whatever accept says) with reason protected, while the range
// holding it is learned.
func TestTwinAnnouncementsAndConnected(t *testing.T) {
	port := freePort(t)
	r1, r2 := ma("127.0.0.6"), ma("127.0.0.7")
	or1 := rawRouter(t, r1, 65010, port, addrB, testASN)
	or2 := rawRouter(t, r2, 65011, port, addrC, testASN)
	vbr := func(name string, n netip.Addr, asn uint32) VBRSession {
		return VBRSession{Network: name, Region: "r-b", Neighbor: n, Port: uint16(port), PeerASN: asn, Accept: []netip.Prefix{mp("192.168.0.0/16")}}
	}
	entVBR := func(name string) Entitlement {
		return Entitlement{Network: name, Region: "r-b", Kind: KindVBR, Prefixes: []netip.Prefix{mp("192.168.0.0/16")}}
	}
	db := desiredB(addrB, addrC, "gw-c")
	db.VBRs = []VBRSession{vbr("idc-1", r1, 65010)}
	db.Gateways[1].Entitled = append(db.Gateways[1].Entitled, entVBR("idc-2"))
	db.Connected = []netip.Prefix{mp("192.168.9.0/24")}
	router, routerRange := mp("192.168.77.1/32"), mp("192.168.77.0/24")
	db.RouterAddresses = []netip.Prefix{router}
	dc := desiredB(addrC, addrB, "gw-b")
	dc.VBRs = []VBRSession{vbr("idc-2", r2, 65011)}
	dc.Gateways[1].Entitled = append(dc.Gateways[1].Entitled, entVBR("idc-1"))
	b := startNode(t, port, db)
	c := startNode(t, port, dc)
	shared, only1 := mp("192.168.5.0/24"), mp("192.168.6.0/24")
	rawAnnounce(t, or1, r1, false, shared, only1, mp("192.168.9.0/24"), mp("192.168.9.128/25"), router, routerRange)
	rawAnnounce(t, or2, r2, false, shared)

	waitFor(t, 30*time.Second, "the shared prefix direct at both twins, each naming the other", func() bool {
		rb, okb := b.route(shared)
		rc, okc := c.route(shared)
		return okb && okc && rb.Direct && rc.Direct && slices.Equal(rb.Gateways, []netip.Addr{addrC}) && slices.Equal(rc.Gateways, []netip.Addr{addrB})
	})
	waitFor(t, 10*time.Second, "a prefix only B's VBR has, at B with no twin", func() bool {
		r, ok := b.route(only1)
		return ok && r.Direct && len(r.Gateways) == 0
	})
	waitFor(t, 10*time.Second, "the connected overlaps refused at B", func() bool {
		st, _ := b.s.Status(context.Background())
		n := 0
		for _, rj := range st.Rejected {
			if rj.Reason == ReasonConnected {
				n++
			}
		}
		return n == 2
	})
	waitFor(t, 10*time.Second, "a VBR router's address refused as protected at B, its range learned", func() bool {
		st, _ := b.s.Status(context.Background())
		_, learned := b.route(routerRange)
		return learned && slices.ContainsFunc(st.Rejected, func(r Rejection) bool { return r.Prefix == router && r.Reason == ReasonProtected })
	})
	if _, ok := b.route(router); ok {
		t.Error("B learned a VBR router's address")
	}
	if _, ok := b.route(mp("192.168.9.0/24")); ok {
		t.Error("B learned the subnet connected to it")
	}
	// Refused at import, it is not passed on either.
	if _, ok := c.route(mp("192.168.9.128/25")); ok {
		t.Error("C learned through B what B refused")
	}

	// When C's VBR withdraws the shared prefix, B stops naming C.
	rawAnnounce(t, or2, r2, true, shared)
	waitFor(t, 10*time.Second, "B drops C from the shared prefix", func() bool {
		r, ok := b.route(shared)
		return ok && len(r.Gateways) == 0
	})
}
