package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardOps keeps the gateway's guard: an nftables table that drops every
// packet whose source is a gateway's tunnel address but which did not
// come out of the tunnel (nor from this host itself, through lo). Only
// gateways send from those addresses, and traffic between them is exempt
// from shaping (SPEC section 5), so a tenant host that forged one would
// escape its region pair's bucket. *nftGuard is the real implementation;
// tests use a fake.
type guardOps interface {
	// ensureGuard makes table hold exactly the guard of device dev for the
	// gateway addresses addrs, writing nothing when it already does; it
	// reports whether it wrote.
	ensureGuard(table, dev string, addrs []netip.Addr) (bool, error)
	// removeGuard deletes table; absent is success.
	removeGuard(table string) error
}

// guardTable names the guard's nftables table (family inet).
func guardTable(device string) string { return "opencen_" + device }

// guardChain is the one chain of the guard table: a prerouting hook at raw
// priority (-300): ahead of routing, conntrack and any filter a host has.
const guardChain = "prerouting"

// The guard's sets of gateway addresses, one per family.
const (
	guardSet4 = "gateways4"
	guardSet6 = "gateways6"
)

// nftGuard is guardOps over nftables in one namespace.
type nftGuard struct {
	conn *nftables.Conn
}

func newNFTGuard(nsFd int) (*nftGuard, error) {
	var opts []nftables.ConnOption
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return &nftGuard{conn: c}, nil
}

// guardTag marks each rule; a rule with another tag (another device, an
// older version of the rule) makes the table be rewritten.
func guardTag(dev string, family byte) []byte {
	return fmt.Appendf(nil, "opencen guard v2: nfproto %d iifname != { %s, lo } saddr @gateways drop", family, dev)
}

func ifname(dev string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, dev)
	return b
}

// guardExprs drops a packet of family (NFPROTO_IPV4 or _IPV6) from an
// address of set that arrived on neither dev nor lo.
func guardExprs(dev string, family byte, set *nftables.Set) []expr.Any {
	off, n := uint32(12), uint32(4) // IPv4 source address
	if family == unix.NFPROTO_IPV6 {
		off, n = 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(dev)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func (g *nftGuard) find(table string) (*nftables.Table, error) {
	ts, err := g.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == table {
			return t, nil
		}
	}
	return nil, nil
}

// splitFamilies returns addrs' IPv4 and IPv6 addresses, each sorted.
func splitFamilies(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else if a.IsValid() {
			v6 = append(v6, a)
		}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	slices.SortFunc(v6, netip.Addr.Compare)
	return slices.Compact(v4), slices.Compact(v6)
}

// intact reports whether t holds exactly the guard: its chain, its two
// rules and its two sets with exactly addrs.
func (g *nftGuard) intact(t *nftables.Table, dev string, addrs []netip.Addr) (bool, error) {
	chains, err := g.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables chains: %w", err)
	}
	var mine []*nftables.Chain
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == t.Name {
			mine = append(mine, c)
		}
	}
	if len(mine) != 1 {
		return false, nil
	}
	c := mine[0]
	if c.Name != guardChain || c.Type != nftables.ChainTypeFilter || c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookPrerouting ||
		c.Priority == nil || *c.Priority != *nftables.ChainPriorityRaw {
		return false, nil
	}
	rules, err := g.conn.GetRules(t, c)
	if err != nil {
		return false, fmt.Errorf("list nftables rules: %w", err)
	}
	if len(rules) != 2 || !bytes.Equal(rules[0].UserData, guardTag(dev, unix.NFPROTO_IPV4)) ||
		!bytes.Equal(rules[1].UserData, guardTag(dev, unix.NFPROTO_IPV6)) {
		return false, nil
	}
	v4, v6 := splitFamilies(addrs)
	for name, want := range map[string][]netip.Addr{guardSet4: v4, guardSet6: v6} {
		s, err := g.conn.GetSetByName(t, name)
		if err != nil {
			return false, nil
		}
		elems, err := g.conn.GetSetElements(s)
		if err != nil {
			return false, fmt.Errorf("list nftables set %s: %w", name, err)
		}
		var have []netip.Addr
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				have = append(have, a.Unmap())
			}
		}
		slices.SortFunc(have, netip.Addr.Compare)
		if !slices.Equal(have, want) {
			return false, nil
		}
	}
	return true, nil
}

func setElements(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

func (g *nftGuard) ensureGuard(table, dev string, addrs []netip.Addr) (bool, error) {
	t, err := g.find(table)
	if err != nil {
		return false, err
	}
	if t != nil {
		ok, err := g.intact(t, dev, addrs)
		if err != nil || ok {
			return false, err
		}
		// One batch: the old table goes and the new one comes atomically.
		g.conn.DelTable(t)
	}
	v4, v6 := splitFamilies(addrs)
	t = g.conn.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	c := g.conn.AddChain(&nftables.Chain{Name: guardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	for _, f := range []struct {
		name   string
		typ    nftables.SetDatatype
		family byte
		addrs  []netip.Addr
	}{{guardSet4, nftables.TypeIPAddr, unix.NFPROTO_IPV4, v4}, {guardSet6, nftables.TypeIP6Addr, unix.NFPROTO_IPV6, v6}} {
		s := &nftables.Set{Table: t, Name: f.name, KeyType: f.typ}
		if err := g.conn.AddSet(s, setElements(f.addrs)); err != nil {
			return false, fmt.Errorf("nftables guard %s: set %s: %w", table, f.name, err)
		}
		g.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: guardExprs(dev, f.family, s), UserData: guardTag(dev, f.family)})
	}
	if err := g.conn.Flush(); err != nil {
		return false, fmt.Errorf("install nftables guard %s: %w", table, err)
	}
	return true, nil
}

func (g *nftGuard) removeGuard(table string) error {
	t, err := g.find(table)
	if err != nil || t == nil {
		return err
	}
	g.conn.DelTable(t)
	if err := g.conn.Flush(); err != nil {
		return fmt.Errorf("delete nftables guard %s: %w", table, err)
	}
	return nil
}
