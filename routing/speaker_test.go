package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

var (
	mp = netip.MustParsePrefix
	ma = netip.MustParseAddr
)

const testASN = 64512

func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("OCRT_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// freePort picks a currently unused TCP port on loopback.
func freePort(t testing.TB) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// node is a speaker plus a stand-in for the agent: the routes it would
// install, rebuilt from the batches exactly as the agent must.
type node struct {
	t   testing.TB
	s   *Speaker
	mu  sync.Mutex
	fib map[netip.Prefix]LearnedRoute
	nb  int
	syn bool
}

func (n *node) apply(b RouteBatch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nb++
	if b.Full {
		clear(n.fib)
	}
	for _, p := range b.Withdraw {
		delete(n.fib, p)
	}
	for _, r := range b.Upsert {
		n.fib[r.Prefix] = r
	}
	n.syn = b.Synced
}

func (n *node) route(p netip.Prefix) (LearnedRoute, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.fib[p]
	return r, ok
}

func startNode(t testing.TB, port int32, d Desired, mod ...func(*Options)) *node {
	t.Helper()
	n := &node{t: t, fib: map[netip.Prefix]LearnedRoute{}}
	o := Options{Logger: testLogger(t).With("node", d.Region+"/"+d.LocalAddress.String()), Port: port, OnRoutes: n.apply,
		Coalesce: 20 * time.Millisecond, ConnectRetry: time.Second, BFD: BFDOptions{Disable: true}, SyncTimeout: 20 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	n.s = s
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(false) })
	if err := s.Set(context.Background(), d); err != nil {
		t.Fatalf("set: %v", err)
	}
	return n
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	pollFor(t, timeout, 20*time.Millisecond, what, cond)
}

// pollFor calls cond every interval until it holds; past timeout it
// fails t.
func pollFor(t testing.TB, timeout, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(every)
	}
}

// rawRouter is a plain GoBGP speaker standing in for an on-prem router.
func rawRouter(t testing.TB, addr netip.Addr, asn uint32, port int32, peer netip.Addr, peerASN uint32, mod ...func(*api.Peer)) *server.BgpServer {
	t.Helper()
	s := server.NewBgpServer(server.LoggerOption(testLogger(t).With("node", "onprem/"+addr.String()), new(slog.LevelVar)))
	go s.Serve()
	// UseMultiplePaths is process-wide in GoBGP: keep it on like the speakers.
	if err := s.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: addr.String(), ListenPort: port, ListenAddresses: []string{addr.String()}, UseMultiplePaths: true,
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: peer.String(), PeerAsn: peerASN},
		Transport: &api.Transport{LocalAddress: addr.String(), RemotePort: uint32(port)},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: families[0], Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: families[1], Enabled: true}},
		},
	}
	for _, m := range mod {
		m(p)
	}
	if err := s.AddPeer(context.Background(), &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatal(err)
	}
	return s
}

func rawAnnounce(t testing.TB, s *server.BgpServer, nh netip.Addr, withdraw bool, prefixes ...netip.Prefix) {
	t.Helper()
	paths := make([]*apiutil.Path, 0, len(prefixes))
	for _, p := range prefixes {
		nlri, _ := bgp.NewIPAddrPrefix(p)
		var nhA bgp.PathAttributeInterface
		family := bgp.RF_IPv4_UC
		if p.Addr().Is6() {
			family = bgp.RF_IPv6_UC
			nhA, _ = bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		} else {
			nhA, _ = bgp.NewPathAttributeNextHop(nh)
		}
		paths = append(paths, &apiutil.Path{Family: family, Nlri: nlri, Withdrawal: withdraw,
			Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nhA}})
	}
	if withdraw {
		if err := s.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := s.AddPath(apiutil.AddPathRequest{Paths: paths}); err != nil {
		t.Fatal(err)
	}
}

func rawTable(t testing.TB, s *server.BgpServer) map[netip.Prefix][]*apiutil.Path {
	t.Helper()
	out := map[netip.Prefix][]*apiutil.Path{}
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(n bgp.NLRI, paths []*apiutil.Path) {
				if p, ok := nlriPrefix(n); ok {
					out[p] = paths
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// topology: region r-a has gwA (127.0.0.2) with vpc-a 10.1.0.0/16 and VBR
// idc-a (on-prem router 127.0.0.5, AS 65010, accept 192.168.0.0/16);
// region r-b has twins gwB (127.0.0.3) and gwC (127.0.0.4) with vpc-b
// 10.2.0.0/16.
var (
	addrA, addrB, addrC = ma("127.0.0.2"), ma("127.0.0.3"), ma("127.0.0.4")
	addrOnprem          = ma("127.0.0.5")
	vpcA, vpcB          = mp("10.1.0.0/16"), mp("10.2.0.0/16")
)

func instanceCIDRs() []NamedPrefix {
	return []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}
}

func protected() []netip.Prefix {
	return []netip.Prefix{mp("127.0.0.2/32"), mp("127.0.0.3/32"), mp("127.0.0.4/32")}
}

func entA() []Entitlement {
	return []Entitlement{{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA}},
		{Network: "idc-a", Region: "r-a", Kind: KindVBR, Prefixes: []netip.Prefix{mp("192.168.0.0/16")}}}
}

func entB() []Entitlement {
	return []Entitlement{{Network: "vpc-b", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{vpcB}}}
}

func desiredA(port int32) Desired {
	return Desired{
		RouterID: addrA, LocalAddress: addrA, Region: "r-a", InstanceASN: testASN,
		Gateways: []GatewayPeer{
			{Name: "gw-b", Region: "r-b", Address: addrB, Entitled: entB()},
			{Name: "gw-c", Region: "r-b", Address: addrC, Entitled: entB()},
		},
		Originate:         []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}},
		VBRs:              []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: addrOnprem, Port: uint16(port), PeerASN: 65010, Accept: []netip.Prefix{mp("192.168.0.0/16")}}},
		InstanceCIDRs:     instanceCIDRs(),
		ProtectedPrefixes: protected(),
	}
}

func desiredB(self, twin netip.Addr, twinName string) Desired {
	return Desired{
		RouterID: self, LocalAddress: self, Region: "r-b", InstanceASN: testASN,
		Gateways: []GatewayPeer{
			{Name: "gw-a", Region: "r-a", Address: addrA, Entitled: entA()},
			{Name: twinName, Region: "r-b", Address: twin, Entitled: entB()},
		},
		Originate:         []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}},
		InstanceCIDRs:     instanceCIDRs(),
		ProtectedPrefixes: protected(),
	}
}

// TestPropagationFiltersAndWithdrawal: A (r-a, with a VBR) and twins B
// and C (r-b) learn each other's VPC CIDRs, B and C learn what A's VBR
// router announces through A, and the router gets the CEN routes; what the
// import table refuses is refused, counted and reported; an identical Set
// disturbs nothing; withdrawals propagate.
func TestPropagationFiltersAndWithdrawal(t *testing.T) {
	port := freePort(t)
	p := &propagation{port: port, onprem: rawRouter(t, addrOnprem, 65010, port, addrA, testASN)}
	p.a = startNode(t, port, desiredA(port))
	p.b = startNode(t, port, desiredB(addrB, addrC, "gw-c"))
	p.c = startNode(t, port, desiredB(addrC, addrB, "gw-b"))
	p.checkVPCs(t)
	p.checkOnPrem(t)
	p.checkObservable(t)
	p.checkExport(t)
	p.checkIdempotentSet(t)
	p.checkWithdrawals(t)
}

// propagation is the three gateways of TestPropagationFiltersAndWithdrawal
// and A's on-prem router.
type propagation struct {
	port    int32
	a, b, c *node
	onprem  *server.BgpServer
}

var (
	propGood, propOutside, propConflict = mp("192.168.1.0/24"), mp("172.20.0.0/16"), mp("10.1.128.0/17")
	propDefault, propTunnel             = mp("0.0.0.0/0"), mp("127.0.0.3/32")
)

// checkVPCs: multipath to the twins, origins, and no gateway learning its
// own region's CIDR.
func (p *propagation) checkVPCs(t *testing.T) {
	waitFor(t, 30*time.Second, "vpc-b via both twins at A", func() bool {
		r, ok := p.a.route(vpcB)
		return ok && slices.Equal(r.NextHops, []netip.Addr{addrB, addrC})
	})
	r, _ := p.a.route(vpcB)
	if r.OriginRegion != "r-b" || r.OriginNetwork != "vpc-b" || r.Direct {
		t.Fatalf("vpc-b at A: got %+v, want origin r-b/vpc-b, not direct", r)
	}
	waitFor(t, 10*time.Second, "vpc-a at B", func() bool {
		r, ok := p.b.route(vpcA)
		return ok && slices.Equal(r.NextHops, []netip.Addr{addrA}) && r.OriginNetwork == "vpc-a"
	})
	// Own VPC CIDRs are never "learned": B and C both originate vpc-b.
	if _, ok := p.b.route(vpcB); ok {
		t.Fatal("B learned its own region's vpc-b")
	}
}

// checkOnPrem: the on-prem router announces one good prefix, one outside
// accept, one conflicting with vpc-a, a default route and a tunnel
// address; only the good one is learned, direct at A, through A at B and C.
func (p *propagation) checkOnPrem(t *testing.T) {
	rawAnnounce(t, p.onprem, addrOnprem, false, propGood, propOutside, propConflict, propDefault, propTunnel)
	waitFor(t, 20*time.Second, "on-prem prefix at B and C via A", func() bool {
		rb, okb := p.b.route(propGood)
		rc, okc := p.c.route(propGood)
		return okb && okc && slices.Equal(rb.NextHops, []netip.Addr{addrA}) && rb.OriginNetwork == "idc-a" && rb.OriginRegion == "r-a" &&
			slices.Equal(rc.NextHops, []netip.Addr{addrA})
	})
	waitFor(t, 10*time.Second, "on-prem prefix at A", func() bool { _, ok := p.a.route(propGood); return ok })
	ra, ok := p.a.route(propGood)
	if !ok || !ra.Direct || !slices.Equal(ra.NextHops, []netip.Addr{addrOnprem}) || ra.OriginNetwork != "idc-a" {
		t.Fatalf("on-prem prefix at A: got %+v ok=%v, want direct via %s from idc-a", ra, ok, addrOnprem)
	}
	for _, pfx := range []netip.Prefix{propOutside, propConflict, propDefault, propTunnel} {
		for name, n := range map[string]*node{"A": p.a, "B": p.b} {
			if _, ok := n.route(pfx); ok {
				t.Errorf("%s learned %s, which must be rejected", name, pfx)
			}
		}
	}
}

// checkObservable: the refusals are in A's status, by reason, and in its
// metrics.
func (p *propagation) checkObservable(t *testing.T) {
	waitFor(t, 10*time.Second, "rejections in A's status", func() bool {
		st, err := p.a.s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := map[netip.Prefix]Reason{propOutside: ReasonNotAccepted, propConflict: ReasonConflict, propDefault: ReasonDefaultRoute, propTunnel: ReasonProtected}
		got := map[netip.Prefix]Reason{}
		for _, rj := range st.Rejected {
			if rj.Session == "idc-a" {
				got[rj.Prefix] = rj.Reason
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want) && st.RejectedTotal[ReasonConflict] == 1
	})
	st, _ := p.a.s.Status(context.Background())
	i := slices.IndexFunc(st.Sessions, func(ss SessionStatus) bool { return ss.Name == "idc-a" })
	if vbr := st.Sessions[i]; vbr.State != "established" || vbr.Received != 5 || vbr.Accepted != 1 || vbr.Rejected != 4 || vbr.Kind != "vbr" {
		t.Fatalf("idc-a session status: %+v, want established, 5 received, 1 accepted, 4 rejected", vbr)
	}
	got := gatherMetrics(t, statusCollector{NewStatusMetrics(), &st})
	for k, v := range map[string]float64{"opencen_route_conflicts_total": 1, "opencen_bgp_session_up/idc-a": 1,
		"opencen_bgp_prefixes_rejected/ipv4/idc-a": 4, "opencen_bgp_prefixes_rejected/ipv6/idc-a": 0, "opencen_bgp_routes_rejected_total/default-route": 1} {
		if got[k] != v {
			t.Errorf("metric %s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// checkExport: CEN routes reach the on-prem router, tagged; its own
// prefix is not sent back.
func (p *propagation) checkExport(t *testing.T) {
	waitFor(t, 10*time.Second, "CEN routes at the on-prem router", func() bool {
		tbl := rawTable(t, p.onprem)
		return len(tbl[vpcA]) > 0 && len(tbl[vpcB]) > 0
	})
	tbl := rawTable(t, p.onprem)
	for _, path := range tbl[propGood] {
		if path.PeerAddress == addrA {
			t.Fatalf("on-prem router got its own prefix %s back from the gateway", propGood)
		}
	}
	tagged := false
	for _, a := range tbl[vpcB][0].Attrs {
		if lc, ok := a.(*bgp.PathAttributeLargeCommunities); ok {
			for _, v := range lc.Values {
				if v.ASN == testASN && v.LocalData1 == tagNetwork && v.LocalData2 == nameID("vpc-b") {
					tagged = true
				}
			}
		}
	}
	if !tagged {
		t.Fatalf("vpc-b at the on-prem router lacks its network tag: %v", tbl[vpcB][0].Attrs)
	}
}

// checkIdempotentSet: Set with the same value resets no session.
func (p *propagation) checkIdempotentSet(t *testing.T) {
	prior, _ := p.a.s.Status(context.Background())
	if err := p.a.s.Set(context.Background(), desiredA(p.port)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	now, _ := p.a.s.Status(context.Background())
	for i, then := range prior.Sessions {
		if now.Sessions[i].State != "established" || now.Sessions[i].Uptime < then.Uptime {
			t.Fatalf("session %s disturbed by an identical Set: then %+v, now %+v", then.Name, then, now.Sessions[i])
		}
	}
}

// checkWithdrawals: B stops originating vpc-b, A keeps it via C only;
// then C goes away and A drops it; the router's withdrawal reaches B.
func (p *propagation) checkWithdrawals(t *testing.T) {
	db := desiredB(addrB, addrC, "gw-c")
	db.Originate = nil
	if err := p.b.s.Set(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "vpc-b via C only at A", func() bool {
		r, ok := p.a.route(vpcB)
		return ok && slices.Equal(r.NextHops, []netip.Addr{addrC})
	})
	p.c.s.Close(false)
	waitFor(t, 20*time.Second, "vpc-b withdrawn at A", func() bool {
		_, ok := p.a.route(vpcB)
		return !ok
	})
	rawAnnounce(t, p.onprem, addrOnprem, true, propGood)
	waitFor(t, 10*time.Second, "on-prem prefix withdrawn at B", func() bool {
		_, ok := p.b.route(propGood)
		return !ok
	})
}

// TestEntitlement: a gateway announcing another region's CIDR, or a prefix
// it has no entitlement for, is ignored, counted and reported as a hijack.
func TestEntitlementHijack(t *testing.T) {
	port := freePort(t)
	da := desiredA(port)
	da.VBRs = nil
	da.Gateways = da.Gateways[:1]
	a := startNode(t, port, da)
	db := desiredB(addrB, addrC, "gw-c")
	db.Gateways = db.Gateways[:1]
	// B's agent is compromised or misconfigured: it also claims a piece of
	// vpc-a and an unrelated prefix.
	db.Originate = append(db.Originate, Origin{Prefix: mp("10.1.5.0/24"), Region: "r-b", Network: "vpc-b"}, Origin{Prefix: mp("10.99.0.0/16"), Region: "r-b", Network: "vpc-b"})
	b := startNode(t, port, db)
	waitFor(t, 20*time.Second, "vpc-b at A", func() bool { _, ok := a.route(vpcB); return ok })
	waitFor(t, 10*time.Second, "two hijacks counted at A", func() bool {
		st, _ := a.s.Status(context.Background())
		return st.RejectedTotal[ReasonHijack] == 2 && len(st.Rejected) == 2
	})
	for _, p := range []netip.Prefix{mp("10.1.5.0/24"), mp("10.99.0.0/16")} {
		if _, ok := a.route(p); ok {
			t.Fatalf("A learned hijacked %s", p)
		}
	}
	st, _ := a.s.Status(context.Background())
	if st.Sessions[0].Accepted != 1 || st.Sessions[0].Received != 3 {
		t.Fatalf("gw-b session counts: %+v, want 3 received, 1 accepted", st.Sessions[0])
	}
	// A reload granting B the prefix (config now says vpc-b owns it) makes
	// A learn it without resetting the session.
	da.Gateways[0].Entitled = append(da.Gateways[0].Entitled, Entitlement{Network: "vpc-b2", Region: "r-b", Kind: KindVPC, Prefixes: []netip.Prefix{mp("10.99.0.0/16")}})
	if err := a.s.Set(context.Background(), da); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "10.99.0.0/16 learned after entitlement", func() bool {
		_, ok := a.route(mp("10.99.0.0/16"))
		return ok
	})
	// The zero Desired tears B down: A loses what B announced.
	if err := b.s.Set(context.Background(), Desired{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B's routes gone at A", func() bool {
		_, ok1 := a.route(vpcB)
		_, ok2 := a.route(mp("10.99.0.0/16"))
		return !ok1 && !ok2
	})
	if st, _ := b.s.Status(context.Background()); len(st.Sessions) != 0 {
		t.Fatalf("torn-down speaker still has sessions: %+v", st.Sessions)
	}
}

func TestLogsRedactPasswords(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	s, err := New(Options{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	d := desiredA(1179)
	d.VBRs[0].Password = "md5-topsecret"
	s.redact.set(&d)
	s.log.With("conf", "password=md5-topsecret").Info("peer md5-topsecret", "error", fmt.Errorf("dial with md5-topsecret failed"),
		slog.Group("g", "x", "md5-topsecret"))
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if strings.Contains(out, "topsecret") || !strings.Contains(out, "[redacted]") {
		t.Fatalf("password not redacted: %s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestValidate(t *testing.T) {
	good := desiredA(1179)
	if err := Validate(&good); err != nil {
		t.Fatalf("valid desired rejected: %v", err)
	}
	cases := map[string]func(d *Desired){
		"router id is not set":             func(d *Desired) { d.RouterID = netip.Addr{} },
		"instance asn is 0":                func(d *Desired) { d.InstanceASN = 0 },
		"host bits set, want 10.1.0.0/16":  func(d *Desired) { d.Originate[0].Prefix = mp("10.1.2.3/16") },
		"want a plain IPv4 or IPv6 prefix": func(d *Desired) { d.InstanceCIDRs[0].Prefix = mp("::ffff:10.1.0.0/112") },
		"router id fd00::1: must be IPv4":  func(d *Desired) { d.RouterID = netip.MustParseAddr("fd00::1") },
		"not of the neighbor":              func(d *Desired) { d.VBRs[0].LocalAddress = netip.MustParseAddr("fd00::1") },
		"at most one per family": func(d *Desired) {
			d.VBRs[0].LinkAddresses = []netip.Prefix{mp("172.30.0.1/30"), mp("172.30.9.1/30")}
		},
		"equals the instance asn":                   func(d *Desired) { d.VBRs[0].PeerASN = testASN },
		"already used by":                           func(d *Desired) { d.VBRs[0].Neighbor = addrB },
		"vpc entitlement \"vpc-b\" has no prefixes": func(d *Desired) { d.Gateways[0].Entitled[0].Prefixes = nil },
	}
	for want, mod := range cases {
		d := cloneDesired(desiredA(1179))
		mod(&d)
		err := Validate(&d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
	d := desiredA(1179)
	d.VBRs[0].Password = "s3cret-md5"
	d.VBRs[0].PeerASN = 0
	if err := Validate(&d); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error must exist and not reveal the password: %v", err)
	}
	if s := fmt.Sprintf("%v %+v %#v", d.VBRs[0], d.VBRs[0], d.VBRs[0]); strings.Contains(s, "s3cret") {
		t.Fatalf("formatted session reveals the password: %s", s)
	}
}
