package dataplane

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The fake kernel's nftables guard, WireGuard device, host (helpers,
// sockets, sysctls) and the views tests assert on.

// --- guardOps ---

func (k *fakeKernel) ensureGuard(table string, spec guardSpec) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failGuard != nil {
		return false, k.failGuard
	}
	v4, v6 := splitFamilies(spec.gateways)
	want := fakeGuard{dev: spec.dev, addrs: append(v4, v6...), spec: spec}
	if g, ok := k.guards[table]; ok && reflect.DeepEqual(g, want) {
		return false, nil
	}
	k.guards[table] = want
	k.writes++
	return true, nil
}

func (k *fakeKernel) removeGuard(table string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.guards[table]; ok {
		delete(k.guards, table)
		k.writes++
	}
	return nil
}

// --- wgOps ---

func (k *fakeKernel) Device(name string) (*wgtypes.Device, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[name]
	if !ok {
		return nil, fmt.Errorf("no device %s", name)
	}
	c := *d
	c.Peers = slices.Clone(d.Peers)
	for i := range c.Peers {
		c.Peers[i].AllowedIPs = slices.Clone(c.Peers[i].AllowedIPs)
	}
	return &c, nil
}

// handshakeAt is when fake peers "handshook"; a touched peer is given a
// new handshake, as a reset session would get after traffic.
var handshakeAt = time.Unix(1_700_000_000, 0)

func (k *fakeKernel) ConfigureDevice(name string, cfg wgtypes.Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[name]
	if !ok {
		return fmt.Errorf("no device %s", name)
	}
	k.configured = append(k.configured, cfg)
	k.writes++
	if cfg.PrivateKey != nil {
		d.PrivateKey, d.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey, LastHandshakeTime: handshakeAt})
			i = len(d.Peers) - 1
		} else {
			d.Peers[i].LastHandshakeTime = d.Peers[i].LastHandshakeTime.Add(time.Minute)
		}
		p := &d.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

// --- hostOps ---

func (k *fakeKernel) startHelper(name string, mtu int) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.started++
	k.nextPID++
	k.helpers[name] = k.nextPID
	k.addLinkLocked(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, Mode: netlink.TUNTAP_MODE_TUN})
	k.devices[name] = &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	k.sockets[name] = sockLive
	return k.nextPID, nil
}

func (k *fakeKernel) findHelper(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.helpers[name]
}

// crashHelper kills a helper: its TUN goes, its socket stays stale.
func (k *fakeKernel) crashHelper(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.helpers, name)
	k.delLinkLocked(name)
	k.sockets[name] = sockStale
}

func (k *fakeKernel) stopHelper(name string, pid int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.helpers[name] != pid {
		return nil
	}
	delete(k.helpers, name)
	k.delLinkLocked(name)
	delete(k.sockets, name)
	return nil
}

func (k *fakeKernel) socketState(name string) sockState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sockets[name]
}

func (k *fakeKernel) removeSocket(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.sockets, name)
	return nil
}

func (k *fakeKernel) removeState(string) error { return nil }
func (k *fakeKernel) logTail(string) string    { return "" }

func (k *fakeKernel) setSysctl(key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sysctls[key] != value {
		k.sysctls[key] = value
		k.writes++
	}
	return nil
}

// --- views for assertions ---

// routeLines lists the routes of protocol proto (every protocol for -1),
// one line each in `ip route` words, sorted.
func (k *fakeKernel) routeLines(proto int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for id, r := range k.routes {
		if proto >= 0 && int(r.Protocol) != proto {
			continue
		}
		s := fmt.Sprintf("table %d %s", id.table, id.dst)
		nhs := []*netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw}}
		if len(r.MultiPath) > 0 {
			nhs = r.MultiPath
		}
		for _, nh := range nhs {
			if nh.Gw != nil {
				s += " via " + ipAddr(nh.Gw).String()
			}
			if l := k.linkLocked(nh.LinkIndex); l != nil {
				s += " dev " + l.Attrs().Name
			}
		}
		if r.Scope == netlink.SCOPE_LINK {
			s += " scope link"
		}
		if r.Src != nil {
			s += " src " + ipAddr(r.Src).String()
		}
		out = append(out, s+fmt.Sprintf(" metric %d proto %d", id.metric, r.Protocol))
	}
	slices.Sort(out)
	return out
}

// ruleLines lists the rules of protocol 79, in `ip rule` words, sorted.
func (k *fakeKernel) ruleLines() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for i := range k.rules {
		if k.rules[i].Protocol == RouteProtocol {
			out = append(out, fmtRule(&k.rules[i]))
		}
	}
	slices.Sort(out)
	return out
}

func fmtRule(r *netlink.Rule) string {
	k := ruleKey(r)
	fam := "v4"
	if r.Family == netlink.FAMILY_V6 {
		fam = "v6"
	}
	s := fmt.Sprintf("%s %d", fam, r.Priority)
	if k.src.IsValid() {
		s += " from " + k.src.String()
	}
	if r.IifName != "" {
		s += " iif " + r.IifName
	}
	s += fmt.Sprintf(" lookup %d", r.Table)
	if r.SuppressIfgroup >= 0 {
		s += fmt.Sprintf(" suppress_ifgroup %d", r.SuppressIfgroup)
	}
	return s
}

// deleteRoute removes a route by hand (no notification: the test reports
// the drift).
func (k *fakeKernel) deleteRoute(table int, dst string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id := range k.routes {
		if id.table == table && id.dst.String() == dst {
			delete(k.routes, id)
			return true
		}
	}
	return false
}

// hasRoute reports a route of prefix dst in table, any metric.
func (k *fakeKernel) hasRoute(table int, dst string) bool {
	return slices.ContainsFunc(k.routeLines(-1), func(l string) bool {
		return strings.HasPrefix(l, fmt.Sprintf("table %d %s ", table, dst))
	})
}
