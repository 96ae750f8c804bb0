package routing

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const benchPrefixes = 100_000

func benchPrefixList(n int) []netip.Prefix {
	ps := make([]netip.Prefix, n)
	for i := range n {
		ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
	}
	return ps
}

func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func heapBytes() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func ribCount(b *testing.B, s *server.BgpServer) uint64 {
	r, err := s.GetTable(context.Background(), &api.GetTableRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL,
		Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}})
	if err != nil {
		b.Fatal(err)
	}
	return r.NumDestination
}

// BenchmarkLearn100k measures, with a plain GoBGP speaker standing in for
// the on-prem router (BIRD needs a namespace per process; see the
// privileged tests for BIRD itself):
//   - baseline: time for a plain GoBGP speaker to hold 100,000 announced
//     prefixes in its RIB;
//   - opencen: time for the Speaker to deliver them as learned routes;
//   - heap and RSS growth per route in the Speaker's process;
//   - convergence for one new prefix on top of the 100,000.
func BenchmarkLearn100k(b *testing.B) {
	ps := benchPrefixList(benchPrefixes)
	for range b.N {
		baseline := benchBaseline(b, ps)
		benchSpeaker(b, ps).report(b, baseline)
	}
}

// benchBaseline is the time a plain GoBGP speaker takes, from session up,
// to hold ps in its RIB. The sender is loaded first and its peer started
// only then, as in benchSpeaker.
func benchBaseline(b *testing.B, ps []netip.Prefix) time.Duration {
	ctx := context.Background()
	port := freePort(b)
	sender := rawRouter(b, addrOnprem, 65010, port, ma("127.0.0.6"), testASN)
	rawAnnounce(b, sender, addrOnprem, false, ps...)
	plain := rawRouter(b, ma("127.0.0.6"), testASN, port, addrOnprem, 65010)
	var t0 time.Time
	waitForFast(b, 30*time.Second, "baseline session", func() bool {
		var up bool
		plain.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			up = p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
		})
		t0 = time.Now()
		return up
	})
	waitForFast(b, 120*time.Second, "baseline 100k", func() bool { return ribCount(b, plain) >= uint64(len(ps)) })
	baseline := time.Since(t0)
	plain.StopBgp(ctx, &api.StopBgpRequest{})
	sender.StopBgp(ctx, &api.StopBgpRequest{})
	return baseline
}

// learnTimes records when each prefix reached OnRoutes.
type learnTimes struct {
	mu      sync.Mutex
	at      map[netip.Prefix]time.Time
	batches int
}

func (l *learnTimes) option(o *Options) {
	inner := o.OnRoutes
	o.Coalesce = 100 * time.Millisecond
	o.OnRoutes = func(rb RouteBatch) {
		now := time.Now()
		l.mu.Lock()
		l.batches++
		for _, r := range rb.Upsert {
			l.at[r.Prefix] = now
		}
		l.mu.Unlock()
		inner(rb)
	}
}

// last is the time the last of n prefixes arrived, once n have.
func (l *learnTimes) last(n int) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	if len(l.at) < n {
		return last, false
	}
	for _, t := range l.at {
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

func (l *learnTimes) has(p netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.at[p]
	return ok
}

// learnResult is what benchSpeaker measured.
type learnResult struct {
	full, conv                 time.Duration
	batches                    int
	heapPer, rssPer, senderPer float64
}

// benchSpeaker measures the Speaker receiving ps from a loaded sender.
func benchSpeaker(b *testing.B, ps []netip.Prefix) learnResult {
	n := len(ps)
	heap0 := heapBytes()
	port := freePort(b)
	sender := rawRouter(b, addrOnprem, 65010, port, addrA, testASN)
	rawAnnounce(b, sender, addrOnprem, false, ps...)
	heapS, rssS := heapBytes(), rssBytes()
	rec := &learnTimes{at: map[netip.Prefix]time.Time{}}
	d := desiredA(port)
	d.Gateways = nil
	d.VBRs[0].Accept = nil
	a := startNode(b, port, d, rec.option)
	var t0, last time.Time
	waitForFast(b, 30*time.Second, "vbr session", func() bool {
		a.s.state.mu.Lock()
		defer a.s.state.mu.Unlock()
		si := a.s.state.sessions.byAddr[addrOnprem]
		if si != nil && si.state == bgp.BGP_FSM_ESTABLISHED {
			t0 = si.since
			return true
		}
		return false
	})
	waitForFast(b, 120*time.Second, "speaker 100k", func() (ok bool) { last, ok = rec.last(n); return ok })
	r := learnResult{full: last.Sub(t0)}
	rec.mu.Lock()
	r.batches = rec.batches
	// The test's own maps of learned routes are not the agent's cost.
	rec.at = map[netip.Prefix]time.Time{}
	rec.mu.Unlock()
	a.mu.Lock()
	a.fib = map[netip.Prefix]LearnedRoute{}
	a.mu.Unlock()
	heap1, rss1 := heapBytes(), rssBytes()

	one := mp("198.18.0.0/24")
	t1 := time.Now()
	rawAnnounce(b, sender, addrOnprem, false, one)
	waitFor(b, 30*time.Second, "one new prefix", func() bool { return rec.has(one) })
	r.conv = time.Since(t1)

	r.senderPer = float64(int64(heapS)-int64(heap0)) / float64(n)
	r.heapPer = float64(int64(heap1)-int64(heapS)) / float64(n)
	r.rssPer = float64(int64(rss1)-int64(rssS)) / float64(n)
	a.s.Close(false)
	sender.StopBgp(context.Background(), &api.StopBgpRequest{})
	return r
}

func (r learnResult) report(b *testing.B, baseline time.Duration) {
	fmt.Printf(`
routing benchmark (announcer: plain GoBGP in-process; 100,000 /32 prefixes over one eBGP session on loopback)
  plain GoBGP receives 100k into its RIB:     %8.2fs   (baseline, same run; from session up)
  opencen Speaker delivers 100k to OnRoutes:  %8.2fs   (%.2fx baseline; %d batches; from session up)
  Speaker heap per route:                     %8.0f B   (target <= 1536 B; GoBGP adj-RIB-in + Loc-RIB + speaker table)
  Speaker RSS growth per route:               %8.0f B   (target <= 1536 B)
  (sender's own heap per route, excluded:     %8.0f B)
  convergence for one new prefix:             %8.0fms  (Coalesce 100ms)
`, baseline.Seconds(), r.full.Seconds(), r.full.Seconds()/baseline.Seconds(), r.batches, r.heapPer, r.rssPer, r.senderPer,
		float64(r.conv.Microseconds())/1000)
	b.ReportMetric(baseline.Seconds(), "baseline-s")
	b.ReportMetric(r.full.Seconds(), "speaker-s")
	b.ReportMetric(r.heapPer, "heap-B/route")
	b.ReportMetric(r.senderPer, "sender-heap-B/route")
	b.ReportMetric(r.rssPer, "rss-B/route")
	b.ReportMetric(float64(r.conv.Milliseconds()), "converge-ms")
}

func waitForFast(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	pollFor(t, timeout, 5*time.Millisecond, what, cond)
}
