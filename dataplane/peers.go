package dataplane

import (
	"net"
	"net/netip"
	"slices"

	"github.com/opencen/opencen/internal/netipx"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgOps is the WireGuard configuration interface the dataplane needs;
// *wgctrl.Client implements it (netlink for the kernel module, UAPI for
// userspace devices).
type wgOps interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
}

// planPeers compares the device with the plan and returns the smallest
// configuration that makes them equal, and whether anything needs writing.
// A peer whose key, endpoint, keepalive and allowed IPs all match is left
// out of the configuration entirely, so WireGuard never touches it; for a
// peer that differs, only the fields that differ are written.
func planPeers(dev *wgtypes.Device, d Desired, p plan) (wgtypes.Config, bool) {
	var cfg wgtypes.Config
	changed := false
	if dev.PrivateKey != d.PrivateKey {
		k := d.PrivateKey
		cfg.PrivateKey = &k
		changed = true
	}
	if dev.ListenPort != d.ListenPort {
		port := d.ListenPort
		cfg.ListenPort = &port
		changed = true
	}
	current := make(map[wgtypes.Key]*wgtypes.Peer, len(dev.Peers))
	for i := range dev.Peers {
		current[dev.Peers[i].PublicKey] = &dev.Peers[i]
	}
	wanted := make(map[wgtypes.Key]bool, len(p.peers))
	for _, want := range p.peers {
		wanted[want.PublicKey] = true
		have, exists := current[want.PublicKey]
		pc := wgtypes.PeerConfig{PublicKey: want.PublicKey, UpdateOnly: exists}
		dirty := !exists
		if want.Endpoint.IsValid() && (!exists || udpAddrPort(have.Endpoint) != want.Endpoint) {
			pc.Endpoint = net.UDPAddrFromAddrPort(want.Endpoint)
			dirty = true
		}
		if ka := keepalive(want.Peer); !exists || have.PersistentKeepaliveInterval != ka {
			pc.PersistentKeepaliveInterval = &ka
			dirty = true
		}
		if !exists || !slices.Equal(ipNetsToPrefixes(have.AllowedIPs), want.allowed) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = prefixesToIPNets(want.allowed)
			dirty = true
		}
		if dirty {
			cfg.Peers = append(cfg.Peers, pc)
			changed = true
		}
	}
	for _, have := range dev.Peers {
		if !wanted[have.PublicKey] {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: have.PublicKey, Remove: true})
			changed = true
		}
	}
	return cfg, changed
}

func udpAddrPort(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// ipNetsToPrefixes converts and sorts; it is the inverse of
// prefixesToIPNets for the canonical (masked) prefixes WireGuard keeps.
func ipNetsToPrefixes(nets []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		if p, ok := ipNetToPrefix(n); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, netipx.ComparePrefix)
	return out
}

func ipNetToPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func prefixesToIPNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, prefixToIPNet(p))
	}
	return out
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
