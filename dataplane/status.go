package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/config"
)

// Status is a snapshot of the dataplane for cenctl and metrics.
type Status struct {
	Device    string
	Mode      Mode // kernel or userspace; empty when no device exists
	HelperPID int  // userspace helper, 0 otherwise
	Up        bool
	MTU       int
	// ListenPort and PublicKey are the device's; the private key is never
	// part of Status.
	ListenPort int
	PublicKey  wgtypes.Key
	Peers      []PeerStatus
	Routes     []RouteStatus
	Handoffs   []HandoffStatus
	// LastError is the error of the last Set or repair, "" if it succeeded.
	LastError string
}

// PeerStatus is one WireGuard peer as the device sees it.
type PeerStatus struct {
	Name          string // from Desired; empty for a peer not in it
	PublicKey     wgtypes.Key
	Endpoint      netip.AddrPort // current (possibly roamed) endpoint
	LastHandshake time.Time      // zero if never
	ReceiveBytes  int64
	TransmitBytes int64
	AllowedIPs    []netip.Prefix
}

// RouteStatus is one desired kernel route of the main table.
type RouteStatus struct {
	Prefix netip.Prefix
	// Peer is the peer whose tunnel address this is; empty otherwise.
	Peer string
	// Via is the first router of a direct route; invalid for a route on
	// the device.
	Via       netip.Addr
	Installed bool // present in the kernel as opencen installs it
}

// HandoffStatus is one twin's handoff.
type HandoffStatus struct {
	Twin    string
	Table   int
	Sources int
	// Via is the twin's address used as next hop, per family present.
	Via []netip.Addr
}

// Status reads the device and the kernel now.
func (d *Dataplane) Status() (Status, error) {
	d.mu.Lock()
	want, have, lastErr := d.desired, d.have, d.lastErr
	d.mu.Unlock()
	st := Status{Device: d.name}
	if lastErr != nil {
		st.LastError = lastErr.Error()
	}
	link, err := d.nl.LinkByName(d.name)
	if linkMissing(err) {
		return st, nil
	} else if err != nil {
		return st, fmt.Errorf("find device: %w", err)
	}
	st.Up = link.Attrs().Flags&net.FlagUp != 0
	st.MTU = link.Attrs().MTU
	st.Mode = ModeUserspace
	if link.Type() == "wireguard" {
		st.Mode = ModeKernel
	} else {
		st.HelperPID = d.host.findHelper(d.name)
	}
	var p plan
	if have {
		p, _ = resolve(want, d.opts.HandoffTableBase)
	}
	var errs []error
	if err := d.peerStatus(&st, p); err != nil {
		errs = append(errs, err)
	}
	if err := d.routeStatus(&st, p, link.Attrs().Index); err != nil {
		errs = append(errs, err)
	}
	hops, _ := d.nextHops(p, link.Attrs().Index)
	for _, h := range p.handoffs {
		hs := HandoffStatus{Twin: h.twin, Table: h.table, Sources: len(h.sources)}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			if a := hops[h.table][fam]; a.IsValid() {
				hs.Via = append(hs.Via, a)
			}
		}
		st.Handoffs = append(st.Handoffs, hs)
	}
	return st, errors.Join(errs...)
}

func (d *Dataplane) peerStatus(st *Status, p plan) error {
	names := map[wgtypes.Key]string{}
	for _, pp := range p.peers {
		names[pp.PublicKey] = pp.Name
	}
	dev, err := d.wg.Device(d.name)
	if err != nil {
		return fmt.Errorf("read wireguard device: %w", err)
	}
	st.ListenPort, st.PublicKey = dev.ListenPort, dev.PublicKey
	for _, peer := range dev.Peers {
		st.Peers = append(st.Peers, PeerStatus{
			Name: names[peer.PublicKey], PublicKey: peer.PublicKey, Endpoint: udpAddrPort(peer.Endpoint),
			LastHandshake: peer.LastHandshakeTime, ReceiveBytes: peer.ReceiveBytes, TransmitBytes: peer.TransmitBytes,
			AllowedIPs: ipNetsToPrefixes(peer.AllowedIPs),
		})
	}
	return nil
}

func (d *Dataplane) routeStatus(st *Status, p plan, idx int) error {
	rs, err := d.ownedRoutes()
	installed := map[netip.Prefix]*netlink.Route{}
	for i := range rs {
		installed[routeKey(&rs[i])] = &rs[i]
	}
	spec := mainSpec(p, idx, d.opts.Table)
	arena := newIPArena(len(p.routes))
	for i, r := range p.routes {
		h, ok := installed[r.prefix]
		rs := RouteStatus{Prefix: r.prefix, Peer: r.peer}
		if len(r.direct) > 0 {
			rs.Via = r.direct[0]
		}
		if ok {
			w := spec.build(i, arena)
			rs.Installed = sameRoute(h, &w)
		}
		st.Routes = append(st.Routes, rs)
	}
	return err
}

// LocalAddresses lists, link by link, the addresses of the namespace's
// links other than the WireGuard device and loopback (host bits kept,
// with their prefix length), IPv6 link-local ones left out: the gateway's
// LAN, VBR and underlay addresses.
func (d *Dataplane) LocalAddresses() ([]config.LinkAddresses, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return d.nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	// By name: until this Dataplane's first Set the device may be an
	// adopted one whose index it has not learned.
	skip := map[int]bool{}
	for _, name := range []string{d.name, "lo"} {
		if l, err := d.nl.LinkByName(name); err == nil {
			skip[l.Attrs().Index] = true
		}
	}
	byLink := map[int]int{} // link index -> index in out
	var out []config.LinkAddresses
	for _, a := range addrs {
		if a.IPNet == nil || skip[a.LinkIndex] {
			continue
		}
		ip := ipAddr(a.IP)
		if !ip.IsValid() || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		i, ok := byLink[a.LinkIndex]
		if !ok {
			i = len(out)
			byLink[a.LinkIndex] = i
			out = append(out, config.LinkAddresses{Link: d.linkName(a.LinkIndex)})
		}
		ones, _ := a.Mask.Size()
		out[i].Addrs = append(out[i].Addrs, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// linkName is the name of the link with index idx, or its index as text.
func (d *Dataplane) linkName(idx int) string {
	if l, err := d.nl.LinkByIndex(idx); err == nil {
		return l.Attrs().Name
	}
	return strconv.Itoa(idx)
}

// Peers is the device's peers, as Status reports them but without their
// AllowedIPs, read without a route dump: what metrics need.
func (d *Dataplane) Peers() ([]PeerStatus, error) {
	d.mu.Lock()
	names := make(map[wgtypes.Key]string, len(d.desired.Peers))
	for _, p := range d.desired.Peers {
		names[p.PublicKey] = p.Name
	}
	d.mu.Unlock()
	dev, err := d.wg.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("read wireguard device: %w", err)
	}
	out := make([]PeerStatus, 0, len(dev.Peers))
	for _, peer := range dev.Peers {
		out = append(out, PeerStatus{
			Name: names[peer.PublicKey], PublicKey: peer.PublicKey, Endpoint: udpAddrPort(peer.Endpoint),
			LastHandshake: peer.LastHandshakeTime, ReceiveBytes: peer.ReceiveBytes, TransmitBytes: peer.TransmitBytes,
		})
	}
	return out, nil
}
