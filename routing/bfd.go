package routing

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/sys/unix"
)

// GatewayBFDPort is the UDP port of BFD between gateways (inside the
// tunnel, from tunnel address to tunnel address). It is BFD's multihop port
// (RFC 5883), not 3784, because GoBGP's own BFD server holds 3784 for the
// VBR sessions that ask for BFD; the shaper exempts both from shaping.
const GatewayBFDPort = 4784

// gatewayBFD runs BFD (RFC 5880 control packets, asynchronous mode, the
// same Interval x Multiplier detection) on every gateway session, in
// batches: one goroutine and one ticker for all peers. On each tick it
// reads every packet queued on its socket, declares down the sessions that
// have heard nothing for the detection time, and sends one packet to every
// peer.
//
// Why not GoBGP's BFD, which VBR sessions keep: it runs a ticker and a
// goroutine per peer and hands each received packet from a reader
// goroutine to the peer's one, so every peer's every packet is a separate
// wake-up (two per peer and interval), each waking the Go scheduler (and
// with it an idle P's thread, and sysmon): on an idle agent that is most
// of its CPU. Here the socket is not in Go's poller, so a packet arriving
// between ticks wakes no thread, and the whole mesh costs one wake-up per
// interval. The idle agent's CPU is measured by BenchmarkIdleAgent in
// test/ (make bench-agent).
//
// The price: packets are read on ticks, so a dead peer is declared down
// on the tick that has read nothing for the detection time, up to one
// interval later than per-packet BFD would: with the defaults (100ms x 3)
// between 300 and 400ms after its last packet, well inside SPEC's one
// second for failover (BenchmarkFailover).
type gatewayBFD struct {
	log      *slog.Logger
	interval time.Duration
	mult     uint8
	port     int
	fd       int
	// onDown is called, from the loop and without locks held, when a
	// session that is up goes down: the peer stopped answering or said it
	// is down.
	onDown func(netip.Addr)

	mu       sync.Mutex
	sessions map[netip.Addr]*bfdSession
	ticks    uint64 // ticks so far: the loop's clock

	stop chan struct{}
	done chan struct{}
}

type bfdSession struct {
	state            bfd.StateType
	myDisc, yourDisc uint32
	// lastRx is the tick that last read a packet of the session, detect
	// the detection time in ticks. Counting ticks rather than comparing
	// the times ticks fired keeps a late tick from making a live peer look
	// silent (or a dead one alive a tick longer); a dropped tick (a loop
	// slower than the interval) only delays detection.
	lastRx, detect uint64
	final          bool // a Poll to answer with the next packet
	diag           bfd.DiagnosticType
}

// newGatewayBFD opens the socket on local:port and starts the loop.
func newGatewayBFD(log *slog.Logger, local netip.Addr, port int, interval time.Duration, mult uint32, onDown func(netip.Addr)) (*gatewayBFD, error) {
	if !local.Is4() {
		return nil, fmt.Errorf("gateway bfd: local address %s is not IPv4", local)
	}
	if mult == 0 || mult > 255 {
		return nil, fmt.Errorf("gateway bfd: multiplier %d out of range 1-255", mult)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("gateway bfd: socket: %w", err)
	}
	// RFC 5881: TTL 255 on every packet.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, 255); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("gateway bfd: set ttl: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: local.As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("gateway bfd: listen on %s udp port %d: %w", local, port, err)
	}
	b := &gatewayBFD{
		log: log, interval: interval, mult: uint8(mult), port: port, fd: fd, onDown: onDown,
		sessions: map[netip.Addr]*bfdSession{},
		stop:     make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b, nil
}

// setPeers makes the sessions those of peers: new ones start down, gone
// ones are dropped, the others keep their state.
func (b *gatewayBFD) setPeers(peers []netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	want := make(map[netip.Addr]bool, len(peers))
	for _, p := range peers {
		want[p] = true
		if b.sessions[p] == nil {
			b.sessions[p] = &bfdSession{state: bfd.StateDown, myDisc: newDiscriminator()}
		}
	}
	for p := range b.sessions {
		if !want[p] {
			delete(b.sessions, p)
		}
	}
}

// state is a session's state as Status names it: "up", "down", "init", or
// "" for a peer without a session.
func (b *gatewayBFD) state(peer netip.Addr) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[peer]
	if s == nil {
		return ""
	}
	switch s.state {
	case bfd.StateUp:
		return "up"
	case bfd.StateInit:
		return "init"
	case bfd.StateAdminDown:
		return "admin-down"
	}
	return "down"
}

// close stops the loop and closes the socket. Peers see the sessions
// expire, as they would if this host died.
func (b *gatewayBFD) close() {
	close(b.stop)
	<-b.done
	unix.Close(b.fd)
}

// run ticks on wall-clock multiples of the interval: the same instants on
// every gateway (NTP keeps hosts within milliseconds of each other), so
// the whole mesh's packets cross the tunnels in one burst per interval, and
// receivers, WireGuard helpers included, take them in one wake-up rather
// than one per peer.
func (b *gatewayBFD) run() {
	defer close(b.done)
	t := time.NewTimer(untilTick(time.Now(), b.interval))
	defer t.Stop()
	buf := make([]byte, 512)
	var down []netip.Addr
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			down = b.tick(buf, down[:0])
			t.Reset(untilTick(time.Now(), b.interval))
			for _, p := range down {
				b.onDown(p)
			}
		}
	}
}

// untilTick is the time from now to the next wall-clock multiple of
// interval (never zero, so a tick that ran early is not run twice).
func untilTick(now time.Time, interval time.Duration) time.Duration {
	return now.Truncate(interval).Add(interval).Sub(now)
}

// tick reads what arrived, expires silent sessions and sends one packet to
// every peer; it returns the sessions that went down.
func (b *gatewayBFD) tick(buf []byte, down []netip.Addr) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ticks++
	now := b.ticks
	for range 4096 { // bounded: a flood cannot keep the loop here
		n, from, err := unix.Recvfrom(b.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				b.log.Debug("bfd read", "err", err)
			}
			break
		}
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok {
			continue
		}
		peer := netip.AddrFrom4(sa.Addr)
		s := b.sessions[peer]
		if s == nil {
			continue
		}
		var h bfd.BFDHeader
		if h.UnmarshalBinary(buf[:n]) != nil || h.Validate() != nil || h.Version != 1 {
			continue
		}
		if b.receive(peer, s, &h, now) {
			down = append(down, peer)
		}
	}
	for peer, s := range b.sessions {
		if (s.state == bfd.StateUp || s.state == bfd.StateInit) && now-s.lastRx >= s.detect {
			if s.state == bfd.StateUp {
				b.log.Warn("bfd session down: detection time expired", "neighbor", peer, "silent", time.Duration(now-s.lastRx)*b.interval)
				down = append(down, peer)
			}
			s.state, s.yourDisc, s.diag = bfd.StateDown, 0, bfd.DiagnosticControlDetectionTimeExpired
		}
		b.send(peer, s)
	}
	return down
}

// receive applies one control packet (RFC 5880 section 6.8.6) and reports
// whether the session went down.
func (b *gatewayBFD) receive(peer netip.Addr, s *bfdSession, h *bfd.BFDHeader, now uint64) bool {
	if h.DetectTimeMultiplier == 0 || h.MyDiscriminator == 0 {
		return false
	}
	if h.YourDiscriminator != 0 {
		if h.YourDiscriminator != s.myDisc {
			return false
		}
	} else if h.State != bfd.StateDown && h.State != bfd.StateAdminDown {
		return false
	}
	s.lastRx = now
	// Detection time: the remote's multiplier times the slower of our
	// receive interval and its transmit interval.
	rx := b.interval
	if tx := time.Duration(h.DesiredMinTxInterval) * time.Microsecond; tx > rx {
		rx = tx
	}
	detect := time.Duration(h.DetectTimeMultiplier) * rx
	s.detect = uint64((detect + b.interval - 1) / b.interval)
	if h.Poll {
		s.final = true
	}
	switch {
	case h.State == bfd.StateAdminDown:
		if s.state != bfd.StateDown {
			// Not a failure (RFC 5882 section 3.2): BGP stays up.
			b.log.Info("bfd session down: the peer disabled it", "neighbor", peer)
			s.state, s.yourDisc, s.diag = bfd.StateDown, 0, bfd.DiagnosticNeighborSignaledSessionDown
		}
		return false
	case s.state == bfd.StateDown && h.State == bfd.StateDown:
		s.state, s.yourDisc = bfd.StateInit, h.MyDiscriminator
	case s.state == bfd.StateDown && h.State == bfd.StateInit,
		s.state == bfd.StateInit && (h.State == bfd.StateInit || h.State == bfd.StateUp):
		s.state, s.yourDisc, s.diag = bfd.StateUp, h.MyDiscriminator, bfd.DiagnosticNoDiagnostic
		b.log.Info("bfd session up", "neighbor", peer)
	case s.state == bfd.StateUp && h.State == bfd.StateDown:
		b.log.Warn("bfd session down: the peer says so", "neighbor", peer)
		s.state, s.yourDisc, s.diag = bfd.StateDown, 0, bfd.DiagnosticNeighborSignaledSessionDown
		return true
	}
	return false
}

func (b *gatewayBFD) send(peer netip.Addr, s *bfdSession) {
	h := bfd.BFDHeader{
		Version:               1,
		Diagnostic:            s.diag,
		State:                 s.state,
		Final:                 s.final,
		DetectTimeMultiplier:  b.mult,
		MyDiscriminator:       s.myDisc,
		YourDiscriminator:     s.yourDisc,
		DesiredMinTxInterval:  uint32(b.interval / time.Microsecond),
		RequiredMinRxInterval: uint32(b.interval / time.Microsecond),
	}
	s.final = false
	pkt, err := h.MarshalBinary()
	if err != nil {
		return
	}
	// Non-blocking: a full socket buffer (a dead tunnel) drops the packet,
	// as the wire would.
	if err := unix.Sendto(b.fd, pkt, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: b.port, Addr: peer.As4()}); err != nil &&
		!errors.Is(err, unix.EAGAIN) {
		b.log.Debug("bfd send", "neighbor", peer, "err", err)
	}
}

func newDiscriminator() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if d := binary.BigEndian.Uint32(b[:]); d != 0 {
			return d
		}
	}
}
