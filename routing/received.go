package routing

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
)

const logEvery = 1000 // after the first few, log one rejection in this many

// familyName names an address family by its index (see family).
var familyName = [2]string{"ipv4", "ipv6"}

// observeReceived classifies what peers sent, ahead of policy, to record and
// log why a prefix is not learned. GoBGP's policy, compiled from the same
// table, does the enforcing.
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
		rej := st.sessions.rejected[peer]
		if p.Withdrawal {
			delete(rej, pfx)
			st.noteTwinPath(peer, pfx, false)
			continue
		}
		v := st.f.classify(peer, pfx)
		if v.reason == "" && !st.f.firstASOK(peer, p.Attrs) {
			v = verdict{reason: ReasonFirstAS}
		}
		st.noteTwinPath(peer, pfx, v.reason == "" && v.kind == KindVBR && st.f.isTwin(peer))
		if v.reason == "" {
			delete(rej, pfx)
			continue
		}
		if rej == nil {
			rej = map[netip.Prefix]Reason{}
			st.sessions.rejected[peer] = rej
		}
		if rej[pfx] == v.reason {
			continue // re-announcement of something already counted
		}
		rej[pfx] = v.reason
		st.sessions.counts[v.reason]++
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

// reclassifyReceived applies a new import table to what each session
// currently announces, so that its refusals (and the accepted counts
// derived from them) describe the table in force, not the one in force
// when each prefix arrived. A refusal the table cannot see (first-as, from
// the AS path) stays. Sessions without a received set (no prefix limit)
// keep their refusals until the prefixes come again. st.mu is held.
func (st *state) reclassifyReceived() {
	for addr, si := range st.sessions.byAddr {
		if si.received == nil {
			continue
		}
		old := st.sessions.rejected[addr]
		rej := map[netip.Prefix]Reason{}
		for pfx := range si.received {
			if r := old[pfx]; r == ReasonFirstAS {
				rej[pfx] = r
			} else if v := st.f.classify(addr, pfx); v.reason != "" {
				rej[pfx] = v.reason
			}
		}
		st.sessions.rejected[addr] = rej
	}
}

// countReceived enforces max_prefixes on what a peer announced, in each
// address family separately: a VBR's from its config, a gateway's derived
// from what the config entitles it to (GatewayPeer.MaxPrefixes).
//
// The limit is counted here, not by GoBGP's prefix limit: GoBGP counts its
// whole Adj-RIB-In on every UPDATE, which makes a large burst quadratic
// (test/'s BenchmarkPipeline100k sends one). Past the limit the session is
// shut down (Speaker.tripMaxPrefixes) and its routes go with it; it comes
// back after its max_prefixes_restart, or at once with
// Speaker.ResetSession.
func (st *state) countReceived(peer netip.Addr, pfx netip.Prefix, withdrawal bool) {
	limit := st.prefixLimit(peer)
	if limit.max == 0 {
		return
	}
	si := st.session(peer)
	fam := family(pfx.Addr())
	_, had := si.received[pfx]
	if withdrawal {
		if had {
			delete(si.received, pfx)
			si.perFamily[fam]--
		}
		return
	}
	if si.maxPrefix || had {
		return
	}
	if si.received == nil {
		si.received = map[netip.Prefix]struct{}{}
	}
	si.received[pfx] = struct{}{}
	si.perFamily[fam]++
	n := si.perFamily[fam]
	if !si.warned && n > int(limit.max)*8/10 {
		si.warned = true
		st.log.Warn("bgp session near max_prefixes", "session", st.sessionName(peer), "neighbor", peer, "family", familyName[fam], "received", n, "max_prefixes", limit.max)
	}
	if n <= int(limit.max) {
		return
	}
	si.maxPrefix, si.received, si.perFamily = true, nil, [2]int{}
	si.trips++
	st.log.Error("bgp session shut down: max_prefixes exceeded", "session", st.sessionName(peer), "neighbor", peer, "family", familyName[fam], "last_prefix", pfx,
		"max_prefixes", limit.max, "restart_after", limit.restart)
	st.wakeSessions()
	if st.srv != nil && st.trip != nil {
		// Not from this callback: GoBGP serves the request from the loop
		// that delivers these events.
		trip := tripInfo{peer: peer, restart: limit.restart, seq: si.trips}
		go func() {
			if err := st.trip(trip); err != nil {
				st.log.Error("shutting down a session past max_prefixes", "neighbor", peer, "err", err)
			}
		}()
	}
}
