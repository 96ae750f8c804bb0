package test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
)

// The VBR router of soloConfig and its AS.
var (
	routerAddr = netip.MustParseAddr("172.30.0.2")
	routerAS   = uint32(65010)
)

// TestRawPeerRobustness: an on-premises router written by hand (rawPeer)
// sends cend what a broken or hostile one would. Malformed UPDATEs whose
// NLRI can still be found are treated as withdrawals (RFC 7606): the
// prefix they carry, announced properly first, is withdrawn and the
// session stays up. An UPDATE whose attributes run past the message
// resets the session (RFC 7606 section 4: its NLRI cannot be located). A
// hijack of another region's VPC, the gateway's own VPC and a default
// route are refused; 2,000 /32s trip max_prefixes (1,000) with a Cease of
// subcode 2 (Administrative Shutdown, RFC 4486; see
// routing.Speaker.tripMaxPrefixes for why not subcode 1). cend stays up throughout and installs nothing it
// is not entitled to.
func TestRawPeerRobustness(t *testing.T) {
	s := newSolo(t)
	p := listenRawPeer(t, s.router, routerAddr, routerAS)
	s.start(binary(t, "cend"))
	s.waitUp(60 * time.Second)
	p.accept(30 * time.Second)
	s.waitSession("established")

	treatedAsWithdraw(t, s, p)
	hijacksRefused(t, s, p)
	attributesPastTheMessage(t, s, p)
	floodTripsMaxPrefixes(t, s, p)
	if !s.alive() {
		t.Fatalf("cend exited: %v", s.exitErr())
	}
}

// What a malformed UPDATE does to the prefix it carries.
const (
	withdrawn  = iota // treat-as-withdraw: announced properly first, then gone
	kept              // attribute discard: the UPDATE stands
	notLearned        // announced only malformed, never learned
)

// treatedAsWithdraw sends malformed UPDATEs whose NLRI can be found. Each
// leaves the session up; the prefix it carries ends as the case says.
func treatedAsWithdraw(t *testing.T, s *solo, p *rawPeer) {
	origin := pathAttr(wellKnown, attrOrigin, 1, []byte{0})
	path := pathAttr(wellKnown, attrASPath, 6, asPath(routerAS))
	nextHop := pathAttr(wellKnown, attrNextHop, 4, routerAddr.AsSlice())
	nh := routerAddr.AsSlice()
	for i, c := range []struct {
		what  string
		attrs [][]byte
		ends  int
	}{
		{"NEXT_HOP of length 0, optional", [][]byte{origin, path, pathAttr(flagOptional, attrNextHop, 0, nil)}, withdrawn},
		{"NEXT_HOP of length 1, not transitive", [][]byte{origin, path, pathAttr(0, attrNextHop, 1, nh[:1])}, withdrawn},
		{"NEXT_HOP of length 2, optional transitive", [][]byte{origin, path, pathAttr(flagOptional|flagTransitive, attrNextHop, 2, nh[:2])}, withdrawn},
		{"NEXT_HOP of length 3, partial", [][]byte{origin, path, pathAttr(flagTransitive|flagPartial, attrNextHop, 3, nh[:3])}, withdrawn},
		// An eBGP speaker puts its own AS first (the first-AS check).
		{"an empty AS_PATH", [][]byte{origin, pathAttr(wellKnown, attrASPath, 0, nil), nextHop}, withdrawn},
		{"an AS_PATH starting with another AS", [][]byte{origin, pathAttr(wellKnown, attrASPath, 6, asPath(64999)), nextHop}, withdrawn},
		// GoBGP's decoder stops at an attribute that overruns the Total
		// Path Attribute Length without reading the NLRI, so the UPDATE
		// withdraws nothing (RFC 7606 section 4 would withdraw its NLRI);
		// what it announces is not learned.
		{"a NEXT_HOP overrunning the attributes", [][]byte{origin, path, pathAttr(wellKnown, attrNextHop, 8, nh)}, notLearned},
		// RFC 6793: AS4_PATH between two four-octet speakers is
		// discarded, the UPDATE taken with its AS_PATH.
		{"AS4_PATH before AS_PATH", [][]byte{origin, pathAttr(flagOptional|flagTransitive, attrAS4Path, 6, asPath(64512)), path, nextHop}, kept},
	} {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(60 + i), 0}), 24)
		if c.ends != notLearned {
			p.send(msgUpdate, update(nil, goodAttrs(routerAS, routerAddr), 0, pfx))
			s.waitRoute(pfx, true, c.what+": the proper announcement first")
		}
		up := s.peer().BGPUptimeSeconds
		p.send(msgUpdate, update(nil, c.attrs, 0, pfx))
		if c.ends == notLearned {
			// A proper UPDATE after it shows the gateway has read it.
			marker := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(100 + i), 0}), 24)
			p.send(msgUpdate, update(nil, goodAttrs(routerAS, routerAddr), 0, marker))
			s.waitRoute(marker, true, c.what+": a proper UPDATE after it")
		}
		s.waitRoute(pfx, c.ends == kept, c.what)
		if n, ended := p.closed(0); ended {
			t.Fatalf("%s: the gateway closed the session (NOTIFICATION %v); want it kept", c.what, n)
		}
		if got := s.peer(); got.BGPState != "established" || got.BGPUptimeSeconds < up {
			t.Fatalf("%s: the session is %s, up %.0fs (%.0fs before); want it kept", c.what, got.BGPState, got.BGPUptimeSeconds, up)
		}
		t.Logf("%s: the session kept, the prefix %s", c.what, []string{"withdrawn", "kept", "not learned"}[c.ends])
	}
}

// hijacksRefused announces another region's VPC (exactly and a part of
// it), the gateway's own VPC and a default route, beside a prefix of the
// data centre's own: only the last is learned and installed.
func hijacksRefused(t *testing.T, s *solo, p *rawPeer) {
	refused := []netip.Prefix{
		netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("10.2.7.0/24"),
		netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("0.0.0.0/0"),
	}
	own := netip.MustParsePrefix("192.168.80.0/24")
	before := s.peer().PrefixesRejected
	p.send(msgUpdate, update(nil, goodAttrs(routerAS, routerAddr), 0, append(refused, own)...))
	s.waitRoute(own, true, "the data centre's own prefix beside the hijacks")
	eventually(t, 10*time.Second, "the hijacks counted as rejected", func() error {
		if got := s.peer().PrefixesRejected - before; got < uint64(len(refused)) {
			return fmt.Errorf("%d rejected, want %d", got, len(refused))
		}
		return nil
	})
	routes, kernel := s.routes(), s.kernelRoutes()
	for _, pfx := range refused {
		if r, ok := routes[pfx.String()]; ok && r.Source == "vbr" {
			t.Errorf("%s learned from the VBR: %+v", pfx, r)
		}
		if kernel[pfx.String()] {
			t.Errorf("%s installed in the kernel from the VBR", pfx)
		}
	}
}

// attributesPastTheMessage sends an UPDATE whose Total Path Attribute
// Length runs past the message's end: the gateway answers UPDATE Message
// Error, Malformed Attribute List (3/1), closes the session, and dials
// again.
func attributesPastTheMessage(t *testing.T, s *solo, p *rawPeer) {
	pfx := netip.MustParsePrefix("192.168.90.0/24")
	p.send(msgUpdate, update(nil, goodAttrs(routerAS, routerAddr), 64, pfx))
	n, ended := p.closed(10 * time.Second)
	if !ended || n != (notification{3, 1}) {
		t.Fatalf("attributes past the message: session closed %v with NOTIFICATION %v; want closed with 3/1", ended, n)
	}
	s.waitRoute(netip.MustParsePrefix("192.168.80.0/24"), false, "the reset session's routes withdrawn")
	p.accept(30 * time.Second)
	s.waitSession("established")
}

// floodTripsMaxPrefixes announces 2,000 /32s, 500 an UPDATE: past 1,000
// the gateway sends a Cease of subcode 2, holds the session down and
// keeps none of them.
func floodTripsMaxPrefixes(t *testing.T, s *solo, p *rawPeer) {
	base := netip.MustParseAddr("198.18.0.0")
	a := base
	for range 4 {
		var batch []netip.Prefix
		for range 500 {
			batch = append(batch, netip.PrefixFrom(a, 32))
			a = a.Next()
		}
		p.send(msgUpdate, update(nil, goodAttrs(routerAS, routerAddr), 0, batch...))
	}
	n, ended := p.closed(20 * time.Second)
	if !ended || n != (notification{6, 2}) {
		t.Fatalf("2,000 /32s: session closed %v with NOTIFICATION %v; want closed with Cease 6/2", ended, n)
	}
	s.waitSession("max-prefix-exceeded")
	flood := netip.PrefixFrom(base, 21) // 198.18.0.0 to 198.18.7.255 holds the 2,000
	eventually(t, 20*time.Second, "none of the flood kept", func() error {
		for pfx, r := range s.routes() {
			if flood.Contains(netip.MustParsePrefix(pfx).Addr()) {
				return fmt.Errorf("%s still known: %+v", pfx, r)
			}
		}
		for pfx := range s.kernelRoutes() {
			if flood.Contains(netip.MustParsePrefix(pfx).Addr()) {
				return fmt.Errorf("%s still in the kernel", pfx)
			}
		}
		return nil
	})
}

// waitSession waits for the VBR session to reach state.
func (s *solo) waitSession(state string) {
	s.t.Helper()
	eventually(s.t, 30*time.Second, "the VBR session "+state, func() error {
		if got := s.peer(); got.BGPState != state {
			return fmt.Errorf("session %+v", got)
		}
		return nil
	})
}

// routes is cenctl routes by prefix.
func (s *solo) routes() map[string]api.Route {
	s.t.Helper()
	var list []api.Route
	cenctlJSON(s.t, s.socket, &list, "routes")
	m := map[string]api.Route{}
	for _, r := range list {
		m[r.Prefix] = r
	}
	return m
}

// waitRoute waits until pfx is learned from the VBR and installed in the
// kernel (want), or neither.
func (s *solo) waitRoute(pfx netip.Prefix, want bool, what string) {
	s.t.Helper()
	eventually(s.t, 15*time.Second, what, func() error {
		r, ok := s.routes()[pfx.String()]
		learned := ok && r.Source == "vbr" && r.Installed
		inKernel := s.kernelRoutes()[pfx.String()]
		if learned != want || inKernel != want {
			return fmt.Errorf("%s: learned %v (%+v), in the kernel %v; want %v", pfx, learned, r, inKernel, want)
		}
		return nil
	})
}
