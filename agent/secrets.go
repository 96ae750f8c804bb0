package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrInsecureSecret is returned for a key or password file that group or
// others may read, or that someone but root owns.
var ErrInsecureSecret = errors.New("secret file is not private to root")

// maxSecretSize bounds what is read of a secret file: a key is 45 bytes.
const maxSecretSize = 64 << 10

// readSecretFile reads a private key or password file, refusing one that
// is missing, a symbolic link, not a regular file, open to group or
// others, or owned by anyone but root (or cend's own user, which is root
// whenever cend runs a gateway). The file is opened once, without
// following a link, checked through that descriptor and read from it, so
// what is checked is what is read. Errors name the file and the fix,
// never the content.
func readSecretFile(path, what string) (string, error) {
	// O_NONBLOCK: opening a FIFO put in the file's place does not wait for
	// a writer; it is then refused as not a regular file.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("%s %s does not exist: %w", what, path, fs.ErrNotExist)
	case errors.Is(err, unix.ELOOP):
		return "", fmt.Errorf("%s %s is a symbolic link: refused (a link can be pointed elsewhere); name the file itself", what, path)
	case err != nil:
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := os.FileMode(st.Mode).Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s %s has mode %04o: %w; run chmod 600 %s", what, path, perm, ErrInsecureSecret, path)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("%s %s is owned by uid %d, not root: %w; run chown root %s", what, path, st.Uid, ErrInsecureSecret, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(data) > maxSecretSize {
		return "", fmt.Errorf("%s %s is larger than %d bytes: not a key or password file", what, path, maxSecretSize)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// readPrivateKey reads a WireGuard private key file (base64 of 32 bytes,
// as `wg genkey` writes it).
func readPrivateKey(path string) (wgtypes.Key, error) {
	s, err := readSecretFile(path, "private key file")
	if err != nil {
		return wgtypes.Key{}, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		// Never echo the content: it is meant to be a secret.
		return wgtypes.Key{}, fmt.Errorf("private key file %s does not hold a WireGuard key (base64 of 32 bytes, as wg genkey writes)", path)
	}
	return wgtypes.NewKey(b)
}

// readSecrets reads the gateway's private key and the TCP-MD5 passwords of
// the VBR sessions it holds, refusing files open to group or others.
func readSecrets(cfg *config.Config, d *config.Desired) (desired.Secrets, error) {
	var sec desired.Secrets
	var errs []error
	key, err := readPrivateKey(d.PrivateKeyFile)
	if err != nil {
		errs = append(errs, err)
	}
	sec.PrivateKey = key
	if g, ok := cfg.Gateway(d.Gateway); ok && err == nil && config.Key(key.PublicKey()) != g.PublicKey {
		errs = append(errs, fmt.Errorf("private key file %s does not match gateway %s's public_key in %s", d.PrivateKeyFile, d.Gateway, cfg.File))
	}
	sec.Passwords = map[string]string{}
	for _, v := range d.VBRs {
		if v.PasswordFile == "" {
			continue
		}
		pw, err := readSecretFile(v.PasswordFile, "password file of "+v.Network)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sec.Passwords[v.Network] = pw
	}
	return sec, errors.Join(errs...)
}
