package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencen/opencen/internal/testutil"
)

// TestSecretFileOpenedSafely: a key or password file is refused when it is
// a symbolic link (even to a private file), a FIFO (without waiting for a
// writer), or owned by another user; the errors name the file and the fix,
// never the content.
func TestSecretFileOpenedSafely(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.key")
	const secret = "s3cret-in-a-file"
	if err := os.WriteFile(real, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readSecretFile(real, "password file"); err != nil || got != secret {
		t.Fatalf("a private regular file: %q, %v", got, err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{link: "is a symbolic link", fifo: "is not a regular file"} {
		_, err := readSecretFile(path, "password file")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming it and saying %q", path, err, want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error holds the secret", path)
		}
	}
}

// TestSecretFileOwnedByRoot: as root, a private file owned by another user
// is refused (that user could rewrite it), with the fix.
func TestSecretFileOwnedByRoot(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "idc.md5")
	if err := os.WriteFile(path, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := readSecretFile(path, "password file")
	if !errors.Is(err, ErrInsecureSecret) || !strings.Contains(err.Error(), "owned by uid 65534") || !strings.Contains(err.Error(), "chown root "+path) {
		t.Fatalf("a file owned by uid 65534: %v", err)
	}
}
