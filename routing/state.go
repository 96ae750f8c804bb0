package routing

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// state turns GoBGP's event stream into learned routes, session states
// and rejection records. GoBGP queues watch events without bound, so a slow
// consumer here never blocks its FSMs (keepalives keep flowing).
type state struct {
	log  *slog.Logger
	opts Options

	// Wake-ups: channels of one slot, sent to without blocking, so they
	// need no lock.
	kick chan struct{} // wakes run: a learned route may have changed
	// urgent cuts run's coalescing short: a session went down, and its
	// withdrawals (GoBGP applies them ahead of the state change) are a
	// failover that must not wait.
	urgent   chan struct{}
	sessKick chan struct{} // wakes runSessions (sessions.go)

	mu sync.Mutex // guards every field below; GoBGP's callbacks take it

	// srv is the server whose events are applied; gen numbers it, and a
	// callback bound to another number (a stopped server's) does nothing.
	gen uint64
	srv *server.BgpServer

	// The desired state of the last Set and its import table compiled;
	// nil between servers and with the zero Desired.
	d *Desired
	f *filter

	learned  learnedRoutes // learned.go
	sessions sessionStates // sessions.go, received.go

	// trip shuts a session down past its max_prefixes
	// (Speaker.tripMaxPrefixes); set once by New.
	trip func(tripInfo) error
}

func newState(log *slog.Logger, opts Options) *state {
	return &state{
		log:      log,
		opts:     opts,
		kick:     make(chan struct{}, 1),
		urgent:   make(chan struct{}, 1),
		sessKick: make(chan struct{}, 1),
		learned: learnedRoutes{
			rib:       map[netip.Prefix]*ribEntry{},
			dirty:     map[netip.Prefix]struct{}{},
			full:      true,
			eor:       map[netip.Addr]bool{},
			twinPaths: map[netip.Prefix][]netip.Addr{},
		},
		sessions: sessionStates{
			byAddr:   map[netip.Addr]*sessionInfo{},
			rejected: map[netip.Addr]map[netip.Prefix]Reason{},
			counts:   map[Reason]uint64{},
		},
	}
}

func (st *state) isSynced() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.learned.synced
}

func (st *state) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *state) setDesired(d *Desired, f *filter) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if f == nil {
		f = newFilter(&Desired{})
	}
	same := d != nil && st.d != nil && reflect.DeepEqual(d, st.d)
	st.d, st.f = d, f
	if !same {
		// Origins may be named differently now: recompute every route.
		// An unchanged state recomputes nothing: the agent sets it on
		// every reconcile, and recomputing a large table each time
		// would cost more than the reconcile itself.
		for p := range st.learned.rib {
			st.learned.dirty[p] = struct{}{}
		}
		st.reclassifyReceived()
	}
	for addr := range st.sessions.byAddr {
		if f.gateways[addr] == nil && f.vbrs[addr] == nil {
			delete(st.sessions.byAddr, addr)
			delete(st.sessions.rejected, addr)
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
	for p, e := range st.learned.rib {
		e.paths = nil
		st.learned.dirty[p] = struct{}{}
	}
	clear(st.learned.eor)
	clear(st.sessions.byAddr)
	clear(st.sessions.rejected)
	clear(st.learned.twinPaths)
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
	// current runs apply under the lock, unless the server stopped.
	current := func(apply func()) {
		st.mu.Lock()
		defer st.mu.Unlock()
		if gen == st.gen {
			apply()
		}
	}
	return server.WatchEventMessageCallbacks{
		OnBestPath: func(paths []*apiutil.Path, _ time.Time) {
			current(func() { st.applyBest(paths) })
		},
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) {
			current(func() { st.observeReceived(paths) })
		},
		OnPathEor: func(p *apiutil.Path, _ time.Time) {
			current(func() {
				st.learned.eor[p.PeerAddress] = true
				st.wake()
			})
		},
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
			if ev != nil && ev.Type == apiutil.PEER_EVENT_STATE {
				current(func() { st.peerEvent(ev, t) })
			}
		},
	}
}

// run delivers batches until ctx ends: it waits for a change, lets more
// changes gather for Coalesce, then hands one batch to OnRoutes.
func (st *state) run(ctx context.Context) {
	start := time.Now()
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
