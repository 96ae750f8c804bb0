package routing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// sessionLog records OnSessions calls.
type sessionLog struct {
	mu    sync.Mutex
	calls [][]SessionUp
	at    []time.Time
}

func (l *sessionLog) record(ss []SessionUp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, ss)
	l.at = append(l.at, time.Now())
}

// last returns the latest call as "name:up" strings, and the number of
// calls so far.
func (l *sessionLog) last() ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		return nil, 0
	}
	return sessionStrings(l.calls[len(l.calls)-1]), len(l.calls)
}

func sessionStrings(ss []SessionUp) []string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%s/%s/%s:%v", s.Kind, s.Name, s.Neighbor, s.Up))
	}
	return out
}

// TestOnSessions: session changes reach OnSessions as GoBGP reports them
// (no polling): first every configured session, down; then each one as it
// comes up; a closed peer at once; a session removed by Set. Consecutive
// calls always differ, and Sessions() agrees with the latest.
func TestOnSessions(t *testing.T) {
	port := freePort(t)
	log := &sessionLog{}
	// With BFD: gateway sessions run the speaker's own (gatewayBFD), on
	// each speaker's address, so two speakers share this namespace.
	bfdOn := func(o *Options) { o.BFD.Disable = false }
	b := startNode(t, port, desiredB(addrB, addrC, "gw-c"), func(o *Options) { o.OnSessions = log.record }, bfdOn)
	first := func() []string {
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.calls) == 0 {
			return nil
		}
		return sessionStrings(log.calls[0])
	}
	waitFor(t, 5*time.Second, "the first OnSessions call", func() bool { return first() != nil })
	if got, want := first(), []string{"gateway/gw-a/127.0.0.2:false", "gateway/gw-c/127.0.0.4:false"}; !slices.Equal(got, want) {
		t.Fatalf("first call %v, want %v", got, want)
	}

	c := startNode(t, port, desiredB(addrC, addrB, "gw-b"), bfdOn)
	upC := []string{"gateway/gw-a/127.0.0.2:false", "gateway/gw-c/127.0.0.4:true"}
	waitFor(t, 30*time.Second, "gw-c up", func() bool { got, _ := log.last(); return slices.Equal(got, upC) })
	waitFor(t, 5*time.Second, "BFD up with gw-c", func() bool {
		st, err := b.s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		bfd := map[string]string{}
		for _, ss := range st.Sessions {
			bfd[ss.Name] = ss.BFD
		}
		return bfd["gw-c"] == "up" && bfd["gw-a"] == "down"
	})
	if got := sessionStrings(b.s.Sessions()); !slices.Equal(got, upC) {
		t.Fatalf("Sessions() = %v, want %v", got, upC)
	}

	// An idle speaker makes no calls.
	_, n := log.last()
	time.Sleep(1500 * time.Millisecond)
	if _, m := log.last(); m != n {
		t.Fatalf("%d calls while nothing changed", m-n)
	}

	// gw-c stops (a NOTIFICATION): reported at once.
	stop := time.Now()
	c.s.Close(false)
	downC := []string{"gateway/gw-a/127.0.0.2:false", "gateway/gw-c/127.0.0.4:false"}
	waitFor(t, 5*time.Second, "gw-c down", func() bool { got, _ := log.last(); return slices.Equal(got, downC) })
	log.mu.Lock()
	took := log.at[len(log.at)-1].Sub(stop)
	log.mu.Unlock()
	if took > time.Second {
		t.Errorf("gw-c down reported after %v, want at once", took)
	}

	// A session removed by Set leaves the list.
	d := desiredB(addrB, addrC, "gw-c")
	d.Gateways = d.Gateways[1:]
	if err := b.s.Set(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "gw-a removed", func() bool {
		got, _ := log.last()
		return slices.Equal(got, []string{"gateway/gw-c/127.0.0.4:false"})
	})

	log.mu.Lock()
	defer log.mu.Unlock()
	for i := 1; i < len(log.calls); i++ {
		if slices.Equal(log.calls[i], log.calls[i-1]) {
			t.Errorf("calls %d and %d are the same: %v", i-1, i, sessionStrings(log.calls[i]))
		}
	}
}
