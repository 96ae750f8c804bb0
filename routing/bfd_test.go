package routing

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
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
	b, err := newGatewayBFD(testLogger(t).With("node", local.String()), local, port, 100*time.Millisecond, 3, func(netip.Addr) {
		e.mu.Lock()
		e.downs = append(e.downs, time.Now())
		e.mu.Unlock()
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
// Down) is declared down at once and comes back up; what is not from a
// configured peer, or not BFD, is ignored.
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

	// b restarts faster than the detection time: its new session's Down
	// tells a at once.
	b.b.close()
	stop = time.Now()
	b = startBFDEnd(t, addrB, port, addrA)
	defer b.b.close()
	waitFor(t, 2*time.Second, "a declares b down", func() bool { _, n := a.lastDown(); return n == 2 })
	at, _ = a.lastDown()
	if took := at.Sub(stop); took > 300*time.Millisecond {
		t.Errorf("restarted b declared down %v after, want at b's first packet", took)
	}
	waitFor(t, 3*time.Second, "both sessions up after the restart", func() bool { return a.b.state(addrB) == "up" && b.b.state(addrA) == "up" })

	// A peer removed by setPeers has no session.
	a.b.setPeers(nil)
	if s := a.b.state(addrB); s != "" {
		t.Errorf("removed peer's session is %q", s)
	}
}
