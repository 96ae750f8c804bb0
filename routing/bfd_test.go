package routing

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/net/ipv4"
)

// bfdEnd is one gatewayBFD with its onDown calls recorded.
type bfdEnd struct {
	b     *gatewayBFD
	mu    sync.Mutex
	downs []time.Time
}

func startBFDEnd(t *testing.T, local netip.Addr, port int, peers ...netip.Addr) *bfdEnd {
	t.Helper()
	e := &bfdEnd{}
	b, err := newGatewayBFD(testLogger(t).With("node", local.String()), bfdConfig{
		Local: local, Port: port, Interval: 100 * time.Millisecond, Mult: 3,
		OnDown: func(netip.Addr) {
			e.mu.Lock()
			e.downs = append(e.downs, time.Now())
			e.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.setPeers(peers)
	e.b = b
	return e
}

func (e *bfdEnd) lastDown() (time.Time, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.downs) == 0 {
		return time.Time{}, 0
	}
	return e.downs[len(e.downs)-1], len(e.downs)
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestGatewayBFD: two gateways' BFD come up; one that stops answering is
// declared down within the detection time plus the batching's two
// intervals, and reported once; one that restarts (its first packets say
// Down under a new discriminator, which an Up session does not take) is
// declared down by the detection time and comes back up; what is not from
// a configured peer, or not BFD, is ignored.
func TestGatewayBFD(t *testing.T) {
	port := freeUDPPort(t)
	a := startBFDEnd(t, addrA, port, addrB)
	defer a.b.close()
	b := startBFDEnd(t, addrB, port, addrA)
	waitFor(t, 3*time.Second, "both sessions up", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })

	// Garbage and strangers change nothing.
	junk, err := net.DialUDP("udp4", &net.UDPAddr{IP: addrC.AsSlice()}, &net.UDPAddr{IP: addrA.AsSlice(), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	junk.Write([]byte("not bfd"))
	junk.Write(make([]byte, 24))
	junk.Close()
	time.Sleep(300 * time.Millisecond)
	if a.b.state(addrB) != "up" {
		t.Fatalf("a's session went %s after junk", a.b.state(addrB))
	}
	if _, n := a.lastDown(); n != 0 {
		t.Fatalf("%d downs reported while b answers", n)
	}

	// b hangs (its socket is closed: nothing more is sent).
	stop := time.Now()
	b.b.close()
	waitFor(t, 2*time.Second, "a declares b down", func() bool { _, n := a.lastDown(); return n == 1 })
	at, _ := a.lastDown()
	if took := at.Sub(stop); took > 600*time.Millisecond || took < 200*time.Millisecond {
		t.Errorf("b declared down %v after it stopped, want 300-500ms (100ms x 3, read every 100ms)", took)
	}
	if s := a.b.state(addrB); s != "down" {
		t.Errorf("a's session to b is %s, want down", s)
	}
	time.Sleep(500 * time.Millisecond)
	if _, n := a.lastDown(); n != 1 {
		t.Errorf("%d downs reported for one failure", n)
	}

	// b comes back: up again.
	b = startBFDEnd(t, addrB, port, addrA)
	waitFor(t, 3*time.Second, "both sessions up again", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })

	// b restarts faster than the detection time: its new session's
	// unbound Down packets do not touch a's Up session, whose detection
	// time takes it down.
	b.b.close()
	stop = time.Now()
	b = startBFDEnd(t, addrB, port, addrA)
	defer b.b.close()
	waitFor(t, 2*time.Second, "a declares b down", func() bool { _, n := a.lastDown(); return n == 2 })
	at, _ = a.lastDown()
	if took := at.Sub(stop); took > 600*time.Millisecond || took < 200*time.Millisecond {
		t.Errorf("restarted b declared down %v after, want 300-500ms (the detection time)", took)
	}
	waitFor(t, 3*time.Second, "both sessions up after the restart", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })

	// A peer removed by setPeers has no session.
	a.b.setPeers(nil)
	if s := a.b.state(addrB); s != "" {
		t.Errorf("removed peer's session is %q", s)
	}
}

// spoofer sends BFD packets claiming addrB's address from a port of its
// own, with the TTL it is given.
type spoofer struct {
	t    *testing.T
	c    *net.UDPConn
	to   *net.UDPAddr
	conn *ipv4.Conn
}

func newSpoofer(t *testing.T, to netip.Addr, port int) *spoofer {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: addrB.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &spoofer{t: t, c: c, to: &net.UDPAddr{IP: to.AsSlice(), Port: port}, conn: ipv4.NewConn(c)}
}

// send sends n copies of h with ttl, each with a fresh random My
// Discriminator when h's is zero.
func (s *spoofer) send(h bfd.BFDHeader, ttl, n int) {
	s.t.Helper()
	if err := s.conn.SetTTL(ttl); err != nil {
		s.t.Fatal(err)
	}
	random := h.MyDiscriminator == 0
	for i := range n {
		if random {
			h.MyDiscriminator = newDiscriminator()
		}
		pkt, err := h.MarshalBinary()
		if err != nil {
			s.t.Fatal(err)
		}
		if _, err := s.c.WriteToUDP(pkt, s.to); err != nil {
			s.t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // within the socket buffer
		}
	}
}

func (e *bfdEnd) discs(peer netip.Addr) (mine, yours uint32) {
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	s := e.b.sessions[peer]
	return s.myDisc, s.yourDisc
}

// TestGatewayBFDSpoofedDown: packets that claim the peer's address but do
// not belong to the session leave an Up session up: a Down with Your
// Discriminator 0 (unbound, whatever its My Discriminator), and a Down with
// the right discriminators that arrived with a TTL below 255 (something
// routed it). The same Down with TTL 255 does take the session down: the
// test sees a packet that counts.
func TestGatewayBFDSpoofedDown(t *testing.T) {
	port := freeUDPPort(t)
	a := startBFDEnd(t, addrA, port, addrB)
	defer a.b.close()
	b := startBFDEnd(t, addrB, port, addrA)
	defer b.b.close()
	waitFor(t, 3*time.Second, "both sessions up", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })
	sp := newSpoofer(t, addrA, port)
	down := bfd.BFDHeader{Version: 1, State: bfd.StateDown, DetectTimeMultiplier: 3,
		DesiredMinTxInterval: 100_000, RequiredMinRxInterval: 100_000}
	stillUp := func(what string) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		if s := a.b.state(addrB); s != "up" {
			t.Fatalf("%s: a's session is %s, want up", what, s)
		}
		if _, n := a.lastDown(); n != 0 {
			t.Fatalf("%s: %d downs reported", what, n)
		}
	}
	sp.send(down, 255, 2000)
	stillUp("2000 unbound Down packets")

	mine, yours := a.discs(addrB)
	bound := down
	bound.MyDiscriminator, bound.YourDiscriminator = yours, mine
	sp.send(bound, 254, 50)
	stillUp("bound Down packets with TTL 254")

	sp.send(bound, 255, 1)
	waitFor(t, time.Second, "a takes the session down on a bound Down with TTL 255", func() bool { _, n := a.lastDown(); return n == 1 })
	waitFor(t, 3*time.Second, "both sessions up again", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })
}

// TestBFDAccepts is the discriminator rule table.
func TestBFDAccepts(t *testing.T) {
	const mine, theirs = 11, 22
	for _, c := range []struct {
		name  string
		state bfd.StateType // ours
		bound uint32        // the remote discriminator we know
		h     bfd.BFDHeader
		want  bool
	}{
		{"ours, up", bfd.StateUp, theirs, bfd.BFDHeader{State: bfd.StateUp, MyDiscriminator: theirs, YourDiscriminator: mine, DetectTimeMultiplier: 3}, true},
		{"someone else's your-discriminator", bfd.StateUp, theirs, bfd.BFDHeader{State: bfd.StateDown, MyDiscriminator: theirs, YourDiscriminator: 99, DetectTimeMultiplier: 3}, false},
		{"unbound down while up", bfd.StateUp, theirs, bfd.BFDHeader{State: bfd.StateDown, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, false},
		{"unbound admin-down while up", bfd.StateUp, theirs, bfd.BFDHeader{State: bfd.StateAdminDown, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, false},
		{"unbound up", bfd.StateDown, 0, bfd.BFDHeader{State: bfd.StateUp, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, false},
		{"unbound init", bfd.StateDown, 0, bfd.BFDHeader{State: bfd.StateInit, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, false},
		{"unbound down while down", bfd.StateDown, 0, bfd.BFDHeader{State: bfd.StateDown, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, true},
		{"unbound down in init, same remote", bfd.StateInit, theirs, bfd.BFDHeader{State: bfd.StateDown, MyDiscriminator: theirs, DetectTimeMultiplier: 3}, true},
		{"unbound down in init, another remote", bfd.StateInit, theirs, bfd.BFDHeader{State: bfd.StateDown, MyDiscriminator: 33, DetectTimeMultiplier: 3}, false},
		{"zero multiplier", bfd.StateUp, theirs, bfd.BFDHeader{State: bfd.StateUp, MyDiscriminator: theirs, YourDiscriminator: mine}, false},
		{"zero my-discriminator", bfd.StateDown, 0, bfd.BFDHeader{State: bfd.StateDown, DetectTimeMultiplier: 3}, false},
	} {
		s := &bfdSession{state: c.state, myDisc: mine, yourDisc: c.bound}
		if got := accepts(s, &c.h); got != c.want {
			t.Errorf("%s: accepts = %v, want %v", c.name, got, c.want)
		}
	}
}
