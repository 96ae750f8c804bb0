package routing

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
)

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// lab creates namespaces and veths named ocrt-*, all removed at cleanup.
type lab struct {
	t      testing.TB
	suffix string
	n      int
}

func newLab(t testing.TB) *lab {
	testutil.RequireRoot(t)
	return &lab{t: t, suffix: testutil.Suffix(3)}
}

func (l *lab) netns(role string) string {
	return testutil.NewNetNS(l.t, "ocrt-"+role+"-")
}

// link joins two namespaces with a veth, addressing each end.
func (l *lab) link(nsA, addrA, nsB, addrB string) {
	l.n++
	a, b := fmt.Sprintf("ocrt%da%s", l.n, l.suffix), fmt.Sprintf("ocrt%db%s", l.n, l.suffix)
	run(l.t, "ip", "link", "add", a, "netns", nsA, "type", "veth", "peer", "name", b, "netns", nsB)
	for _, end := range [][3]string{{nsA, addrA, a}, {nsB, addrB, b}} {
		args := []string{"ip", "-n", end[0], "addr", "add", end[1], "dev", end[2]}
		if strings.Contains(end[1], ":") {
			args = append(args, "nodad") // usable at once, not after duplicate detection
		}
		run(l.t, args...)
	}
	run(l.t, "ip", "-n", nsA, "link", "set", a, "up")
	run(l.t, "ip", "-n", nsB, "link", "set", b, "up")
}

// helper is a speaker running in a namespace.
type helperProc struct {
	t   testing.TB
	dir string
	cmd *exec.Cmd
}

func (l *lab) speaker(ns string, cfg helperConfig) *helperProc {
	dir := l.t.TempDir()
	writeHelperConfig(l.t, dir, cfg)
	exe, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	h := &helperProc{t: l.t, dir: dir, cmd: cmd}
	l.t.Cleanup(func() {
		h.cmd.Process.Signal(syscall.SIGCONT)
		h.cmd.Process.Kill()
		h.cmd.Wait()
		if l.t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "log.txt")); err == nil {
				l.t.Logf("speaker log (%s):\n%s", ns, b)
			}
		}
	})
	return h
}

func (h *helperProc) state() helperState {
	st, _ := readHelperState(h.dir)
	return st
}

func (h *helperProc) waitFor(timeout time.Duration, what string, cond func(helperState) bool) helperState {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := h.state()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s; sessions %+v rejected %+v", timeout, what, st.Status.Sessions, st.Status.Rejected)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const birdConf = `router id 172.30.0.2;
protocol device {}
protocol bfd {}
protocol static onprem {
	ipv4;
	route 192.168.10.0/24 blackhole;
	route 192.168.11.0/24 blackhole;
	route 10.1.5.0/24 blackhole;
	route 172.20.0.0/16 blackhole;
	route 0.0.0.0/0 blackhole;
}
protocol bgp cen {
	local 172.30.0.2 as 65010;
	neighbor 172.30.0.1 as 64512;
	password "%s";
	bfd on;
	hold time 9;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export where source = RTS_STATIC; };
}
`

func startBIRD(t testing.TB, ns, config string) (sock string) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "bird.ctl")
	cmd := exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	out, _ := os.Create(filepath.Join(dir, "bird.out"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
	})
	return sock
}

func birdc(t testing.TB, sock string, args ...string) string {
	t.Helper()
	out, err := exec.Command("birdc", append([]string{"-s", sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("birdc %v: %v: %s", args, err, out)
	}
	return string(out)
}

// TestBIRDVBR runs a real BIRD 2 as the on-prem router (TCP-MD5), a gateway
// holding its VBR, and a gateway of another region, each in its own
// namespace: on-prem prefixes reach the remote gateway; CEN routes reach
// BIRD's table; conflicts, prefixes outside accept, a default route and a
// gateway's hijack are refused and reported; max_prefixes trips.
func TestBIRDVBR(t *testing.T) {
	bl := newBIRDLab(t)
	bl.checkLearned(t)
	bl.checkBIRDTable(t)
	bl.checkMaxPrefixes(t)
}

const birdPassword = "md5-s3cret"

// birdLab is gw-a, holding the VBR of the BIRD router at 172.30.0.2, and
// gw-b of another region, which also claims a piece of vpc-a.
type birdLab struct {
	a, b *helperProc
	dA   Desired
	sock string // BIRD's control socket
}

func newBIRDLab(t *testing.T) *birdLab {
	l := newLab(t)
	nsA, nsB, nsOp := l.netns("gwa"), l.netns("gwb"), l.netns("op")
	l.link(nsA, "100.64.0.1/24", nsB, "100.64.0.2/24")
	l.link(nsA, "172.30.0.1/30", nsOp, "172.30.0.2/30")
	sock := startBIRD(t, nsOp, fmt.Sprintf(birdConf, birdPassword))

	tunA, tunB := ma("100.64.0.1"), ma("100.64.0.2")
	inst := []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}
	prot := []netip.Prefix{mp("100.64.0.1/32"), mp("100.64.0.2/32"), mp("172.30.0.1/32")}
	accept := []netip.Prefix{mp("192.168.0.0/16"), mp("10.0.0.0/8")}
	dA := Desired{RouterID: tunA, LocalAddress: tunA, Region: "r-a", InstanceASN: testASN,
		Gateways:  []GatewayPeer{{Name: "gw-b", Region: "r-b", Address: tunB, Entitled: entB()}},
		Originate: []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}},
		VBRs: []VBRSession{{Network: "idc-a", Region: "r-a", Neighbor: ma("172.30.0.2"), LocalAddress: ma("172.30.0.1"),
			PeerASN: 65010, Accept: accept, Password: birdPassword, BFD: true}},
		InstanceCIDRs: inst, ProtectedPrefixes: prot}
	entAll := []Entitlement{{Network: "vpc-a", Region: "r-a", Kind: KindVPC, Prefixes: []netip.Prefix{vpcA}},
		{Network: "idc-a", Region: "r-a", Kind: KindVBR, Prefixes: accept}}
	// gw-b also claims a piece of vpc-a: a hijack gw-a must ignore.
	dB := Desired{RouterID: tunB, LocalAddress: tunB, Region: "r-b", InstanceASN: testASN,
		Gateways:      []GatewayPeer{{Name: "gw-a", Region: "r-a", Address: tunA, Entitled: entAll}},
		Originate:     []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}, {Prefix: mp("10.1.7.0/24"), Region: "r-b", Network: "vpc-b"}},
		InstanceCIDRs: inst, ProtectedPrefixes: prot}
	return &birdLab{
		a: l.speaker(nsA, helperConfig{Desired: dA, Port: 179}), b: l.speaker(nsB, helperConfig{Desired: dB, Port: 179}),
		dA: dA, sock: sock,
	}
}

const birdGood = "192.168.10.0/24"

// checkLearned: what each gateway learns and refuses, and why.
func (bl *birdLab) checkLearned(t *testing.T) {
	stB := bl.b.waitFor(60*time.Second, "on-prem prefix at the remote gateway", func(s helperState) bool {
		r, ok := s.routes()[birdGood]
		return ok && slices.Equal(r.NextHops, []netip.Addr{ma("100.64.0.1")}) && r.OriginNetwork == "idc-a" && r.OriginRegion == "r-a"
	})
	if _, ok := stB.routes()["192.168.11.0/24"]; !ok {
		t.Fatal("second on-prem prefix missing at gw-b")
	}
	// Rejections are recorded as updates arrive; learned routes follow in
	// the next coalesced batch: wait for both.
	stA := bl.a.waitFor(20*time.Second, "rejections and the accepted route at gw-a", func(s helperState) bool {
		_, learned := s.routes()[birdGood]
		return len(s.Status.Rejected) == 4 && learned
	})
	got := map[string]Reason{}
	for _, r := range stA.Status.Rejected {
		got[r.Session+" "+r.Prefix.String()] = r.Reason
	}
	want := map[string]Reason{"idc-a 10.1.5.0/24": ReasonConflict, "idc-a 172.20.0.0/16": ReasonNotAccepted,
		"idc-a 0.0.0.0/0": ReasonDefaultRoute, "gw-b 10.1.7.0/24": ReasonHijack}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rejections at gw-a: got %v, want %v", got, want)
	}
	ra := stA.routes()
	for _, p := range []string{"10.1.5.0/24", "172.20.0.0/16", "0.0.0.0/0", "10.1.7.0/24"} {
		if _, ok := ra[p]; ok {
			t.Errorf("gw-a learned %s", p)
		}
		if _, ok := stB.routes()[p]; ok && p != "10.1.7.0/24" {
			t.Errorf("gw-b learned %s", p)
		}
	}
	if r := ra[birdGood]; !r.Direct || !slices.Equal(r.NextHops, []netip.Addr{ma("172.30.0.2")}) {
		t.Errorf("gw-a route to %s: %+v, want direct via the on-prem router", birdGood, r)
	}
	stA = bl.a.waitFor(10*time.Second, "BFD up on the VBR session", func(s helperState) bool {
		return s.session("idc-a").BFD == "up"
	})
	vbr := stA.session("idc-a")
	if vbr.State != "established" || vbr.Received != 5 || vbr.Accepted != 2 || vbr.Rejected != 3 {
		t.Errorf("idc-a session: %+v, want established 5/2/3", vbr)
	}
}

// checkBIRDTable: CEN routes reach BIRD's table, from both regions,
// tagged; neither the hijack nor BIRD's own prefix does.
func (bl *birdLab) checkBIRDTable(t *testing.T) {
	deadline := time.Now().Add(20 * time.Second)
	var routes string
	for {
		routes = birdc(t, bl.sock, "show", "route", "all", "protocol", "cen")
		if strings.Contains(routes, "10.1.0.0/16") && strings.Contains(routes, "10.2.0.0/16") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CEN routes missing from BIRD:\n%s", routes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(routes, fmt.Sprintf("(%d, %d, %d)", testASN, tagNetwork, nameID("vpc-b"))) {
		t.Errorf("vpc-b in BIRD lacks its origin tag:\n%s", routes)
	}
	if strings.Contains(routes, "10.1.7.0/24") {
		t.Errorf("the hijacked prefix reached BIRD:\n%s", routes)
	}
	if strings.Contains(routes, birdGood) {
		t.Errorf("BIRD got its own prefix back:\n%s", routes)
	}
	if b, _ := os.ReadFile(filepath.Join(bl.a.dir, "log.txt")); strings.Contains(string(b), birdPassword) {
		t.Fatalf("the TCP-MD5 password appears in gw-a's log")
	}
}

// checkMaxPrefixes: BIRD sends 5 prefixes; allow 3. The reload replaces
// only the VBR session; the gateway session is not touched.
func (bl *birdLab) checkMaxPrefixes(t *testing.T) {
	gwPrior := bl.a.state().session("gw-b")
	bl.dA.VBRs[0].MaxPrefixes = 3
	writeHelperConfig(t, bl.a.dir, helperConfig{Desired: bl.dA, Port: 179})
	bl.a.cmd.Process.Signal(syscall.SIGHUP)
	bl.a.waitFor(30*time.Second, "max-prefix-exceeded", func(s helperState) bool {
		return s.session("idc-a").State == "max-prefix-exceeded"
	})
	bl.b.waitFor(20*time.Second, "on-prem routes withdrawn at gw-b", func(s helperState) bool {
		_, ok := s.routes()[birdGood]
		return !ok
	})
	if gw := bl.a.state().session("gw-b"); gw.State != "established" || gw.Uptime < gwPrior.Uptime {
		t.Errorf("gw-b session disturbed by a reload that changed only idc-a: then %+v, now %+v", gwPrior, gw)
	}
	log, _ := os.ReadFile(filepath.Join(bl.a.dir, "log.txt"))
	if !strings.Contains(string(log), "max_prefixes exceeded") {
		t.Errorf("no clear log line for the max_prefixes trip:\n%s", log)
	}
}

// TestBFDFailover: gw-a reaches vpc-b over twin gateways b1 and b2
// (multipath). A hung b1 (SIGSTOP: no FIN, no BFD) must be dropped from the
// next hops in under one second, by BFD, well inside the 9s hold time.
//
// The agent learns of the session going down from OnSessions (it re-splits
// the region's bandwidth and decides which routes to hold): that must be as
// quick, driven by GoBGP's peer-state event, not by polling.
func TestBFDFailover(t *testing.T) {
	times, downs := measureFailover(t, 3)
	if times[len(times)-1] >= 900*time.Millisecond {
		t.Fatalf("failover took %v, want under 1s with margin (900ms)", times[len(times)-1])
	}
	if downs[len(downs)-1] >= 900*time.Millisecond {
		t.Fatalf("OnSessions reported gw-b1 down after %v, want under 1s with margin (900ms)", downs[len(downs)-1])
	}
}

// measureFailover builds gw-a and twins gw-b1, gw-b2 in namespaces and
// times, over the given number of trials, how long after b1 hangs
// (SIGSTOP) gw-a delivers vpc-b with b2 as the only next hop, and how long
// until its OnSessions reports gw-b1 down. Both sorted.
func measureFailover(t testing.TB, trials int) (routes, downs []time.Duration) {
	a, b1 := newFailoverLab(t)
	for i := range trials {
		route, down := failoverTrial(t, a, b1)
		routes = append(routes, route)
		downs = append(downs, down)
		t.Logf("trial %d: failover in %v, session down reported after %v", i+1, route, down)
	}
	slices.Sort(routes)
	slices.Sort(downs)
	t.Logf("failover over %d trials: median %v, max %v (BFD 100ms x 3); session down reported: median %v, max %v",
		trials, routes[trials/2], routes[trials-1], downs[trials/2], downs[trials-1])
	return routes, downs
}

var tunA, tunB1, tunB2 = ma("100.64.0.1"), ma("100.64.0.2"), ma("100.64.0.3")

// newFailoverLab starts gw-a (tunA) and the twins gw-b1 (tunB1) and gw-b2
// (tunB2), each in a namespace, and returns gw-a's and gw-b1's speakers.
func newFailoverLab(t testing.TB) (a, b1 *helperProc) {
	l := newLab(t)
	nsA, nsB1, nsB2 := l.netns("gwa"), l.netns("gwb1"), l.netns("gwb2")
	for ns, addr := range map[string]netip.Addr{nsA: tunA, nsB1: tunB1, nsB2: tunB2} {
		run(t, "ip", "-n", ns, "addr", "add", addr.String()+"/32", "dev", "lo")
	}
	l.link(nsA, "10.255.1.1/30", nsB1, "10.255.1.2/30")
	l.link(nsA, "10.255.2.1/30", nsB2, "10.255.2.2/30")
	// Tunnel addresses are reached over the veths, sourced from the tunnel
	// address so BGP and BFD both come from it.
	run(t, "ip", "-n", nsA, "route", "add", "100.64.0.2/32", "via", "10.255.1.2", "src", "100.64.0.1")
	run(t, "ip", "-n", nsA, "route", "add", "100.64.0.3/32", "via", "10.255.2.2", "src", "100.64.0.1")
	run(t, "ip", "-n", nsB1, "route", "add", "100.64.0.1/32", "via", "10.255.1.1", "src", "100.64.0.2")
	run(t, "ip", "-n", nsB2, "route", "add", "100.64.0.1/32", "via", "10.255.2.1", "src", "100.64.0.3")

	inst := []NamedPrefix{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}, {Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}
	prot := []netip.Prefix{mp("100.64.0.0/29")}
	dA := Desired{RouterID: tunA, LocalAddress: tunA, Region: "r-a", InstanceASN: testASN,
		Gateways: []GatewayPeer{{Name: "gw-b1", Region: "r-b", Address: tunB1, Entitled: entB()},
			{Name: "gw-b2", Region: "r-b", Address: tunB2, Entitled: entB()}},
		Originate: []Origin{{Prefix: vpcA, Region: "r-a", Network: "vpc-a"}}, InstanceCIDRs: inst, ProtectedPrefixes: prot}
	dB := func(self netip.Addr) Desired {
		return Desired{RouterID: self, LocalAddress: self, Region: "r-b", InstanceASN: testASN,
			Gateways:  []GatewayPeer{{Name: "gw-a", Region: "r-a", Address: tunA, Entitled: entA()}},
			Originate: []Origin{{Prefix: vpcB, Region: "r-b", Network: "vpc-b"}}, InstanceCIDRs: inst, ProtectedPrefixes: prot}
	}
	a = l.speaker(nsA, helperConfig{Desired: dA, Port: 179})
	b1 = l.speaker(nsB1, helperConfig{Desired: dB(tunB1), Port: 179})
	l.speaker(nsB2, helperConfig{Desired: dB(tunB2), Port: 179})
	return a, b1
}

// failoverTrial hangs b1 once both twins carry vpc-b, and times how long
// gw-a takes to move vpc-b to b2 alone and to report b1's session down;
// then it resumes b1.
func failoverTrial(t testing.TB, a, b1 *helperProc) (route, down time.Duration) {
	a.waitFor(60*time.Second, "multipath over both twins with BFD up", func(s helperState) bool {
		r, ok := s.routes()[vpcB.String()]
		return ok && slices.Equal(r.NextHops, []netip.Addr{tunB1, tunB2}) &&
			s.session("gw-b1").BFD == "up" && s.session("gw-b2").BFD == "up"
	})
	a.waitFor(10*time.Second, "OnSessions reporting gw-b1 up", func(s helperState) bool {
		return len(s.Sessions) > 0 && !slices.Contains(s.Sessions[len(s.Sessions)-1].Down, "gw-b1")
	})
	prior := a.state()
	n, ns := len(prior.Batches), len(prior.Sessions)
	stop := time.Now()
	b1.cmd.Process.Signal(syscall.SIGSTOP)
	defer b1.cmd.Process.Signal(syscall.SIGCONT)
	st := a.waitFor(15*time.Second, "b1 dropped from the next hops", func(s helperState) bool {
		r, ok := s.routes()[vpcB.String()]
		return ok && slices.Equal(r.NextHops, []netip.Addr{tunB2})
	})
	i := slices.IndexFunc(st.Batches[n:], func(bt helperBatch) bool {
		return slices.ContainsFunc(bt.Upsert, func(r LearnedRoute) bool {
			return r.Prefix == vpcB && slices.Equal(r.NextHops, []netip.Addr{tunB2})
		})
	})
	if i < 0 {
		t.Fatal("no batch moved vpc-b to b2 alone")
	}
	downIn := func(hs helperSessions) bool { return slices.Contains(hs.Down, "gw-b1") }
	st = a.waitFor(5*time.Second, "OnSessions reporting gw-b1 down", func(s helperState) bool {
		return slices.ContainsFunc(s.Sessions[ns:], downIn)
	})
	j := slices.IndexFunc(st.Sessions[ns:], downIn)
	return st.Batches[n+i].At.Sub(stop), st.Sessions[ns+j].At.Sub(stop)
}
