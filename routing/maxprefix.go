package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"

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
	max     uint32
	restart time.Duration
	seq     uint64
}

// tripMaxPrefixes shuts the session down as RFC 4486 says, with a Cease of
// subcode 1 (Maximum Number of Prefixes Reached): GoBGP's own prefix
// limit, set now to the limit the session has passed, finds it passed at
// once and sends that Cease. The limit is set only at the trip: GoBGP
// counts its whole Adj-RIB-In against it on every UPDATE, which a session
// that is up must not pay (see countReceived).
//
// GoBGP then sees the connection close and keeps the router's routes as a
// graceful restart would, passing them on to every gateway until the
// restart time ends: a session past its limit must lose them at once. So
// once the session is down it is replaced by one held administratively
// down, which drops them; a reset replaces that one in turn. With a
// restart time, the session is reset after it.
func (s *Speaker) tripMaxPrefixes(t tripInfo) error {
	s.mu.Lock()
	spec, ok := s.bgp.peers[t.peer]
	srv := s.bgp.srv
	s.mu.Unlock()
	if !ok || srv == nil {
		return nil
	}
	p := s.apiPeer(spec)
	for _, af := range p.AfiSafis {
		af.PrefixLimits = &api.PrefixLimit{Family: af.Config.Family, MaxPrefixes: t.max}
	}
	if _, err := srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: p}); err != nil {
		return fmt.Errorf("set the prefix limit of %s: %w", t.peer, err)
	}
	// The Cease goes out first; then nothing of the router's stays.
	for deadline := time.Now().Add(3 * time.Second); s.state.established(t.peer) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.holdDown(t, spec); err != nil {
		return err
	}
	if t.restart > 0 {
		time.AfterFunc(t.restart, func() { s.restartTripped(t, spec) })
	}
	return nil
}

// holdDown replaces the tripped session with one held administratively
// down, unless it was reset, replaced or removed since.
func (s *Speaker) holdDown(t tripInfo, spec peerSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.bgp.srv
	if s.life.closed || srv == nil || s.bgp.peers[t.peer] != spec || s.state.tripSeq(t.peer) != t.seq {
		return nil
	}
	ctx := context.Background()
	if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: t.peer.String()}); err != nil {
		return fmt.Errorf("drop the routes of %s: %w", spec.name, err)
	}
	down := s.apiPeer(spec)
	down.Conf.AdminDown = true
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: down}); err != nil {
		delete(s.bgp.peers, t.peer) // the next Set adds it again
		return fmt.Errorf("hold %s down: %w", spec.name, err)
	}
	return nil
}

// restartTripped resets the session of trip t once its restart time is
// over, unless it was reset, replaced or removed since.
func (s *Speaker) restartTripped(t tripInfo, spec peerSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.closed || s.bgp.srv == nil || s.bgp.peers[t.peer] != spec || s.state.tripSeq(t.peer) != t.seq {
		return
	}
	if err := s.replacePeer(context.Background(), t.peer, spec); err != nil {
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
	for addr, spec := range s.bgp.peers {
		if spec.name != name {
			continue
		}
		if s.state.tripSeq(addr) == 0 {
			return fmt.Errorf("routing: reset %s: %w", name, ErrNotTripped)
		}
		if err := s.replacePeer(ctx, addr, spec); err != nil {
			return err
		}
		s.log.Info("bgp session reset by the operator after max_prefixes", "session", name, "neighbor", addr)
		return nil
	}
	return fmt.Errorf("routing: reset %q: %w", name, ErrUnknownSession)
}

// replacePeer deletes the session with addr from GoBGP and adds it again
// from spec, without the prefix limit of its trip, and clears the trip.
// s.mu is held.
func (s *Speaker) replacePeer(ctx context.Context, addr netip.Addr, spec peerSpec) error {
	srv := s.bgp.srv
	if srv == nil {
		return fmt.Errorf("routing: reset %s: no BGP server running", spec.name)
	}
	if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("routing: reset %s: remove the session: %w", spec.name, err)
	}
	s.state.clearTrip(addr)
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(spec)}); err != nil {
		delete(s.bgp.peers, addr) // the next Set adds it again
		return fmt.Errorf("routing: reset %s: add the session: %w", spec.name, err)
	}
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
