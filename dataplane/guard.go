package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// guardOps keeps the gateway's guard: an nftables table of its own
// (guardRules lists its rules) that keeps tenants from passing for
// gateways, keeps BGP and BFD to the links they belong to, and forwards
// only between the device, the LANs and the VBR links, never from the
// underlay. *nftGuard is the real implementation; tests use a fake.
type guardOps interface {
	// ensureGuard makes table hold exactly the guard g, writing nothing
	// when it already does; it reports whether it wrote.
	ensureGuard(table string, g guardSpec) (bool, error)
	// removeGuard deletes table; absent is success.
	removeGuard(table string) error
}

// guardTable names the guard's nftables table (family inet).
func guardTable(device string) string { return "opencen_" + device }

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

// guardChains are the guard's two chains.
func guardChains(t *nftables.Table) []*nftables.Chain {
	return []*nftables.Chain{
		{Name: guardChain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
		{Name: forwardChain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter},
	}
}

// intact reports whether t holds exactly the guard g: its chains, the
// tags of their rules in order, and its sets with exactly their elements.
func (g *nftGuard) intact(t *nftables.Table, spec guardSpec) (bool, error) {
	chains, err := g.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == t.Name {
			have[c.Name] = c
		}
	}
	want := guardChains(t)
	if len(have) != len(want) {
		return false, nil
	}
	tags := map[string][][]byte{}
	for _, r := range guardRules(spec, placeholderSets()) {
		tags[r.chain] = append(tags[r.chain], r.tag)
	}
	for _, w := range want {
		c := have[w.Name]
		if c == nil || c.Type != w.Type || c.Hooknum == nil || *c.Hooknum != *w.Hooknum || c.Priority == nil || *c.Priority != *w.Priority {
			return false, nil
		}
		rules, err := g.conn.GetRules(t, c)
		if err != nil {
			return false, fmt.Errorf("list nftables rules: %w", err)
		}
		if !slices.EqualFunc(rules, tags[w.Name], func(r *nftables.Rule, tag []byte) bool { return bytes.Equal(r.UserData, tag) }) {
			return false, nil
		}
	}
	for _, s := range guardSetSpecs(spec) {
		ok, err := g.setHolds(t, s)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// placeholderSets are sets by name alone: enough to compute the rules'
// tags, which name the sets without their ids.
func placeholderSets() guardSets {
	out := guardSets{}
	for _, n := range []string{guardSet4, guardSet6, selfSet4, selfSet6, attachedSet, underlaySet} {
		out[n] = &nftables.Set{Name: n}
	}
	return out
}

// setHolds reports whether t's set s.name holds exactly s.keys.
func (g *nftGuard) setHolds(t *nftables.Table, s setSpec) (bool, error) {
	set, err := g.conn.GetSetByName(t, s.name)
	if err != nil {
		return false, nil
	}
	elems, err := g.conn.GetSetElements(set)
	if err != nil {
		return false, fmt.Errorf("list nftables set %s: %w", s.name, err)
	}
	have := make([][]byte, 0, len(elems))
	for _, e := range elems {
		have = append(have, e.Key)
	}
	want := slices.Clone(s.keys)
	slices.SortFunc(have, bytes.Compare)
	slices.SortFunc(want, bytes.Compare)
	return slices.EqualFunc(have, want, bytes.Equal), nil
}

func (g *nftGuard) ensureGuard(table string, spec guardSpec) (bool, error) {
	t, err := g.find(table)
	if err != nil {
		return false, err
	}
	if t != nil {
		ok, err := g.intact(t, spec)
		if err != nil || ok {
			return false, err
		}
		// One batch: the old table goes and the new one comes atomically.
		g.conn.DelTable(t)
	}
	t = g.conn.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	chains := map[string]*nftables.Chain{}
	for _, c := range guardChains(t) {
		chains[c.Name] = g.conn.AddChain(c)
	}
	sets := guardSets{}
	for _, s := range guardSetSpecs(spec) {
		set := &nftables.Set{Table: t, Name: s.name, KeyType: s.typ}
		if s.typ == nftables.TypeIFName {
			// Interface names are compared in host order; without saying
			// so nft prints them byte-swapped, as empty strings.
			set.KeyByteOrder = binaryutil.NativeEndian
		}
		elems := make([]nftables.SetElement, 0, len(s.keys))
		for _, k := range s.keys {
			elems = append(elems, nftables.SetElement{Key: k})
		}
		if err := g.conn.AddSet(set, elems); err != nil {
			return false, fmt.Errorf("nftables guard %s: set %s: %w", table, s.name, err)
		}
		sets[s.name] = set
	}
	for _, r := range guardRules(spec, sets) {
		g.conn.AddRule(&nftables.Rule{Table: t, Chain: chains[r.chain], Exprs: r.exprs, UserData: r.tag})
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
