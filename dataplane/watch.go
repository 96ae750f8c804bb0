package dataplane

import (
	"context"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// repairDelay coalesces a burst of netlink events into one reconcile.
const repairDelay = 50 * time.Millisecond

func (d *Dataplane) start(ns netns.NsHandle) {
	d.loops.Add(4)
	go d.repairLoop()
	nsp := &ns
	errCb := func(what string) func(error) {
		return func(err error) { d.log.Debug("netlink watch error", "watch", what, "err", err) }
	}
	go watchLoop(d, "link", func(ch chan netlink.LinkUpdate, done chan struct{}) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: nsp, ErrorCallback: errCb("link")})
	}, func(u netlink.LinkUpdate) bool {
		// Any link: the kernel drops the routes through a link that goes
		// down without a notification per route, and direct routes to a
		// VBR's router go through a LAN link that is not ours.
		if u.Attrs() == nil {
			return false
		}
		return u.Header.Type == unix.RTM_DELLINK || u.Attrs().Flags&net.FlagUp == 0
	})
	go watchLoop(d, "addr", func(ch chan netlink.AddrUpdate, done chan struct{}) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: nsp, ErrorCallback: errCb("addr")})
	}, func(u netlink.AddrUpdate) bool {
		// Any removal: routes whose source or nexthop it served go with it.
		return !u.NewAddr
	})
	go watchLoop(d, "route", func(ch chan routeEvent, done chan struct{}) error {
		return subscribeRoutes(d.opts.NetNS, ch, done)
	}, func(u routeEvent) bool {
		// Our own adds echo back as RTM_NEWROUTE; only removals of our
		// routes (by hand, or with a link going down) and of rules need
		// repair.
		switch u.typ {
		case unix.RTM_DELROUTE:
			return u.protocol == RouteProtocol && (u.table == uint32(d.opts.Table) || d.isHandoffTable(u.table))
		case unix.RTM_DELRULE:
			return true
		}
		return false
	})
}

// isHandoffTable reports whether table is in the handoff tables' range.
func (d *Dataplane) isHandoffTable(table uint32) bool {
	base := uint32(d.opts.HandoffTableBase)
	return table > base && table <= base+1024
}

// watchLoop keeps one netlink subscription open, resubscribing after a
// failure (such as ENOBUFS when a burst overflows the socket), and kicks a
// repair for each relevant event and after each (re)subscription, since
// events may have been missed in between.
func watchLoop[T any](d *Dataplane, what string, subscribe func(chan T, chan struct{}) error, relevant func(T) bool) {
	defer d.loops.Done()
	for {
		ch := make(chan T, 1024)
		done := make(chan struct{})
		if err := subscribe(ch, done); err != nil {
			d.log.Warn("netlink subscribe failed", "watch", what, "err", err)
		} else {
			d.noteDrift()
			stopped := false
		recv:
			for {
				select {
				case <-d.stop:
					stopped = true
					break recv
				case u, ok := <-ch:
					if !ok {
						break recv
					}
					if relevant(u) {
						d.noteDrift()
					}
				}
			}
			close(done)
			for range ch { // let the library's reader exit
			}
			if stopped {
				return
			}
		}
		select {
		case <-d.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

// noteDrift says the kernel may not hold what the route caches
// remember, and asks for a repair.
func (d *Dataplane) noteDrift() {
	d.drift.Add(1)
	d.trigger()
}

func (d *Dataplane) trigger() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *Dataplane) repairLoop() {
	defer d.loops.Done()
	var tick <-chan time.Time
	if d.opts.ResyncInterval > 0 {
		t := time.NewTicker(d.opts.ResyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-d.stop:
			return
		case <-d.kick:
			select {
			case <-d.stop:
				return
			case <-time.After(repairDelay):
			}
		case <-tick:
			// The periodic resync trusts no cache.
			d.drift.Add(1)
		}
		d.repair()
	}
}

// repair re-applies the last desired state.
func (d *Dataplane) repair() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || !d.have {
		return
	}
	p, err := resolveWith(d.desired, d.opts.HandoffTableBase, &d.scratch)
	if err != nil {
		return // Set never stores an invalid state
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = d.reconcile(ctx, d.desired, p)
	if err != nil {
		d.log.Warn("repair failed", "err", err)
	}
	d.lastErr = err
}
