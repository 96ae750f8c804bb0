package dataplane

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addLAN gives k the region's LAN eth1, shared with the twin b (10.1.0.2,
// fd00:1::2) and c (10.1.0.3).
func addLAN(k *fakeKernel) { k.addLink("eth1", "10.1.0.1/24", "fd00:1::1/64") }

// handoffDesired is the fixture with b as a twin on the LAN: the second
// half of the region's VPC (10.1.0.0/16, fd00:1::/64) is homed at b and
// handed off to it.
func handoffDesired(f fixture) Desired {
	d := f.desired()
	src := pfxs("10.1.128.0/17", "fd00:1:0:0:8000::/65")
	d.Peers[0].AllowedIPs = append(d.Peers[0].AllowedIPs, src...)
	d.Handoffs = []Handoff{{Twin: "b", Via: addrs("10.1.0.2", "fd00:1::2"), Sources: src}}
	return d
}

// fixedRules are the two rules of each family with handoffs.
func fixedRules(families ...string) []string {
	var out []string
	for _, fam := range families {
		out = append(out, fam+" 7900 iif ocdptest0 lookup 254", fam+" 7901 lookup 254 suppress_ifgroup 79")
	}
	return out
}

var handoffRules = append(fixedRules("v4", "v6"), "v4 7917 from 10.1.128.0/17 lookup 7901", "v6 7965 from fd00:1:0:0:8000::/65 lookup 7901")

var handoffTable = []string{
	"table 7901 0.0.0.0/0 via 10.1.0.2 dev eth1 metric 20 proto 79",
	"table 7901 ::/0 via fd00:1::2 dev eth1 metric 1044 proto 79",
}

// setHandoffs sets want on a fake kernel with the LAN.
func setHandoffs(t *testing.T, want Desired) (*fakeKernel, *Dataplane) {
	t.Helper()
	k := newFakeKernel()
	addLAN(k)
	d := newFakeDataplane(k, "ocdptest0")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	return k, d
}

// tableLines and mainLines are routeLines of our protocol outside and in
// the main table.
func (k *fakeKernel) tableLines() []string {
	return slices.DeleteFunc(k.routeLines(RouteProtocol), func(l string) bool { return strings.HasPrefix(l, "table 254 ") })
}

func (k *fakeKernel) mainLines() []string {
	return slices.DeleteFunc(k.routeLines(RouteProtocol), func(l string) bool { return !strings.HasPrefix(l, "table 254 ") })
}

// TestHandoffRulesAndTables: a handoff is the two fixed rules and a rule
// per source in each family, and a table with the twin's LAN address as
// default route per family (TestSetBuildsEverything holds the rest); a
// reordered Set writes nothing.
func TestHandoffRulesAndTables(t *testing.T) {
	want := handoffDesired(newFixture(t))
	k, d := setHandoffs(t, want)
	sameLines(t, "rules", k.ruleLines(), handoffRules)
	sameLines(t, "handoff table", k.tableLines(), handoffTable)
	slices.Reverse(want.Handoffs[0].Sources)
	slices.Reverse(want.Handoffs[0].Via)
	setWritesNothing(t, k, d, want, "a reordered Set")
}

// TestHandoffLongerSourcesFirst: each twin has a table of its own (by
// name), and the rule of a longer source comes ahead of a shorter one it
// lies in, whichever twin each belongs to.
func TestHandoffLongerSourcesFirst(t *testing.T) {
	f := newFixture(t)
	want := f.desired()
	want.Handoffs = []Handoff{
		{Twin: "c", Via: addrs("10.1.0.3"), Sources: pfxs("10.1.200.7/32", "10.1.128.0/17")},
		{Twin: "b", Via: addrs("10.1.0.2"), Sources: pfxs("10.1.192.0/18")},
	}
	k, _ := setHandoffs(t, want)
	sameLines(t, "rules", k.ruleLines(), append(fixedRules("v4"),
		"v4 7902 from 10.1.200.7/32 lookup 7902", "v4 7916 from 10.1.192.0/18 lookup 7901", "v4 7917 from 10.1.128.0/17 lookup 7902"))
	sameLines(t, "handoff tables", k.tableLines(), []string{
		"table 7901 0.0.0.0/0 via 10.1.0.2 dev eth1 metric 20 proto 79",
		"table 7902 0.0.0.0/0 via 10.1.0.3 dev eth1 metric 20 proto 79",
	})
}

// TestHandoffWithoutConnectedAddress: the first of a twin's addresses on
// a subnet connected to this gateway is the next hop, per family; a
// family with none (routed through the tunnel or a router, or this
// gateway's own) is an error naming the twin, and its sources get no rule,
// while the other family and the other twins get theirs.
func TestHandoffWithoutConnectedAddress(t *testing.T) {
	f := newFixture(t)
	want := f.desired()
	want.Handoffs = []Handoff{
		{Twin: "b", Via: addrs("172.31.0.3", "10.2.0.5", "10.1.0.1", "10.1.0.2"), Sources: pfxs("10.1.128.0/17", "fd00:1:0:0:8000::/65")},
		{Twin: "c", Via: addrs("172.31.0.3", "fd00:9::3"), Sources: pfxs("10.1.64.0/18")},
	}
	k := newFakeKernel()
	addLAN(k)
	d := newFakeDataplane(k, "ocdptest0")
	err := d.Set(ctx, want)
	if err == nil || !strings.Contains(err.Error(), "handoff to b") || !strings.Contains(err.Error(), "handoff to c") {
		t.Fatalf("Set = %v, want errors naming b (no IPv6 address) and c (none connected)", err)
	}
	sameLines(t, "rules", k.ruleLines(), append(fixedRules("v4"), "v4 7917 from 10.1.128.0/17 lookup 7901"))
	sameLines(t, "handoff tables", k.tableLines(), handoffTable[:1])
	// The rest of the Set is in place.
	sameLines(t, "main table", k.mainLines(), fixtureRoutes)
	// The twin's address appears on the LAN: the next repair completes it.
	want.Handoffs[1].Via = addrs("10.1.0.3")
	if err := d.Set(ctx, want); err == nil || strings.Contains(err.Error(), "handoff to c") {
		t.Errorf("Set = %v, want only b's missing IPv6 address", err)
	}
	if !slices.Contains(k.ruleLines(), "v4 7916 from 10.1.64.0/18 lookup 7902") {
		t.Errorf("rules %v lack c's source once its address is connected", k.ruleLines())
	}
}

// TestHandoffChanges: a twin's new LAN address replaces its table's
// route; a twin sorting first moves the other's rules to the next table
// (new rules added ahead of removing the old ones) and empties the old table; the
// last handoff removed takes every rule and table with it; foreign rules
// stay throughout.
func TestHandoffChanges(t *testing.T) {
	f := newFixture(t)
	want := handoffDesired(f)
	k, d := setHandoffs(t, want)
	foreign := netlink.NewRule()
	foreign.Family, foreign.Priority, foreign.Table, foreign.Protocol = netlink.FAMILY_V4, 7917, 100, unix.RTPROT_STATIC
	foreign.Src = ipnetOf("10.1.128.0/17")
	if err := k.RuleAdd(foreign); err != nil {
		t.Fatal(err)
	}
	all := len(k.rules)

	want.Handoffs[0].Via = addrs("10.1.0.22", "fd00:1::2")
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	sameLines(t, "handoff table after a new address", k.tableLines(), []string{
		"table 7901 0.0.0.0/0 via 10.1.0.22 dev eth1 metric 20 proto 79", handoffTable[1]})

	want.Handoffs = append(want.Handoffs, Handoff{Twin: "a-first", Via: addrs("10.1.0.3"), Sources: pfxs("10.1.64.0/18")})
	want.Peers = append(want.Peers, Peer{Name: "a-first", PublicKey: mustKey(t).PublicKey(), TunnelAddresses: pfxs("100.64.0.4/32"), AllowedIPs: pfxs("10.1.64.0/18")})
	k.ops = nil
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	sameLines(t, "rules with a twin sorting first", k.ruleLines(), append(fixedRules("v4", "v6"),
		"v4 7916 from 10.1.64.0/18 lookup 7901", "v4 7917 from 10.1.128.0/17 lookup 7902", "v6 7965 from fd00:1:0:0:8000::/65 lookup 7902"))
	sameLines(t, "handoff tables with a twin sorting first", k.tableLines(), []string{
		"table 7901 0.0.0.0/0 via 10.1.0.3 dev eth1 metric 20 proto 79",
		"table 7902 0.0.0.0/0 via 10.1.0.22 dev eth1 metric 20 proto 79",
		"table 7902 ::/0 via fd00:1::2 dev eth1 metric 1044 proto 79",
	})
	lastAdd, firstDel := -1, len(k.ops)
	for i, op := range k.ops {
		if strings.HasPrefix(op, "rule add") {
			lastAdd = i
		} else if strings.HasPrefix(op, "rule del") && i < firstDel {
			firstDel = i
		}
	}
	if lastAdd < 0 || lastAdd > firstDel {
		t.Errorf("rule writes %v: want every add before the first delete", k.ops)
	}

	want.Handoffs = nil
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if rules, tables := k.ruleLines(), k.tableLines(); len(rules)+len(tables) != 0 {
		t.Errorf("without handoffs: rules %v tables %v", rules, tables)
	}
	if len(k.rules) != all-len(handoffRules) {
		t.Errorf("%d rules left, want the %d foreign ones", len(k.rules), all-len(handoffRules))
	}
}

// TestHandoffDriftRepaired: a rule or a handoff table's route deleted by
// hand, or the LAN down and up again (its routes flushed), is put back by
// the next repair.
func TestHandoffDriftRepaired(t *testing.T) {
	k, d := setHandoffs(t, handoffDesired(newFixture(t)))
	for _, drift := range []struct {
		name string
		do   func()
	}{
		{"rule 7901 deleted", func() {
			k.rules = slices.DeleteFunc(k.rules, func(r netlink.Rule) bool { return r.Priority == ruleLocalFirst && r.Family == netlink.FAMILY_V4 })
		}},
		{"source rule deleted", func() {
			k.rules = slices.DeleteFunc(k.rules, func(r netlink.Rule) bool { return r.Priority == 7965 })
		}},
		{"table route deleted", func() { k.deleteRoute(7901, "0.0.0.0/0") }},
		{"LAN flapped", func() {
			k.setDown("eth1")
			_ = k.LinkSetUp(k.links["eth1"])
		}},
	} {
		drift.do()
		repairDrift(d)
		sameLines(t, drift.name+": rules", k.ruleLines(), handoffRules)
		sameLines(t, drift.name+": handoff table", k.tableLines(), handoffTable)
	}
}

// TestHandoff sends from each of the VPC host's addresses through each
// twin to B's host: every echo is answered; the packets enter the tunnel
// at their source's home and nowhere else (B receives them from the home
// only, and answers to it); a flow through the other twin is handed off
// over the LAN (that twin sends each packet back out on it) and the
// twin's device carries none of it.
func TestHandoff(t *testing.T) {
	x := newTwinLab(t, false)
	for i := range 2 {
		want := fmt.Sprintf("from %s lookup %d proto 79", twinPieces[1-i], DefaultHandoffTableBase+1)
		if out := run(t, "ip", "-n", x.gws[i].ns, "rule"); !strings.Contains(out, want) {
			t.Errorf("gw%d's rules lack %q:\n%s", i, want, out)
		}
	}
	const count = 20
	// The pinger's echo is 80 bytes in a WireGuard message (45 padded to
	// 48, and 32 of header and tag); the twin's share is at most a
	// keepalive or two, and the last answer's count may lag its arrival.
	const least, most = count * 80 / 2, count * 80 / 4
	for _, c := range []struct{ src, in int }{{0, 0}, {0, 1}, {1, 1}, {1, 0}} {
		home, twin := c.src, 1-c.src
		what := fmt.Sprintf("from %s (homed at gw%d) in at gw%d", twinHosts[c.src], home, c.in)
		x.force(remoteHost, c.in)
		rx0, tx0 := x.peerBytes()
		lan0, wg0 := counter(t, x.gws[twin].ns, twinLANLink, "tx_packets"), counter(t, x.gws[twin].ns, x.device(twin), "tx_packets")
		got, err := newPingerFrom(t, x.h, twinHosts[c.src]).ping(remoteHost, count, 10*time.Millisecond, time.Second)
		if err != nil || got != count {
			t.Errorf("%s: %d of %d answered (%v)", what, got, count, err)
		}
		rx, tx := x.peerBytes()
		if rx[home]-rx0[home] < least || rx[twin]-rx0[twin] > most || tx[home]-tx0[home] < least || tx[twin]-tx0[twin] > most {
			t.Errorf("%s: B received %d bytes from the home and %d from the twin, and answered with %d and %d: want all through the home",
				what, rx[home]-rx0[home], rx[twin]-rx0[twin], tx[home]-tx0[home], tx[twin]-tx0[twin])
		}
		if wg := counter(t, x.gws[twin].ns, x.device(twin), "tx_packets") - wg0; wg > count/4 {
			t.Errorf("%s: the twin gw%d's device sent %d packets, want none of the %d", what, twin, wg, count)
		}
		if lan := counter(t, x.gws[twin].ns, twinLANLink, "tx_packets") - lan0; c.in == twin && lan < count {
			t.Errorf("%s: the twin gw%d sent %d packets out on the LAN, want every one of the %d handed off", what, twin, lan, count)
		}
	}
}
