package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultHandoffTableBase numbers the handoff tables: the twin that sorts
// first by name gets table base+1, the next base+2, and so on.
const DefaultHandoffTableBase = 7900

// Priorities of the policy rules of a gateway with handoffs (`ip rule`),
// ahead of the main table's 32766:
//
//	7900: iif WG lookup main                  packets from the tunnel are never handed off
//	7901: lookup main suppress_ifgroup 79     a local route (LAN, VBR, operator) wins
//	7902 + (host bits - prefix bits of S):
//	      from S lookup TWIN-TABLE            what the tunnel would carry goes to the twin
//
// Longer sources get lower numbers, so the kernel meets the most specific
// source first, as WireGuard's AllowedIPs would.
const (
	ruleFromTunnel   = 7900
	ruleLocalFirst   = 7901
	ruleHandoffFirst = 7902
)

// handoffRule is one wanted policy rule, comparable for diffing.
type handoffRule struct {
	family   int
	priority int
	src      netip.Prefix // invalid: from all
	table    int
	iif      string
	suppress int // suppress_ifgroup, -1 for none
}

// wantedRules are the rules of p: none without handoffs, else the two
// fixed rules of each family that has a handed-off source, and one rule
// per source whose handoff has a next hop of its family.
func wantedRules(p plan, device string, table int, usable map[int]map[int]netip.Addr) []handoffRule {
	var out []handoffRule
	fixed := map[int]bool{}
	for _, h := range p.handoffs {
		for _, s := range h.sources {
			fam := familyOf(s.Addr())
			if !usable[h.table][fam].IsValid() {
				continue
			}
			fixed[fam] = true
			out = append(out, handoffRule{family: fam, priority: ruleHandoffFirst + s.Addr().BitLen() - s.Bits(), src: s, table: h.table, suppress: -1})
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if fixed[fam] {
			out = append(out,
				handoffRule{family: fam, priority: ruleFromTunnel, table: table, iif: device, suppress: -1},
				handoffRule{family: fam, priority: ruleLocalFirst, table: table, suppress: DeviceGroup})
		}
	}
	return out
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func (r handoffRule) netlink() *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family, nr.Priority, nr.Table, nr.Protocol = r.family, r.priority, r.table, RouteProtocol
	nr.IifName, nr.SuppressIfgroup = r.iif, r.suppress
	if r.src.IsValid() {
		src := prefixToIPNet(r.src)
		nr.Src = &src
	}
	return nr
}

func ruleKey(r *netlink.Rule) handoffRule {
	k := handoffRule{family: r.Family, priority: r.Priority, table: r.Table, iif: r.IifName, suppress: r.SuppressIfgroup}
	if r.Src != nil {
		k.src, _ = ipNetToPrefix(*r.Src)
	}
	return k
}

// syncRules makes our rules (protocol 79, both families) equal to want:
// missing ones are added first, then ours that are not wanted deleted.
func (d *Dataplane) syncRules(want []handoffRule) error {
	have := map[handoffRule]*netlink.Rule{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := retryDump(func() ([]netlink.Rule, error) { return d.nl.RuleList(fam) })
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		for i := range rules {
			if rules[i].Protocol == RouteProtocol {
				have[ruleKey(&rules[i])] = &rules[i]
			}
		}
	}
	var errs []error
	keep := map[handoffRule]bool{}
	for _, w := range want {
		keep[w] = true
		if have[w] != nil {
			continue
		}
		d.log.Info("adding rule", "priority", w.priority, "from", w.src, "iif", w.iif, "table", w.table)
		if err := d.nl.RuleAdd(w.netlink()); err != nil && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule %d from %v lookup %d: %w", w.priority, w.src, w.table, err))
		}
	}
	for k, r := range have {
		if keep[k] {
			continue
		}
		d.log.Info("removing rule", "priority", k.priority, "from", k.src, "table", k.table)
		if err := d.nl.RuleDel(r); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete rule %d from %v lookup %d: %w", k.priority, k.src, k.table, err))
		}
	}
	return errors.Join(errs...)
}

// nextHops picks, for every handoff table and family with sources, the
// first of the twin's addresses that lies on a subnet connected to this
// gateway (the kernel routes it without a gateway, not into the tunnel).
// A family without one is an error naming the twin: its sources then have
// no rule and their packets take the tunnel from here.
func (d *Dataplane) nextHops(p plan, wgIndex int) (map[int]map[int]netip.Addr, error) {
	out := map[int]map[int]netip.Addr{}
	var errs []error
	for _, h := range p.handoffs {
		need := map[int]bool{}
		for _, s := range h.sources {
			need[familyOf(s.Addr())] = true
		}
		out[h.table] = map[int]netip.Addr{}
		for fam := range need {
			if a, ok := d.connectedVia(h.via, fam, wgIndex); ok {
				out[h.table][fam] = a
				continue
			}
			errs = append(errs, fmt.Errorf("handoff to %s: none of its addresses %v of this family is on a subnet connected to this gateway", h.twin, h.via))
		}
	}
	return out, errors.Join(errs...)
}

func (d *Dataplane) connectedVia(via []netip.Addr, fam, wgIndex int) (netip.Addr, bool) {
	for _, a := range via {
		if familyOf(a) != fam {
			continue
		}
		rs, err := d.nl.RouteGet(a.AsSlice())
		if err != nil || len(rs) == 0 {
			continue
		}
		if rs[0].Gw == nil && rs[0].LinkIndex != wgIndex && rs[0].LinkIndex != 0 && rs[0].Type != unix.RTN_LOCAL {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// handoffSpec is one handoff table: a default route per family to the
// twin's next hop.
func handoffSpec(table int, hops map[int]netip.Addr) routeSpec {
	var keys []netip.Prefix
	var vias []netip.Addr
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if a := hops[fam]; a.IsValid() {
			keys = append(keys, netip.PrefixFrom(zero(a), 0))
			vias = append(vias, a)
		}
	}
	return routeSpec{
		n:   len(keys),
		key: func(i int) netip.Prefix { return keys[i] },
		fp: func(i int) uint64 {
			h := newRouteHash('h')
			h.addr(vias[i])
			return h.Sum64()
		},
		build: func(i int, arena *ipArena) netlink.Route {
			rt := netlink.Route{Dst: arena.ipnet(keys[i]), Gw: arena.ip(vias[i]), Protocol: RouteProtocol, Table: table,
				Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_UNIVERSE, Family: familyOf(vias[i]), Priority: routeMetric(keys[i])}
			return rt
		},
	}
}

func zero(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// syncHandoffs writes the handoff tables, then the rules (so a rule never
// points at an empty table), then deletes tables not in use. It
// returns the next-hop errors with the write errors.
func (d *Dataplane) syncHandoffs(p plan, wgIndex int) error {
	hops, hopErr := d.nextHops(p, wgIndex)
	errs := []error{d.noRedirects(hops)}
	used := map[int]bool{}
	for _, h := range p.handoffs {
		used[h.table] = true
		if err := d.syncTable(h.table, handoffSpec(h.table, hops[h.table])); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.syncRules(wantedRules(p, d.name, d.opts.Table, hops)))
	for table := range d.handoffCaches {
		if !used[table] {
			errs = append(errs, d.syncTable(table, routeSpec{}))
			delete(d.handoffCaches, table)
		}
	}
	return errors.Join(hopErr, errors.Join(errs...))
}

// noRedirects turns ICMP redirects off on the links the handoffs leave
// through: a handed-off packet leaves through the LAN it came in on, and
// the kernel would tell the host to send to the twin directly, for every
// source of the host. It sends them while either "all" or the link's own
// send_redirects is on, and a link's own value is "default" as it
// stood when the link appeared, whatever Set did to "default" since. (IPv6 has no such switch.)
func (d *Dataplane) noRedirects(hops map[int]map[int]netip.Addr) error {
	var errs []error
	for _, byFamily := range hops {
		a := byFamily[netlink.FAMILY_V4]
		if !a.IsValid() {
			continue
		}
		rs, err := d.nl.RouteGet(a.AsSlice())
		if err != nil || len(rs) == 0 {
			continue
		}
		l, err := d.nl.LinkByIndex(rs[0].LinkIndex)
		if err != nil {
			continue
		}
		errs = append(errs, d.host.setSysctl("net.ipv4.conf."+l.Attrs().Name+".send_redirects", "0"))
	}
	return errors.Join(errs...)
}

// syncTable makes one of our tables (not main) hold want.
func (d *Dataplane) syncTable(table int, want routeSpec) error {
	c := d.handoffCaches[table]
	if c == nil {
		c = &routeCache{}
		d.handoffCaches[table] = c
	}
	add, del, gen, err := c.diff(d.drift.Load(), table, want, func() ([]netlink.Route, error) { return d.tableRoutes(table) })
	if err != nil {
		return err
	}
	if len(add)+len(del) > 0 {
		d.log.Info("syncing handoff table", "table", table, "install", len(add), "delete", len(del))
		err = applyRoutes(d.writers, want.routes(add), del)
	}
	c.applied(gen, want, add, del, err)
	return err
}

// tableRoutes lists our routes in one table.
func (d *Dataplane) tableRoutes(table int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: table, Protocol: RouteProtocol}
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list table %d routes: %w", table, err)
	}
	return rs, nil
}
