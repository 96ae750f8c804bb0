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
