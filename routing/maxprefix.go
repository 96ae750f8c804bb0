package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/opencen/opencen/config"
)

// Errors of ResetSession, for callers to tell a wrong name from a wrong
// state.
var (
	ErrUnknownSession = errors.New("no such session")
	ErrNotTripped     = errors.New("session not shut down by max_prefixes")
)

// prefixLimit is what max_prefixes means for one session.
type prefixLimit struct {
	max     uint32        // per family; 0: none
	restart time.Duration // 0: only ResetSession clears a trip
}

// prefixLimit is the limit of the session with peer: a VBR's as
// configured, a gateway's derived from the config, with the default
// restart.
func (st *state) prefixLimit(peer netip.Addr) prefixLimit {
	if v := st.f.vbrs[peer]; v != nil {
		return prefixLimit{max: v.MaxPrefixes, restart: v.MaxPrefixesRestart}
	}
	if g := st.f.gateways[peer]; g != nil {
		return prefixLimit{max: g.MaxPrefixes, restart: config.DefaultMaxPrefixesRestart}
	}
	return prefixLimit{}
}

// tripInfo is one trip: which session, past which limit, and when it may
// come back; seq numbers the session's trips.
type tripInfo struct {
	peer    netip.Addr
	restart time.Duration
	seq     uint64
}

// tripMaxPrefixes shuts the session down and holds it down. GoBGP's
// session takes it administratively down, which sends the router a Cease
// of subcode 2 (Administrative Shutdown, RFC 4486) and drops every route
// of the session at once. Once GoBGP has seen the session leave
// Established, it is taken out of GoBGP altogether, so the router cannot
// connect again until a reset or the restart time; taking it out drops
// again whatever an UPDATE read just before the shutdown added. (Not an
// UpdatePeer with AdminDown: GoBGP replaces the session at once, and an
// UPDATE the old connection still delivers lands in the RIB under a
// session that no longer exists, where nothing removes it. Not GoBGP's
// prefix limit either, which sends subcode 1: the connection then closes
// under it, GoBGP takes that for a graceful restart and keeps the router's
// routes, passing them on to every gateway.)
func (s *Speaker) tripMaxPrefixes(t tripInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	spec, ok := s.bgp.peers[t.peer]
	srv := s.bgp.srv
	if !ok || srv == nil || s.life.closed || s.state.tripSeq(t.peer) != t.seq {
		return nil
	}
	ctx := context.Background()
	if err := srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: t.peer.String(), Communication: "maximum number of prefixes exceeded"}); err != nil {
		return fmt.Errorf("shut %s down: %w", spec.name, err)
	}
	if !waitLeftEstablished(ctx, srv, t.peer, sessionLeaveTimeout) {
		s.log.Warn("session still established after its administrative shutdown; removing it anyway", "session", spec.name, "neighbor", t.peer)
	}
	if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: t.peer.String()}); err != nil {
		return fmt.Errorf("hold %s down: %w", spec.name, err)
	}
	delete(s.bgp.peers, t.peer)
	s.bgp.held[t.peer] = spec
	if t.restart > 0 {
		time.AfterFunc(t.restart, func() { s.restartTripped(t, spec) })
	}
	return nil
}

// sessionLeaveTimeout bounds the wait for an administratively shut down
// session to leave Established.
const sessionLeaveTimeout = 5 * time.Second

// waitLeftEstablished reports whether GoBGP has handled the session's
// leaving Established within timeout. A management request is served
// only between two of GoBGP's session events, so a state seen here is one
// whose handling (the routes of the session dropped) is complete.
func waitLeftEstablished(ctx context.Context, srv *server.BgpServer, peer netip.Addr, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		up := false
		err := srv.ListPeer(ctx, &api.ListPeerRequest{Address: peer.String()}, func(p *api.Peer) {
			up = p.State != nil && p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
		})
		if err == nil && !up {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartTripped brings back the session of trip t once its restart time
// is over, unless it was reset, changed or removed since.
func (s *Speaker) restartTripped(t tripInfo, spec peerSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.closed || s.bgp.srv == nil || s.bgp.held[t.peer] != spec || s.state.tripSeq(t.peer) != t.seq {
		return
	}
	if err := s.release(context.Background(), t.peer, spec); err != nil {
		s.log.Error("restarting a session after max_prefixes", "session", spec.name, "neighbor", t.peer, "err", err)
		return
	}
	s.log.Info("bgp session restarted after max_prefixes_restart", "session", spec.name, "neighbor", t.peer, "after", t.restart)
}

// ResetSession brings back at once the session named name (a VBR's
// network or a gateway's name) that max_prefixes shut down.
func (s *Speaker) ResetSession(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, spec := range s.bgp.held {
		if spec.name != name {
			continue
		}
		if err := s.release(ctx, addr, spec); err != nil {
			return err
		}
		s.log.Info("bgp session reset by the operator after max_prefixes", "session", name, "neighbor", addr)
		return nil
	}
	for _, spec := range s.bgp.peers {
		if spec.name == name {
			return fmt.Errorf("routing: reset %s: %w", name, ErrNotTripped)
		}
	}
	return fmt.Errorf("routing: reset %q: %w", name, ErrUnknownSession)
}

// release adds a held session back to GoBGP, counting from zero. s.mu is
// held.
func (s *Speaker) release(ctx context.Context, addr netip.Addr, spec peerSpec) error {
	srv := s.bgp.srv
	if srv == nil {
		return fmt.Errorf("routing: reset %s: no BGP server running", spec.name)
	}
	s.state.clearTrip(addr)
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(spec)}); err != nil {
		return fmt.Errorf("routing: reset %s: add the session: %w", spec.name, err)
	}
	delete(s.bgp.held, addr)
	s.bgp.peers[addr] = spec
	return nil
}

// tripSeq is the number of the session's current trip, 0 when it is not
// shut down by max_prefixes.
func (st *state) tripSeq(addr netip.Addr) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if si := st.sessions.byAddr[addr]; si != nil && si.maxPrefix {
		return si.trips
	}
	return 0
}

// clearTrip forgets the session's trip: it counts from zero again.
func (st *state) clearTrip(addr netip.Addr) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if si := st.sessions.byAddr[addr]; si != nil {
		si.maxPrefix, si.received, si.perFamily, si.warned = false, nil, [2]int{}, false
	}
	st.wakeSessions()
}
