package routing

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/sys/unix"
)

// GatewayBFDPort is the UDP port of BFD between gateways (inside the
// tunnel, from tunnel address to tunnel address). It is BFD's multihop port
// (RFC 5883), not 3784, because GoBGP's own BFD server holds 3784 for the
// VBR sessions that ask for BFD; the shaper exempts both from shaping.
const GatewayBFDPort = 4784

// bfdTTL is the TTL every packet is sent with and every packet must
// arrive with (RFC 5881 section 5, the GTSM of RFC 5082): a packet that
// crossed a router on its way has less, whatever its source says.
const bfdTTL = 255

// gatewayBFD runs BFD (RFC 5880 control packets, asynchronous mode, the
// same Interval x Multiplier detection) on every gateway session: one
// goroutine reads packets as they arrive, and one ticker sends one packet
// to every peer and expires silent sessions, for all peers at once.
//
// What a packet must be to count (anything else is dropped, uncounted by
// the session, without a log line):
//
//   - received through the tunnel device (the socket is bound to it with
//     SO_BINDTODEVICE): WireGuard accepts a gateway's tunnel address as a
//     source only from that gateway's key, so a packet claiming a peer's
//     address from a LAN, a VBR link or the underlay never reaches the
//     socket;
//   - sent with TTL 255 and received with 255 (IP_RECVTTL): nothing
//     routed it, so no host behind a peer gateway can pass for the peer;
//   - from a configured peer's tunnel address, BFD version 1, without
//     authentication or multipoint bits;
//   - bound to the session (RFC 5880 section 6.8.6, and GoBGP 4.8.0's
//     unbound-discriminator check): a nonzero Your Discriminator must be
//     ours; a zero one is accepted only from a remote in Down or AdminDown,
//     never while our session is Up, and once the remote's discriminator
//     is known, only with that discriminator. A remote that restarts with
//     a new one is therefore taken down by the detection time, not by its
//     first packet.
//
// Reads are prompt: the reader blocks in recvmsg on the socket and takes
// each packet as it arrives, draining whatever queued behind it, so a
// flood of packets that do not count cannot fill the socket's buffer ahead
// of a peer's packet. A packet costs bounded work: one header parse, one
// map look-up under the lock, no log line.
//
// Sending is batched on wall-clock ticks. Why not GoBGP's BFD, which VBR
// sessions keep: it runs a ticker and a goroutine per peer and hands each
// received packet from a reader goroutine to the peer's one, so every
// peer's every packet is two wake-ups, each waking the Go scheduler (and
// with it an idle P's thread, and sysmon): on an idle agent that is most
// of its CPU. Here every gateway ticks at the same wall-clock instants, so
// the mesh's packets arrive in one burst per interval that the reader
// takes in few wake-ups, and the ticker costs one. The idle agent's CPU is
// measured by BenchmarkIdleAgent in test/ (make bench-agent).
//
// Expiry is checked on ticks: a dead peer is declared down on the tick
// that has heard nothing for the detection time, up to one interval later
// than a per-session timer would: with the defaults (100ms x 3) between
// 300 and 400ms after its last packet, well inside SPEC's one second for
// failover (BenchmarkFailover).
type gatewayBFD struct {
	log      *slog.Logger
	interval time.Duration
	mult     uint8
	port     int
	device   string // the tunnel device the socket is bound to; "" for none
	fd       int
	// onDown is called, from the loops and without locks held, when a
	// session that is up goes down: the peer stopped answering or said it
	// is down.
	onDown func(netip.Addr)

	mu       sync.Mutex
	sessions map[netip.Addr]*bfdSession
	ticks    uint64 // ticks so far: the loop's clock
	rebind   bool   // a send found the device gone: bind again

	closing atomic.Bool
	stop    chan struct{}
	done    sync.WaitGroup
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

// bfdConfig is what newGatewayBFD opens and runs.
type bfdConfig struct {
	Local    netip.Addr // the gateway's tunnel address: the socket's
	Device   string     // the tunnel device; "" binds to no device (tests on loopback)
	Port     int
	Interval time.Duration
	Mult     uint32
	OnDown   func(netip.Addr)
}

// newGatewayBFD opens the socket on c.Local:c.Port, bound to c.Device,
// and starts the reader and the ticker.
func newGatewayBFD(log *slog.Logger, c bfdConfig) (*gatewayBFD, error) {
	if !c.Local.Is4() {
		return nil, fmt.Errorf("gateway bfd: local address %s is not IPv4", c.Local)
	}
	if c.Mult == 0 || c.Mult > 255 {
		return nil, fmt.Errorf("gateway bfd: multiplier %d out of range 1-255", c.Mult)
	}
	fd, err := openBFDSocket(c.Local, c.Port, c.Device)
	if err != nil {
		return nil, err
	}
	b := &gatewayBFD{
		log: log, interval: c.Interval, mult: uint8(c.Mult), port: c.Port, device: c.Device, fd: fd, onDown: c.OnDown,
		sessions: map[netip.Addr]*bfdSession{},
		stop:     make(chan struct{}),
	}
	b.done.Add(2)
	go b.run()
	go b.read()
	return b, nil
}

// openBFDSocket opens a blocking UDP socket on local:port that sends with
// TTL 255, reports each packet's TTL, and, with a device, hears only
// what arrives through it and sends only through it.
func openBFDSocket(local netip.Addr, port int, device string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("gateway bfd: socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("gateway bfd: %s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, bfdTTL); err != nil {
		return fail("set ttl", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1); err != nil {
		return fail("ask for the ttl of received packets", err)
	}
	if device != "" {
		if err := unix.BindToDevice(fd, device); err != nil {
			return fail("bind to tunnel device "+device, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: local.As4()}); err != nil {
		return fail(fmt.Sprintf("listen on %s udp port %d", local, port), err)
	}
	return fd, nil
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

// close stops both loops and closes the socket. Peers see the sessions
// expire, as they would if this host died.
func (b *gatewayBFD) close() {
	b.closing.Store(true)
	// Shutting the socket down wakes the reader out of recvmsg (closing
	// it would not); on an unconnected socket the call reports ENOTCONN
	// and still does so.
	_ = unix.Shutdown(b.fd, unix.SHUT_RDWR)
	close(b.stop)
	b.done.Wait()
	unix.Close(b.fd)
}

// run ticks on wall-clock multiples of the interval: the same instants on
// every gateway (NTP keeps hosts within milliseconds of each other), so
// the whole mesh's packets cross the tunnels in one burst per interval, and
// receivers, WireGuard helpers included, take them in one wake-up rather
// than one per peer.
func (b *gatewayBFD) run() {
	defer b.done.Done()
	t := time.NewTimer(untilTick(time.Now(), b.interval))
	defer t.Stop()
	var down []netip.Addr
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			down = b.tick(down[:0])
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

// read takes packets off the socket as they arrive until close.
func (b *gatewayBFD) read() {
	defer b.done.Done()
	buf := make([]byte, 128) // a control packet without authentication is 24 bytes
	oob := make([]byte, unix.CmsgSpace(4)*2)
	for {
		n, oobn, flags, from, err := unix.Recvmsg(b.fd, buf, oob, 0)
		if b.closing.Load() {
			return
		}
		if err != nil {
			if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
				// Not a packet's fault (ENOMEM, a device going away):
				// pause, so a persistent error cannot spin.
				b.log.Debug("bfd read", "err", err)
				time.Sleep(b.interval / 10)
			}
			continue
		}
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || receivedTTL(oob[:oobn]) != bfdTTL {
			continue
		}
		if peer := netip.AddrFrom4(sa.Addr); b.handle(buf[:n], peer) {
			b.onDown(peer)
		}
	}
}

// receivedTTL is the TTL that IP_RECVTTL reported in oob, or -1.
func receivedTTL(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return -1
}

// handle applies one packet that arrived with TTL 255 from peer, and
// reports whether it took an up session down.
func (b *gatewayBFD) handle(pkt []byte, peer netip.Addr) bool {
	var h bfd.BFDHeader
	// Byte 1 holds the A (authentication) and M (multipoint) bits, which
	// sessions between gateways never set (RFC 5880 section 6.8.6).
	if len(pkt) < 24 || pkt[1]&0x05 != 0 || h.UnmarshalBinary(pkt) != nil || h.Validate() != nil || h.Version != 1 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[peer]
	if s == nil {
		return false
	}
	return b.receive(peer, s, &h, b.ticks)
}

// tick expires silent sessions and sends one packet to every peer; it
// returns the sessions that went down.
func (b *gatewayBFD) tick(down []netip.Addr) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ticks++
	now := b.ticks
	if b.rebind {
		b.rebind = false
		if err := unix.BindToDevice(b.fd, b.device); err != nil {
			b.log.Debug("bfd: binding to the tunnel device again", "device", b.device, "err", err)
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

// accepts applies the discriminator rules of RFC 5880 section 6.8.6 with
// GoBGP's unbound-discriminator check: whether h belongs to session s.
func accepts(s *bfdSession, h *bfd.BFDHeader) bool {
	if h.DetectTimeMultiplier == 0 || h.MyDiscriminator == 0 {
		return false
	}
	if h.YourDiscriminator != 0 {
		return h.YourDiscriminator == s.myDisc
	}
	// A zero Your Discriminator binds to no session: it comes only from a
	// remote that has not learned ours (Down or AdminDown), is never heard
	// while ours is Up (an Up remote knows our discriminator), and once
	// the remote's discriminator is known, must carry it.
	if h.State != bfd.StateDown && h.State != bfd.StateAdminDown {
		return false
	}
	if s.state == bfd.StateUp {
		return false
	}
	return s.yourDisc == 0 || h.MyDiscriminator == s.yourDisc
}

// receive applies one control packet (RFC 5880 section 6.8.6) and reports
// whether the session went down.
func (b *gatewayBFD) receive(peer netip.Addr, s *bfdSession, h *bfd.BFDHeader, now uint64) bool {
	if !accepts(s, h) {
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

// send sends s's packet to peer; b.mu is held.
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
	err = unix.Sendto(b.fd, pkt, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: b.port, Addr: peer.As4()})
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN):
	case b.device != "" && errors.Is(err, unix.ENODEV):
		// The binding names the device by index: a device created
		// again (a restarted WireGuard helper) has a new one.
		b.rebind = true
	default:
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
