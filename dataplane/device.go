package dataplane

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// helperStartTimeout bounds the wait for a new helper's link and socket.
const helperStartTimeout = 10 * time.Second

// ensureDevice finds or creates the WireGuard device; d.mu is held. An
// existing wireguard link, or a TUN whose UAPI socket answers, is adopted
// as it is: nothing about it is restarted.
func (d *Dataplane) ensureDevice(mtu int) (netlink.Link, error) {
	link, err := d.nl.LinkByName(d.name)
	switch {
	case err == nil:
		switch link.Type() {
		case "wireguard":
			d.mode = ModeKernel
			return link, nil
		case "tuntap", "tun":
			if d.host.socketState(d.name) == sockLive {
				if d.mode != ModeUserspace {
					d.helperPID = d.host.findHelper(d.name)
					d.log.Info("adopted running userspace device", "helper_pid", d.helperPID)
				}
				d.mode = ModeUserspace
				return link, nil
			}
			// A TUN nobody can configure: replace its helper.
			pid := d.host.findHelper(d.name)
			if pid == 0 {
				return nil, fmt.Errorf("device %s is a tun without a uapi socket and no opencen helper owns it: not touching it", d.name)
			}
			d.log.Warn("helper lost its uapi socket, restarting it", "helper_pid", pid)
			if err := d.host.stopHelper(d.name, pid); err != nil {
				return nil, err
			}
			if err := d.nl.LinkDel(link); err != nil && !gone(err) {
				return nil, fmt.Errorf("delete stale device: %w", err)
			}
		default:
			return nil, fmt.Errorf("device %s exists as a %s link, not wireguard: not touching it", d.name, link.Type())
		}
	case !linkMissing(err):
		return nil, fmt.Errorf("find device: %w", err)
	}

	if d.opts.Mode != ModeUserspace {
		err := d.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: mtu}})
		if err == nil {
			d.mode = ModeKernel
			d.log.Info("created kernel wireguard device", "mtu", mtu)
			return d.nl.LinkByName(d.name)
		}
		if d.opts.Mode == ModeKernel {
			return nil, fmt.Errorf("create kernel wireguard device: %w", err)
		}
		d.log.Debug("kernel wireguard unavailable, using userspace", "err", err)
	}
	return d.startUserspace(mtu)
}

func (d *Dataplane) startUserspace(mtu int) (netlink.Link, error) {
	switch d.host.socketState(d.name) {
	case sockStale:
		d.log.Info("removing stale uapi socket")
		if err := d.host.removeSocket(d.name); err != nil {
			return nil, err
		}
	case sockLive:
		// Our namespace has no such link, yet a device answers on the
		// socket: a device of the same name lives in another namespace.
		return nil, fmt.Errorf("uapi socket %s belongs to a device in another namespace: device names must be unique per host", socketPath(d.name))
	}
	pid, err := d.host.startHelper(d.name, mtu)
	if err != nil {
		return nil, err
	}
	d.mode, d.helperPID = ModeUserspace, pid
	deadline := time.Now().Add(helperStartTimeout)
	for {
		link, err := d.nl.LinkByName(d.name)
		if err == nil && d.host.socketState(d.name) == sockLive {
			d.log.Info("started userspace wireguard helper", "helper_pid", pid, "mtu", mtu)
			return link, nil
		}
		if d.host.findHelper(d.name) != pid {
			return nil, fmt.Errorf("helper %d for %s exited: %s", pid, d.name, d.host.logTail(d.name))
		}
		if time.Now().After(deadline) {
			_ = d.host.stopHelper(d.name, pid)
			return nil, fmt.Errorf("helper %d for %s not ready after %s", pid, d.name, helperStartTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// linkMissing reports a lookup of a link that does not exist.
func linkMissing(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, errNoLink)
}

// errNoLink is what fakes return for a missing link (netlink's own
// LinkNotFoundError cannot be built outside its package).
var errNoLink = errors.New("link not found")
