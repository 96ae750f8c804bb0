package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernelState is what Set may change, as text, to compare around a Set:
// the device, its global addresses, our routes in every table, the rules
// of both families and the guard (the IPv6 link-local and local-table
// entries the kernel manages by itself are left out).
func kernelState(t *testing.T, ns, dev string) string {
	return run(t, "ip", "-n", ns, "-d", "link", "show", "dev", dev) +
		run(t, "ip", "-n", ns, "-4", "addr", "show", "dev", dev) +
		run(t, "ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "global") +
		run(t, "ip", "-n", ns, "-4", "route", "show", "table", "all", "proto", "79") +
		run(t, "ip", "-n", ns, "-6", "route", "show", "table", "all", "proto", "79") +
		run(t, "ip", "-n", ns, "rule") + run(t, "ip", "-n", ns, "-6", "rule") +
		strings.Join(nftTables(t, ns), " ") + nftGuardRules(t, ns, dev)
}

func handshakes(t *testing.T, dev string) map[wgtypes.Key]time.Time {
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Device(dev)
	if err != nil {
		t.Fatal(err)
	}
	out := map[wgtypes.Key]time.Time{}
	for _, p := range d.Peers {
		out[p.PublicKey] = p.LastHandshakeTime
	}
	return out
}

// netlinkEvents lists the link and address events about dev, the route
// events of our protocol or on dev, and the deletions of our routes and
// of rules in ns while fn runs and for settle after it. Kernel-managed
// IPv6 link-local entries are not counted.
func netlinkEvents(t *testing.T, ns, dev string, settle time.Duration, fn func()) []string {
	h, idx := mustNS(t, ns), linkIndex(t, ns, dev)
	done := make(chan struct{})
	links, addrs, routes := make(chan netlink.LinkUpdate, 64), make(chan netlink.AddrUpdate, 64), make(chan netlink.RouteUpdate, 64)
	dels := make(chan routeEvent, 64)
	for _, err := range []error{netlink.LinkSubscribeAt(h, links, done), netlink.AddrSubscribeAt(h, addrs, done),
		netlink.RouteSubscribeAt(h, routes, done), subscribeRoutes(nsPath(ns), dels, done)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	fn()
	var got []string
	timeout := time.After(settle)
	for {
		select {
		case u := <-links:
			if u.Attrs().Index == idx {
				got = append(got, fmt.Sprintf("link %s flags %v", u.Attrs().Name, u.Attrs().Flags))
			}
		case u := <-addrs:
			if u.LinkIndex == idx && !u.LinkAddress.IP.IsLinkLocalUnicast() {
				got = append(got, fmt.Sprintf("addr %s new=%v", u.LinkAddress.String(), u.NewAddr))
			}
		case u := <-routes:
			if u.Protocol == RouteProtocol || (u.LinkIndex == idx && u.Table == unix.RT_TABLE_MAIN && (u.Dst == nil || !u.Dst.IP.IsLinkLocalUnicast())) {
				got = append(got, fmt.Sprintf("route type %d %v table %d", u.Type, u.Dst, u.Table))
			}
		case u := <-dels:
			got = append(got, fmt.Sprintf("deletion %+v", u))
		case <-timeout:
			close(done)
			return got
		}
	}
}

// TestSetTwiceChangesNothing: an identical Set (with handoff rules and
// tables in both families) sends no netlink message that changes state,
// leaves the kernel as it is and resets no WireGuard session; a Set that
// changes one peer leaves the other's session alone.
func TestSetTwiceChangesNothing(t *testing.T) {
	l := newLab(t, 3)
	ctx := context.Background()
	l.underlay6()
	want := l.desired(0)
	l.handoffTo(&want, 1)
	dp, ns, dev := l.open(0), l.gws[0].ns, l.device(0)
	if err := dp.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if err := l.open(i).Set(ctx, l.desired(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.pingMesh()
	before, hs := kernelState(t, ns, dev), handshakes(t, dev)
	for k, v := range hs {
		if v.IsZero() {
			t.Fatalf("peer %s has no handshake after ping", k)
		}
	}
	if !strings.Contains(before, "lookup 7901 proto 79") {
		t.Fatalf("no handoff rules to keep:\n%s", before)
	}
	events := netlinkEvents(t, ns, dev, 500*time.Millisecond, func() {
		if err := dp.Set(ctx, want); err != nil {
			t.Error(err)
		}
	})
	if len(events) != 0 {
		t.Errorf("second Set caused netlink events, want none: %v", events)
	}
	if after := kernelState(t, ns, dev); after != before {
		t.Errorf("kernel state changed by an identical Set:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Traffic after the Set would start a new handshake had a session been
	// reset.
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[2]), 5*time.Second)
	if after := handshakes(t, dev); !mapsEqual(after, hs) {
		t.Errorf("handshakes changed by an identical Set: before %v after %v", hs, after)
	}

	// Changing one peer (a new prefix homed at gw2) rewrites that peer
	// only: gw1's session is not touched.
	want.Peers[1].AllowedIPs = append(want.Peers[1].AllowedIPs, netip.MustParsePrefix("10.77.0.0/16"))
	want.Routes = append(want.Routes, netip.MustParsePrefix("10.77.0.0/16"))
	if err := dp.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
	waitPing(t, ns, lanHost(l.gws[2]), 5*time.Second)
	after := handshakes(t, dev)
	gw1 := l.gws[1].key.PublicKey()
	if !after[gw1].Equal(hs[gw1]) {
		t.Errorf("unchanged peer gw1's handshake moved from %v to %v", hs[gw1], after[gw1])
	}
	if !strings.Contains(run(t, "ip", "-n", ns, "route", "show", "10.77.0.0/16"), "proto 79") {
		t.Error("new route 10.77.0.0/16 not installed")
	}
}

func mapsEqual(a, b map[wgtypes.Key]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !b[k].Equal(v) {
			return false
		}
	}
	return true
}

// TestLegacyLayoutAdopted: a Dataplane that starts over what a legacy
// layout left (a route of ours with no metric beside the one with ours, a
// table 79 of our routes, the VXLAN link) keeps only its own route, sweeps
// table 79 of ours but not another's route there, deletes the link, and
// forwards.
func TestLegacyLayoutAdopted(t *testing.T) {
	l := newLab(t, 2)
	l.up(context.Background())
	ns, dev, lan := l.gws[0].ns, l.device(0), l.gws[1].lan.String()
	ovl := legacyOverlayName(dev)
	run(t, "ip", "-n", ns, "route", "add", lan, "dev", dev, "proto", "79")
	run(t, "ip", "-n", ns, "route", "add", "10.9.0.0/16", "dev", dev, "proto", "79", "table", "79")
	run(t, "ip", "-n", ns, "route", "add", "10.8.0.0/16", "dev", "ocdpeth0", "proto", "static", "table", "79")
	run(t, "ip", "-n", ns, "link", "add", ovl, "type", "vxlan", "id", "7344", "dstport", "4789")
	if err := l.gws[0].dp.Close(false); err != nil {
		t.Fatal(err)
	}
	if err := l.open(0).Set(context.Background(), l.desired(0)); err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(run(t, "ip", "-n", ns, "route", "show", "exact", lan)); strings.Count(out, "\n") != 0 || !strings.Contains(out, "metric 20") {
		t.Errorf("routes to %s: %q, want only ours with metric 20", lan, out)
	}
	if out := run(t, "ip", "-n", ns, "route", "show", "table", "79"); strings.Contains(out, "10.9.0.0/16") || !strings.Contains(out, "10.8.0.0/16") {
		t.Errorf("table 79: %q, want only the static route", out)
	}
	if out := run(t, "ip", "-n", ns, "link", "show"); strings.Contains(out, ovl) {
		t.Errorf("legacy overlay %s still present", ovl)
	}
	waitPing(t, ns, lanHost(l.gws[1]), 5*time.Second)
}
