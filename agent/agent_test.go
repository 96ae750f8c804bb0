package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
)

// testInstance writes a two-gateway config and gateway a's key into a
// temporary folder and returns the config path and the private key.
func testInstance(t *testing.T, keyMode os.FileMode) (string, wgtypes.Key) {
	t.Helper()
	dir := t.TempDir()
	ka, _ := wgtypes.GeneratePrivateKey()
	kb, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(filepath.Join(dir, "a.key"), []byte(ka.String()+"\n"), keyMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "a.key"), keyMode); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "idc.md5"), []byte("s3cret-md5-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `instance: {name: t}
gateways:
  - {name: a, region: cn-beijing, endpoint: "192.0.2.1:51820", public_key: "` + ka.PublicKey().String() + `", private_key_file: a.key, tunnel_address: 100.64.0.1}
  - {name: b, region: us-west-1, endpoint: "192.0.2.2:51820", public_key: "` + kb.PublicKey().String() + `", private_key_file: b.key, tunnel_address: 100.64.0.2}
networks:
  - {name: vpc-a, type: vpc, region: cn-beijing, cidrs: [10.1.0.0/16, "fd00:1::/48"]}
  - {name: vpc-b, type: vpc, region: us-west-1, cidrs: [10.2.0.0/16]}
  - {name: idc, type: vbr, region: cn-beijing, bgp: {neighbor: 172.30.0.2, peer_asn: 65010, accept: [192.168.0.0/16], password_file: idc.md5}}
bandwidth_packages:
  - {name: p, areas: [mainland-china, north-america], bandwidth: 100Mbps}
interconnections:
  - {regions: [cn-beijing, us-west-1], package: p, bandwidth: 50Mbps}
`
	path := filepath.Join(dir, "cen.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, ka
}

func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestSecretFilesMustBePrivate(t *testing.T) {
	path, key := testInstance(t, 0o644)
	var logs bytes.Buffer
	_, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs)})
	if !errors.Is(err, ErrInsecureSecret) {
		t.Fatalf("a 0644 key file was accepted: %v", err)
	}
	keyPath := filepath.Join(filepath.Dir(path), "a.key")
	for _, want := range []string{keyPath, "0644", "chmod 600 " + keyPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), key.String()) {
		t.Fatal("the error holds the private key")
	}
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if a.sec.PrivateKey != key || a.sec.Passwords["idc"] != "s3cret-md5-password" {
		t.Error("secrets not read")
	}
}

func TestStartupRefusals(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	dir := filepath.Dir(path)
	var logs bytes.Buffer
	cases := []struct {
		name string
		prep func()
		gw   string
		want string
	}{
		{"unknown gateway", func() {}, "zz", `gateway "zz" is not in`},
		{"key does not match the public key", func() {
			other, _ := wgtypes.GeneratePrivateKey()
			os.WriteFile(filepath.Join(dir, "a.key"), []byte(other.String()), 0o600)
		}, "a", "does not match gateway a's public_key"},
		{"key file holds garbage", func() {
			os.WriteFile(filepath.Join(dir, "a.key"), []byte("not-a-key-at-all"), 0o600)
		}, "a", "does not hold a WireGuard key"},
		{"password file world-readable", func() {
			os.Chmod(filepath.Join(dir, "idc.md5"), 0o604)
		}, "a", "password file of idc"},
		{"missing key file", func() { os.Remove(filepath.Join(dir, "a.key")) }, "a", "does not exist"},
	}
	for _, tc := range cases {
		tc.prep()
		_, err := New(Options{ConfigPath: path, Gateway: tc.gw, Logger: testLogger(&logs)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "not-a-key-at-all") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: a secret reached the error: %v", tc.name, err)
		}
	}
}

func TestReloadRejectsABadFileAndKeepsTheOld(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	var logs bytes.Buffer
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	bad := strings.Replace(string(good), "bandwidth: 50Mbps", "bandwidth: 500Mbps", 1)
	bad = strings.Replace(bad, "region: us-west-1, endpoint", "region: us-west-9, endpoint", 1)
	os.WriteFile(path, []byte(bad), 0o644)
	res := a.Reload(context.Background())
	// The unknown region, the network left without a gateway, and the
	// oversubscribed package.
	if res.Applied || res.Generation != 1 || len(res.Errors) != 3 {
		t.Fatalf("bad reload = %+v, want rejected at generation 1 with 3 errors", res)
	}
	if !strings.Contains(res.Errors[0], "cen.yaml:") {
		t.Errorf("errors are not located: %v", res.Errors)
	}
	if a.snapshotConfig().Pair("cn-beijing", "us-west-1").Bandwidth != 50_000_000 {
		t.Error("the running config changed")
	}

	ok := strings.Replace(string(good), "bandwidth: 50Mbps", "bandwidth: 80Mbps", 1)
	os.WriteFile(path, []byte(ok), 0o644)
	res = a.Reload(context.Background())
	if !res.Applied || res.Generation != 2 {
		t.Fatalf("good reload = %+v", res)
	}
	if len(res.Changes) != 1 || res.Changes[0] != "egress to us-west-1: 50Mbps -> 80Mbps" {
		t.Errorf("changes = %q", res.Changes)
	}
	if got := egressOf(a, "us-west-1"); got != 80_000_000 {
		t.Errorf("egress after reload = %d", got)
	}
	// Removing this gateway from the file is refused: --cleanup retires it.
	gone := strings.Replace(ok, "  - {name: a, region", "  - {name: c, region", 1)
	os.WriteFile(path, []byte(gone), 0o644)
	if res := a.Reload(context.Background()); res.Applied || !strings.Contains(res.Errors[0], "--cleanup") {
		t.Errorf("reload without this gateway = %+v", res)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), a.sec.PrivateKey.String()) {
		t.Fatal("a secret reached the log")
	}
}

func egressOf(a *Agent, region string) config.Bandwidth {
	for _, e := range a.snapshotDesired().Egress {
		if e.Region == region {
			return e.Rate
		}
	}
	return 0
}

// wantOfA is gateway a's desired state, with one route learned over the
// tunnel, one from its VBR and one whose next hop is no peer's.
func wantOfA(t *testing.T) (*Agent, wgtypes.Key, wants) {
	t.Helper()
	path, key := testInstance(t, 0o600)
	var logs bytes.Buffer
	a, err := New(Options{ConfigPath: path, Gateway: "a", Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	routes := desired.Routes{
		netip.MustParsePrefix("10.2.0.0/16"):    {Prefix: netip.MustParsePrefix("10.2.0.0/16"), OriginRegion: "us-west-1", OriginNetwork: "vpc-b", NextHops: []netip.Addr{netip.MustParseAddr("100.64.0.2")}},
		netip.MustParsePrefix("192.168.1.0/24"): {Prefix: netip.MustParsePrefix("192.168.1.0/24"), OriginRegion: "cn-beijing", OriginNetwork: "idc", NextHops: []netip.Addr{netip.MustParseAddr("172.30.0.2")}, Direct: true},
		// A next hop that is no peer's tunnel is never handed to WireGuard.
		netip.MustParsePrefix("10.9.0.0/16"): {Prefix: netip.MustParsePrefix("10.9.0.0/16"), OriginRegion: "us-west-1", NextHops: []netip.Addr{netip.MustParseAddr("100.64.9.9")}},
	}

	a.learn.routes = routes
	w, err := a.want()
	if err != nil {
		t.Fatal(err)
	}
	return a, key, w
}

func TestDesiredTunnel(t *testing.T) {
	_, key, w := wantOfA(t)
	dp := w.tunnel
	// The IPv6 tunnel address is the IPv4 one inside fd63:656e::/96.
	if dp.PrivateKey != key || dp.ListenPort != 51820 || fmt.Sprint(dp.Addresses) != "[100.64.0.1/32 fd63:656e::6440:1/128]" {
		t.Errorf("dataplane device = %v", dp)
	}
	if len(dp.Peers) != 1 || dp.Peers[0].Name != "b" || fmt.Sprint(dp.Peers[0].TunnelAddresses) != "[100.64.0.2/32 fd63:656e::6440:2/128]" || dp.Peers[0].Endpoint.String() != "192.0.2.2:51820" {
		t.Errorf("dataplane peers = %+v", dp.Peers)
	}
	// b is its region's only gateway: the home of all of b's VPC, in one
	// piece.
	if fmt.Sprint(dp.Peers[0].AllowedIPs) != "[10.2.0.0/16]" {
		t.Errorf("b's allowed ips = %v, want its VPC whole", dp.Peers[0].AllowedIPs)
	}
	if fmt.Sprint(dp.Routes) != "[10.2.0.0/16]" {
		t.Errorf("tunnel routes = %v", dp.Routes)
	}
	if len(dp.DirectRoutes) != 1 || dp.DirectRoutes[0].Via[0].String() != "172.30.0.2" {
		t.Errorf("direct routes = %+v", dp.DirectRoutes)
	}
	if len(dp.Handoffs) != 0 {
		t.Errorf("a region's only gateway hands off %+v", dp.Handoffs)
	}
	if s := dp.String(); strings.Contains(s, key.String()) || strings.Contains(s, base64.StdEncoding.EncodeToString(key[:])) {
		t.Fatal("the dataplane desired state prints its key")
	}
}

func TestDesiredRoutingAndShaping(t *testing.T) {
	_, _, w := wantOfA(t)
	rd := w.routing
	if rd.LocalAddress.String() != "100.64.0.1" || rd.InstanceASN != 64512 || rd.Region != "cn-beijing" {
		t.Errorf("routing = %+v", rd)
	}
	if fmt.Sprint(rd.Originate) != "[{10.1.0.0/16 cn-beijing vpc-a} {fd00:1::/48 cn-beijing vpc-a}]" {
		t.Errorf("originate = %+v, want both of vpc-a's CIDRs", rd.Originate)
	}
	if len(rd.VBRs) != 1 || rd.VBRs[0].Password != "s3cret-md5-password" || rd.VBRs[0].Accept[0].String() != "192.168.0.0/16" {
		t.Errorf("vbrs = %v", rd.VBRs)
	}
	if len(rd.Gateways) != 1 || len(rd.Gateways[0].Entitled) != 1 || rd.Gateways[0].Entitled[0].Kind != routing.KindVPC {
		t.Errorf("gateway entitlements = %+v", rd.Gateways)
	}
	if len(rd.InstanceCIDRs) != 3 || fmt.Sprint(rd.ProtectedPrefixes) != "[100.64.0.1/32 fd63:656e::6440:1/128 192.0.2.1/32 100.64.0.2/32 fd63:656e::6440:2/128 192.0.2.2/32]" {
		t.Errorf("instance cidrs %v, protected %v", rd.InstanceCIDRs, rd.ProtectedPrefixes)
	}
	if fmt.Sprint(rd.RouterAddresses) != "[172.30.0.2/32]" {
		t.Errorf("router addresses %v, want the VBR's neighbor", rd.RouterAddresses)
	}

	sd := w.shaping
	if sd.Regions["us-west-1"] != 50_000_000 || len(sd.Regions) != 1 {
		t.Errorf("shaper regions = %v", sd.Regions)
	}
	// The VBR's accept range is one entry: only Beijing may announce into
	// it, so its learned prefixes need none of their own.
	for p, want := range map[string]string{"10.1.0.0/16": "cn-beijing", "fd00:1::/48": "cn-beijing", "10.2.0.0/16": "us-west-1", "192.168.0.0/16": "cn-beijing", "192.168.1.0/24": ""} {
		if got := sd.Prefixes[netip.MustParsePrefix(p)]; got != want {
			t.Errorf("shaper prefix %s -> %q, want %q", p, got, want)
		}
	}

	if fmt.Sprint(sd.ControlAddrs) != "[100.64.0.1 fd63:656e::6440:1 100.64.0.2 fd63:656e::6440:2]" {
		t.Errorf("control addrs = %v", sd.ControlAddrs)
	}
}

// From b: a's VBR accept range is one AllowedIPs entry of a's, and a's VPC
// whole another.
func TestDesiredTunnelOfThePeer(t *testing.T) {
	a, _, _ := wantOfA(t)
	cfg := a.cfg
	db, err := cfg.Desired("b", config.DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fromB := desired.View{Routes: desired.Routes{netip.MustParsePrefix("10.1.0.0/16"): {Prefix: netip.MustParsePrefix("10.1.0.0/16"), NextHops: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}}}
	if peers := desired.TunnelOf(cfg, db, a.sec, fromB).Peers; len(peers) != 1 || fmt.Sprint(peers[0].AllowedIPs) != "[10.1.0.0/16 192.168.0.0/16]" {
		t.Errorf("b's peers = %+v, want a with 10.1.0.0/16 and its VBR's range 192.168.0.0/16", peers)
	}
}

func TestRoutesSurviveARestartFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	in := desired.Routes{netip.MustParsePrefix("10.2.0.0/16"): {Prefix: netip.MustParsePrefix("10.2.0.0/16"), OriginRegion: "us-west-1", OriginNetwork: "vpc-b", NextHops: []netip.Addr{netip.MustParseAddr("100.64.0.2")}}}
	if err := saveRoutes(path, in); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	out := loadRoutes(path, testLogger(&logs))
	if len(out) != 1 || out[netip.MustParsePrefix("10.2.0.0/16")].OriginNetwork != "vpc-b" {
		t.Errorf("loaded %v", out)
	}
	os.WriteFile(path, []byte("{garbage"), 0o600)
	if out := loadRoutes(path, testLogger(&logs)); len(out) != 0 || !strings.Contains(logs.String(), "damaged") {
		t.Errorf("damaged file: %v, log %s", out, logs.String())
	}
}

func TestHeldRoutes(t *testing.T) {
	gwA := netip.MustParseAddr("100.64.0.11")
	gwB := netip.MustParseAddr("100.64.0.12")
	r := func(p string, nh ...netip.Addr) config.LearnedRoute {
		return config.LearnedRoute{Prefix: netip.MustParsePrefix(p), NextHops: nh}
	}
	if holdable(r("10.1.0.0/16", gwA), map[netip.Addr]bool{gwA: true}) {
		t.Error("a route withdrawn by a peer whose session is up was held")
	}
	if !holdable(r("10.1.0.0/16", gwA), map[netip.Addr]bool{gwB: true}) {
		t.Error("a route whose only gateway's session is down was not held")
	}
	direct := r("192.168.1.0/24", netip.MustParseAddr("172.30.0.2"))
	direct.Direct = true
	if holdable(direct, nil) {
		t.Error("a route withdrawn by a VBR router was held")
	}
	now := time.Now()
	l := &learnedState{held: map[netip.Prefix]heldRoute{
		netip.MustParsePrefix("10.1.0.0/16"):    {route: r("10.1.0.0/16", gwA), until: now.Add(time.Minute)},
		netip.MustParsePrefix("10.9.0.0/16"):    {route: r("10.9.0.0/16", gwA), until: now.Add(-time.Second)},
		netip.MustParsePrefix("192.168.1.0/24"): {route: r("192.168.1.0/24", gwA), until: now.Add(time.Minute)},
	}}
	routes := desired.Routes{netip.MustParsePrefix("192.168.0.0/16"): r("192.168.0.0/16", gwB)}
	l.addHeld(routes, now)
	if _, ok := routes[netip.MustParsePrefix("10.1.0.0/16")]; !ok {
		t.Error("a held route within its time is not installed")
	}
	if _, ok := routes[netip.MustParsePrefix("10.9.0.0/16")]; ok || len(l.held) != 2 {
		t.Error("an expired held route is still there")
	}
	if _, ok := routes[netip.MustParsePrefix("192.168.1.0/24")]; ok {
		t.Error("a held route shadows a learned less-specific one")
	}
}

// TestOnlyNewPrefixesArePaced: a batch that only adds prefixes may wait
// for the paced reconcile; a withdrawal, a changed route, a held route
// coming back or the end of a restart's sync must not.
func TestOnlyNewPrefixesArePaced(t *testing.T) {
	p := netip.MustParsePrefix
	r := func(s string) routing.LearnedRoute { return routing.LearnedRoute{Prefix: p(s)} }
	dr := func(s string) config.LearnedRoute { return config.LearnedRoute{Prefix: p(s)} }
	l := &learnedState{
		routes: desired.Routes{p("10.2.0.0/16"): dr("10.2.0.0/16")},
		held:   map[netip.Prefix]heldRoute{p("10.3.0.0/16"): {route: dr("10.3.0.0/16")}},
		stale:  desired.Routes{p("10.4.0.0/16"): dr("10.4.0.0/16")},
	}
	for name, c := range map[string]struct {
		b    routing.RouteBatch
		want bool
	}{
		"new prefixes":           {routing.RouteBatch{Upsert: []routing.LearnedRoute{r("10.128.0.0/28"), r("10.128.0.16/28")}}, true},
		"a changed route":        {routing.RouteBatch{Upsert: []routing.LearnedRoute{r("10.128.0.0/28"), r("10.2.0.0/16")}}, false},
		"a withdrawal":           {routing.RouteBatch{Upsert: []routing.LearnedRoute{r("10.128.0.0/28")}, Withdraw: []netip.Prefix{p("10.2.0.0/16")}}, false},
		"a held route back":      {routing.RouteBatch{Upsert: []routing.LearnedRoute{r("10.3.0.0/16")}}, false},
		"a kept route confirmed": {routing.RouteBatch{Upsert: []routing.LearnedRoute{r("10.4.0.0/16")}}, false},
		"the full table":         {routing.RouteBatch{Full: true, Upsert: []routing.LearnedRoute{r("10.128.0.0/28")}}, false},
		"synced after a restart": {routing.RouteBatch{Synced: true}, false},
	} {
		if got := l.onlyNewPrefixes(c.b); got != c.want {
			t.Errorf("%s: paced %v, want %v", name, got, c.want)
		}
	}
}

// TestPaceEndsWhenRoutesStopComing: a reconcile that only adds routes
// waits out the pace while routes keep coming, but not once they stopped.
func TestPaceEndsWhenRoutesStopComing(t *testing.T) {
	a := &Agent{kick: make(chan struct{}, 1), grow: make(chan struct{}, 1)}
	ctx := context.Background()
	const quiet = 50 * time.Millisecond

	// The last routes came long ago: no wait, however far the pace.
	a.lastGrow.Store(time.Now().Add(-time.Second).UnixNano())
	start := time.Now()
	if !a.paceGrowth(ctx, time.Now().Add(5*time.Second), quiet) {
		t.Fatal("paceGrowth reported a cancelled context")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %v after the routes stopped coming", d)
	}

	// Routes keep coming: the pace holds.
	a.growReconcile()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(quiet / 5):
				a.growReconcile()
			}
		}
	}()
	start = time.Now()
	a.paceGrowth(ctx, time.Now().Add(300*time.Millisecond), quiet)
	close(stop)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("waited only %v of a 300 ms pace while routes kept coming", d)
	}

	// A kick (a withdrawal, a session change) never waits.
	a.lastGrow.Store(time.Now().UnixNano())
	a.kickReconcile()
	start = time.Now()
	a.paceGrowth(ctx, time.Now().Add(5*time.Second), time.Hour)
	if d := time.Since(start); d > time.Second {
		t.Errorf("a kick waited %v", d)
	}
}
