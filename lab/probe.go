package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/opencen/opencen/internal/nsdo"
)

// Failover probing: UDP flows from one lab host to an echo responder on
// another, every flow a socket of its own (its own source port), each
// sending a numbered packet every Interval and timing the echoes.
//
// Why UDP and not ping: gateways and hosts spread flows over a region's
// gateways with net.ipv4.fib_multipath_hash_policy=1, which hashes
// addresses and ports. ICMP echoes have no ports (the kernel does not hash
// the echo id), so every ping between two hosts takes the same gateway each
// way, picked by a hash seed that is random per namespace: a ping-based
// trial crosses the killed gateway in one direction or the other only by
// luck, and when it crosses neither it measures nothing. Sixteen UDP flows
// with distinct source ports spread over both gateways in both directions
// (the echo goes back by its own hash, from the responder's side).
//
// Sockets are created inside the hosts' namespaces (a locked thread enters
// the namespace for the socket call; a socket stays in the namespace it is
// created in), so no helper process is needed and every timestamp comes
// from one clock.

// ProbeOptions shape a failover probe.
type ProbeOptions struct {
	Flows    int           // parallel flows; default 16
	Interval time.Duration // per flow; default 10ms
	Port     int           // the responder's UDP port; default 7007
	// IPv6 probes between the hosts' IPv6 addresses instead of their IPv4
	// ones.
	IPv6 bool
}

func (o ProbeOptions) withDefaults() ProbeOptions {
	if o.Flows <= 0 {
		o.Flows = 16
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Port == 0 {
		o.Port = 7007
	}
	return o
}

// FlowOutage is what one probe flow saw.
type FlowOutage struct {
	SourcePort int     `json:"source_port"`
	Sent       int     `json:"sent"`
	Received   int     `json:"received"`
	Lost       int     `json:"lost"` // sequence numbers never echoed
	GapMs      float64 `json:"gap_ms"`
	// GapStartMs is when the longest gap began (the last echo ahead of
	// it), relative to the event (the kill); negative when the gap began
	// ahead of the event.
	GapStartMs float64 `json:"gap_start_ms"`
	// Recovered is false when no echo came back after the gap within the
	// probe: the outage then lasts at least GapMs.
	Recovered bool `json:"recovered"`
}

// Probe is a running failover probe.
type Probe struct {
	o        ProbeOptions
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	echo     *net.UDPConn
	flows    []*probeFlow
	start    time.Time
	stopOnce sync.Once
}

type probeFlow struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent int
	recv map[uint32]time.Time // seq -> arrival of its echo
}

// StartProbe starts an echo responder on host to and Flows flows from host
// from toward it, between their primary addresses of the family o asks
// for.
func (l *Lab) StartProbe(ctx context.Context, from, to string, o ProbeOptions) (*Probe, error) {
	o = o.withDefaults()
	fromNS, err := l.Namespace(from)
	if err != nil {
		return nil, err
	}
	toNS, err := l.Namespace(to)
	if err != nil {
		return nil, err
	}
	dst, ok := l.Host(to)
	if !ok {
		return nil, fmt.Errorf("no host %q in the lab", to)
	}
	src, ok := l.Host(from)
	if !ok {
		return nil, fmt.Errorf("no host %q in the lab", from)
	}
	network := "udp4"
	if o.IPv6 {
		network = "udp6"
	}
	srcAddr, dstAddr := src.Primary(o.IPv6), dst.Primary(o.IPv6)
	if !srcAddr.IsValid() || !dstAddr.IsValid() {
		return nil, fmt.Errorf("probe %s -> %s: no %s address on both", from, to, familyName(o.IPv6))
	}
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, uint16(o.Port)))
	ctx, cancel := context.WithCancel(ctx)
	p := &Probe{o: o, cancel: cancel}
	fail := func(err error) (*Probe, error) {
		p.Stop()
		return nil, err
	}
	err = nsdo.InNamed(toNS, func() error {
		var err error
		p.echo, err = net.ListenUDP(network, raddr)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("probe responder on %s: %w", to, err))
	}
	p.wg.Add(1)
	go p.serveEcho()
	for range o.Flows {
		var c *net.UDPConn
		err := nsdo.InNamed(fromNS, func() error {
			var err error
			c, err = net.DialUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(srcAddr, 0)), raddr)
			return err
		})
		if err != nil {
			return fail(fmt.Errorf("probe flow from %s: %w", from, err))
		}
		p.flows = append(p.flows, &probeFlow{conn: c, recv: map[uint32]time.Time{}})
	}
	p.start = time.Now()
	for _, f := range p.flows {
		p.wg.Add(2)
		go func() { defer p.wg.Done(); f.receive() }()
		go func() { defer p.wg.Done(); f.send(ctx, o.Interval) }()
	}
	return p, nil
}

// serveEcho answers every datagram on the responder's socket with itself,
// until the socket closes.
func (p *Probe) serveEcho() {
	defer p.wg.Done()
	buf := make([]byte, 64)
	for {
		n, addr, err := p.echo.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		_, _ = p.echo.WriteToUDPAddrPort(buf[:n], addr)
	}
}

// receive records the arrival of each sequence number's first echo, until
// the flow's socket closes.
func (f *probeFlow) receive() {
	buf := make([]byte, 64)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			return
		}
		if n < 4 {
			continue
		}
		now, seq := time.Now(), binary.BigEndian.Uint32(buf)
		f.mu.Lock()
		if _, dup := f.recv[seq]; !dup {
			f.recv[seq] = now
		}
		f.mu.Unlock()
	}
}

// send sends numbered datagrams every interval until ctx ends.
func (f *probeFlow) send(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	msg := make([]byte, 32)
	for seq := uint32(0); ; seq++ {
		binary.BigEndian.PutUint32(msg, seq)
		// A send may fail while routes change (no route, a failed
		// neighbour): that is loss, as it would be for a host.
		_, _ = f.conn.Write(msg)
		f.mu.Lock()
		f.sent++
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Stop ends the probe: no more sends, then a grace of a quarter second
// for echoes in flight, then the sockets close.
func (p *Probe) Stop() {
	p.stopOnce.Do(func() {
		p.cancel()
		time.Sleep(250 * time.Millisecond)
		for _, f := range p.flows {
			f.conn.Close()
		}
		if p.echo != nil {
			p.echo.Close()
		}
		p.wg.Wait()
	})
}

// Outages stops the probe and returns, per flow, its longest gap between
// consecutive echoes minus one interval (a flow that loses nothing has a
// gap of about zero), with times relative to event. When echoes stopped
// and never came back, the gap runs to the probe's end and the flow is
// marked not recovered.
func (p *Probe) Outages(event time.Time) []FlowOutage {
	p.Stop()
	// Stop ends the sends, then waits a grace period for the echoes in
	// flight: the sends ended that long ago.
	end := time.Now().Add(-250 * time.Millisecond)
	var out []FlowOutage
	for _, f := range p.flows {
		f.mu.Lock()
		fo := FlowOutage{SourcePort: f.conn.LocalAddr().(*net.UDPAddr).Port, Sent: f.sent, Received: len(f.recv), Recovered: true}
		var (
			prev    time.Time
			have    bool
			lastSeq int
			gap     time.Duration
		)
		for seq := range f.sent {
			at, ok := f.recv[uint32(seq)]
			if !ok {
				fo.Lost++
				continue
			}
			if have {
				if g := at.Sub(prev) - p.o.Interval; g > gap {
					gap, fo.GapStartMs = g, ms(prev.Sub(event))
				}
			}
			prev, have, lastSeq = at, true, seq
		}
		if !have {
			prev = p.start
		}
		if tail := end.Sub(prev); (!have || lastSeq+1 < f.sent) && tail > 5*p.o.Interval {
			fo.Recovered = false
			if tail > gap {
				gap, fo.GapStartMs = tail, ms(prev.Sub(event))
			}
		}
		fo.GapMs = ms(max(gap, 0))
		f.mu.Unlock()
		out = append(out, fo)
	}
	return out
}

// settled reports whether no flow missed an echo among its sends of the
// last window (the last five intervals' are left to be in flight): the
// outage, if any, is over.
func (p *Probe) settled(window time.Duration) bool {
	n := int(window / p.o.Interval)
	for _, f := range p.flows {
		f.mu.Lock()
		last := f.sent - 5
		for seq := max(last-n, 0); seq < last; seq++ {
			if _, ok := f.recv[uint32(seq)]; !ok {
				f.mu.Unlock()
				return false
			}
		}
		f.mu.Unlock()
	}
	return true
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
