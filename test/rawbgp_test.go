package test

import (
	bgpbin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/opencen/opencen/internal/testutil"
)

// BGP message types and the path attributes the raw peer writes (RFC 4271,
// RFC 6793).
const (
	msgOpen         = 1
	msgUpdate       = 2
	msgNotification = 3
	msgKeepalive    = 4

	attrOrigin  = 1
	attrASPath  = 2
	attrNextHop = 3
	attrAS4Path = 17

	flagOptional   = 0x80
	flagTransitive = 0x40
	flagPartial    = 0x20
	wellKnown      = flagTransitive
)

// notification is a NOTIFICATION's error code and subcode.
type notification struct{ code, subcode byte }

func (n notification) String() string { return fmt.Sprintf("%d/%d", n.code, n.subcode) }

// rawPeer is an on-premises router written by hand: it listens where the
// gateway dials its VBR neighbor, completes the OPEN exchange as a
// 4-octet-AS speaker of IPv4 unicast, keeps the session alive, and sends
// whatever bytes the test gives it, malformed ones included. It records
// the NOTIFICATIONs it receives.
type rawPeer struct {
	t   *testing.T
	as  uint32
	id  netip.Addr
	ln  net.Listener
	mu  sync.Mutex
	c   net.Conn
	got chan notification // one connection's NOTIFICATIONs
	eof chan struct{}     // closed when that connection ends
}

// listenRawPeer listens on addr port 179 in namespace ns until the test
// ends.
func listenRawPeer(t *testing.T, ns string, addr netip.Addr, as uint32) *rawPeer {
	p := &rawPeer{t: t, as: as, id: addr}
	err := testutil.InNetNS(ns, func() (err error) {
		p.ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 179).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.ln.Close()
		p.mu.Lock()
		if p.c != nil {
			p.c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

// accept takes the gateway's next connection and brings the session to
// Established: the gateway's OPEN read, ours sent, KEEPALIVEs exchanged.
func (p *rawPeer) accept(timeout time.Duration) {
	p.t.Helper()
	p.ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	c, err := p.ln.Accept()
	if err != nil {
		p.t.Fatalf("raw peer: no connection from the gateway: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if typ, body, err := readMsg(c); err != nil || typ != msgOpen {
		p.t.Fatalf("raw peer: want the gateway's OPEN, got type %d %x: %v", typ, body, err)
	}
	p.write(c, msgOpen, p.open())
	p.write(c, msgKeepalive, nil)
	if typ, body, err := readMsg(c); err != nil || typ != msgKeepalive {
		p.t.Fatalf("raw peer: want a KEEPALIVE after the OPENs, got type %d %x: %v", typ, body, err)
	}
	c.SetDeadline(time.Time{})
	got, eof := make(chan notification, 8), make(chan struct{})
	p.mu.Lock()
	p.c, p.got, p.eof = c, got, eof
	p.mu.Unlock()
	go readUntilEOF(c, got, eof)
	go func() {
		for {
			select {
			case <-eof:
				return
			case <-time.After(time.Second):
				if _, err := c.Write(frame(msgKeepalive, nil)); err != nil {
					return
				}
			}
		}
	}()
}

// readUntilEOF reads the gateway's messages, keeping its NOTIFICATIONs,
// until the connection ends.
func readUntilEOF(c net.Conn, got chan<- notification, eof chan<- struct{}) {
	defer close(eof)
	for {
		typ, body, err := readMsg(c)
		if err != nil {
			return
		}
		if typ == msgNotification && len(body) >= 2 {
			select {
			case got <- notification{body[0], body[1]}:
			default:
			}
		}
	}
}

// open is our OPEN: version 4, AS_TRANS in the two-octet field when the AS
// needs four, hold time 90 s, capabilities multiprotocol IPv4 unicast and
// four-octet AS.
func (p *rawPeer) open() []byte {
	as2 := uint16(23456)
	if p.as <= 0xffff {
		as2 = uint16(p.as)
	}
	caps := []byte{1, 4, 0, 1, 0, 1, 65, 4}
	caps = bgpbin.BigEndian.AppendUint32(caps, p.as)
	b := []byte{4}
	b = bgpbin.BigEndian.AppendUint16(b, as2)
	b = bgpbin.BigEndian.AppendUint16(b, 90)
	b = append(b, p.id.AsSlice()...)
	b = append(b, byte(2+len(caps)), 2, byte(len(caps)))
	return append(b, caps...)
}

// send writes one message of type typ on the current connection.
func (p *rawPeer) send(typ byte, body []byte) {
	p.t.Helper()
	p.mu.Lock()
	c := p.c
	p.mu.Unlock()
	p.write(c, typ, body)
}

func (p *rawPeer) write(c net.Conn, typ byte, body []byte) {
	p.t.Helper()
	if _, err := c.Write(frame(typ, body)); err != nil {
		p.t.Fatalf("raw peer: write type %d: %v", typ, err)
	}
}

// closed waits up to timeout for the gateway to end the current
// connection and returns the NOTIFICATION it sent first, if any.
func (p *rawPeer) closed(timeout time.Duration) (n notification, ended bool) {
	p.mu.Lock()
	got, eof := p.got, p.eof
	p.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-eof:
	default:
		select {
		case <-eof:
		case <-timer.C:
			return notification{}, false
		}
	}
	select {
	case n = <-got:
	default:
	}
	return n, true
}

// frame is a BGP message: marker, length, type, body.
func frame(typ byte, body []byte) []byte {
	b := make([]byte, 16, 19+len(body))
	for i := range b {
		b[i] = 0xff
	}
	b = bgpbin.BigEndian.AppendUint16(b, uint16(19+len(body)))
	return append(append(b, typ), body...)
}

// readMsg reads one BGP message.
func readMsg(r io.Reader) (typ byte, body []byte, err error) {
	var h [19]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(bgpbin.BigEndian.Uint16(h[16:]))
	if n < 19 || n > 4096 {
		return 0, nil, errors.New("bad message length")
	}
	body = make([]byte, n-19)
	_, err = io.ReadFull(r, body)
	return h[18], body, err
}

// attr is a path attribute with a one-octet length: flags, type, the
// length given (which may lie) and the value.
func pathAttr(flags, typ byte, length int, value []byte) []byte {
	return append([]byte{flags, typ, byte(length)}, value...)
}

// asPath is an AS_PATH (or AS4_PATH) value of one AS_SEQUENCE.
func asPath(asns ...uint32) []byte {
	b := []byte{2, byte(len(asns))}
	for _, as := range asns {
		b = bgpbin.BigEndian.AppendUint32(b, as)
	}
	return b
}

// goodAttrs are ORIGIN IGP, AS_PATH as and NEXT_HOP nh.
func goodAttrs(as uint32, nh netip.Addr) [][]byte {
	return [][]byte{
		pathAttr(wellKnown, attrOrigin, 1, []byte{0}),
		pathAttr(wellKnown, attrASPath, 6, asPath(as)),
		pathAttr(wellKnown, attrNextHop, 4, nh.AsSlice()),
	}
}

// update is an UPDATE body withdrawing withdrawn and announcing nlri with
// the attributes given, whose Total Path Attribute Length is their
// length plus extra (a lie when extra is not 0).
func update(withdrawn []netip.Prefix, attrs [][]byte, extra int, nlri ...netip.Prefix) []byte {
	w := encodePrefixes(withdrawn)
	b := bgpbin.BigEndian.AppendUint16(nil, uint16(len(w)))
	b = append(b, w...)
	var a []byte
	for _, x := range attrs {
		a = append(a, x...)
	}
	b = bgpbin.BigEndian.AppendUint16(b, uint16(len(a)+extra))
	b = append(b, a...)
	return append(b, encodePrefixes(nlri)...)
}

// encodePrefixes is the NLRI encoding: a length octet, then the prefix's
// significant octets.
func encodePrefixes(ps []netip.Prefix) []byte {
	var b []byte
	for _, p := range ps {
		b = append(b, byte(p.Bits()))
		b = append(b, p.Addr().AsSlice()[:(p.Bits()+7)/8]...)
	}
	return b
}
