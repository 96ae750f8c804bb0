package routing

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Status is a snapshot for cenctl and metrics.
type Status struct {
	RouterID netip.Addr
	ASN      uint32
	// Synced reports that the initial route exchange is over.
	Synced   bool
	Sessions []SessionStatus
	Routes   []LearnedRoute
	// Rejected lists prefixes currently offered but not learned.
	Rejected []Rejection
	// RejectedTotal counts rejections by reason since start.
	RejectedTotal map[Reason]uint64
}

// SessionStatus is one BGP session.
type SessionStatus struct {
	Name     string
	Kind     SessionKind
	Neighbor netip.Addr
	PeerASN  uint32
	// State is the BGP FSM state ("established", "active", ...), or
	// "max-prefix-exceeded" when max_prefixes shut the session down.
	State  string
	Uptime time.Duration // zero unless established
	// Received counts prefixes the peer currently announces; Accepted those
	// that passed import policy; Rejected the rest. Families splits them
	// by address family (IPv4, then IPv6).
	Received, Accepted, Rejected uint64
	Families                     [2]FamilyCounts
	// RejectedByReason counts rejections since start.
	RejectedByReason map[Reason]uint64
	BFD              string // "up", "down", "init", "admin-down", or "" when off
	LastError        string
}

// FamilyCounts are a session's prefix counts in one address family.
type FamilyCounts struct {
	Family                       string // "ipv4" or "ipv6"
	Received, Accepted, Rejected uint64
}

// Rejection is one prefix a session offers that is not learned.
type Rejection struct {
	Session string
	Prefix  netip.Prefix
	Reason  Reason
}

var fsmNames = map[bgp.FSMState]string{
	bgp.BGP_FSM_IDLE: "idle", bgp.BGP_FSM_CONNECT: "connect", bgp.BGP_FSM_ACTIVE: "active",
	bgp.BGP_FSM_OPENSENT: "opensent", bgp.BGP_FSM_OPENCONFIRM: "openconfirm", bgp.BGP_FSM_ESTABLISHED: "established",
}

func bfdName(s api.BfdSessionState) string {
	switch s {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return "down"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admin-down"
	}
	return ""
}

// Routes returns the learned routes already delivered to OnRoutes, with
// their current next hops and origin.
func (s *Speaker) Routes() []LearnedRoute { return s.state.routes() }

// Status reports sessions, learned routes and rejections.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	srv, specs, gwBFD := s.configured()
	st := Status{Routes: s.state.routes(), RejectedTotal: map[Reason]uint64{}}
	counters := map[netip.Addr]*api.Peer{}
	if srv != nil {
		if g, err := srv.GetBgp(ctx, &api.GetBgpRequest{}); err == nil && g.Global != nil {
			st.ASN = g.Global.Asn
			st.RouterID, _ = netip.ParseAddr(g.Global.RouterId)
		}
		err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.Conf == nil {
				return
			}
			if a, err := netip.ParseAddr(p.Conf.NeighborAddress); err == nil {
				counters[a] = p
			}
		})
		if err != nil {
			return st, fmt.Errorf("routing: list bgp peers: %w", err)
		}
	}
	s.state.mu.Lock()
	st.Synced = s.state.learned.synced
	for r, n := range s.state.sessions.counts {
		st.RejectedTotal[r] = n
	}
	for addr, spec := range specs {
		rejected := s.state.sessions.rejected[addr]
		ss := s.state.sessionStatus(addr, spec)
		addCounters(&ss, spec, counters[addr], rejected)
		if b, ok := gwBFD[addr]; ok {
			ss.BFD = b
		}
		st.Sessions = append(st.Sessions, ss)
		for p, r := range rejected {
			st.Rejected = append(st.Rejected, Rejection{Session: spec.name, Prefix: p, Reason: r})
		}
	}
	s.state.mu.Unlock()
	slices.SortFunc(st.Sessions, func(a, b SessionStatus) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Rejected, func(a, b Rejection) int {
		if c := strings.Compare(a.Session, b.Session); c != 0 {
			return c
		}
		return comparePrefix(a.Prefix, b.Prefix)
	})
	return st, nil
}

// configured copies the server, the configured sessions and the gateway
// BFD states, so Status asks GoBGP without holding s.mu.
func (s *Speaker) configured() (*server.BgpServer, map[netip.Addr]peerSpec, map[netip.Addr]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	specs := make(map[netip.Addr]peerSpec, len(s.bgp.peers))
	gwBFD := map[netip.Addr]string{}
	for a, p := range s.bgp.held {
		specs[a] = p
	}
	for a, p := range s.bgp.peers {
		specs[a] = p
		if p.kind == SessionGateway && p.bfd && s.bgp.gwBFD != nil {
			gwBFD[a] = s.bgp.gwBFD.state(a)
		}
	}
	return s.bgp.srv, specs, gwBFD
}

// sessionStatus is what the events reported of the session with addr.
// st.mu must be held.
func (st *state) sessionStatus(addr netip.Addr, spec peerSpec) SessionStatus {
	ss := SessionStatus{Name: spec.name, Kind: spec.kind, Neighbor: addr, PeerASN: spec.peerASN, State: "idle"}
	si := st.sessions.byAddr[addr]
	if si == nil {
		return ss
	}
	ss.State = fsmNames[si.state]
	if si.state == bgp.BGP_FSM_ESTABLISHED {
		ss.Uptime = time.Since(si.since).Truncate(time.Second)
	}
	if si.maxPrefix {
		ss.State = "max-prefix-exceeded"
	}
	ss.LastError = si.lastError
	if len(si.rejected) > 0 {
		ss.RejectedByReason = maps.Clone(si.rejected)
	}
	return ss
}

// addCounters adds to ss what GoBGP reports of the session, p, and the
// prefixes it offers that are not learned.
func addCounters(ss *SessionStatus, spec peerSpec, p *api.Peer, rejected map[netip.Prefix]Reason) {
	for i := range ss.Families {
		ss.Families[i].Family = familyName[i]
	}
	if p == nil {
		return
	}
	for _, af := range p.AfiSafis {
		if af.State == nil || af.Config == nil || af.Config.Family == nil {
			continue
		}
		i := 0
		if af.Config.Family.Afi == api.Family_AFI_IP6 {
			i = 1
		}
		ss.Families[i].Received += af.State.Received
	}
	// GoBGP's own "accepted" counts paths ahead of import policy, so
	// derive it from the rejections this package records.
	for pfx := range rejected {
		ss.Families[family(pfx.Addr())].Rejected++
	}
	for i := range ss.Families {
		f := &ss.Families[i]
		if f.Received >= f.Rejected {
			f.Accepted = f.Received - f.Rejected
		}
		ss.Received += f.Received
		ss.Accepted += f.Accepted
		ss.Rejected += f.Rejected
	}
	if p.State != nil && p.State.BfdState != nil && spec.bfd && spec.kind != SessionGateway {
		ss.BFD = bfdName(p.State.BfdState.SessionState)
	}
	if p.State != nil && p.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
		ss.State = "max-prefix-exceeded"
	}
}
