package dataplane

import (
	"slices"
	"strings"
	"testing"

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

// tableLines are routeLines of our protocol outside the main table.
func (k *fakeKernel) tableLines() []string {
	return slices.DeleteFunc(k.routeLines(RouteProtocol), func(l string) bool { return strings.HasPrefix(l, "table 254 ") })
}

// TestHandoffRulesAndTables: a handoff is the two fixed rules and a rule
// per source in each family, a table with the twin's LAN address as
// default route per family, the device in its group; a second Set writes
// nothing.
func TestHandoffRulesAndTables(t *testing.T) {
	want := handoffDesired(newFixture(t))
	k, d := setHandoffs(t, want)
	sameLines(t, "rules", k.ruleLines(), handoffRules)
	sameLines(t, "handoff table", k.tableLines(), handoffTable)
	sameLines(t, "main table", slices.DeleteFunc(k.routeLines(RouteProtocol), func(l string) bool { return !strings.HasPrefix(l, "table 254 ") }), fixtureRoutes)
	if g := k.links["ocdptest0"].Attrs().Group; g != DeviceGroup {
		t.Errorf("device group %d, want %d", g, DeviceGroup)
	}
	// The LAN existed before the Set: its own switch is what counts.
	if v := k.sysctls["net.ipv4.conf.eth1.send_redirects"]; v != "0" {
		t.Errorf("send_redirects on the LAN the handoff leaves through = %q, want 0", v)
	}
	slices.Reverse(want.Handoffs[0].Sources)
	slices.Reverse(want.Handoffs[0].Via)
	setWritesNothing(t, k, d, want, "a reordered Set")
}

// TestHandoffLongerSourcesFirst: each twin has a table of its own (by
// name), and the rule of a longer source comes before a shorter one it
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
	sameLines(t, "main table", slices.DeleteFunc(k.routeLines(RouteProtocol), func(l string) bool { return !strings.HasPrefix(l, "table 254 ") }), fixtureRoutes)
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
// (new rules added before the old ones go) and empties the old table; the
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
