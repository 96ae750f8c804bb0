package routing

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestBurstIsCoalesced: 20,000 prefixes in one burst reach the agent in a
// few batches, and the session stays up throughout.
func TestBurstIsCoalesced(t *testing.T) {
	port := freePort(t)
	onprem := rawRouter(t, addrOnprem, 65010, port, addrA, testASN)
	d := desiredA(port)
	d.Gateways = nil
	d.VBRs[0].Accept = nil
	a := startNode(t, port, d, func(o *Options) { o.Coalesce = 100 * time.Millisecond })
	waitFor(t, 20*time.Second, "vbr up", func() bool {
		st, _ := a.s.Status(context.Background())
		return st.Sessions[0].State == "established"
	})
	a.mu.Lock()
	prior := a.nb
	a.mu.Unlock()
	upSince := func() time.Time {
		a.s.state.mu.Lock()
		defer a.s.state.mu.Unlock()
		return a.s.state.sessions.byAddr[addrOnprem].since
	}
	since := upSince()
	const n = 20000
	ps := make([]netip.Prefix, n)
	for i := range n {
		ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
	}
	t0 := time.Now()
	rawAnnounce(t, onprem, addrOnprem, false, ps...)
	waitFor(t, 60*time.Second, "20000 routes", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.fib) == n
	})
	a.mu.Lock()
	batches := a.nb - prior
	a.mu.Unlock()
	el := time.Since(t0)
	t.Logf("%d prefixes arrived in %d batches over %v", n, batches, el)
	// At most one batch per Coalesce interval, whatever the update rate.
	if limit := int(el/(100*time.Millisecond)) + 3; batches > limit || batches > n/100 {
		t.Fatalf("%d prefixes over %v took %d batches, want at most %d", n, el, batches, min(limit, n/100))
	}
	st, _ := a.s.Status(context.Background())
	if st.Sessions[0].State != "established" || !upSince().Equal(since) {
		t.Fatalf("session disturbed by the burst: %+v", st.Sessions[0])
	}
}

// TestGracefulRestart: a gateway restarting with Close(true) keeps its
// routes at its peer (no withdrawal reaches the peer's agent); the new
// speaker resyncs, and what it stops originating is swept.
func TestGracefulRestart(t *testing.T) {
	port := freePort(t)
	extra := mp("10.3.0.0/16")
	da := desiredA(port)
	da.VBRs = nil
	da.Gateways = da.Gateways[:1]
	da.Gateways[0].Entitled = append(da.Gateways[0].Entitled, Entitlement{Network: "vpc-b3", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{extra}})
	da.InstanceCIDRs = append(da.InstanceCIDRs, NamedPrefix{Prefix: extra, Region: "r-b", Network: "vpc-b3"})

	gone := &withdrawals{watch: []netip.Prefix{vpcB, extra}}
	a := startNode(t, port, da, gone.option)

	db := desiredB(addrB, addrC, "gw-c")
	db.Gateways = db.Gateways[:1]
	db.Originate = append(db.Originate, Origin{Prefix: extra, Region: "r-b", Network: "vpc-b3"})
	db.InstanceCIDRs = da.InstanceCIDRs
	b := startNode(t, port, db, func(o *Options) { o.GracefulRestartTime = 30 * time.Second })
	waitFor(t, 20*time.Second, "vpc-b and extra at A", func() bool {
		_, ok1 := a.route(vpcB)
		_, ok2 := a.route(extra)
		return ok1 && ok2
	})
	gone.reset()

	if err := b.s.Close(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A sees the session down", func() bool {
		st, _ := a.s.Status(context.Background())
		return st.Sessions[0].State != "established"
	})
	time.Sleep(time.Second)
	if _, ok := a.route(vpcB); !ok {
		t.Fatal("A dropped vpc-b while B restarts gracefully")
	}

	db.Originate = db.Originate[:1] // the restarted B does not have extra
	start := time.Now()
	b2 := startNode(t, port, db, func(o *Options) { o.Restarting = true; o.GracefulRestartTime = 30 * time.Second })
	waitFor(t, 20*time.Second, "stale extra swept at A", func() bool {
		_, ok := a.route(extra)
		return !ok
	})
	waitFor(t, 10*time.Second, "restarted B synced", func() bool {
		b2.mu.Lock()
		defer b2.mu.Unlock()
		return b2.syn
	})
	if el := time.Since(start); el > 15*time.Second {
		t.Fatalf("restarted B took %v to sync: End-of-RIB not seen, only the timeout", el)
	}
	if _, ok := b2.route(vpcA); !ok {
		t.Fatal("restarted B did not learn vpc-a")
	}
	if gone.has(vpcB) {
		t.Fatalf("vpc-b withdrawn at A during B's graceful restart: %v", gone.list())
	}
	if !gone.has(extra) {
		t.Fatalf("extra not withdrawn at A: %v", gone.list())
	}
}

// withdrawals records the prefixes a node's batches withdraw, among them
// those of watch that a full batch leaves out.
type withdrawals struct {
	watch []netip.Prefix
	mu    sync.Mutex
	seen  []netip.Prefix
}

func (w *withdrawals) option(o *Options) {
	inner := o.OnRoutes
	o.OnRoutes = func(b RouteBatch) {
		w.mu.Lock()
		w.seen = append(w.seen, b.Withdraw...)
		if b.Full {
			for _, p := range w.watch {
				if !slices.ContainsFunc(b.Upsert, func(r LearnedRoute) bool { return r.Prefix == p }) {
					w.seen = append(w.seen, p)
				}
			}
		}
		w.mu.Unlock()
		inner(b)
	}
}

func (w *withdrawals) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = nil
}

func (w *withdrawals) has(p netip.Prefix) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.seen, p)
}

func (w *withdrawals) list() []netip.Prefix {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}
