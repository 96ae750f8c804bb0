package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeSocket writes routes to the kernel many to a netlink message: each
// route is one RTM_NEWROUTE or RTM_DELROUTE request without NLM_F_ACK, so
// the kernel answers only the ones that fail, and only the last request of
// a batch asks for an acknowledgement, which says the whole batch is
// processed (rtnetlink handles a message's requests in order, in the
// sender's system call). A route written alone through netlink.Handle
// costs a send and a receive and an acknowledgement built for it: for
// 100,000 routes that is twice the system calls of the writes' own work.
//
// A routeSocket serves one goroutine at a time.
type routeSocket struct {
	fd   int
	seq  uint32
	out  []byte
	in   []byte
	errs map[uint32]int // seq -> index in the batch
}

// routeBatchBytes bounds one batch's message (well under the socket's
// send buffer).
const routeBatchBytes = 32 << 10

// openRouteSocket opens a route socket in the namespace at nsPath ("" is
// the current one).
func openRouteSocket(nsPath string) (*routeSocket, error) {
	var fd int
	err := inNetNS(nsPath, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("route socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route socket: %w", err)
	}
	// Errors carry only the failed request's header, not the request.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	// The kernel answers within the send; never wait forever regardless.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30})
	return &routeSocket{fd: fd, in: make([]byte, 64<<10)}, nil
}

func (s *routeSocket) Close() error { return unix.Close(s.fd) }

// writeRoutes replaces (or with del deletes) routes, calling fail for each
// one the kernel refused or that could not be sent.
func (s *routeSocket) writeRoutes(del bool, routes []netlink.Route, fail func(i int, err error)) {
	if s.errs == nil {
		s.errs = map[uint32]int{}
	}
	for next := 0; next < len(routes); {
		s.out = s.out[:0]
		clear(s.errs)
		lastOff := -1
		for ; next < len(routes) && len(s.out) < routeBatchBytes; next++ {
			off := len(s.out)
			out, err := appendRouteRequest(s.out, del, s.seq+1, &routes[next])
			if err != nil {
				fail(next, err)
				continue
			}
			s.seq++
			s.out, s.errs[s.seq], lastOff = out, next, off
		}
		if lastOff < 0 {
			continue
		}
		// The last request asks for the acknowledgement that closes the
		// batch.
		flags := binary.NativeEndian.Uint16(s.out[lastOff+6:])
		binary.NativeEndian.PutUint16(s.out[lastOff+6:], flags|unix.NLM_F_ACK)
		s.flush(s.seq, fail)
	}
}

// flush sends one batch and reads its answers until the acknowledgement
// of its last request, whose sequence number is last.
func (s *routeSocket) flush(last uint32, fail func(i int, err error)) {
	failAll := func(err error) {
		for _, i := range s.errs {
			fail(i, err)
		}
	}
	if err := unix.Sendto(s.fd, s.out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		failAll(fmt.Errorf("send routes: %w", err))
		return
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.in, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			failAll(fmt.Errorf("read route answers: %w", err))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(s.in[:n])
		if err != nil {
			failAll(fmt.Errorf("read route answers: %w", err))
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			i, ours := s.errs[m.Header.Seq]
			if !ours {
				continue // an answer to a batch that gave up
			}
			if errno := -int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
				fail(i, syscall.Errno(errno))
			}
			if m.Header.Seq == last {
				return
			}
		}
	}
}

// appendRouteRequest appends one route request, built as netlink.Handle's
// RouteReplace and RouteDel build it for the fields opencen sets (a
// deletion matches any scope, see ownedRoute).
func appendRouteRequest(b []byte, del bool, seq uint32, r *netlink.Route) ([]byte, error) {
	if r.Dst == nil || r.Dst.IP == nil {
		return b, errors.New("route without a destination")
	}
	dst := r.Dst.IP.To4()
	family := uint8(unix.AF_INET)
	if dst == nil {
		dst, family = r.Dst.IP.To16(), unix.AF_INET6
	}
	bits, _ := r.Dst.Mask.Size()
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	rtType, protocol, scope := uint8(unix.RTN_UNICAST), uint8(unix.RTPROT_BOOT), uint8(r.Scope)
	if del {
		typ, flags, rtType, protocol = unix.RTM_DELROUTE, unix.NLM_F_REQUEST, 0, 0
	}
	if r.Type > 0 {
		rtType = uint8(r.Type)
	}
	if r.Protocol > 0 {
		protocol = uint8(r.Protocol)
	}
	table := uint8(unix.RT_TABLE_MAIN)
	if r.Table >= 256 {
		table = unix.RT_TABLE_UNSPEC
	} else if r.Table > 0 {
		table = uint8(r.Table)
	}
	start := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set below
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // pid: the kernel
	b = append(b, family, uint8(bits), 0, 0, table, protocol, scope, rtType)
	b = binary.NativeEndian.AppendUint32(b, uint32(r.Flags))
	b = appendAttr(b, unix.RTA_DST, dst)
	if r.Src != nil {
		b = appendAttr(b, unix.RTA_PREFSRC, ipBytes(r.Src, family))
	}
	if r.Gw != nil {
		b = appendAttr(b, unix.RTA_GATEWAY, ipBytes(r.Gw, family))
	}
	if len(r.MultiPath) > 0 {
		var nhs []byte
		for _, nh := range r.MultiPath {
			at := len(nhs)
			nhs = binary.NativeEndian.AppendUint16(nhs, 0) // rtnh_len, set below
			nhs = append(nhs, uint8(nh.Flags), uint8(nh.Hops))
			nhs = binary.NativeEndian.AppendUint32(nhs, uint32(nh.LinkIndex))
			if nh.Gw != nil {
				nhs = appendAttr(nhs, unix.RTA_GATEWAY, ipBytes(nh.Gw, family))
			}
			binary.NativeEndian.PutUint16(nhs[at:], uint16(len(nhs)-at))
		}
		b = appendAttr(b, unix.RTA_MULTIPATH, nhs)
	}
	if r.Priority > 0 {
		b = appendAttr(b, unix.RTA_PRIORITY, binary.NativeEndian.AppendUint32(nil, uint32(r.Priority)))
	}
	if r.Table >= 256 {
		b = appendAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, uint32(r.Table)))
	}
	if r.LinkIndex > 0 {
		b = appendAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(r.LinkIndex)))
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}

func ipBytes(ip net.IP, family uint8) []byte {
	if family == unix.AF_INET {
		if v4 := ip.To4(); v4 != nil {
			return v4
		}
	}
	return ip.To16()
}

// appendAttr appends a netlink attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}
