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

	"github.com/opencen/opencen/internal/testutil"
)

// TestRouteSocketBatches writes routes of every form opencen uses through
// a routeSocket in batches larger than one message, with refused routes in
// the middle: the kernel then holds exactly the good ones, as the
// netlink library would have built them, and each refusal is reported for
// its own route.
func TestRouteSocketBatches(t *testing.T) {
	testutil.RequireRoot(t)
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
	routes, bad := batchRoutes(linkIndex(t, ns, "ocdpr0"))
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
	have := ourRoutes(t, h, unix.RT_TABLE_MAIN, 7901)
	if len(have) != len(routes)-len(bad) {
		t.Errorf("kernel holds %d routes, want %d", len(have), len(routes)-len(bad))
	}
	for i := range routes {
		r, ok := have[routeKey(&routes[i])]
		switch {
		case bad[i] && ok:
			t.Errorf("refused route %s installed", routeKey(&routes[i]))
		case !bad[i] && (!ok || !sameRoute(&r, &routes[i]) || r.Table != routes[i].Table || r.Priority != routes[i].Priority):
			t.Errorf("route %d %s: kernel has %+v (%v), want %+v", i, routeKey(&routes[i]), r, ok, routes[i])
		}
	}

	// Deleting by prefix and metric alone (any scope), twice: the second
	// time each is gone, which the caller counts as success.
	var del []netlink.Route
	for i := range routes {
		if !bad[i] {
			r := ownedRoute(routeKey(&routes[i]), routes[i].Table)
			r.Priority = routes[i].Priority
			del = append(del, r)
		}
	}
	var delErrs []string
	s.writeRoutes(true, del, func(i int, err error) { delErrs = append(delErrs, fmt.Sprint(i, err)) })
	if len(delErrs) != 0 {
		t.Errorf("deleting: %s", strings.Join(delErrs[:min(5, len(delErrs))], "; "))
	}
	if out := run(t, "ip", "-n", ns, "route", "show", "table", "all", "proto", "79"); strings.TrimSpace(out) != "" {
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
}

// batchRoutes are 3,000 IPv4 routes (several messages) of every form
// opencen writes, on the link idx of 192.0.2.1/24 and 2001:db8::1/64, and
// two IPv6 ones; bad are the two refused (a router on no connected
// network).
func batchRoutes(idx int) (routes []netlink.Route, bad map[int]bool) {
	a := newIPArena(8)
	ip := func(s string) net.IP { return a.ip(netip.MustParseAddr(s)) }
	for i := range 3000 {
		dst := a.ipnet(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>8), byte(i), 0}), 24))
		r := netlink.Route{Dst: dst, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V4, Type: unix.RTN_UNICAST, Priority: RouteMetric4}
		switch i % 5 {
		case 0: // a CEN route: on the device, link scope, with a source
			r.LinkIndex, r.Scope, r.Src = idx, netlink.SCOPE_LINK, ip("192.0.2.1")
		case 1: // a direct route via two routers
			r.MultiPath = []*netlink.NexthopInfo{{Gw: ip("192.0.2.7")}, {Gw: ip("192.0.2.8")}}
		case 2: // a direct route via one router
			r.Gw = ip("192.0.2.7")
		case 3: // a handoff table's route: a table above 255
			r.Table, r.Gw = 7901, ip("192.0.2.3")
		case 4: // a legacy layout's route: no metric
			r.LinkIndex, r.Scope, r.Priority = idx, netlink.SCOPE_LINK, 0
		}
		routes = append(routes, r)
	}
	v6 := netlink.Route{Dst: a.ipnet(netip.MustParsePrefix("2001:db8:9::/48")), LinkIndex: idx, Src: ip("2001:db8::1"), Protocol: RouteProtocol,
		Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V6, Type: unix.RTN_UNICAST, Priority: RouteMetric6}
	v6def := netlink.Route{Dst: a.ipnet(netip.MustParsePrefix("::/0")), Gw: ip("2001:db8::3"), Protocol: RouteProtocol,
		Table: 7901, Family: netlink.FAMILY_V6, Type: unix.RTN_UNICAST, Priority: RouteMetric6}
	routes = append(routes, v6, v6def)
	bad = map[int]bool{1500: true, 2999: true}
	for i := range bad {
		routes[i].Gw, routes[i].Flags, routes[i].MultiPath = ip("198.51.100.9"), 0, nil
		routes[i].LinkIndex, routes[i].Table, routes[i].Type = 0, unix.RT_TABLE_MAIN, unix.RTN_UNICAST
	}
	return routes, bad
}

// ourRoutes lists our routes in tables, by prefix.
func ourRoutes(t *testing.T, h *netlink.Handle, tables ...int) map[netip.Prefix]netlink.Route {
	have := map[netip.Prefix]netlink.Route{}
	for _, table := range tables {
		rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table, Protocol: RouteProtocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			have[routeKey(&r)] = r
		}
	}
	return have
}

func mustNS(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
