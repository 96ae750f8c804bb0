package routing

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/opencen/opencen/config"
)

// LearnedRoute is one prefix the gateway should route toward the CEN.
type LearnedRoute = config.LearnedRoute

func routeHash(r *LearnedRoute) uint64 {
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

// learnedRoutes is the speaker's own table of best paths, and what of it
// the agent has been sent. Guarded by state.mu.
type learnedRoutes struct {
	rib map[netip.Prefix]*ribEntry
	// dirty are the prefixes to recompute for the next batch; full makes
	// the next batch carry the whole table.
	dirty map[netip.Prefix]struct{}
	full  bool
	// eor marks the gateway peers that sent End-of-RIB; synced says the
	// initial exchange is over, sentSync that a batch has said so.
	eor              map[netip.Addr]bool
	synced, sentSync bool
	// twinPaths are the on-premises prefixes gateways of this region
	// announce (accepted, ahead of best-path selection, which prefers a
	// local VBR's path and so hides them): LearnedRoute.Gateways.
	twinPaths map[netip.Prefix][]netip.Addr
}

type ribPath struct {
	src netip.Addr // invalid: originated locally
	// via is the path's next hop where it is the one to install: a VBR
	// router's next hop of the prefix's family (an IPv6 prefix over an
	// IPv4 session names its router's IPv6 address). Invalid otherwise.
	via netip.Addr
}

// ribEntry keeps only a hash of the route last delivered, not a copy: the
// table holds one entry per prefix of the whole instance, and memory per
// route has a budget (BenchmarkLearn100k and BenchmarkBIRD100k measure it
// against its target, GoBGP's own RIBs included).
type ribEntry struct {
	paths    []ribPath
	sent     bool
	sentHash uint64
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
		e := st.learned.rib[pfx]
		if p.Withdrawal {
			if e == nil {
				continue
			}
			e.paths = slices.DeleteFunc(e.paths, func(r ribPath) bool { return r.src == src })
		} else {
			if e == nil {
				e = &ribEntry{}
				st.learned.rib[pfx] = e
			}
			rp := ribPath{src: src, via: st.vbrNexthop(pfx, p)}
			i := slices.IndexFunc(e.paths, func(r ribPath) bool { return r.src == src })
			if i >= 0 {
				e.paths[i] = rp
			} else {
				e.paths = append(e.paths, rp)
			}
		}
		st.learned.dirty[pfx] = struct{}{}
	}
	st.wake()
}

// vbrNexthop is the next hop p names for pfx when that is where to send
// pfx's packets: an address of pfx's family inside the subnet of the
// gateway's address of that family on the VBR's link, other than the
// session's own (the common case, kept implicit in ribPath.src). Nothing
// for paths from gateways, or when the router names no such next hop: a
// router may not point the gateway anywhere but its own link.
func (st *state) vbrNexthop(pfx netip.Prefix, p *apiutil.Path) netip.Addr {
	if st.f == nil {
		return netip.Addr{}
	}
	v := st.f.vbrs[p.PeerAddress]
	if v == nil {
		return netip.Addr{}
	}
	var nh netip.Addr
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			nh = a.Value
		case *bgp.PathAttributeMpReachNLRI:
			nh = a.Nexthop
		}
	}
	nh = nh.Unmap()
	if !nh.IsValid() || nh == p.PeerAddress || nh.Is4() != pfx.Addr().Is4() {
		return netip.Addr{}
	}
	for _, l := range v.LinkAddresses {
		if l.Masked().Contains(nh) && nh != l.Addr() {
			return nh
		}
	}
	return netip.Addr{}
}

// route computes what the agent should install for one RIB entry.
func (st *state) route(pfx netip.Prefix, e *ribEntry) (LearnedRoute, bool) {
	if len(e.paths) == 0 || st.d == nil {
		return LearnedRoute{}, false
	}
	r := LearnedRoute{Prefix: pfx}
	first := e.paths[0]
	direct := st.f.vbrs[first.src] != nil
	for _, p := range e.paths {
		switch {
		case !p.src.IsValid():
			return LearnedRoute{}, false // our own VPC CIDR
		case !direct:
			r.NextHops = append(r.NextHops, p.src)
		case p.via.IsValid():
			r.NextHops = append(r.NextHops, p.via)
		case p.src.Is4() == pfx.Addr().Is4():
			r.NextHops = append(r.NextHops, p.src)
		}
	}
	if len(r.NextHops) == 0 {
		// A VBR router announced a prefix of the other family without a
		// usable next hop of that family: nothing to install it with.
		return LearnedRoute{}, false
	}
	slices.SortFunc(r.NextHops, func(a, b netip.Addr) int { return a.Compare(b) })
	// The origin is what the config entitles the peer to, never the tags
	// it sent: a gateway tagging its routes with the receiver's own region
	// would otherwise make its traffic same-region, and unshaped. The
	// import policy refused what the table refuses; checking again here
	// keeps a disagreement from installing anything.
	v := st.f.classify(first.src, pfx)
	if v.reason != "" {
		return LearnedRoute{}, false
	}
	r.OriginRegion, r.OriginNetwork, r.Handoff = v.region, v.network, v.handoff
	if direct {
		r.Direct = true
		r.Gateways = st.learned.twinPaths[pfx]
	}
	return r, true
}

func (st *state) buildBatch(now time.Time, start time.Time) (RouteBatch, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.learned.synced {
		all := st.d != nil
		if st.d != nil {
			for _, g := range st.d.Gateways {
				if !st.learned.eor[g.Address] {
					all = false
				}
			}
		}
		if all || now.Sub(start) >= st.opts.SyncTimeout {
			st.learned.synced = true
			st.log.Info("initial route exchange complete", "by_timeout", !all)
		}
	}
	b := RouteBatch{Full: st.learned.full, Synced: st.learned.synced}
	if st.learned.full {
		for p, e := range st.learned.rib {
			r, ok := st.route(p, e)
			e.sent = ok
			if ok {
				e.sentHash = routeHash(&r)
				b.Upsert = append(b.Upsert, r)
			}
			if len(e.paths) == 0 {
				delete(st.learned.rib, p)
			}
		}
		st.resetDirty()
		st.learned.full = false
	} else {
		for p := range st.learned.dirty {
			e := st.learned.rib[p]
			if e == nil {
				continue
			}
			r, ok := st.route(p, e)
			var h uint64
			if ok {
				h = routeHash(&r)
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
				delete(st.learned.rib, p)
			}
		}
		st.resetDirty()
	}
	send := b.Full || len(b.Upsert) > 0 || len(b.Withdraw) > 0 || (b.Synced && !st.learned.sentSync)
	if send && b.Synced {
		st.learned.sentSync = true
	}
	slices.SortFunc(b.Upsert, func(x, y LearnedRoute) int { return comparePrefix(x.Prefix, y.Prefix) })
	slices.SortFunc(b.Withdraw, comparePrefix)
	return b, send
}

// resetDirty empties the dirty set; a big one is dropped rather than
// cleared, since clear keeps a map's buckets and a 100,000-route burst
// would pin them for good.
func (st *state) resetDirty() {
	if len(st.learned.dirty) > 1024 {
		st.learned.dirty = map[netip.Prefix]struct{}{}
		return
	}
	clear(st.learned.dirty)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// routes returns the learned routes delivered so far, as they stand now
// (changes not yet batched included).
func (st *state) routes() []LearnedRoute {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]LearnedRoute, 0, len(st.learned.rib))
	for p, e := range st.learned.rib {
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

// noteTwinPath records whether twin announces pfx as an on-premises
// prefix, and marks pfx for recomputing when that changed.
func (st *state) noteTwinPath(twin netip.Addr, pfx netip.Prefix, announced bool) {
	list := st.learned.twinPaths[pfx]
	i := slices.Index(list, twin)
	switch {
	case announced && i < 0:
		list = append(list, twin)
		slices.SortFunc(list, netip.Addr.Compare)
		st.learned.twinPaths[pfx] = list
	case !announced && i >= 0:
		if list = slices.Delete(list, i, i+1); len(list) == 0 {
			delete(st.learned.twinPaths, pfx)
		} else {
			st.learned.twinPaths[pfx] = list
		}
	default:
		return
	}
	if st.learned.rib[pfx] != nil {
		st.learned.dirty[pfx] = struct{}{}
		st.wake()
	}
}

// forgetTwin drops every announcement of a twin whose session went down.
func (st *state) forgetTwin(twin netip.Addr) {
	for pfx, list := range st.learned.twinPaths {
		if slices.Contains(list, twin) {
			st.noteTwinPath(twin, pfx, false)
		}
	}
}
