package routing

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
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
		si := st.sessions.byAddr[addr]
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

// sessionStates are the sessions as GoBGP's events report them, and what
// each offers that is not learned. Guarded by state.mu.
type sessionStates struct {
	byAddr map[netip.Addr]*sessionInfo
	// rejected lists, per session, the prefixes it currently offers that
	// are not learned, and why; counts totals rejections since start.
	rejected map[netip.Addr]map[netip.Prefix]Reason
	counts   map[Reason]uint64
}

type sessionInfo struct {
	state     bgp.FSMState
	since     time.Time
	lastError string
	maxPrefix bool
	// trips counts the session's max_prefixes trips: a restart timer
	// clears only the trip it was set for.
	trips uint64
	// received holds what a VBR router with max_prefixes has announced
	// (ahead of policy, as the limit counts), while its session is up,
	// and how many of each family (the limit applies to each); warned
	// says the warning at 80% of the limit has been logged.
	received    map[netip.Prefix]struct{}
	perFamily   [2]int
	warned      bool
	rejected    map[Reason]uint64
	hasSeenUp   bool
	lastLogTime time.Time
}

// established reports whether the session with addr is established.
func (st *state) established(addr netip.Addr) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	si := st.sessions.byAddr[addr]
	return si != nil && si.state == bgp.BGP_FSM_ESTABLISHED
}

func (st *state) session(addr netip.Addr) *sessionInfo {
	si := st.sessions.byAddr[addr]
	if si == nil {
		si = &sessionInfo{}
		st.sessions.byAddr[addr] = si
	}
	return si
}

func (st *state) sessionName(addr netip.Addr) string {
	if st.f != nil {
		if g := st.f.gateways[addr]; g != nil {
			return g.Name
		}
		if v := st.f.vbrs[addr]; v != nil {
			return v.Network
		}
	}
	return addr.String()
}

func (st *state) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	addr := ev.Peer.State.NeighborAddress
	if !addr.IsValid() {
		addr = ev.Peer.Conf.NeighborAddress
	}
	si := st.session(addr)
	old, oldMax := si.state, si.maxPrefix
	si.state = ev.Peer.State.SessionState
	if old != si.state {
		si.since = t
	}
	name := st.sessionName(addr)
	if ev.Peer.State.DisconnectMessage != "" {
		si.lastError = ev.Peer.State.DisconnectMessage
	}
	// GoBGP's own PFX_CT admin state is not read: its prefix limit is
	// set only at a trip countReceived has recorded, and an event of the
	// session deleted by a reset would bring the cleared trip back.
	switch {
	case si.state == bgp.BGP_FSM_ESTABLISHED && old != bgp.BGP_FSM_ESTABLISHED:
		si.hasSeenUp = true
		si.maxPrefix, si.received, si.perFamily, si.warned = false, nil, [2]int{}, false
		si.lastError = ""
		st.log.Info("bgp session up", "session", name, "neighbor", addr)
	case old == bgp.BGP_FSM_ESTABLISHED && si.state != bgp.BGP_FSM_ESTABLISHED:
		si.received, si.perFamily = nil, [2]int{}
		st.forgetTwin(addr)
		st.wake()
		select {
		case st.urgent <- struct{}{}:
		default:
		}
		delete(st.sessions.rejected, addr)
		delete(st.learned.eor, addr)
		st.log.Warn("bgp session down", "session", name, "neighbor", addr, "reason", ev.Peer.State.DisconnectReason.String(),
			"message", ev.Peer.State.DisconnectMessage)
	}
	// Only crossing Established (or a max_prefixes trip) changes what
	// OnSessions reports; a dead peer's connect/active cycling does not.
	if (old == bgp.BGP_FSM_ESTABLISHED) != (si.state == bgp.BGP_FSM_ESTABLISHED) || oldMax != si.maxPrefix {
		st.wakeSessions()
	}
}
