package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
)

const labConfig = "../examples/lab.yaml"

func loadLab(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPlanLab(t *testing.T) {
	l, err := plan(loadLab(t), "ocl-", "/run/opencen-lab")
	if err != nil {
		t.Fatal(err)
	}
	wantNS := []string{"ocl-underlay", "ocl-gw-beijing-1", "ocl-gw-beijing-2", "ocl-gw-shanghai-1",
		"ocl-gw-siliconvalley-1", "ocl-gw-frankfurt-1", "ocl-lan-cn-beijing", "ocl-vpc-beijing",
		"ocl-lan-cn-shanghai", "ocl-vpc-shanghai", "ocl-lan-us-west-1", "ocl-vpc-siliconvalley",
		"ocl-lan-eu-central-1", "ocl-vpc-frankfurt", "ocl-idc-beijing-router", "ocl-idc-beijing",
		"ocl-idc-shanghai-router", "ocl-idc-shanghai"}
	if !slices.Equal(l.Namespaces, wantNS) {
		t.Errorf("namespaces\n got %v\nwant %v", l.Namespaces, wantNS)
	}
	gw := func(name string) Gateway {
		g, ok := l.Gateway(name)
		if !ok {
			t.Fatalf("no gateway %s", name)
		}
		return g
	}
	if g := gw("gw-beijing-1"); g.UnderlayAddr.String() != "10.255.0.11/24" || fmt.Sprint(g.LANAddrs) != "[10.1.0.1/16 fd00:1::1/48]" || g.Area != "mainland-china" {
		t.Errorf("gw-beijing-1: %+v", g)
	}
	if g := gw("gw-beijing-2"); fmt.Sprint(g.LANAddrs) != "[10.1.0.2/16 fd00:1::2/48]" || g.Socket != "/run/opencen-lab/gw-beijing-2/cend.sock" {
		t.Errorf("gw-beijing-2: %+v", g)
	}
	h, ok := l.Host("vpc-beijing")
	if !ok || h.Address.String() != "10.1.0.10/16" || h.Address6.String() != "fd00:1::a/48" ||
		fmt.Sprint(h.NextHops) != "[10.1.0.1 10.1.0.2]" || fmt.Sprint(h.NextHops6) != "[fd00:1::1 fd00:1::2]" {
		t.Errorf("vpc-beijing: %+v", h)
	}
	// One address of each family homed at the twin (the first piece dealt
	// to gw-beijing-2).
	if fmt.Sprint(h.Extra) != "[10.1.16.10/16 fd00:1:0:1000::a/48]" {
		t.Errorf("vpc-beijing's addresses homed at the twin: %v", h.Extra)
	}
	wantRoutes := []string{"10.2.0.0/16", "fd00:2::/48", "10.3.0.0/16", "fd00:3::/48", "10.4.0.0/16", "fd00:4::/48",
		"192.168.0.0/16", "fd00:192:168::/48", "172.20.0.0/16", "fd00:172:20::/48"}
	var got []string
	for _, p := range h.Routes {
		got = append(got, p.String())
	}
	if !slices.Equal(got, wantRoutes) {
		t.Errorf("vpc-beijing routes %v, want %v", got, wantRoutes)
	}
	checkPlannedRouters(t, l)
	onprem, ok := l.Host("idc-beijing")
	if !ok || onprem.Kind != KindOnPrem || onprem.Address.String() != "192.168.1.10/24" || onprem.Address6.String() != "fd00:192:168:1::a/64" ||
		onprem.NextHops[0].String() != "192.168.1.1" || onprem.NextHops6[0].String() != "fd00:192:168:1::1" || len(onprem.Routes) != 10 {
		t.Errorf("on-premises host: %+v", onprem)
	}
	l.Gateways[4].PID = 4242 // gw-frankfurt-1 with an agent
	d := l.Describe()
	for _, want := range []string{"ip netns exec ocl-vpc-beijing ping -c 3 10.2.0.10", "ip netns exec ocl-vpc-beijing ping -6 -c 3 fd00:2::a",
		"cenctl --socket /run/opencen-lab/gw-frankfurt-1/cend.sock", "birdc -s /run/opencen-lab/idc-beijing-router/bird.ctl",
		"eBGP over IPv6 fd6c:6162::ac1f:2 -> fd6c:6162::ac1f:1 (gw-shanghai-1)"} {
		if !strings.Contains(d, want) {
			t.Errorf("Describe lacks %q:\n%s", want, d)
		}
	}
}

// checkPlannedRouters: Beijing's router peers over IPv4, Shanghai's over
// IPv6, each with a link address of the other family.
func checkPlannedRouters(t *testing.T, l *Lab) {
	t.Helper()
	if len(l.Routers) != 2 {
		t.Fatalf("routers: %+v", l.Routers)
	}
	r := l.Routers[0]
	if r.Address.String() != "172.30.0.2/30" || r.GatewayAddress.String() != "172.30.0.1/30" ||
		r.OtherAddress.String() != "fd6c:6162::ac1e:2/126" || r.OtherGatewayAddress.String() != "fd6c:6162::ac1e:1/126" || r.Gateway != "gw-beijing-1" ||
		r.ASN != 65010 || r.PeerASN != 64512 || !r.BFD || r.LAN.String() != "192.168.1.1/24" || r.LAN6.String() != "fd00:192:168:1::1/64" ||
		r.Extra.String() != "192.168.100.1/24" || r.Extra6.String() != "fd00:192:168:64::1/64" || r.GatewayIf != "ocl-vbr0" {
		t.Errorf("router: %+v", r)
	}
	// Shanghai's router peers over IPv6; the link's IPv4 side is the
	// neighbor's last 32 bits.
	r6 := l.Routers[1]
	if r6.Address.String() != "fd6c:6162::ac1f:2/126" || r6.GatewayAddress.String() != "fd6c:6162::ac1f:1/126" ||
		r6.OtherAddress.String() != "172.31.0.2/30" || r6.OtherGatewayAddress.String() != "172.31.0.1/30" || r6.Gateway != "gw-shanghai-1" ||
		fmt.Sprint(r6.Announce) != "[172.20.1.0/24 172.20.100.0/24 fd00:172:20:1::/64 fd00:172:20:64::/64]" {
		t.Errorf("IPv6 router: %+v", r6)
	}
	if got := fmt.Sprint(r6.birdConfArgs(r6.Announce[:1])); got != "[172.31.0.2 65020 fd6c:6162::ac1f:1 64512 off 172.31.0.2 fd6c:6162::ac1f:2 172.20.1.0/24]" {
		t.Errorf("IPv6 router's bird-conf.sh arguments: %s", got)
	}
}

func TestPlanRefusesBadLabs(t *testing.T) {
	cfg := loadLab(t)
	if _, err := plan(cfg, "lab-", "/run/x"); err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Errorf("foreign prefix: %v", err)
	}
	small := *cfg
	small.Networks = slices.Clone(cfg.Networks)
	small.Networks[0].CIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/29")}
	if _, err := plan(&small, "ocl-", "/run/x"); err == nil || !strings.Contains(err.Error(), "vpc-beijing") || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny VPC: %v", err)
	}
	clash := *cfg
	clash.Networks = slices.Clone(cfg.Networks)
	clash.Networks[1].CIDRs = []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")}
	if _, err := plan(&clash, "ocl-", "/run/x"); err == nil || !strings.Contains(err.Error(), "overlaps the underlay") {
		t.Errorf("VPC over the underlay: %v", err)
	}
	dup := *cfg
	dup.Networks = slices.Clone(cfg.Networks)
	dup.Networks[0].Name = "gw-beijing-1"
	if _, err := plan(&dup, "ocl-", "/run/x"); err == nil || !strings.Contains(err.Error(), "already used by gateway gw-beijing-1") {
		t.Errorf("namespace clash: %v", err)
	}
}

func TestAddressHelpers(t *testing.T) {
	for _, c := range []struct{ in, router, gw string }{
		{"172.30.0.2", "172.30.0.2/30", "172.30.0.1/30"},
		{"172.30.0.1", "172.30.0.1/30", "172.30.0.2/30"},
		{"172.30.0.4", "172.30.0.4/31", "172.30.0.5/31"},
		{"172.30.0.7", "172.30.0.7/31", "172.30.0.6/31"},
		{"fd00::2", "fd00::2/126", "fd00::1/126"},
	} {
		r, g, err := linkPair(netip.MustParseAddr(c.in))
		if err != nil || r.String() != c.router || g.String() != c.gw {
			t.Errorf("linkPair(%s) = %s %s %v, want %s %s", c.in, r, g, err, c.router, c.gw)
		}
	}
	p, err := commonPrefix([]netip.Addr{netip.MustParseAddr("10.255.0.11"), netip.MustParseAddr("10.255.1.41")})
	if err != nil || p.String() != "10.255.0.0/23" {
		t.Errorf("commonPrefix = %s %v", p, err)
	}
	if _, err := commonPrefix([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("mixed families accepted")
	}
	for _, c := range []struct {
		accept    string
		v6        bool
		lan, extr string
	}{
		{"10.77.0.0/20", false, "10.77.1.1/24", "10.77.15.1/24"},
		{"10.77.0.0/26", false, "10.77.0.1/26", "invalid Prefix"},
		{"fd00:77::/48", true, "fd00:77:0:1::1/64", "fd00:77:0:64::1/64"},
		{"fd00:77::/62", true, "fd00:77:0:1::1/64", "fd00:77:0:3::1/64"},
		{"fd00:77::/120", true, "fd00:77::1/120", "invalid Prefix"},
		{"fd00:77::/48", false, "invalid Prefix", "invalid Prefix"}, // no IPv4 entry: no IPv4 LAN
	} {
		lan, extra, err := onPremPrefixes([]netip.Prefix{netip.MustParsePrefix(c.accept)}, false, c.v6)
		if err != nil || lan.String() != c.lan || extra.String() != c.extr {
			t.Errorf("onPremPrefixes(%s, v6 %v) = %s %s %v, want %s %s", c.accept, c.v6, lan, extra, err, c.lan, c.extr)
		}
	}
	if lan, _, err := onPremPrefixes(nil, true, true); err != nil || lan.String() != "fd00:192:168:1::1/64" {
		t.Errorf("onPremPrefixes(any, IPv6) = %s %v", lan, err)
	}
	if _, _, err := onPremPrefixes([]netip.Prefix{netip.MustParsePrefix("fd00:77::/125")}, false, true); err == nil {
		t.Error("an IPv6 accept entry too small for a LAN accepted")
	}
	for in, want := range map[string]string{"172.30.0.2": "fd6c:6162::ac1e:2", "fd6c:6162::172.31.0.2": "172.31.0.2", "fd00:1::10.0.0.1": "10.0.0.1"} {
		if got, err := otherFamily(netip.MustParseAddr(in)); err != nil || got.String() != want {
			t.Errorf("otherFamily(%s) = %s %v, want %s", in, got, err, want)
		}
	}
	if _, err := otherFamily(netip.MustParseAddr("fd00::2")); err == nil || !strings.Contains(err.Error(), "not a private IPv4 address") {
		t.Errorf("an IPv6 neighbor whose last 32 bits are no private IPv4 address: %v", err)
	}
}

func TestRewriteConfigKeepsTheRest(t *testing.T) {
	src, err := os.ReadFile(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := plan(loadLab(t), "ocl-", dir)
	if err != nil {
		t.Fatal(err)
	}
	l.SourceConfig = labConfig
	cfg, err := writeKeysAndConfig(l, src)
	if err != nil {
		t.Fatal(err)
	}
	orig := loadLab(t)
	if cfg.Instance.Name != orig.Instance.Name || cfg.Instance.ASN != orig.Instance.ASN || len(cfg.Networks) != len(orig.Networks) || len(cfg.Interconnections) != len(orig.Interconnections) {
		t.Errorf("lab config differs beyond keys")
	}
	copyText, _ := os.ReadFile(l.ConfigFile)
	if !strings.Contains(string(copyText), "four regions across three") {
		t.Error("comments lost in the lab config")
	}
	for i, g := range cfg.Gateways {
		if g.PublicKey == orig.Gateways[i].PublicKey {
			t.Errorf("%s kept the example's public key", g.Name)
		}
		if g.PrivateKeyFile != filepath.Join(dir, "keys", g.Name+".key") {
			t.Errorf("%s key file %s", g.Name, g.PrivateKeyFile)
		}
		fi, err := os.Stat(g.PrivateKeyFile)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s key file: %v %v", g.Name, fi, err)
		}
		b, _ := os.ReadFile(g.PrivateKeyFile)
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil || config.Key(k.PublicKey()) != g.PublicKey {
			t.Errorf("%s: private key does not match the public key in the config (%v)", g.Name, err)
		}
		if g.Endpoint != orig.Gateways[i].Endpoint || g.TunnelAddress != orig.Gateways[i].TunnelAddress {
			t.Errorf("%s changed beyond keys", g.Name)
		}
	}
}

// The BIRD config the shared script renders parses, for a session over
// IPv4 and one over IPv6, each with both channels and the other family's
// next hop set to the router's own link address.
func TestBirdConfScript(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird not installed (Debian: bird2)")
	}
	for _, c := range []struct {
		args, want []string
	}{
		{[]string{"172.30.0.2", "65010", "172.30.0.1", "64512", "on", "172.30.0.2", "fd6c:6162::ac1e:2", "192.168.1.0/24", "192.168.100.0/24", "fd00:192:168:1::/64"},
			[]string{"protocol bgp cen {", "neighbor 172.30.0.1 as 64512;", "local as 65010;", "route 192.168.100.0/24 blackhole;", "bfd on;", "protocol bfd",
				"protocol static onprem6 {\n\tipv6;\n\troute fd00:192:168:1::/64 blackhole;\n}",
				"\tipv6 {\n\t\tnext hop address fd6c:6162::ac1e:2;", "\tipv4 {\n\t\timport limit"}},
		{[]string{"172.31.0.2", "65020", "fd6c:6162::ac1f:1", "64512", "off", "172.31.0.2", "fd6c:6162::ac1f:2", "172.20.1.0/24", "fd00:172:20:1::/64"},
			[]string{"router id 172.31.0.2;", "neighbor fd6c:6162::ac1f:1 as 64512;", "\tipv4 {\n\t\tnext hop address 172.31.0.2;",
				"\tipv6 {\n\t\timport limit", "export where proto = \"onprem6\";", "protocol kernel kernel6 {"}},
	} {
		out, err := exec.Command("sh", append([]string{"../scripts/lab/bird-conf.sh"}, c.args...)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range c.want {
			if !strings.Contains(string(out), want) {
				t.Errorf("bird config of %v lacks %q:\n%s", c.args, want, out)
			}
		}
		if strings.Contains(string(out), "extended next hop") {
			t.Errorf("bird config of %v asks for extended next hop", c.args)
		}
		f := filepath.Join(t.TempDir(), "bird.conf")
		if err := os.WriteFile(f, out, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bird", "-p", "-c", f).CombinedOutput(); err != nil {
			t.Errorf("bird -p: %v: %s", err, out)
		}
	}
	if err := exec.Command("sh", "../scripts/lab/bird-conf.sh", "1.2.3.4", "1", "2.3.4.5", "2", "maybe", "1.2.3.4", "-", "10.0.0.0/8").Run(); err == nil {
		t.Error("bad BFD word accepted")
	}
}

// Down with nothing up succeeds and changes nothing.
func TestDownNothingUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := Down(context.Background(), Options{StateDir: dir, Prefix: "ocl-tnone-"}); err != nil {
		t.Fatal(err)
	}
	if err := Down(context.Background(), Options{StateDir: "/", Prefix: "ocl-tnone-"}); err == nil {
		t.Error("Down accepted / as its state dir")
	}
}

// VMPlanStateDir is where the VM lab keeps the lab's files on each VM.
const vmPlanStateDir = "/var/lib/opencen-lab"

// The VM lab reads its addressing from scripts/lab/lab-plan.json, the plan
// of the shipped lab config: it must match what the namespace lab builds.
// OCL_UPDATE_PLAN=1 rewrites it.
func TestVMPlanUpToDate(t *testing.T) {
	l, err := Plan(Options{Config: labConfig, StateDir: vmPlanStateDir})
	if err != nil {
		t.Fatal(err)
	}
	l.SourceConfig = "examples/lab.yaml"
	want, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	const file = "../scripts/lab/lab-plan.json"
	if os.Getenv("OCL_UPDATE_PLAN") == "1" {
		if err := os.WriteFile(file, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s is stale: run OCL_UPDATE_PLAN=1 go test -run TestVMPlanUpToDate ./lab/", file)
	}
}
