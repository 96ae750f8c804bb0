package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrInsecureSecret is returned for a key or password file that group or
// others may read.
var ErrInsecureSecret = errors.New("secret file is readable by group or others")

// readSecretFile reads a private key or password file, refusing one that
// is missing, not a regular file, or open to group or others. Errors name
// the file and the fix, never the content.
func readSecretFile(path, what string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s %s does not exist: %w", what, path, err)
		}
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s %s has mode %04o: %w; run chmod 600 %s", what, path, perm, ErrInsecureSecret, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
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
