package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sysctls a gateway needs, in the target namespace: it forwards between
// its tunnel and its LAN and VBR links; it never tells a LAN host to go
// to a twin directly (a handoff leaves through the LAN it came from, and
// an ICMP redirect would have the host bypass the gateway it chose; the
// links that exist already are switched off one by one, see
// noRedirects).
var sysctls = [][2]string{
	{"net.ipv4.ip_forward", "1"},
	{"net.ipv6.conf.all.forwarding", "1"},
	{"net.ipv4.conf.all.send_redirects", "0"},
	{"net.ipv4.conf.default.send_redirects", "0"},
}

// reconcile applies p; d.mu is held. The order keeps traffic flowing: the
// device and its peers first, then the guard, routes, handoff tables and
// rules (a rule never points at an empty table), each step adding first,
// it deletes.
func (d *Dataplane) reconcile(ctx context.Context, want Desired, p plan) error {
	var errs []error
	for _, kv := range sysctls {
		if err := d.host.setSysctl(kv[0], kv[1]); err != nil {
			errs = append(errs, err)
		}
	}
	link, err := d.syncDevice(want)
	if link == nil {
		return errors.Join(append(errs, err)...)
	}
	if err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := d.syncPeers(want, p); err != nil {
		errs = append(errs, err)
	}
	if err := syncAddrs(d.nl, link, want.Addresses); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncGuard(want, link); err != nil {
		errs = append(errs, err)
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if !d.swept {
		if err := d.sweepForeignTables(p); err != nil {
			errs = append(errs, err)
		} else {
			d.swept = true
		}
	}
	idx := link.Attrs().Index
	if err := d.syncRoutes(p, idx); err != nil {
		errs = append(errs, err)
	}
	if err := d.syncHandoffs(p, idx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncDevice finds or creates the device and sets its MTU, group,
// reverse-path filter and state. A nil link means nothing more can be
// done.
func (d *Dataplane) syncDevice(want Desired) (netlink.Link, error) {
	mtu := want.MTU
	if mtu == 0 {
		mtu = d.underlayMTU(want) - wireguardOverhead
	}
	link, err := d.ensureDevice(mtu)
	if err != nil {
		return nil, err
	}
	d.linkIndex.Store(int32(link.Attrs().Index))
	var errs []error
	if link.Attrs().MTU != mtu {
		if err := d.nl.LinkSetMTU(link, mtu); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d: %w", mtu, err))
		}
	}
	if link.Attrs().Group != DeviceGroup {
		if err := d.nl.LinkSetGroup(link, DeviceGroup); err != nil {
			errs = append(errs, fmt.Errorf("set group %d: %w", DeviceGroup, err))
		}
	}
	// A gateway receives a local prefix homed at a twin from the tunnel
	// (the twin is its home and sends it plain), while the route back to
	// it is the LAN: strict reverse-path filtering would drop it. Loose
	// (2) still drops sources with no route at all; the kernel applies the
	// larger of "all" and the device's value, so this wins over all=1.
	if err := d.host.setSysctl("net.ipv4.conf."+d.name+".rp_filter", "2"); err != nil {
		errs = append(errs, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		d.log.Info("bringing device up")
		if err := d.nl.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set link up: %w", err))
		}
	}
	return link, errors.Join(errs...)
}

// syncGuard resolves want's guard and makes the kernel hold it. A guard
// that cannot be resolved leaves the one in place: one resolved without
// its LANs would stop their traffic.
func (d *Dataplane) syncGuard(want Desired, link netlink.Link) error {
	g, err := d.guardSpecOf(want, link)
	if err != nil {
		return err
	}
	wrote, err := d.guard.ensureGuard(guardTable(d.name), g)
	if wrote {
		d.log.Info("installed guard", "table", guardTable(d.name), "attached", g.attached, "underlay", g.underlay)
	}
	return err
}

// gatewayAddrs are every gateway's tunnel addresses: the guard's sets.
func gatewayAddrs(want Desired) []netip.Addr {
	var out []netip.Addr
	for _, a := range want.Addresses {
		out = append(out, a.Addr())
	}
	for _, p := range want.Peers {
		for _, a := range p.TunnelAddresses {
			out = append(out, a.Addr())
		}
	}
	// Sorted: the guard is the same whatever order the peers come in.
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func (d *Dataplane) syncPeers(want Desired, p plan) error {
	dev, err := d.wg.Device(d.name)
	if err != nil {
		return fmt.Errorf("read wireguard device: %w", err)
	}
	cfg, changed := planPeers(dev, want, p)
	if !changed {
		return nil
	}
	d.log.Info("configuring wireguard", "peers_written", len(cfg.Peers), "key_or_port", cfg.PrivateKey != nil || cfg.ListenPort != nil)
	if err := d.wg.ConfigureDevice(d.name, cfg); err != nil {
		return fmt.Errorf("configure wireguard: %w", err)
	}
	return nil
}

// ownedRoutes lists our routes in the main (Options.Table) table.
func (d *Dataplane) ownedRoutes() ([]netlink.Route, error) {
	return d.tableRoutes(d.opts.Table)
}

func (d *Dataplane) syncRoutes(p plan, idx int) error {
	want := mainSpec(p, idx, d.opts.Table)
	add, del, gen, err := d.mainCache.diff(d.drift.Load(), d.opts.Table, want, d.ownedRoutes)
	if err != nil {
		return err
	}
	if len(add)+len(del) > 0 {
		d.log.Info("syncing routes", "install", len(add), "delete", len(del))
		err = applyRoutes(d.writers, want.routes(add), del)
	}
	d.mainCache.applied(gen, want, add, del, err)
	return err
}

// sweepForeignTables deletes our routes in tables that are neither the
// route table nor a handoff table of p: those of a layout this package
// does not use, adopted from an agent of another layout.
func (d *Dataplane) sweepForeignTables(p plan) error {
	keep := map[int]bool{d.opts.Table: true}
	for _, h := range p.handoffs {
		keep[h.table] = true
	}
	err := d.deleteOurRoutes(func(table int) bool { return !keep[table] })
	// The VXLAN device of that layout listens on UDP 4789 on every
	// address: it must not outlive the guard it had.
	if l, lerr := d.nl.LinkByName(legacyOverlayName(d.name)); lerr == nil && l.Type() == "vxlan" {
		d.log.Info("removing the overlay device of another layout", "link", l.Attrs().Name)
		if derr := d.nl.LinkDel(l); derr != nil && !gone(derr) {
			err = errors.Join(err, fmt.Errorf("delete overlay device %s: %w", l.Attrs().Name, derr))
		}
	}
	return err
}

// legacyOverlayName is the name a device's VXLAN overlay had: "ocv" and
// the device name's 12 hex digits for a DeviceName, else "ocv" and 12 hex
// digits of a hash of the device name.
func legacyOverlayName(device string) string {
	if len(device) == 15 && strings.HasPrefix(device, "ocw") {
		return "ocv" + device[3:]
	}
	sum := sha256.Sum256([]byte("opencen-overlay/" + device))
	return "ocv" + hex.EncodeToString(sum[:])[:12]
}

// deleteOurRoutes deletes our routes (protocol 79) in every table for
// which in says true.
func (d *Dataplane) deleteOurRoutes(in func(table int) bool) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: RouteProtocol}
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var del []netlink.Route
	for _, r := range rs {
		if in(r.Table) {
			del = append(del, r)
		}
	}
	if len(del) > 0 {
		d.log.Info("removing routes", "count", len(del))
	}
	return applyRoutes(d.writers, nil, del)
}

// underlayMTU is the MTU of the interface that reaches the first peer
// endpoint, or 1500.
func (d *Dataplane) underlayMTU(want Desired) int {
	for _, p := range want.Peers {
		if !p.Endpoint.IsValid() {
			continue
		}
		rs, err := d.nl.RouteGet(p.Endpoint.Addr().AsSlice())
		if err != nil || len(rs) == 0 {
			continue
		}
		if rs[0].MTU > 0 {
			return rs[0].MTU
		}
		if l, err := d.nl.LinkByIndex(rs[0].LinkIndex); err == nil {
			return l.Attrs().MTU
		}
	}
	return 1500
}

// teardown removes what the dataplane owns; d.mu is held.
func (d *Dataplane) teardown() error {
	var errs []error
	d.mainCache.invalidate()
	clear(d.handoffCaches)
	link, err := d.nl.LinkByName(d.name)
	switch {
	case linkMissing(err):
		link = nil
	case err != nil:
		return fmt.Errorf("find device: %w", err)
	}
	if link != nil && !ownedLinkType(link.Type()) {
		return fmt.Errorf("device %s is a %s link, not wireguard: not touching it", d.name, link.Type())
	}
	// Rules first, so none points at a table being emptied; then every
	// route of ours in every table, the device's and the direct ones.
	errs = append(errs, d.syncRules(nil))
	errs = append(errs, d.deleteOurRoutes(func(int) bool { return true }))
	if pid := d.host.findHelper(d.name); pid != 0 {
		if err := d.host.stopHelper(d.name, pid); err != nil {
			errs = append(errs, err)
		}
	}
	if link != nil {
		if err := d.nl.LinkDel(link); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete device: %w", err))
		}
	}
	errs = append(errs, d.host.removeSocket(d.name), d.host.removeState(d.name), d.guard.removeGuard(guardTable(d.name)))
	d.helperPID, d.mode = 0, ""
	d.linkIndex.Store(0)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	d.log.Info("dataplane removed")
	return nil
}

func ownedLinkType(t string) bool { return t == "wireguard" || t == "tuntap" || t == "tun" }
