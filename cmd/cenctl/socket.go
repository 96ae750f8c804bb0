package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// runDir is where gateways' control sockets are: the systemd unit names
// each /run/opencen/GATEWAY.sock.
var runDir = "/run/opencen"

// addSocketFlags adds the global flags that choose the gateway to talk to.
func (g *globals) addSocketFlags(root *cobra.Command) {
	// Both are global and may stand on either side of the command.
	root.PersistentFlags().StringVar(&g.socket, "socket", "", "control socket of the gateway to talk to (default: --gateway's, $OPENCEN_SOCKET, else the only socket in "+runDir+")")
	root.PersistentFlags().StringVar(&g.gateway, "gateway", "", "talk to the gateway NAME of this host, at "+runDir+"/NAME.sock")
}

// socketPath is the control socket to talk to, by SPEC section 4's order:
// --socket, --gateway NAME, $OPENCEN_SOCKET, then the only socket in
// runDir.
func (g *globals) socketPath() (string, error) {
	switch {
	case g.socket != "" && g.gateway != "":
		return "", usageError{errors.New("give --socket or --gateway, not both")}
	case g.socket != "":
		return g.socket, nil
	case g.gateway != "":
		if g.gateway != filepath.Base(g.gateway) || strings.HasPrefix(g.gateway, ".") {
			return "", usageError{fmt.Errorf("--gateway %q is not a gateway name", g.gateway)}
		}
		return filepath.Join(runDir, g.gateway+".sock"), nil
	}
	if s := os.Getenv("OPENCEN_SOCKET"); s != "" {
		return s, nil
	}
	socks, err := sockets(runDir)
	if err != nil {
		return "", err
	}
	switch len(socks) {
	case 0:
		return "", fmt.Errorf("no gateway's control socket in %s (is cend running?); name one with --socket PATH or --gateway NAME", runDir)
	case 1:
		return socks[0], nil
	}
	names := make([]string, len(socks))
	for i, s := range socks {
		names[i] = strings.TrimSuffix(filepath.Base(s), ".sock")
	}
	return "", usageError{fmt.Errorf("this host runs several gateways (%s); say which with --gateway NAME", strings.Join(names, ", "))}
}

// sockets lists the unix sockets named *.sock in dir; a missing dir has
// none.
func sockets(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for gateways' sockets: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.Type()&fs.ModeSocket != 0 && strings.HasSuffix(e.Name(), ".sock") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}
