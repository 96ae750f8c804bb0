package routing

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// LearnedRoute is one prefix the gateway should route toward the CEN.
type LearnedRoute struct {
	Prefix        netip.Prefix
	OriginRegion  string
	OriginNetwork string
	// NextHops are the tunnel addresses of the gateways announcing the
	// prefix. For a prefix learned straight from a local VBR they are the
	// on-prem router's address, and Direct is true.
	NextHops []netip.Addr
	Direct   bool
	// Gateways, for a Direct prefix, are the gateways of this region that
	// announce it too (their own VBRs learned it): the candidates, with
	// this gateway, for its home.
	Gateways []netip.Addr
	// Handoff marks not a route but a gateway of this region telling its
	// address on a LAN (Prefix, a host route): where to hand it the
	// packets of the prefixes it is the home of. NextHops is that gateway.
	Handoff bool
}

func (r *LearnedRoute) hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(r.OriginRegion))
	h.Write([]byte{0})
	h.Write([]byte(r.OriginNetwork))
	h.Write([]byte{0})
	h.Write([]byte{boolByte(r.Direct), boolByte(r.Handoff)})
	for _, a := range r.NextHops {
		b := a.As16()
		h.Write(b[:])
	}
	h.Write([]byte{0})
	for _, a := range r.Gateways {
		b := a.As16()
		h.Write(b[:])
	}
	return h.Sum64()
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// RouteBatch is one coalesced change of the learned routes.
type RouteBatch struct {
	// Full: Upsert is the whole table; drop anything not in it. The first
	// batch after start (and after a speaker restart) is full.
	Full bool
	// Synced: the initial exchange is over (every gateway peer sent
	// End-of-RIB, or Options.SyncTimeout passed), so routes missing now are
	// really gone: the agent may sweep stale kernel routes it kept across a
	// restart. Once true it stays true.
	Synced   bool
	Upsert   []LearnedRoute
	Withdraw []netip.Prefix
}

type ribPath struct {
	src             netip.Addr // invalid: originated locally
	regionID, netID uint32
}

// ribEntry keeps only a hash of what was last delivered, not a copy: the
// table holds one entry per prefix of the whole instance, and per-route
// memory is budgeted (1.5 KB including GoBGP's own RIBs).
type ribEntry struct {
	paths    []ribPath
	sent     bool
	sentHash uint64
}

type sessionInfo struct {
	state     bgp.FSMState
	since     time.Time
	lastError string
	maxPrefix bool
	// received holds what a VBR router with max_prefixes has announced
	// (before policy, as the limit counts), while its session is up;
	// warned says the 80% warning was logged.
	received    map[netip.Prefix]struct{}
	warned      bool
	rejected    map[Reason]uint64
	hasSeenUp   bool
	lastLogTime time.Time
}

// state turns GoBGP's event stream into learned routes, session states
// and rejection records. GoBGP queues watch events without bound, so a slow
// consumer here never blocks its FSMs (keepalives keep flowing).
type state struct {
	log  *slog.Logger
	opts Options

	mu       sync.Mutex
	gen      uint64
	srv      *server.BgpServer
	d        *Desired
	f        *filter
	names    *nameTable
	rib      map[netip.Prefix]*ribEntry
	dirty    map[netip.Prefix]struct{}
	full     bool
	synced   bool
	sentSync bool
	eor      map[netip.Addr]bool
	sessions map[netip.Addr]*sessionInfo
	rejected map[netip.Addr]map[netip.Prefix]Reason
	// twinPaths are the on-premises prefixes gateways of this region
	// announce (accepted, before best-path selection, which prefers a
	// local VBR's path and so hides them): LearnedRoute.Gateways.
	twinPaths map[netip.Prefix][]netip.Addr
	counts    map[Reason]uint64
	kick      chan struct{}
	// urgent cuts the coalescing short: a session went down, and its
	// withdrawals (GoBGP applies them before the state change) are a
	// failover that must not wait.
	urgent   chan struct{}
	sessKick chan struct{} // wakes runSessions (sessions.go)
}

func newState(log *slog.Logger, opts Options) *state {
	return &state{
		log:       log,
		opts:      opts,
		rib:       map[netip.Prefix]*ribEntry{},
		dirty:     map[netip.Prefix]struct{}{},
		full:      true,
		eor:       map[netip.Addr]bool{},
		sessions:  map[netip.Addr]*sessionInfo{},
		rejected:  map[netip.Addr]map[netip.Prefix]Reason{},
		twinPaths: map[netip.Prefix][]netip.Addr{},
		counts:    map[Reason]uint64{},
		kick:      make(chan struct{}, 1),
		urgent:    make(chan struct{}, 1),
		sessKick:  make(chan struct{}, 1),
	}
}

func (st *state) isSynced() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.synced
}

func (st *state) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *state) setDesired(d *Desired, f *filter, names *nameTable) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if f == nil {
		f = newFilter(&Desired{})
		names = &nameTable{regions: map[uint32]string{}, networks: map[uint32]string{}}
	}
	same := d != nil && st.d != nil && reflect.DeepEqual(d, st.d)
	st.d, st.f, st.names = d, f, names
	if !same {
		// Origins may be named differently now: recompute every route.
		// (The agent sets the same state on every reconcile; recomputing
		// 100,000 routes each time cost more than the reconcile.)
		for p := range st.rib {
			st.dirty[p] = struct{}{}
		}
	}
	for addr := range st.sessions {
		if f.gateways[addr] == nil && f.vbrs[addr] == nil {
			delete(st.sessions, addr)
			delete(st.rejected, addr)
		}
	}
	st.wake()
	st.wakeSessions()
}

func (st *state) attach(srv *server.BgpServer) {
	st.mu.Lock()
	st.srv = srv
	st.mu.Unlock()
}

// detach forgets a stopped server: its routes are withdrawn in the next
// batch unless a new server brings them back first.
func (st *state) detach() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.gen++
	st.srv = nil
	for p, e := range st.rib {
		e.paths = nil
		st.dirty[p] = struct{}{}
	}
	clear(st.eor)
	clear(st.sessions)
	clear(st.rejected)
	clear(st.twinPaths)
	st.wake()
	st.wakeSessions()
}

func nlriPrefix(n bgp.NLRI) (netip.Prefix, bool) {
	if p, ok := n.(*bgp.IPAddrPrefix); ok {
		return p.Prefix, true
	}
	return netip.Prefix{}, false
}

// callbacks returns GoBGP watch callbacks bound to a new generation, so
// events still queued from a stopped server are ignored.
func (st *state) callbacks() server.WatchEventMessageCallbacks {
	st.mu.Lock()
	st.gen++
	gen := st.gen
	st.mu.Unlock()
	return server.WatchEventMessageCallbacks{
		OnBestPath: func(paths []*apiutil.Path, _ time.Time) {
			st.mu.Lock()
			defer st.mu.Unlock()
			if gen != st.gen {
				return
			}
			st.applyBest(paths)
		},
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) {
			st.mu.Lock()
			defer st.mu.Unlock()
			if gen != st.gen {
				return
			}
			st.observeReceived(paths)
		},
		OnPathEor: func(p *apiutil.Path, _ time.Time) {
			st.mu.Lock()
			defer st.mu.Unlock()
			if gen != st.gen {
				return
			}
			st.eor[p.PeerAddress] = true
			st.wake()
		},
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
			if ev == nil || ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			if gen != st.gen {
				return
			}
			st.peerEvent(ev, t)
		},
	}
}

// applyBest applies GoBGP best-path events. With multipath on, an event
// carries per prefix the paths that joined the equal-cost set (updates) and
// those that left it (withdrawals); the initial table carries every set.
func (st *state) applyBest(paths []*apiutil.Path) {
	for _, p := range paths {
		pfx, ok := nlriPrefix(p.Nlri)
		if !ok {
			continue
		}
		src := p.PeerAddress
		if p.PeerASN == 0 && !p.IsFromExternal {
			src = netip.Addr{} // originated here
		}
		e := st.rib[pfx]
		if p.Withdrawal {
			if e == nil {
				continue
			}
			e.paths = slices.DeleteFunc(e.paths, func(r ribPath) bool { return r.src == src })
		} else {
			if e == nil {
				e = &ribEntry{}
				st.rib[pfx] = e
			}
			rp := ribPath{src: src}
			for _, a := range p.Attrs {
				if lc, ok := a.(*bgp.PathAttributeLargeCommunities); ok && st.d != nil {
					for _, c := range lc.Values {
						if c.ASN != st.d.InstanceASN {
							continue
						}
						switch c.LocalData1 {
						case tagRegion:
							rp.regionID = c.LocalData2
						case tagNetwork:
							rp.netID = c.LocalData2
						}
					}
				}
			}
			i := slices.IndexFunc(e.paths, func(r ribPath) bool { return r.src == src })
			if i >= 0 {
				e.paths[i] = rp
			} else {
				e.paths = append(e.paths, rp)
			}
		}
		st.dirty[pfx] = struct{}{}
	}
	st.wake()
}

// route computes what the agent should install for one RIB entry.
func (st *state) route(pfx netip.Prefix, e *ribEntry) (LearnedRoute, bool) {
	if len(e.paths) == 0 || st.d == nil {
		return LearnedRoute{}, false
	}
	r := LearnedRoute{Prefix: pfx}
	for _, p := range e.paths {
		if !p.src.IsValid() {
			return LearnedRoute{}, false // our own VPC CIDR
		}
		r.NextHops = append(r.NextHops, p.src)
	}
	slices.SortFunc(r.NextHops, func(a, b netip.Addr) int { return a.Compare(b) })
	first := e.paths[0]
	r.OriginRegion = st.names.regions[first.regionID]
	r.OriginNetwork = st.names.networks[first.netID]
	if st.f.vbrs[first.src] != nil {
		r.Direct = true
		r.Gateways = st.twinPaths[pfx]
	}
	if pfx.IsSingleIP() && st.f.classify(first.src, pfx).handoff {
		r.Handoff = true
	}
	if r.OriginRegion == "" || r.OriginNetwork == "" {
		// Untagged or unknown tag: fall back on what the peer is entitled to.
		if v := st.f.classify(first.src, pfx); v.reason == "" {
			r.OriginRegion, r.OriginNetwork = v.region, v.network
		}
	}
	return r, true
}

func (st *state) buildBatch(now time.Time, start time.Time) (RouteBatch, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.synced {
		all := st.d != nil
		if st.d != nil {
			for _, g := range st.d.Gateways {
				if !st.eor[g.Address] {
					all = false
				}
			}
		}
		if all || now.Sub(start) >= st.opts.SyncTimeout {
			st.synced = true
			st.log.Info("initial route exchange complete", "by_timeout", !all)
		}
	}
	b := RouteBatch{Full: st.full, Synced: st.synced}
	if st.full {
		for p, e := range st.rib {
			r, ok := st.route(p, e)
			e.sent = ok
			if ok {
				e.sentHash = r.hash()
				b.Upsert = append(b.Upsert, r)
			}
			if len(e.paths) == 0 {
				delete(st.rib, p)
			}
		}
		st.resetDirty()
		st.full = false
	} else {
		for p := range st.dirty {
			e := st.rib[p]
			if e == nil {
				continue
			}
			r, ok := st.route(p, e)
			var h uint64
			if ok {
				h = r.hash()
			}
			switch {
			case ok && (!e.sent || e.sentHash != h):
				e.sent, e.sentHash = true, h
				b.Upsert = append(b.Upsert, r)
			case !ok && e.sent:
				e.sent = false
				b.Withdraw = append(b.Withdraw, p)
			}
			if len(e.paths) == 0 {
				delete(st.rib, p)
			}
		}
		st.resetDirty()
	}
	send := b.Full || len(b.Upsert) > 0 || len(b.Withdraw) > 0 || (b.Synced && !st.sentSync)
	if send && b.Synced {
		st.sentSync = true
	}
	slices.SortFunc(b.Upsert, func(x, y LearnedRoute) int { return comparePrefix(x.Prefix, y.Prefix) })
	slices.SortFunc(b.Withdraw, comparePrefix)
	return b, send
}

// resetDirty empties the dirty set; a big one is dropped rather than
// cleared, since clear keeps a map's buckets and a 100,000-route burst
// would pin them for good.
func (st *state) resetDirty() {
	if len(st.dirty) > 1024 {
		st.dirty = map[netip.Prefix]struct{}{}
		return
	}
	clear(st.dirty)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// run delivers batches until ctx ends: it waits for a change, lets more
// changes gather for Coalesce, then hands one batch to OnRoutes.
func (st *state) run(ctx context.Context, start time.Time) {
	syncTimer := time.NewTimer(st.opts.SyncTimeout)
	defer syncTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.kick:
		case <-syncTimer.C:
		}
		t := time.NewTimer(st.opts.Coalesce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-st.urgent:
			t.Stop()
		}
		select {
		case <-st.urgent: // taken by this batch
		default:
		}
		b, send := st.buildBatch(time.Now(), start)
		if send && st.opts.OnRoutes != nil {
			st.opts.OnRoutes(b)
		}
	}
}

// routes returns the learned routes delivered so far, as they stand now
// (changes not yet batched included).
func (st *state) routes() []LearnedRoute {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]LearnedRoute, 0, len(st.rib))
	for p, e := range st.rib {
		if !e.sent {
			continue
		}
		if r, ok := st.route(p, e); ok {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y LearnedRoute) int { return comparePrefix(x.Prefix, y.Prefix) })
	return out
}

const logEvery = 1000 // after the first few, log one rejection in this many

// observeReceived classifies what peers sent, before policy, to record and
// log why a prefix is not learned. GoBGP's policy did the enforcing.
func (st *state) observeReceived(paths []*apiutil.Path) {
	if st.f == nil {
		return
	}
	for _, p := range paths {
		pfx, ok := nlriPrefix(p.Nlri)
		if !ok {
			continue
		}
		peer := p.PeerAddress
		st.countReceived(peer, pfx, p.Withdrawal)
		rej := st.rejected[peer]
		if p.Withdrawal {
			delete(rej, pfx)
			st.noteTwinPath(peer, pfx, false)
			continue
		}
		v := st.f.classify(peer, pfx)
		st.noteTwinPath(peer, pfx, v.reason == "" && v.kind == KindVBR && st.f.isTwin(peer))
		if v.reason == "" {
			delete(rej, pfx)
			continue
		}
		if rej == nil {
			rej = map[netip.Prefix]Reason{}
			st.rejected[peer] = rej
		}
		if rej[pfx] == v.reason {
			continue // re-announcement of something already counted
		}
		rej[pfx] = v.reason
		st.counts[v.reason]++
		si := st.session(peer)
		if si.rejected == nil {
			si.rejected = map[Reason]uint64{}
		}
		si.rejected[v.reason]++
		if n := si.rejected[v.reason]; n <= 10 || n%logEvery == 0 {
			lvl := slog.LevelInfo
			if v.reason == ReasonHijack || v.reason == ReasonConflict {
				lvl = slog.LevelWarn
			}
			st.log.Log(context.Background(), lvl, "route not learned", "reason", string(v.reason), "prefix", pfx,
				"session", st.sessionName(peer), "neighbor", peer, "overlaps", v.with, "count", n)
		}
	}
}

// noteTwinPath records whether twin announces pfx as an on-premises
// prefix, and marks pfx for recomputing when that changed.
func (st *state) noteTwinPath(twin netip.Addr, pfx netip.Prefix, announced bool) {
	list := st.twinPaths[pfx]
	i := slices.Index(list, twin)
	switch {
	case announced && i < 0:
		list = append(list, twin)
		slices.SortFunc(list, netip.Addr.Compare)
		st.twinPaths[pfx] = list
	case !announced && i >= 0:
		if list = slices.Delete(list, i, i+1); len(list) == 0 {
			delete(st.twinPaths, pfx)
		} else {
			st.twinPaths[pfx] = list
		}
	default:
		return
	}
	if st.rib[pfx] != nil {
		st.dirty[pfx] = struct{}{}
		st.wake()
	}
}

// forgetTwin drops every announcement of a twin whose session went down.
func (st *state) forgetTwin(twin netip.Addr) {
	for pfx, list := range st.twinPaths {
		if slices.Contains(list, twin) {
			st.noteTwinPath(twin, pfx, false)
		}
	}
}

// established reports whether the session with addr is established.
func (st *state) established(addr netip.Addr) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	si := st.sessions[addr]
	return si != nil && si.state == bgp.BGP_FSM_ESTABLISHED
}

func (st *state) session(addr netip.Addr) *sessionInfo {
	si := st.sessions[addr]
	if si == nil {
		si = &sessionInfo{}
		st.sessions[addr] = si
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

// countReceived enforces max_prefixes on what a VBR router announced.
//
// The limit is counted here, not by GoBGP's prefix limit: GoBGP counts its
// whole Adj-RIB-In on every UPDATE, which made a burst of 100,000 prefixes
// quadratic (some 6 s of the routing pipeline benchmark's 14). Past the
// limit the session is shut down with a Cease (RFC 4486) naming the limit
// and stays down until its config changes or the agent restarts; its
// routes go with it.
func (st *state) countReceived(peer netip.Addr, pfx netip.Prefix, withdrawal bool) {
	v := st.f.vbrs[peer]
	if v == nil || v.MaxPrefixes == 0 {
		return
	}
	si := st.session(peer)
	if withdrawal {
		delete(si.received, pfx)
		return
	}
	if si.maxPrefix {
		return
	}
	if si.received == nil {
		si.received = map[netip.Prefix]struct{}{}
	}
	si.received[pfx] = struct{}{}
	n := len(si.received)
	if !si.warned && n > int(v.MaxPrefixes)*8/10 {
		si.warned = true
		st.log.Warn("bgp session near max_prefixes", "session", st.sessionName(peer), "neighbor", peer, "received", n, "max_prefixes", v.MaxPrefixes)
	}
	if n <= int(v.MaxPrefixes) {
		return
	}
	si.maxPrefix, si.received = true, nil
	st.log.Error("bgp session shut down: max_prefixes exceeded", "session", st.sessionName(peer), "neighbor", peer, "max_prefixes", v.MaxPrefixes)
	st.wakeSessions()
	if srv := st.srv; srv != nil {
		// Not from this callback: GoBGP serves the request from the loop
		// that delivers these events.
		go func() {
			err := srv.DisablePeer(context.Background(), &api.DisablePeerRequest{Address: peer.String(),
				Communication: fmt.Sprintf("max_prefixes %d exceeded", v.MaxPrefixes)})
			if err != nil {
				st.log.Error("shutting down a session past max_prefixes", "neighbor", peer, "err", err)
			}
		}()
	}
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
	if ev.Peer.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT && !si.maxPrefix {
		si.maxPrefix = true
		max := uint32(0)
		if v := st.f.vbrs[addr]; v != nil {
			max = v.MaxPrefixes
		}
		st.log.Error("bgp session shut down: max_prefixes exceeded", "session", name, "neighbor", addr, "max_prefixes", max)
	}
	switch {
	case si.state == bgp.BGP_FSM_ESTABLISHED && old != bgp.BGP_FSM_ESTABLISHED:
		si.hasSeenUp = true
		si.maxPrefix, si.received, si.warned = false, nil, false
		si.lastError = ""
		st.log.Info("bgp session up", "session", name, "neighbor", addr)
	case old == bgp.BGP_FSM_ESTABLISHED && si.state != bgp.BGP_FSM_ESTABLISHED:
		si.received = nil
		st.forgetTwin(addr)
		st.wake()
		select {
		case st.urgent <- struct{}{}:
		default:
		}
		delete(st.rejected, addr)
		delete(st.eor, addr)
		st.log.Warn("bgp session down", "session", name, "neighbor", addr, "reason", ev.Peer.State.DisconnectReason.String(),
			"message", ev.Peer.State.DisconnectMessage)
	}
	// Only crossing Established (or a max_prefixes trip) changes what
	// OnSessions reports; a dead peer's connect/active cycling does not.
	if (old == bgp.BGP_FSM_ESTABLISHED) != (si.state == bgp.BGP_FSM_ESTABLISHED) || oldMax != si.maxPrefix {
		st.wakeSessions()
	}
}
