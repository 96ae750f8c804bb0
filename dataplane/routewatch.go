package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// routeEvent is the little of a route or rule notification the repair
// loop needs.
type routeEvent struct {
	typ      uint16 // RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWRULE or RTM_DELRULE
	protocol uint8
	table    uint32
}

// subscribeRoutes streams route notifications from the namespace at nsPath
// until done is closed; ch is closed when the subscription ends (including
// on ENOBUFS, after which the caller resubscribes and resyncs).
//
// It reads only the fixed rtmsg header (and RTA_TABLE) instead of decoding
// every route as netlink.RouteSubscribe does: installing 100,000 routes
// echoes 100,000 notifications, and full decoding cost as much CPU as
// installing them.
func subscribeRoutes(nsPath string, ch chan<- routeEvent, done <-chan struct{}) error {
	var fd int
	err := inNetNS(nsPath, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		groups := uint32(1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_IPV6_ROUTE-1) | 1<<(unix.RTNLGRP_IPV4_RULE-1))
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("route notification socket: %w", err)
	}
	// A big buffer rides out bursts; ENOBUFS is handled by resyncing.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	f := os.NewFile(uintptr(fd), "rtnetlink-routes")
	go func() {
		<-done
		f.Close()
	}()
	go func() {
		defer close(ch)
		buf := make([]byte, 1<<16)
		for {
			n, err := f.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					f.Close()
				}
				return
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				continue
			}
			for i := range msgs {
				m := &msgs[i]
				switch m.Header.Type {
				case unix.RTM_NEWROUTE, unix.RTM_DELROUTE, unix.RTM_NEWRULE, unix.RTM_DELRULE:
				default:
					continue
				}
				// A rule's header (fib_rule_hdr) has the table at the
				// same offset as a route's; its protocol is an attribute,
				// left at zero here (rule events are matched by table).
				if len(m.Data) < unix.SizeofRtMsg {
					continue
				}
				ev := routeEvent{typ: m.Header.Type, table: uint32(m.Data[4])}
				if m.Header.Type == unix.RTM_NEWROUTE || m.Header.Type == unix.RTM_DELROUTE {
					ev.protocol = m.Data[5]
				}
				if ev.table == unix.RT_TABLE_COMPAT {
					// Tables above 255 travel in an attribute.
					if attrs, err := syscall.ParseNetlinkRouteAttr(m); err == nil {
						for _, a := range attrs {
							if a.Attr.Type == unix.RTA_TABLE && len(a.Value) == 4 {
								ev.table = binary.NativeEndian.Uint32(a.Value)
							}
						}
					}
				}
				select {
				case ch <- ev:
				case <-done:
					return
				}
			}
		}
	}()
	return nil
}
