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

// attachDeletionFilter makes the kernel drop every notification but the
// deletion of a route with protocol RouteProtocol and the deletion of a
// rule, ahead of the queue (a classic BPF socket filter over the
// nlmsghdr and rtmsg): installing 100,000 routes echoes 100,000
// RTM_NEWROUTE messages that the repair loop ignores, and reading them
// cost a sixth of the agent's CPU in the routing pipeline benchmark. The
// kernel sends one message per route or rule notification, so the first
// header is the whole story.
func attachDeletionFilter(fd int) error {
	// BPF loads half-words in network order; nlmsg_type is in host order.
	typ := func(t uint16) uint32 {
		var b [2]byte
		binary.NativeEndian.PutUint16(b[:], t)
		return uint32(binary.BigEndian.Uint16(b[:]))
	}
	const (
		offType     = 4                       // nlmsghdr.nlmsg_type
		offProtocol = unix.SizeofNlMsghdr + 5 // rtmsg.rtm_protocol
		accept      = 0xffffffff
	)
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: offType},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: typ(unix.RTM_DELRULE), Jt: 4},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: typ(unix.RTM_DELROUTE), Jf: 2},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: offProtocol},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: RouteProtocol, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
		{Code: unix.BPF_RET | unix.BPF_K, K: accept},
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

// subscribeRoutes streams the deletions of opencen's routes and of rules
// (see attachDeletionFilter) from the namespace at nsPath until done is
// closed; ch is closed when the subscription ends (including
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
		groups := uint32(1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_IPV6_ROUTE-1) | 1<<(unix.RTNLGRP_IPV4_RULE-1) | 1<<(unix.RTNLGRP_IPV6_RULE-1))
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("route notification socket: %w", err)
	}
	if err := attachDeletionFilter(fd); err != nil {
		unix.Close(fd)
		return fmt.Errorf("route notification filter: %w", err)
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
				ev, ok := parseRouteEvent(&msgs[i])
				if !ok {
					continue
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

// parseRouteEvent reads a route or rule notification's type, protocol and
// table; ok is false for any other message.
func parseRouteEvent(m *syscall.NetlinkMessage) (routeEvent, bool) {
	switch m.Header.Type {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE, unix.RTM_NEWRULE, unix.RTM_DELRULE:
	default:
		return routeEvent{}, false
	}
	// A rule's header (fib_rule_hdr) has the table at the same offset as a
	// route's; its protocol is an attribute, left at zero here (rule events
	// are matched by table).
	if len(m.Data) < unix.SizeofRtMsg {
		return routeEvent{}, false
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
	return ev, true
}
