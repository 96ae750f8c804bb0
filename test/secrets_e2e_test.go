package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/internal/testutil"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// oneVBRConfig is a two-gateway instance whose gw-1 holds a VBR session
// (router 172.30.0.2, AS 65010); the session's last settings follow.
const oneVBRConfig = `instance:
  name: %s
gateways:
  - name: gw-1
    region: cn-beijing
    endpoint: 192.0.2.11:51820
    public_key: %s
    private_key_file: keys/gw-1.key
    tunnel_address: 100.64.0.1
  - name: gw-2
    region: us-west-1
    endpoint: 192.0.2.12:51820
    public_key: %s
    private_key_file: keys/gw-2.key
    tunnel_address: 100.64.0.2
networks:
  - {name: vpc-1, type: vpc, region: cn-beijing, cidrs: [10.1.0.0/16]}
  - {name: vpc-2, type: vpc, region: us-west-1, cidrs: [10.2.0.0/16]}
  - name: idc-1
    type: vbr
    region: cn-beijing
    gateway: gw-1
    bgp:
      neighbor: 172.30.0.2
      peer_asn: 65010
`

// secretsConfig holds a TCP-MD5 password for the VBR session: everything
// valid, so only a file's mode can make cend refuse it.
const secretsConfig = oneVBRConfig + "      password_file: keys/idc-1.md5\n"

// TestSecretFileModeRefused runs the real cend with a secret file of mode
// 0644 (SPEC section 5, "Secrets stay secret"): the private key, then a
// VBR's TCP-MD5 password. Each time cend must exit 1 at once, name the file
// and the fix (chmod 600), never print the secret or part of it, and leave
// nothing behind: no state dir, no control socket, no WireGuard device or
// helper, no link in the namespace it runs in (as root, a namespace of the
// test's own; cend refuses while it needs no root yet, so without root it
// runs here and the namespace check is skipped, saying so).
func TestSecretFileModeRefused(t *testing.T) {
	cend := binary(t, "cend")
	for _, tc := range []secretCase{
		{"private key 0644", 0o644, 0o600, "gw-1.key", "private key file"},
		{"password 0644", 0o600, 0o644, "idc-1.md5", "password file of idc-1"},
	} {
		t.Run(tc.name, func(t *testing.T) { secretFileRefused(t, cend, tc) })
	}
}

// secretCase is one case of TestSecretFileModeRefused: the modes of the
// key and password files, the file cend must refuse and how it names it.
type secretCase struct {
	name          string
	keyMode       os.FileMode
	pwMode        os.FileMode
	file, subject string
}

// secretFileRefused runs cend on a config whose secret files have tc's
// modes and checks its refusal.
func secretFileRefused(t *testing.T, cend string, tc secretCase) {
	dir := t.TempDir()
	suffix := testutil.Suffix(4)
	instance := "cen-sec-" + suffix
	key1, key2 := genKey(t), genKey(t)
	password := "md5-" + suffix + "-Secret"
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeMode(t, filepath.Join(dir, "keys", "gw-1.key"), key1.String()+"\n", tc.keyMode)
	writeMode(t, filepath.Join(dir, "keys", "gw-2.key"), key2.String()+"\n", 0o600)
	writeMode(t, filepath.Join(dir, "keys", "idc-1.md5"), password+"\n", tc.pwMode)
	cfg := filepath.Join(dir, "cen.yaml")
	writeMode(t, cfg, fmt.Sprintf(secretsConfig, instance, key1.PublicKey(), key2.PublicKey()), 0o644)
	// The file is valid as such: the mode alone is refused.
	if r := runCenctl(t, "validate", cfg); r.code != 0 {
		t.Fatalf("cenctl validate: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	dev := dataplane.DeviceName(instance + "/gw-1")
	uapi := filepath.Join("/var/run/wireguard", dev+".sock")
	if os.Geteuid() == 0 {
		// Registered ahead of the namespace's cleanup, so it runs
		// last: a helper killed there leaves its socket file.
		t.Cleanup(func() { os.Remove(uapi) })
	}

	stateDir, socket := filepath.Join(dir, "state"), filepath.Join(dir, "cend.sock")
	argv := []string{cend, "--config", cfg, "--gateway", "gw-1", "--state-dir", stateDir,
		"--socket", socket, "--metrics-addr", "127.0.0.1:0"}
	ns := ""
	if os.Geteuid() == 0 {
		ns = testNetns(t)
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	} else {
		t.Log("not root: cend runs in this namespace, and the check that it created no link is skipped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	text := out.String()
	t.Logf("cend exited after %v: %v\n%s", took.Round(time.Millisecond), err, text)

	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("cend still ran after %v: it must refuse the file at once", took)
	case !errors.As(err, &exit):
		t.Fatalf("cend: want exit status 1, got %v", err)
	case exit.ExitCode() != 1:
		t.Errorf("cend: exit status %d, want 1 (failure)", exit.ExitCode())
	}
	if took > 5*time.Second {
		t.Errorf("cend took %v to refuse, want it at once", took)
	}
	path := filepath.Join(dir, "keys", tc.file)
	for _, want := range []string{tc.subject + " " + path, "mode 0644", "chmod 600 " + path} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for name, secret := range map[string]string{"private key": key1.String(), "password": password} {
		if leak := secretPiece(text, secret); leak != "" {
			t.Errorf("output shows part of the %s: %q", name, leak)
		}
	}

	checkNothingCreated(t, stateDir, socket, uapi, dev, ns)
}

// checkNothingCreated: cend left no state dir, control socket, UAPI
// socket or device, and (when ns is not empty) no link besides lo and no
// process in namespace ns.
func checkNothingCreated(t *testing.T, stateDir, socket, uapi, dev, ns string) {
	t.Helper()
	for _, p := range []string{stateDir, socket} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (err %v): cend must refuse while it has created nothing", p, err)
		}
	}
	if _, err := os.Stat(uapi); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("wireguard uapi socket of %s exists (err %v)", dev, err)
	}
	if out, err := exec.Command("ip", "-o", "link", "show", "dev", dev).CombinedOutput(); err == nil {
		t.Errorf("device %s exists in the root namespace: %s", dev, out)
	}
	if ns == "" {
		return
	}
	links, err := exec.Command("ip", "-n", ns, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s link: %v: %s", ns, err, links)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		if f := strings.Fields(line); len(f) < 2 || f[1] != "lo:" {
			t.Errorf("namespace %s has a link besides lo: %s", ns, line)
		}
	}
	if pids := netnsPIDs(t, ns); len(pids) > 0 {
		t.Errorf("processes left in namespace %s: %v", ns, pids)
	}
}

func genKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeMode writes a file with exactly mode, whatever the umask.
func writeMode(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// secretPiece returns a piece of secret (8 characters or more) that text
// contains, or "": a leak of part of a key is a leak too.
func secretPiece(text, secret string) string {
	const n = 8
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+n]) {
			return secret[i : i+n]
		}
	}
	return ""
}

// testNetns creates a network namespace for one test and removes it when
// the test ends, after stopping anything still running in it.
func testNetns(t *testing.T) string {
	t.Helper()
	ns := testutil.NewNetNS(t, "ocsec-")
	// Registered after the namespace's own cleanup, so it runs first; only
	// if cend went further than it should have (a failed test): its
	// WireGuard helper would outlive the namespace's name.
	t.Cleanup(func() {
		for range 30 {
			pids := netnsPIDs(t, ns)
			if len(pids) == 0 {
				break
			}
			exec.Command("kill", append([]string{"-KILL"}, pids...)...).Run()
			time.Sleep(100 * time.Millisecond)
		}
	})
	return ns
}

func netnsPIDs(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Errorf("ip netns pids %s: %v", ns, err)
		return nil
	}
	return strings.Fields(string(out))
}
