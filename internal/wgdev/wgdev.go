// Package wgdev names a gateway's WireGuard device and its UAPI socket:
// the agent creates them under these names, and the lab finds a dead
// agent's leftovers by them, so both derive them here.
package wgdev

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// UAPIDir is where wireguard-go and wgctrl put and look for the UAPI
// sockets of userspace WireGuard devices: one folder for every namespace
// of the host.
const UAPIDir = "/var/run/wireguard"

// Name derives a host-unique interface name (15 characters, the kernel's
// limit) from id, e.g. "cen-demo/gw-beijing-1". Device names must be
// unique across all namespaces of a host because the UAPI sockets share
// one folder.
func Name(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "ocw" + hex.EncodeToString(sum[:])[:12]
}

// Socket is the UAPI socket of device name.
func Socket(name string) string { return filepath.Join(UAPIDir, name+".sock") }
