package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencen/opencen/internal/capx"
	"github.com/opencen/opencen/shaping"
)

// fakeHost is a host of known facts.
type fakeHost struct {
	capSet   capx.Set
	release  string
	sysctls  map[string]string
	synced   bool
	bpf      bool
	nft      error
	sup      hostSupport
	wgModule bool
}

func (f fakeHost) caps() (capx.Set, error)            { return f.capSet, nil }
func (f fakeHost) kernelRelease() (string, error)     { return f.release, nil }
func (f fakeHost) clockSynced() (bool, error)         { return f.synced, nil }
func (f fakeHost) bpffs(string) (bool, error)         { return f.bpf, nil }
func (f fakeHost) nftables() error                    { return f.nft }
func (f fakeHost) support(*Agent, string) hostSupport { return f.sup }
func (f fakeHost) kernelWG() bool                     { return f.wgModule }
func (f fakeHost) sysctl(name string) (string, error) {
	if v, ok := f.sysctls[name]; ok {
		return v, nil
	}
	return "", os.ErrNotExist
}

// debian12Host is a stock Debian 12 gateway as root: 6.1, no TCX, the
// WireGuard module, forwarding off, clock synchronised.
func debian12Host() fakeHost {
	return fakeHost{
		capSet: ^capx.Set(0), release: "6.1.0-18-amd64", synced: true, bpf: true, wgModule: true,
		sysctls: map[string]string{"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"},
		sup:     hostSupport{tcx: noTCX, userspace: kernelWG},
	}
}

func byName(results []CheckResult) map[string]CheckResult {
	m := map[string]CheckResult{}
	for _, r := range results {
		m[r.Name] = r
	}
	return m
}

func TestCheckDebian12(t *testing.T) {
	path, _ := testInstance(t, 0o600)
	results := check(Options{ConfigPath: path, Gateway: "a"}, debian12Host())
	if Failed(results) {
		t.Errorf("a good host failed:\n%s", lines(results))
	}
	got := byName(results)
	for name, want := range map[string]string{
		"privileges": "holds CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_NET_BIND_SERVICE",
		"kernel":     "Linux 6.1.0-18-amd64: no TCX (it needs 6.6), so the kernel shaper attaches as a tc filter",
		"config":     "is valid: instance t, 2 gateway(s), 3 network(s)",
		"gateway":    "a in region cn-beijing, 1 peer(s), 1 VBR session(s)",
		"secrets":    "is private and matches public_key",
		"wireguard":  "kernel module",
		"shaping":    "--shaper auto shapes with tc (tcx: no TCX (it needs Linux 6.6 or later); userspace: the host has the WireGuard kernel module",
		"bpffs":      "/sys/fs/bpf is a bpf filesystem",
		"nftables":   "nf_tables answers",
		"forwarding": "net.ipv4.ip_forward=0, net.ipv6.conf.all.forwarding=0: cend turns forwarding on when it starts",
		"clock":      "synchronised",
	} {
		if r, ok := got[name]; !ok || !strings.Contains(r.Detail, want) {
			t.Errorf("%s: %+v; want a detail with %q", name, r, want)
		}
	}
	if r := got["forwarding"]; r.Status != CheckWarn || !strings.Contains(r.Fix, "/etc/sysctl.d/") {
		t.Errorf("forwarding off: %+v", r)
	}
	// One line per check, each starting with its verdict.
	for _, l := range strings.Split(lines(results), "\n") {
		if !strings.HasPrefix(l, "ok  ") && !strings.HasPrefix(l, "warn") {
			t.Errorf("line %q", l)
		}
	}
}

func TestCheckFailures(t *testing.T) {
	path, key := testInstance(t, 0o644)
	noCaps := debian12Host()
	noCaps.capSet = capx.Set(1 << uint(capx.NetAdmin))
	noCaps.synced = false
	results := check(Options{ConfigPath: path, Gateway: "a"}, noCaps)
	if !Failed(results) {
		t.Fatal("nothing failed")
	}
	got := byName(results)
	keyPath := filepath.Join(filepath.Dir(path), "a.key")
	for name, want := range map[string]struct {
		status      CheckStatus
		detail, fix string
	}{
		"privileges": {CheckFail, "lacks CAP_SYS_ADMIN, CAP_NET_BIND_SERVICE", "cend@ systemd unit"},
		"shaping":    {CheckWarn, "not probed", "as root"},
		"secrets":    {CheckFail, "private key file " + keyPath + " has mode 0644", "mode 0600"},
		"clock":      {CheckWarn, "not synchronised", "systemd-timesyncd"},
	} {
		r := got[name]
		if r.Status != want.status || !strings.Contains(r.Detail, want.detail) || !strings.Contains(r.Fix, want.fix) {
			t.Errorf("%s: %+v; want %s, %q, fix %q", name, r, want.status, want.detail, want.fix)
		}
	}
	if strings.Contains(lines(results), key.String()) {
		t.Fatal("the preflight printed the private key")
	}

	none := debian12Host()
	none.sup.tc = errors.New("no clsact qdisc")
	none.nft = errors.New("protocol not supported")
	got = byName(check(Options{ConfigPath: path, Gateway: "nope"}, none))
	for name, want := range map[string]string{
		"gateway":  "nope",
		"shaping":  "no shaper can enforce on this host",
		"nftables": "nf_tables does not answer: protocol not supported",
	} {
		if r := got[name]; r.Status != CheckFail || !strings.Contains(r.Detail, want) {
			t.Errorf("%s: %+v; want fail with %q", name, r, want)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("instance: {name: t}\ngateways: []\nfoo: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := byName(check(Options{ConfigPath: bad, Gateway: "a", Shaper: shaping.PathUserspace}, debian12Host()))["config"]; r.Status != CheckFail ||
		!strings.Contains(r.Detail, "bad.yaml:3:1: unknown key") || !strings.Contains(r.Fix, "cenctl validate "+bad) {
		t.Errorf("bad config: %+v", r)
	}
}

func TestKernelVersion(t *testing.T) {
	for rel, want := range map[string][2]int{"6.1.0-18-amd64": {6, 1}, "6.18.44-fc-v1147": {6, 18}, "5.10.0": {5, 10}, "6.6": {6, 6}, "6.12+deb13": {6, 12}} {
		ma, mi, err := kernelVersion(rel)
		if err != nil || ma != want[0] || mi != want[1] {
			t.Errorf("kernelVersion(%q) = %d.%d, %v", rel, ma, mi, err)
		}
	}
	if _, _, err := kernelVersion("linux"); err == nil {
		t.Error("kernelVersion(linux) accepted it")
	}
}

func lines(results []CheckResult) string {
	s := make([]string, len(results))
	for i, r := range results {
		s[i] = r.String()
	}
	return strings.Join(s, "\n")
}
