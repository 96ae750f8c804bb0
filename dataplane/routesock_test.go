package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestRouteSocketBatches writes routes of every form opencen uses through
// a routeSocket in batches larger than one message, with refused routes in
// the middle: the kernel then holds exactly the good ones, as the
// netlink library would have built them, and each refusal is reported for
// its own route.
func TestRouteSocketBatches(t *testing.T) {
	requireRoot(t)
	ns := newNetNS(t)
	run(t, "ip", "-n", ns, "link", "add", "ocdpr0", "type", "veth", "peer", "name", "ocdpr1")
	run(t, "ip", "-n", ns, "link", "set", "ocdpr0", "up")
	run(t, "ip", "-n", ns, "link", "set", "ocdpr1", "up")
	run(t, "ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "ocdpr0")
	run(t, "ip", "-n", ns, "addr", "add", "2001:db8::1/64", "dev", "ocdpr0", "nodad")
	s, err := openRouteSocket(nsPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := netlink.NewHandleAt(mustNS(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("ocdpr0")
	if err != nil {
		t.Fatal(err)
	}
	idx := link.Attrs().Index
	a := newIPArena(8)
	ip := func(s string) net.IP { return a.ip(netip.MustParseAddr(s)) }

	// 3,000 routes (several messages), every form, two refused.
	var routes []netlink.Route
	for i := range 3000 {
		dst := a.ipnet(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>8), byte(i), 0}), 24))
		r := netlink.Route{Dst: dst, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V4, Type: unix.RTN_UNICAST}
		switch i % 5 {
		case 0: // overlay-like: via a gateway, onlink, with a source
			r.LinkIndex, r.Gw, r.Flags, r.Src = idx, ip("100.64.0.2"), int(netlink.FLAG_ONLINK), ip("192.0.2.1")
		case 1: // multipath
			r.MultiPath = []*netlink.NexthopInfo{{LinkIndex: idx, Gw: ip("100.64.0.2"), Flags: int(netlink.FLAG_ONLINK)}, {LinkIndex: idx, Gw: ip("100.64.0.3"), Flags: int(netlink.FLAG_ONLINK)}}
		case 2: // plain on the device, link scope
			r.LinkIndex, r.Scope, r.Src = idx, netlink.SCOPE_LINK, ip("192.0.2.1")
		case 3: // direct: a router on a connected network
			r.Gw = ip("192.0.2.7")
		case 4: // a high table, a throw
			r.Table, r.Type = 1079, unix.RTN_THROW
		}
		routes = append(routes, r)
	}
	v6 := netlink.Route{Dst: a.ipnet(netip.MustParsePrefix("2001:db8:9::/48")), LinkIndex: idx, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V6, Type: unix.RTN_UNICAST}
	routes = append(routes, v6)
	bad := map[int]bool{1500: true, 2999: true}
	for i := range bad {
		routes[i].Gw, routes[i].Flags, routes[i].MultiPath = ip("198.51.100.9"), 0, nil // not on a connected network
		routes[i].LinkIndex, routes[i].Table, routes[i].Type = 0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST
	}
	failed := map[int]error{}
	s.writeRoutes(false, routes, func(i int, err error) { failed[i] = err })
	if len(failed) != len(bad) {
		t.Errorf("refused %v, want exactly %v", failed, bad)
	}
	for i, err := range failed {
		if !bad[i] || !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("route %d refused with %v", i, err)
		}
	}
	have := map[netip.Prefix]netlink.Route{}
	for _, table := range []int{unix.RT_TABLE_MAIN, 1079} {
		rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table, Protocol: RouteProtocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			have[routeKey(&r)] = r
		}
	}
	if len(have) != len(routes)-len(bad) {
		t.Errorf("kernel holds %d routes, want %d", len(have), len(routes)-len(bad))
	}
	for i := range routes {
		r, ok := have[routeKey(&routes[i])]
		switch {
		case bad[i] && ok:
			t.Errorf("refused route %s installed", routeKey(&routes[i]))
		case !bad[i] && (!ok || !sameRoute(&r, &routes[i]) || r.Table != routes[i].Table):
			t.Errorf("route %d %s: kernel has %+v (%v), want %+v", i, routeKey(&routes[i]), r, ok, routes[i])
		}
	}

	// Deleting by prefix alone (any scope), twice: the second time each
	// is gone, which the caller counts as success.
	var del []netlink.Route
	for i := range routes {
		if !bad[i] {
			del = append(del, ownedRoute(routeKey(&routes[i]), routes[i].Table))
		}
	}
	var delErrs []string
	s.writeRoutes(true, del, func(i int, err error) { delErrs = append(delErrs, fmt.Sprint(i, err)) })
	if len(delErrs) != 0 {
		t.Errorf("deleting: %s", strings.Join(delErrs[:min(5, len(delErrs))], "; "))
	}
	if out := run(t, "ip", "-n", ns, "route", "show", "proto", "79"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after deleting:\n%s", out)
	}
	gones := 0
	s.writeRoutes(true, del[:10], func(_ int, err error) {
		if gone(err) {
			gones++
		}
	})
	if gones != 10 {
		t.Errorf("deleting 10 absent routes: %d reported gone, want 10", gones)
	}
	// One route alone, as routeWriter.
	if err := s.RouteReplace(&routes[0]); err != nil {
		t.Errorf("RouteReplace: %v", err)
	}
	if err := s.RouteDel(&del[0]); err != nil {
		t.Errorf("RouteDel: %v", err)
	}
}

func mustNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
