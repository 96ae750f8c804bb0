package routing

import (
	"cmp"
	"context"
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// SessionKind says what a BGP session runs to. Its values are the strings
// status output and metric labels show.
type SessionKind string

// Session kinds.
const (
	SessionGateway SessionKind = "gateway" // another gateway of the instance, iBGP over the tunnel
	SessionVBR     SessionKind = "vbr"     // an on-premises router, eBGP
)

// SessionUp says whether one configured session is established.
type SessionUp struct {
	Name     string
	Kind     SessionKind
	Neighbor netip.Addr
	Up       bool
}

// Sessions returns every configured session and whether it is established
// now. It reads what GoBGP's peer-state events left in memory: no call into
// GoBGP, so it is cheap enough for every route batch.
func (s *Speaker) Sessions() []SessionUp { return s.state.sessionList() }

// sessionList lists the sessions of the current desired state, sorted by
// kind then name.
func (st *state) sessionList() []SessionUp {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.f == nil {
		return nil
	}
	out := make([]SessionUp, 0, len(st.f.gateways)+len(st.f.vbrs))
	up := func(addr netip.Addr) bool {
		si := st.sessions[addr]
		return si != nil && si.state == bgp.BGP_FSM_ESTABLISHED && !si.maxPrefix
	}
	for addr, g := range st.f.gateways {
		out = append(out, SessionUp{Name: g.Name, Kind: SessionGateway, Neighbor: addr, Up: up(addr)})
	}
	for addr, v := range st.f.vbrs {
		out = append(out, SessionUp{Name: v.Network, Kind: SessionVBR, Neighbor: addr, Up: up(addr)})
	}
	slices.SortFunc(out, func(a, b SessionUp) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name), a.Neighbor.Compare(b.Neighbor))
	})
	return out
}

// wakeSessions asks runSessions to look at the sessions again.
func (st *state) wakeSessions() {
	select {
	case st.sessKick <- struct{}{}:
	default:
	}
}

// runSessions hands Options.OnSessions the session list each time it
// changes, until ctx ends. It is woken by peer-state events that cross
// Established, by setDesired and by detach, and does nothing in between:
// an idle gateway costs no CPU here. It does not wait for Coalesce, so a
// session that BFD declares down is reported at once.
func (st *state) runSessions(ctx context.Context) {
	var last []SessionUp
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.sessKick:
		}
		cur := st.sessionList()
		if !first && slices.Equal(cur, last) {
			continue
		}
		first, last = false, cur
		if st.opts.OnSessions != nil {
			st.opts.OnSessions(slices.Clone(cur))
		}
	}
}
