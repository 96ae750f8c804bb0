package routing

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid routing desired state")

// Validate reports every problem of d, each naming the offending value.
func Validate(d *Desired) error {
	v := &validator{seen: map[netip.Addr]string{}}
	v.v4("router id", d.RouterID)
	v.v4("local address", d.LocalAddress)
	if d.Region == "" {
		v.bad("region is empty")
	}
	if d.InstanceASN == 0 {
		v.bad("instance asn is 0, want 1 to 4294967295")
	}
	if d.LocalAddress.IsValid() {
		v.seen[d.LocalAddress] = "local address"
	}
	for _, g := range d.Gateways {
		v.gateway(g)
	}
	for _, o := range d.Originate {
		v.prefix(fmt.Sprintf("originated network %q", o.Network), o.Prefix)
		if o.Network == "" || o.Region == "" {
			v.bad("originated prefix %s without network or region", o.Prefix)
		}
	}
	for _, s := range d.VBRs {
		v.vbr(s, d.InstanceASN)
	}
	for _, n := range d.InstanceCIDRs {
		v.prefix(fmt.Sprintf("instance cidr of %q", n.Network), n.Prefix)
	}
	for _, p := range d.ProtectedPrefixes {
		v.prefix("protected prefix", p)
	}
	for _, p := range d.RouterAddresses {
		v.prefix("VBR router address", p)
	}
	for _, p := range d.Connected {
		v.prefix("connected subnet", p)
	}
	for _, a := range d.HandoffAddresses {
		v.addr("handoff address", a)
	}
	if len(v.errs) == 0 {
		if err := checkTagCollisions(d); err != nil {
			v.errs = append(v.errs, err)
		}
	}
	return errors.Join(v.errs...)
}

// validator collects the problems of one Desired.
type validator struct {
	errs []error
	seen map[netip.Addr]string // session addresses, to what uses them
}

func (v *validator) bad(format string, a ...any) {
	v.errs = append(v.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
}

// v4 checks that a is set and IPv4: a router id, and the tunnel
// addresses gateway sessions run between (they carry both families).
func (v *validator) v4(what string, a netip.Addr) {
	if !a.IsValid() {
		v.bad("%s is not set", what)
	} else if !a.Is4() {
		v.bad("%s %s: must be IPv4", what, a)
	}
}

// addr checks that a is set, of either family, without a zone.
func (v *validator) addr(what string, a netip.Addr) {
	switch {
	case !a.IsValid():
		v.bad("%s is not set", what)
	case a.Zone() != "" || a.Is4In6():
		v.bad("%s %s: want a plain IPv4 or IPv6 address", what, a)
	}
}

// prefix checks that p is a valid prefix without host bits.
func (v *validator) prefix(what string, p netip.Prefix) {
	if !p.IsValid() {
		v.bad("%s: invalid prefix", what)
		return
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		v.bad("%s %s: want a plain IPv4 or IPv6 prefix", what, p)
	}
	if p.Masked() != p {
		v.bad("%s %s: host bits set, want %s", what, p, p.Masked())
	}
}

// unique checks that no other session runs to a.
func (v *validator) unique(what string, a netip.Addr) {
	if prev, ok := v.seen[a]; ok {
		v.bad("%s address %s already used by %s", what, a, prev)
	}
	v.seen[a] = what
}

func (v *validator) gateway(g GatewayPeer) {
	what := fmt.Sprintf("gateway %q", g.Name)
	if g.Name == "" {
		v.bad("gateway with address %s has no name", g.Address)
	}
	if g.Region == "" {
		v.bad("%s has no region", what)
	}
	v.v4(what+" address", g.Address)
	v.unique(what, g.Address)
	for _, e := range g.Entitled {
		if e.Network == "" || e.Region == "" {
			v.bad("%s entitlement without network or region", what)
		}
		if e.Kind != KindVPC && e.Kind != KindVBR {
			v.bad("%s entitlement %q: kind %v, want vpc or vbr", what, e.Network, e.Kind)
		}
		if e.Kind == KindVPC && len(e.Prefixes) == 0 {
			v.bad("%s vpc entitlement %q has no prefixes", what, e.Network)
		}
		for _, p := range e.Prefixes {
			v.prefix(fmt.Sprintf("%s entitlement %q prefix", what, e.Network), p)
		}
	}
}

func (v *validator) vbr(s VBRSession, instanceASN uint32) {
	what := fmt.Sprintf("vbr %q", s.Network)
	if s.Network == "" || s.Region == "" {
		v.bad("vbr session to %s without network or region", s.Neighbor)
	}
	v.addr(what+" neighbor", s.Neighbor)
	v.unique(what, s.Neighbor)
	if s.LocalAddress.IsValid() && s.LocalAddress.Is4() != s.Neighbor.Is4() {
		v.bad("%s local address %s: not of the neighbor %s's family", what, s.LocalAddress, s.Neighbor)
	}
	var fams [2]bool
	for _, a := range s.LinkAddresses {
		v.addr(what+" link address", a.Addr())
		if i := family(a.Addr()); fams[i] {
			v.bad("%s link addresses %v: at most one per family", what, s.LinkAddresses)
		} else {
			fams[i] = true
		}
	}
	if s.PeerASN == 0 {
		v.bad("%s peer asn is 0, want 1 to 4294967295", what)
	}
	if s.PeerASN == instanceASN && instanceASN != 0 {
		v.bad("%s peer asn %d equals the instance asn; vbr sessions are eBGP", what, s.PeerASN)
	}
	for _, p := range s.Accept {
		v.prefix(what+" accept", p)
	}
}

// family is 0 for IPv4, 1 for IPv6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}
