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
	ctx := context.Background()
	for range b.N {
		// The sender is loaded before its peer exists, so its own memory can
		// be measured apart; both runs time from session establishment to
		// the last prefix received.
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
		waitForFast(b, 120*time.Second, "baseline 100k", func() bool { return ribCount(b, plain) >= benchPrefixes })
		baseline := time.Since(t0)
		plain.StopBgp(ctx, &api.StopBgpRequest{})
		sender.StopBgp(ctx, &api.StopBgpRequest{})

		// opencen speaker receives.
		heap0, rss0 := heapBytes(), rssBytes()
		port = freePort(b)
		sender = rawRouter(b, addrOnprem, 65010, port, addrA, testASN)
		rawAnnounce(b, sender, addrOnprem, false, ps...)
		heapS, rssS := heapBytes(), rssBytes()
		var mu sync.Mutex
		learned := map[netip.Prefix]time.Time{}
		batches := 0
		d := desiredA(port)
		d.Gateways = nil
		d.VBRs[0].Accept = nil
		a := startNode(b, port, d, func(o *Options) {
			inner := o.OnRoutes
			o.Coalesce = 100 * time.Millisecond
			o.OnRoutes = func(rb RouteBatch) {
				now := time.Now()
				mu.Lock()
				batches++
				for _, r := range rb.Upsert {
					learned[r.Prefix] = now
				}
				mu.Unlock()
				inner(rb)
			}
		})
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
		var last time.Time
		waitForFast(b, 120*time.Second, "speaker 100k", func() bool {
			mu.Lock()
			defer mu.Unlock()
			if len(learned) < benchPrefixes {
				return false
			}
			for _, t := range learned {
				if t.After(last) {
					last = t
				}
			}
			return true
		})
		full := last.Sub(t0)
		mu.Lock()
		nb := batches
		// The test's own map of learned routes is not the agent's cost.
		learnedCopy := learned
		learned = map[netip.Prefix]time.Time{}
		mu.Unlock()
		a.mu.Lock()
		a.fib = map[netip.Prefix]LearnedRoute{}
		a.mu.Unlock()
		heap1, rss1 := heapBytes(), rssBytes()
		_ = learnedCopy

		// Convergence for one new prefix.
		one := mp("198.18.0.0/24")
		t1 := time.Now()
		rawAnnounce(b, sender, addrOnprem, false, one)
		waitFor(b, 30*time.Second, "one new prefix", func() bool {
			mu.Lock()
			defer mu.Unlock()
			_, ok := learned[one]
			return ok
		})
		conv := time.Since(t1)

		senderPer := float64(int64(heapS)-int64(heap0)) / benchPrefixes
		heapPer := float64(int64(heap1)-int64(heapS)) / benchPrefixes
		rssPer := float64(int64(rss1)-int64(rssS)) / benchPrefixes
		_ = rss0
		report := fmt.Sprintf(`
routing benchmark (announcer: plain GoBGP in-process; 100,000 /32 prefixes over one eBGP session on loopback)
  plain GoBGP receives 100k into its RIB:     %8.2fs   (baseline, same run; from session up)
  opencen Speaker delivers 100k to OnRoutes:  %8.2fs   (%.2fx baseline; %d batches; from session up)
  Speaker heap per route:                     %8.0f B   (target <= 1536 B; GoBGP adj-RIB-in + Loc-RIB + speaker table)
  Speaker RSS growth per route:               %8.0f B   (target <= 1536 B)
  (sender's own heap per route, excluded:     %8.0f B)
  convergence for one new prefix:             %8.0fms  (Coalesce 100ms)
`, baseline.Seconds(), full.Seconds(), full.Seconds()/baseline.Seconds(), nb, heapPer, rssPer, senderPer, float64(conv.Microseconds())/1000)
		fmt.Print(report)
		b.ReportMetric(baseline.Seconds(), "baseline-s")
		b.ReportMetric(full.Seconds(), "speaker-s")
		b.ReportMetric(heapPer, "heap-B/route")
		b.ReportMetric(senderPer, "sender-heap-B/route")
		b.ReportMetric(rssPer, "rss-B/route")
		b.ReportMetric(float64(conv.Milliseconds()), "converge-ms")
		a.s.Close(false)
		sender.StopBgp(ctx, &api.StopBgpRequest{})
		_ = bgp.RF_IPv4_UC
	}
}

func waitForFast(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
