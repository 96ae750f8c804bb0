package test

import (
	endian "encoding/binary"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// routeWatch counts the distinct IPv4 prefixes of protocol 79 in a
// namespace's main table by following route notifications. Polling with
// dumps, as countRoutes does, reads every route each time: a dump every
// 50 ms during the 100,000-route pipeline took two thirds of a core on
// the 2-core machine, from the agents it was timing. A notification costs
// a parse of its header and destination. Should the socket overflow
// (ENOBUFS), the watch says so and the caller falls back to dumps.
type routeWatch struct {
	mu       sync.Mutex
	prefixes map[uint64]bool // address<<8 | length
	overflow bool
	f        *os.File
	done     chan struct{}
}

func watchRoutes(tb testing.TB, namespace string) *routeWatch {
	tb.Helper()
	var fd int
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		ns, err := netns.GetFromName(namespace)
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			return err
		}
		defer netns.Set(orig)
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_IPV4_ROUTE - 1)})
	}()
	if err != nil {
		tb.Fatalf("route notifications in %s: %v", namespace, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		tb.Fatalf("route notification buffer: %v", err)
	}
	// Non-blocking, so the runtime's poller serves the reads and Close
	// ends a pending one.
	w := &routeWatch{prefixes: map[uint64]bool{}, f: os.NewFile(uintptr(fd), "route-watch"), done: make(chan struct{})}
	go w.read()
	// What is there already, after subscribing so nothing falls between.
	h, err := netlinkHandle(namespace)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	rs, err := opencenRoutes(h)
	if err != nil {
		tb.Fatalf("list routes in %s: %v", namespace, err)
	}
	w.mu.Lock()
	for _, r := range rs {
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			w.prefixes[uint64(endian.BigEndian.Uint32(r.Dst.IP.To4()))<<8|uint64(ones)] = true
		}
	}
	w.mu.Unlock()
	tb.Cleanup(w.close)
	return w
}

func (w *routeWatch) read() {
	defer close(w.done)
	buf := make([]byte, 1<<20)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ENOBUFS) {
				w.mu.Lock()
				w.overflow = true
				w.mu.Unlock()
				continue
			}
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		w.mu.Lock()
		for i := range msgs {
			m := &msgs[i]
			if (m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE) || len(m.Data) < unix.SizeofRtMsg {
				continue
			}
			// rtmsg: family, dst_len, src_len, tos, table, protocol.
			if m.Data[0] != unix.AF_INET || m.Data[4] != unix.RT_TABLE_MAIN || m.Data[5] != 79 {
				continue
			}
			key, ok := uint64(0), m.Data[1] == 0
			attrs, err := syscall.ParseNetlinkRouteAttr(m)
			if err != nil {
				continue
			}
			for _, a := range attrs {
				if a.Attr.Type == unix.RTA_DST && len(a.Value) == 4 {
					key, ok = uint64(endian.BigEndian.Uint32(a.Value))<<8|uint64(m.Data[1]), true
				}
			}
			if !ok {
				continue
			}
			if m.Header.Type == unix.RTM_NEWROUTE {
				w.prefixes[key] = true
			} else {
				delete(w.prefixes, key)
			}
		}
		w.mu.Unlock()
	}
}

// count is the number of routes, and false once notifications were lost.
func (w *routeWatch) count() (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.prefixes), !w.overflow
}

func (w *routeWatch) close() {
	w.f.Close()
	<-w.done
}
