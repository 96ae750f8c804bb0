package dataplane

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// OverlayVNI is the VXLAN network identifier of the overlay that carries
// IPv4 CEN traffic between gateways inside WireGuard. It is a constant of
// the instance: every gateway must use the same one. 7344 is arbitrary
// (nothing else on a gateway uses VXLAN).
const OverlayVNI = 7344

// OverlayPort is the overlay's UDP port (IANA's VXLAN port). The kernel
// listens on it on every address, so the guard (see guard.go) drops it on
// every interface but the WireGuard device.
const OverlayPort = 4789

// overlayOverhead is what VXLAN adds inside the WireGuard device: outer
// IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14.
const overlayOverhead = 70

// vtepPrefix holds the overlay's VTEP (outer) addresses: a unique local
// IPv6 /96 ("fd4f:6365:6e00::/96", 4f 63 65 6e = "Ocen") followed by the
// gateway's IPv4 tunnel address, so every gateway derives every other's.
var vtepPrefix = netip.MustParsePrefix("fd4f:6365:6e00::/96")

// vtepAddr is the VTEP address of the gateway with IPv4 tunnel address a.
func vtepAddr(a netip.Addr) netip.Addr {
	b := vtepPrefix.Addr().As16()
	v4 := a.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

// overlayMACPrefix starts every overlay MAC: locally administered (0x02),
// then 0x4f ("o"), then the tunnel address' four bytes.
var overlayMACPrefix = []byte{0x02, 0x4f}

// overlayMAC derives a gateway's overlay MAC from its IPv4 tunnel address,
// so peers compute each other's without exchanging anything.
func overlayMAC(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{overlayMACPrefix[0], overlayMACPrefix[1], b[0], b[1], b[2], b[3]}
}

// OverlayName derives the overlay device's name from the WireGuard device's:
// "ocv" plus the same 12 hex digits for a [DeviceName] ("ocw..."), else
// "ocv" plus 12 hex digits of a hash of the device name (15 characters,
// unique per device name, so as unique per host as the device).
func OverlayName(device string) string {
	if len(device) == 15 && strings.HasPrefix(device, "ocw") {
		return "ocv" + device[3:]
	}
	sum := sha256.Sum256([]byte("opencen-overlay/" + device))
	return "ocv" + hex.EncodeToString(sum[:])[:12]
}

// ensureOverlay finds or creates the VXLAN overlay device of the gateway
// with IPv4 tunnel address own (local address vtepAddr(own)) with the
// given MTU, and brings it up; d.mu is held. An existing vxlan link of that
// name with the right VNI, port, local address and no learning is adopted
// as it is; one with other settings (the gateway's tunnel address
// changed) is replaced.
func (d *Dataplane) ensureOverlay(own netip.Addr, mtu int) (netlink.Link, error) {
	mac := overlayMAC(own)
	local := vtepAddr(own)
	link, err := d.nl.LinkByName(d.ovlName)
	switch {
	case err == nil:
		v, ok := link.(*netlink.Vxlan)
		if !ok {
			return nil, fmt.Errorf("overlay device %s exists as a %s link, not vxlan: not touching it", d.ovlName, link.Type())
		}
		if v.VxlanId == OverlayVNI && v.Port == OverlayPort && ipAddr(v.SrcAddr) == local && !v.Learning {
			break
		}
		d.log.Info("replacing overlay device with other settings", "overlay", d.ovlName, "vni", v.VxlanId, "port", v.Port, "local", ipAddr(v.SrcAddr))
		if err := d.nl.LinkDel(link); err != nil && !gone(err) {
			return nil, fmt.Errorf("delete overlay device %s: %w", d.ovlName, err)
		}
		link = nil
	case !linkMissing(err):
		return nil, fmt.Errorf("find overlay device %s: %w", d.ovlName, err)
	default:
		link = nil
	}
	if link == nil {
		v := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: d.ovlName, MTU: mtu, HardwareAddr: mac},
			VxlanId:   OverlayVNI, SrcAddr: local.AsSlice(), Port: OverlayPort, Learning: false,
		}
		if err := d.nl.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("create overlay device %s: %w", d.ovlName, err)
		}
		d.log.Info("created overlay device", "overlay", d.ovlName, "mtu", mtu, "local", local)
		if link, err = d.nl.LinkByName(d.ovlName); err != nil {
			return nil, fmt.Errorf("find overlay device %s: %w", d.ovlName, err)
		}
	}
	var errs []error
	if link.Attrs().MTU != mtu {
		if err := d.nl.LinkSetMTU(link, mtu); err != nil {
			errs = append(errs, fmt.Errorf("set overlay mtu %d: %w", mtu, err))
		}
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := d.nl.LinkSetHardwareAddr(link, mac); err != nil {
			errs = append(errs, fmt.Errorf("set overlay mac %s: %w", mac, err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		d.log.Info("bringing overlay device up", "overlay", d.ovlName)
		if err := d.nl.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set overlay up: %w", err))
		}
	}
	return link, errors.Join(errs...)
}

// removeOverlay deletes the overlay device if it is there and a vxlan.
func (d *Dataplane) removeOverlay() error {
	link, err := d.nl.LinkByName(d.ovlName)
	switch {
	case linkMissing(err):
		return nil
	case err != nil:
		return fmt.Errorf("find overlay device %s: %w", d.ovlName, err)
	}
	if link.Type() != "vxlan" {
		return fmt.Errorf("overlay device %s is a %s link, not vxlan: not touching it", d.ovlName, link.Type())
	}
	if err := d.nl.LinkDel(link); err != nil && !gone(err) {
		return fmt.Errorf("delete overlay device %s: %w", d.ovlName, err)
	}
	return nil
}

// syncOverlayNeighbours gives every peer tunnel address in want a
// permanent FDB entry (its MAC → VXLAN destination = its VTEP address,
// which WireGuard routes to the peer) and a permanent neighbour entry
// (address → MAC), so the overlay never floods or ARPs. Entries with an overlay MAC
// that are not wanted any more are deleted; other entries are left alone.
func syncOverlayNeighbours(nl netlinkOps, link netlink.Link, want []netip.Addr) error {
	idx := link.Attrs().Index
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list overlay fdb: %w", err)
	}
	arp, err := retryDump(func() ([]netlink.Neigh, error) { return nl.NeighList(idx, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("list overlay neighbours: %w", err)
	}
	type fdbKey struct {
		mac string
		dst netip.Addr
	}
	wantFDB := map[fdbKey]bool{}
	wantARP := map[netip.Addr]string{}
	for _, a := range want {
		wantFDB[fdbKey{overlayMAC(a).String(), vtepAddr(a)}] = true
		wantARP[a] = overlayMAC(a).String()
	}
	const permanent = netlink.NUD_PERMANENT
	haveFDB := map[fdbKey]bool{}
	var errs []error
	var staleFDB []netlink.Neigh
	for _, n := range fdb {
		k := fdbKey{n.HardwareAddr.String(), ipAddr(n.IP)}
		if wantFDB[k] && n.State&permanent != 0 {
			haveFDB[k] = true
		} else if !wantFDB[k] && bytes.HasPrefix(n.HardwareAddr, overlayMACPrefix) {
			staleFDB = append(staleFDB, n)
		}
	}
	haveARP := map[netip.Addr]bool{}
	var staleARP []netlink.Neigh
	for _, n := range arp {
		a := ipAddr(n.IP)
		if mac, ok := wantARP[a]; ok {
			haveARP[a] = n.HardwareAddr.String() == mac && n.State&permanent != 0
			continue
		}
		if n.State&permanent != 0 && bytes.HasPrefix(n.HardwareAddr, overlayMACPrefix) {
			staleARP = append(staleARP, n)
		}
	}
	for _, a := range want {
		mac := overlayMAC(a)
		if k := (fdbKey{mac.String(), vtepAddr(a)}); !haveFDB[k] {
			n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, HardwareAddr: mac, IP: k.dst.AsSlice()}
			if err := nl.NeighAppend(n); err != nil && !errors.Is(err, syscall.EEXIST) {
				errs = append(errs, fmt.Errorf("add overlay fdb %s dst %s: %w", mac, k.dst, err))
			}
		}
		if !haveARP[a] {
			n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, HardwareAddr: mac, IP: a.AsSlice()}
			if err := nl.NeighSet(n); err != nil {
				errs = append(errs, fmt.Errorf("set overlay neighbour %s lladdr %s: %w", a, mac, err))
			}
		}
	}
	// Deletes last: add before delete.
	for i := range staleFDB {
		if err := nl.NeighDel(&staleFDB[i]); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete overlay fdb %s dst %s: %w", staleFDB[i].HardwareAddr, ipAddr(staleFDB[i].IP), err))
		}
	}
	for i := range staleARP {
		if err := nl.NeighDel(&staleARP[i]); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete overlay neighbour %s: %w", ipAddr(staleARP[i].IP), err))
		}
	}
	return errors.Join(errs...)
}
