package dataplane

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/internal/testutil"
)

// TestRouteWatchSeesOnlyDeletions: the kernel hands the repair loop the
// deletion of an opencen route and of a rule, and nothing else (not the
// echo of every route installed, not other protocols' routes).
func TestRouteWatchSeesOnlyDeletions(t *testing.T) {
	testutil.RequireRoot(t)
	ns := newNetNS(t)
	run(t, "ip", "-n", ns, "link", "add", "ocdpd0", "type", "veth", "peer", "name", "ocdpd1")
	run(t, "ip", "-n", ns, "link", "set", "ocdpd0", "up")
	ch := make(chan routeEvent, 16)
	done := make(chan struct{})
	defer close(done)
	if err := subscribeRoutes(nsPath(ns), ch, done); err != nil {
		t.Fatal(err)
	}
	next := func() (routeEvent, bool) {
		select {
		case ev := <-ch:
			return ev, true
		case <-time.After(300 * time.Millisecond):
			return routeEvent{}, false
		}
	}
	run(t, "ip", "-n", ns, "route", "add", "10.9.0.0/16", "dev", "ocdpd0", "proto", "79")
	run(t, "ip", "-n", ns, "route", "add", "10.8.0.0/16", "dev", "ocdpd0", "proto", "static")
	run(t, "ip", "-n", ns, "route", "del", "10.8.0.0/16", "dev", "ocdpd0", "proto", "static")
	if ev, ok := next(); ok {
		t.Errorf("got %+v for a route added and another protocol's route deleted, want nothing", ev)
	}
	run(t, "ip", "-n", ns, "route", "del", "10.9.0.0/16", "dev", "ocdpd0", "proto", "79")
	if ev, ok := next(); !ok || ev.typ != unix.RTM_DELROUTE || ev.protocol != RouteProtocol || ev.table != unix.RT_TABLE_MAIN {
		t.Errorf("deleting an opencen route: got %+v (%v), want its RTM_DELROUTE", ev, ok)
	}
	run(t, "ip", "-n", ns, "rule", "add", "pref", "7900", "from", "10.9.0.0/16", "lookup", "79")
	if ev, ok := next(); ok {
		t.Errorf("got %+v for a rule added, want nothing", ev)
	}
	run(t, "ip", "-n", ns, "rule", "del", "pref", "7900", "from", "10.9.0.0/16", "lookup", "79")
	if ev, ok := next(); !ok || ev.typ != unix.RTM_DELRULE || ev.table != 79 {
		t.Errorf("deleting a rule: got %+v (%v), want its RTM_DELRULE", ev, ok)
	}
}
