package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
	"github.com/opencen/opencen/lab"
)

// inFreshDebian is the shell script the fresh Debian test runs in its own
// mount and PID namespaces: the chroot's file systems, then the
// newcomer's commands. A new bpffs instance keeps the demo's pins apart
// from the host's; when the script ends, the kernel drops every mount it
// made and kills every process it left, whatever happened. The root is a
// mount of its own, as a container's is: ip netns exec makes / a slave.
const inFreshDebian = `
root=$1
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t bpf bpf "$root/sys/fs/bpf"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
mount --bind /usr/local/go "$root/usr/local/go"
mount -o remount,bind,ro "$root/usr/local/go"
# The newcomer, at a login shell with Go on PATH as go.dev's install says.
chroot --userspec=newcomer:newcomer "$root" env -i HOME=/home/newcomer USER=newcomer LOGNAME=newcomer \
	PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/go/bin sh -euc '
cd ~/opencen
sudo apt-get install -y -qq make >/dev/null
sudo make demo'
`

// TestSudoMakeDemoOnAFreshDebian: the README's first command, typed as a
// newcomer would on a fresh Debian 12. debootstrap makes a minimal
// bookworm; the only things added are Go at /usr/local/go (the host's,
// read-only) and a user who may sudo, as on an installed desktop. In a
// copy of this checkout the newcomer owns, the README's `sudo apt-get
// install make` then `sudo make demo` must find Go under sudo's
// secure_path, install the packages the demo lacks saying so in one line,
// build, and run the whole demo to a report without a failure.
func TestSudoMakeDemoOnAFreshDebian(t *testing.T) {
	testutil.RequireRoot(t)
	debootstrap := tool(t, "debootstrap", "debootstrap")
	unshare := tool(t, "unshare", "util-linux")
	git := tool(t, "git", "git")
	if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
		t.Fatalf("the README installs Go at /usr/local/go: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root := t.TempDir()
	sh(ctx, t, "debootstrap", debootstrap, "--variant=minbase", "bookworm", root)
	// The host's resolver, and no service started by a package's install:
	// a chroot shares the host's network namespace, where a bird must
	// not listen.
	writeFile(t, filepath.Join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", 0o755)
	copyFile(t, "/etc/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
	sh(ctx, t, "apt-get", "chroot", root, "sh", "-euc",
		"export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq sudo >/dev/null && useradd -m -s /bin/sh newcomer")
	writeFile(t, filepath.Join(root, "etc/sudoers.d/newcomer"), "newcomer ALL=(ALL) NOPASSWD: ALL\n", 0o440)
	siteCAs(t, root)
	// The installer names the host in /etc/hosts; sudo looks it up.
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\t"+host+"\n", 0o644)
	if err := os.MkdirAll(filepath.Join(root, "usr/local/go"), 0o755); err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(root, "home/newcomer/opencen")
	copyCheckout(ctx, t, git, checkout)
	sh(ctx, t, "chown", "chroot", root, "chown", "-R", "newcomer:newcomer", "/home/newcomer/opencen")

	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
		"sh", "-euc", inFreshDebian, "sh", root)
	cmd.Env = []string{"PATH=" + sudoPath}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sudo make demo on a fresh Debian 12: %v\n%s", err, tail(string(out), 6000))
	}
	installs := regexp.MustCompile(`(?m)^make deps: installing (.*) \(for .*\)$`).FindAllSubmatch(out, -1)
	if len(installs) != 1 || string(installs[0][1]) != "iproute2 iputils-ping iperf3 bird2 ca-certificates" {
		t.Errorf("make deps said %q; want one line installing iproute2 iputils-ping iperf3 bird2 ca-certificates\n%s", installs, tail(string(out), 6000))
	}
	b, err := os.ReadFile(filepath.Join(checkout, "opencen-demo.json"))
	if err != nil {
		t.Fatalf("the demo left no report: %v\n%s", err, tail(string(out), 6000))
	}
	var rep lab.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("opencen-demo.json: %v", err)
	}
	if len(rep.Failures) > 0 || len(rep.Pairs) == 0 || len(rep.Reachability) == 0 || rep.Failover == nil || rep.Default == nil {
		t.Errorf("the demo's report: %d failures %q, %d pairs, %d reachability rows, failover %v, default pair %v",
			len(rep.Failures), rep.Failures, len(rep.Pairs), len(rep.Reachability), rep.Failover != nil, rep.Default != nil)
	}
}

// sh runs a preparation step of the fresh Debian test, failing it with
// the step's output.
func sh(ctx context.Context, t *testing.T, what, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=" + sudoPath, "LC_ALL=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, tail(string(out), 4000))
	}
}

// copyCheckout copies this checkout's files as a developer has them (its
// tracked and untracked files, none that .gitignore names: no bin/) to
// dst.
func copyCheckout(ctx context.Context, t *testing.T, git, dst string) {
	t.Helper()
	ls := exec.CommandContext(ctx, git, "-c", "safe.directory=*", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = ".."
	list, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var present bytes.Buffer
	for _, f := range strings.Split(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		if _, err := os.Lstat(filepath.Join("..", f)); err == nil { // a deleted file stays listed until committed
			present.WriteString(f + "\x00")
		}
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", `tar -C .. --null -T - -cf - | tar -C "$1" -xf -`, "sh", dst)
	cmd.Stdin = &present
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy the checkout: %v\n%s", err, out)
	}
}

// siteCAs gives the fresh Debian the certificate authorities this host
// adds to Debian's (/usr/local/share/ca-certificates: a site whose HTTPS
// goes through its own proxy), as the machine's setup would. They join
// the system's bundle when make deps installs ca-certificates.
func siteCAs(t *testing.T, root string) {
	t.Helper()
	const dir = "usr/local/share/ca-certificates"
	cas, err := filepath.Glob(filepath.Join("/", dir, "*.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ca := range cas {
		copyFile(t, ca, filepath.Join(root, dir, filepath.Base(ca)))
	}
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b), 0o644)
}
