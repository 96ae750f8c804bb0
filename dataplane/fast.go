package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultFastTable is the routing table of the fast path ("ip route show
// table 79"): the same number as RouteProtocol, so both are easy to find.
const DefaultFastTable = 79

// FastRulePriority is the priority of the fast path's policy rules
// (`from SOURCE lookup 79`), ahead of the main table's 32766.
const FastRulePriority = 7900

// fastSpec is the fast table: for every IPv4 route with a home,
// `PREFIX dev WG` while the home is one of its gateways, else `throw
// PREFIX`, which ends the lookup in this table without a match so the next
// rule (the main table's overlay routes) decides. Every route of the main
// table that a fast route could shadow is in the fast table too, one way
// or the other, so the longest match is the same in both. Without sources
// (no rule points here), or with the fast path in the main table
// (plainMain), the table stays empty.
func fastSpec(p plan, idx, table int) routeSpec {
	var homed []int // indices into p.routes
	if len(p.sources) > 0 && !p.plainMain {
		for i := range p.routes {
			if p.routes[i].home.IsValid() {
				homed = append(homed, i)
			}
		}
	}
	return routeSpec{
		n:   len(homed),
		key: func(i int) netip.Prefix { return p.routes[homed[i]].prefix },
		fp: func(i int) uint64 {
			if !p.routes[homed[i]].homeUp {
				return newRouteHash('t').Sum64()
			}
			h := newRouteHash('f')
			h.int(idx)
			return h.Sum64()
		},
		build: func(i int, arena *ipArena) netlink.Route {
			r := &p.routes[homed[i]]
			rt := netlink.Route{Dst: arena.ipnet(r.prefix), Protocol: RouteProtocol, Table: table, Family: netlink.FAMILY_V4}
			if r.homeUp {
				rt.LinkIndex, rt.Type, rt.Scope = idx, unix.RTN_UNICAST, netlink.SCOPE_LINK
			} else {
				rt.Type, rt.Scope = unix.RTN_THROW, netlink.SCOPE_UNIVERSE
			}
			return rt
		},
	}
}

// wantFastRules is one rule per source: `from SOURCE lookup FAST`; none
// when the main table holds the fast path (plainMain).
func wantFastRules(p plan, table int) []netlink.Rule {
	if p.plainMain {
		return nil
	}
	out := make([]netlink.Rule, 0, len(p.sources))
	for _, s := range p.sources {
		r := netlink.NewRule()
		src := prefixToIPNet(s)
		r.Family, r.Priority, r.Table, r.Src, r.Protocol = netlink.FAMILY_V4, FastRulePriority, table, &src, RouteProtocol
		out = append(out, *r)
	}
	return out
}

// ownedRule: rules carry protocol 79 and point at the fast table.
func ownedRule(r *netlink.Rule, table int) bool {
	return r.Protocol == RouteProtocol && r.Table == table
}

func ruleSource(r *netlink.Rule) netip.Prefix {
	if r.Src == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	p, _ := ipNetToPrefix(*r.Src)
	return p
}

// syncFast makes the fast table and its rules equal to the plan: routes
// first (add before delete), then rules, so a rule never points at a
// table that is still being filled, and rules go away before their routes.
func (d *Dataplane) syncFast(p plan, idx int) error {
	table := d.opts.FastTable
	want := fastSpec(p, idx, table)
	add, del, gen, err := d.fastCache.diff(d.drift.Load(), table, want, func() ([]netlink.Route, error) { return d.tableRoutes(table) })
	if err != nil {
		return err
	}
	var errAdd, errDel error
	if len(add) > 0 {
		d.log.Info("syncing fast-path routes", "install", len(add), "delete", len(del))
		errAdd = applyRoutes(d.writers, want.routes(add), nil)
	}
	errRules := d.syncRules(wantFastRules(p, table))
	if len(del) > 0 {
		if len(add) == 0 {
			d.log.Info("syncing fast-path routes", "install", 0, "delete", len(del))
		}
		errDel = applyRoutes(d.writers, nil, del)
	}
	d.fastCache.applied(gen, want, add, del, errors.Join(errAdd, errDel))
	return errors.Join(errAdd, errRules, errDel)
}

func (d *Dataplane) tableRoutes(table int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: table, Protocol: RouteProtocol}
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list table %d routes: %w", table, err)
	}
	return rs, nil
}

// syncRules adds the wanted fast-path rules that are missing, then deletes
// the owned ones that are no longer wanted.
func (d *Dataplane) syncRules(want []netlink.Rule) error {
	table := d.opts.FastTable
	rules, err := retryDump(func() ([]netlink.Rule, error) { return d.nl.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	have := map[netip.Prefix]*netlink.Rule{}
	for i := range rules {
		if ownedRule(&rules[i], table) {
			have[ruleSource(&rules[i])] = &rules[i]
		}
	}
	var errs []error
	keep := map[netip.Prefix]bool{}
	for i := range want {
		src := ruleSource(&want[i])
		keep[src] = true
		if h, ok := have[src]; ok && h.Priority == want[i].Priority {
			continue
		}
		d.log.Info("adding fast-path rule", "from", src, "table", table)
		if err := d.nl.RuleAdd(&want[i]); err != nil && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule from %s lookup %d: %w", src, table, err))
		}
	}
	for src, r := range have {
		if keep[src] && r.Priority == FastRulePriority {
			continue
		}
		d.log.Info("removing fast-path rule", "from", src, "table", table)
		if err := d.nl.RuleDel(r); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete rule from %s lookup %d: %w", src, table, err))
		}
	}
	return errors.Join(errs...)
}

// removeFast deletes the fast path's rules and routes (teardown).
func (d *Dataplane) removeFast() error {
	d.fastCache.invalidate()
	err := d.syncRules(nil)
	rs, lerr := d.tableRoutes(d.opts.FastTable)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	return errors.Join(err, applyRoutes(d.writers, nil, rs))
}
