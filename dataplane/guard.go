package dataplane

import (
	"bytes"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardOps keeps the overlay guard: an nftables table that drops VXLAN
// (UDP port OverlayPort) arriving on any interface but the WireGuard
// device. The kernel's VXLAN socket listens on every address, so without
// it anyone who can reach a gateway's underlay address could send VXLAN
// frames and inject packets into the VPCs behind it. *nftGuard is the real
// implementation; tests use a fake.
type guardOps interface {
	// ensureGuard makes table hold exactly the guard rule for device dev,
	// writing nothing when it already does; it reports whether it wrote.
	ensureGuard(table, dev string) (bool, error)
	// removeGuard deletes table; absent is success.
	removeGuard(table string) error
}

// guardTable names the guard's nftables table (family inet).
func guardTable(device string) string { return "opencen_" + device }

// guardChain is the one chain of the guard table: an input hook at raw
// priority (-300), before any filter or conntrack a host may have.
const guardChain = "input"

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

// guardTag marks the rule; a rule with another tag (another port, another
// device, an older version of the rule) is replaced.
func guardTag(dev string) []byte {
	return fmt.Appendf(nil, "opencen overlay guard v1: udp dport %d iifname != %s drop", OverlayPort, dev)
}

func ifname(dev string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, dev)
	return b
}

func guardExprs(dev string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(OverlayPort)},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(dev)},
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

// intact reports whether t holds exactly the guard chain and rule.
func (g *nftGuard) intact(t *nftables.Table, dev string) (bool, error) {
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
	if c.Name != guardChain || c.Type != nftables.ChainTypeFilter || c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookInput ||
		c.Priority == nil || *c.Priority != *nftables.ChainPriorityRaw {
		return false, nil
	}
	rules, err := g.conn.GetRules(t, c)
	if err != nil {
		return false, fmt.Errorf("list nftables rules: %w", err)
	}
	return len(rules) == 1 && bytes.Equal(rules[0].UserData, guardTag(dev)) && len(rules[0].Exprs) == len(guardExprs(dev)), nil
}

func (g *nftGuard) ensureGuard(table, dev string) (bool, error) {
	t, err := g.find(table)
	if err != nil {
		return false, err
	}
	if t != nil {
		ok, err := g.intact(t, dev)
		if err != nil || ok {
			return false, err
		}
		// One batch: the old table goes and the new one comes atomically.
		g.conn.DelTable(t)
	}
	t = g.conn.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	c := g.conn.AddChain(&nftables.Chain{Name: guardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRaw})
	g.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: guardExprs(dev), UserData: guardTag(dev)})
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
