package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Plan is what changing a config from one file to another would do, gateway
// by gateway, computed from the two configs' desired states.
type Plan struct {
	Instance  string        `json:"instance"`
	Gateways  []GatewayPlan `json:"gateways"`
	Bandwidth []PairChange  `json:"bandwidth"`
}

// Actions of a gateway in a plan.
const (
	PlanAdd       = "add"
	PlanRemove    = "remove"
	PlanChange    = "change"
	PlanUnchanged = "unchanged"
)

// GatewayPlan is what one gateway would do.
type GatewayPlan struct {
	Gateway          string         `json:"gateway"`
	Action           string         `json:"action"`
	Settings         []FieldChange  `json:"settings,omitempty"`
	PeersAdded       []string       `json:"peers_added,omitempty"`
	PeersRemoved     []string       `json:"peers_removed,omitempty"`
	PeersChanged     []PeerChange   `json:"peers_changed,omitempty"`
	OriginateAdded   []netip.Prefix `json:"originate_added,omitempty"`
	OriginateRemoved []netip.Prefix `json:"originate_removed,omitempty"`
	Rates            []RateChange   `json:"rates,omitempty"`
	VBRsAdded        []string       `json:"vbrs_added,omitempty"`
	VBRsRemoved      []string       `json:"vbrs_removed,omitempty"`
	VBRsChanged      []string       `json:"vbrs_changed,omitempty"`
}

// FieldChange is one setting's old and new value.
type FieldChange struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

// PeerChange names a peer and what about it changed. A change of endpoint,
// key or tunnel address reconfigures the tunnel; a change of entitlement
// only the route filters.
type PeerChange struct {
	Peer    string        `json:"peer"`
	Changes []FieldChange `json:"changes"`
}

// RateChange is a gateway's egress rate toward a region; zero is "none"
// (the region is added or removed).
type RateChange struct {
	Region string    `json:"region"`
	Old    Bandwidth `json:"old_bps"`
	New    Bandwidth `json:"new_bps"`
}

// PairChange is a region pair whose effective bandwidth changes. A nil side
// means the pair does not exist in that config.
type PairChange struct {
	Regions [2]string      `json:"regions"`
	Old     *PairBandwidth `json:"old,omitempty"`
	New     *PairBandwidth `json:"new,omitempty"`
}

// Changed reports whether the plan does anything.
func (p *Plan) Changed() bool {
	if len(p.Bandwidth) > 0 {
		return true
	}
	for _, g := range p.Gateways {
		if g.Action != PlanUnchanged {
			return true
		}
	}
	return false
}

// MakePlan computes what moving from old to new would do.
func MakePlan(old, new *Config) *Plan {
	p := &Plan{Instance: new.Instance.Name}
	names := append(gatewayNames(old), gatewayNames(new)...)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		prev, _ := old.Desired(name, DesiredOptions{})
		after, _ := new.Desired(name, DesiredOptions{})
		p.Gateways = append(p.Gateways, planGateway(name, prev, after))
	}
	p.Bandwidth = diffMatrix(old.Matrix(), new.Matrix())
	return p
}

func planGateway(name string, prev, after *Desired) GatewayPlan {
	gp := GatewayPlan{Gateway: name}
	switch {
	case prev == nil:
		gp.Action = PlanAdd
		prev = &Desired{}
	case after == nil:
		gp.Action = PlanRemove
		return gp
	}
	setting := func(field, o, n string) {
		if o != n {
			gp.Settings = append(gp.Settings, FieldChange{field, o, n})
		}
	}
	if gp.Action != PlanAdd {
		setting("region", prev.Region, after.Region)
		setting("tunnel_address", prev.TunnelAddress.String(), after.TunnelAddress.String())
		setting("listen_port", fmt.Sprint(prev.ListenPort), fmt.Sprint(after.ListenPort))
		setting("private_key_file", prev.PrivateKeyFile, after.PrivateKeyFile)
		setting("instance_asn", fmt.Sprint(prev.InstanceASN), fmt.Sprint(after.InstanceASN))
	}

	gp.planPeers(prev.Peers, after.Peers)
	gp.OriginateAdded, gp.OriginateRemoved = diffPrefixes(originPrefixes(prev.Originate), originPrefixes(after.Originate))
	gp.planRates(prev.Egress, after.Egress)
	gp.planVBRs(prev.VBRs, after.VBRs)

	if gp.Action == "" {
		gp.Action = PlanUnchanged
		if len(gp.Settings)+len(gp.PeersAdded)+len(gp.PeersRemoved)+len(gp.PeersChanged)+
			len(gp.OriginateAdded)+len(gp.OriginateRemoved)+len(gp.Rates)+
			len(gp.VBRsAdded)+len(gp.VBRsRemoved)+len(gp.VBRsChanged) > 0 {
			gp.Action = PlanChange
		}
	}
	return gp
}

// planPeers records the peers added, removed and changed.
func (gp *GatewayPlan) planPeers(prev, after []Peer) {
	byName(prev, after, func(p Peer) string { return p.Name }, func(name string, o *Peer, p *Peer) {
		switch {
		case o == nil:
			gp.PeersAdded = append(gp.PeersAdded, name)
		case p == nil:
			gp.PeersRemoved = append(gp.PeersRemoved, name)
		default:
			if ch := diffPeer(*o, *p); len(ch) > 0 {
				gp.PeersChanged = append(gp.PeersChanged, PeerChange{Peer: name, Changes: ch})
			}
		}
	})
}

// byName pairs the items of prev and after by name and calls fn for each
// name in order: old nil for an added item, cur nil for a removed one.
func byName[T any](prev, after []T, name func(T) string, fn func(name string, old, cur *T)) {
	olds := map[string]*T{}
	for i := range prev {
		olds[name(prev[i])] = &prev[i]
	}
	for i := range after {
		n := name(after[i])
		fn(n, olds[n], &after[i])
		delete(olds, n)
	}
	for _, n := range slices.Sorted(maps.Keys(olds)) {
		fn(n, olds[n], nil)
	}
}

// planRates records the egress rates that change (0: no rate any more).
func (gp *GatewayPlan) planRates(prev, after []EgressRate) {
	oldRates := map[string]Bandwidth{}
	for _, r := range prev {
		oldRates[r.Region] = r.Rate
	}
	for _, r := range after {
		if o := oldRates[r.Region]; o != r.Rate {
			gp.Rates = append(gp.Rates, RateChange{r.Region, o, r.Rate})
		}
		delete(oldRates, r.Region)
	}
	for region, o := range oldRates {
		gp.Rates = append(gp.Rates, RateChange{region, o, 0})
	}
	slices.SortFunc(gp.Rates, func(a, b RateChange) int { return strings.Compare(a.Region, b.Region) })
}

// planVBRs records the VBR sessions added, removed and changed.
func (gp *GatewayPlan) planVBRs(prev, after []VBRSessionState) {
	byName(prev, after, func(v VBRSessionState) string { return v.Network }, func(name string, o, v *VBRSessionState) {
		switch {
		case o == nil:
			gp.VBRsAdded = append(gp.VBRsAdded, name)
		case v == nil:
			gp.VBRsRemoved = append(gp.VBRsRemoved, name)
		case !sameSession(o.VBRSession, v.VBRSession):
			gp.VBRsChanged = append(gp.VBRsChanged, name)
		}
	})
}

func diffPeer(o, n Peer) []FieldChange {
	var out []FieldChange
	add := func(field, a, b string) {
		if a != b {
			out = append(out, FieldChange{field, a, b})
		}
	}
	add("region", o.Region, n.Region)
	add("endpoint", o.Endpoint.String(), n.Endpoint.String())
	add("public_key", o.PublicKey.String(), n.PublicKey.String())
	add("tunnel_address", o.TunnelAddress.String(), n.TunnelAddress.String())
	add("entitlement", o.Entitled.String(), n.Entitled.String())
	return out
}

// String summarises an entitlement for plans and status output.
func (e Entitlement) String() string {
	var parts []string
	for _, o := range e.VPCs {
		parts = append(parts, o.Prefix.String())
	}
	for _, v := range e.VBRs {
		if v.Any {
			parts = append(parts, v.Network+":any")
			continue
		}
		for _, a := range v.Accept {
			parts = append(parts, v.Network+":"+a.String()+"+")
		}
	}
	return strings.Join(parts, " ")
}

func sameSession(a, b VBRSession) bool {
	return a.Neighbor == b.Neighbor && a.PeerASN == b.PeerASN && a.AcceptAny == b.AcceptAny &&
		slices.Equal(a.Accept, b.Accept) && a.MaxPrefixes == b.MaxPrefixes && a.MaxPrefixesRestart == b.MaxPrefixesRestart &&
		a.PasswordFile == b.PasswordFile && a.BFD == b.BFD && a.TTLSecurity == b.TTLSecurity
}

func originPrefixes(os []Origin) []netip.Prefix {
	out := make([]netip.Prefix, len(os))
	for i, o := range os {
		out[i] = o.Prefix
	}
	return out
}

func diffPrefixes(old, new []netip.Prefix) (added, removed []netip.Prefix) {
	for _, p := range new {
		if !slices.Contains(old, p) {
			added = append(added, p)
		}
	}
	for _, p := range old {
		if !slices.Contains(new, p) {
			removed = append(removed, p)
		}
	}
	return added, removed
}

func diffMatrix(old, new []PairBandwidth) []PairChange {
	byPair := map[[2]string]*PairChange{}
	var order [][2]string
	get := func(k [2]string) *PairChange {
		if c, ok := byPair[k]; ok {
			return c
		}
		c := &PairChange{Regions: k}
		byPair[k] = c
		order = append(order, k)
		return c
	}
	for i := range old {
		get(old[i].Regions).Old = &old[i]
	}
	for i := range new {
		get(new[i].Regions).New = &new[i]
	}
	slices.SortFunc(order, func(a, b [2]string) int {
		return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1])
	})
	var out []PairChange
	for _, k := range order {
		c := byPair[k]
		if c.Old != nil && c.New != nil && *c.Old == *c.New {
			continue
		}
		out = append(out, *c)
	}
	return out
}
