package shaping

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is the shaper's decision in userspace: the program's
// classification (longest prefix match on the destination, the gateways'
// own traffic exempt) and a golang.org/x/time/rate bucket per destination
// region with the program's rate, burst and debt bound (ModeQueue). It
// sees only the packets it is handed: [TUN] hands it every packet the
// userspace WireGuard device reads from its TUN, and applies the delay it
// returns. It is safe for concurrent use.
type Limiter struct {
	// Fixed by NewLimiter.
	mode  Mode
	delay time.Duration // the queue bound of ModeQueue
	log   *slog.Logger

	// idle is set while no region is counted: Admit has nothing to do,
	// and TUN skips it without taking the lock.
	idle atomic.Bool

	mu      sync.Mutex          // guards the fields below
	mtu     int                 // the burst floor
	table   prefixTable         // destination prefix -> region
	control map[netip.Addr]bool // the gateways' addresses
	buckets map[string]*bucket  // one for each region with a rate entry
}

// bucket is one region's: its limiter and its counters.
type bucket struct {
	rate     Rate
	burst    int
	lim      *rate.Limiter // events are bytes; nil for an unlimited region
	queue    float64       // bytes of debt allowed
	counters Counters
}

// LimiterOptions configure a Limiter.
type LimiterOptions struct {
	// Mode and QueueDelay as in Options.
	Mode       Mode
	QueueDelay time.Duration
	// MTU is the largest IP packet the forwarding path carries (default
	// 1420, a WireGuard device's); it sets the burst floor.
	MTU    int
	Logger *slog.Logger
}

// NewLimiter returns an empty Limiter: everything passes until Set.
func NewLimiter(opts LimiterOptions) (*Limiter, error) {
	o := Options{Interface: "-", Mode: opts.Mode, QueueDelay: opts.QueueDelay, Logger: opts.Logger}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if opts.MTU < 0 {
		return nil, fmt.Errorf("options: negative mtu %d", opts.MTU)
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	l := &Limiter{
		mode: o.Mode, delay: o.QueueDelay, mtu: opts.MTU, log: o.Logger,
		control: map[netip.Addr]bool{}, buckets: map[string]*bucket{},
	}
	l.idle.Store(true)
	return l, nil
}

// setMTU changes the burst floor; the next Set applies it.
func (l *Limiter) setMTU(mtu int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mtu > 0 {
		l.mtu = mtu
	}
}

// Set replaces what the Limiter enforces. A region whose rate and burst
// are unchanged keeps its bucket; a changed rate keeps the bucket's
// tokens, as the program does. Counters of a region kept are kept.
func (l *Limiter) Set(d Desired) error {
	if err := d.validate(); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.table = newPrefixTable(d.Prefixes)
	l.control = make(map[netip.Addr]bool, len(d.ControlAddrs))
	for _, a := range d.ControlAddrs {
		l.control[a.Unmap()] = true
	}
	now := time.Now()
	for name, r := range d.Regions {
		b := l.buckets[name]
		if b == nil {
			b = &bucket{}
			l.buckets[name] = b
		}
		queue := 0.0
		if l.mode == ModeQueue {
			queue = float64(QueueBytes(r, l.delay))
		}
		b.set(r, int(min(BurstBytes(r, l.mtu), math.MaxInt32)), queue, now)
	}
	for name := range l.buckets {
		if _, ok := d.Regions[name]; !ok {
			delete(l.buckets, name)
		}
	}
	l.idle.Store(len(l.buckets) == 0)
	return nil
}

// set gives b rate r, burst and queue at now; an unchanged rate and burst
// leave it as it is.
func (b *bucket) set(r Rate, burst int, queue float64, now time.Time) {
	if b.rate == r && (r == 0 || b.lim != nil && b.burst == burst) {
		return
	}
	down := r < b.rate
	b.rate, b.burst = r, burst
	if r == 0 {
		b.lim = nil
		return
	}
	limit := rate.Limit(float64(r) / 8)
	b.queue = queue
	if b.lim == nil {
		b.lim = rate.NewLimiter(limit, burst)
		return
	}
	b.lim.SetLimitAt(now, limit)
	b.lim.SetBurstAt(now, burst)
	if down && b.lim.TokensAt(now) < -b.queue {
		// As the program does: the debt run up at the old rate is cut
		// to the new bound, or a region lowered from 20 Mbps to 1 Kbps
		// would pay 100 ms of 20 Mbps back for half an hour.
		b.lim = limiterAt(limit, burst, now, -b.queue)
	}
}

// limiterAt is a limiter whose bucket holds tokens (at most burst,
// possibly negative) at now: a full one, with tokens-burst reserved.
func limiterAt(limit rate.Limit, burst int, now time.Time, tokens float64) *rate.Limiter {
	lim := rate.NewLimiter(limit, burst)
	for debt := float64(burst) - tokens; debt >= 1; {
		n := int(min(debt, float64(burst)))
		lim.ReserveN(now, n)
		debt -= float64(n)
	}
	return lim
}

// Admit decides the fate of one IP packet (IPv4 or IPv6, no link-layer
// header) leaving at now: ok false means drop it; otherwise send it after
// delay (always 0 in ModePolice).
func (l *Limiter) Admit(packet []byte, now time.Time) (delay time.Duration, ok bool) {
	_, delay, ok = l.admit(packet, now)
	return delay, ok
}

// admit is Admit, also naming the region whose bucket decided: "" when no
// bucket did (the packet is not shaped).
func (l *Limiter) admit(packet []byte, now time.Time) (region string, delay time.Duration, ok bool) {
	if l.idle.Load() {
		return "", 0, true
	}
	src, dst, err := parseIP(packet)
	if err != nil {
		return "", 0, true // not IP: not CEN traffic
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	region, found := l.table.lookup(dst)
	if !found {
		return "", 0, true
	}
	b := l.buckets[region]
	if b == nil {
		return "", 0, true
	}
	c := &b.counters
	size := len(packet)
	if l.control[src] && l.control[dst] || b.lim == nil {
		c.PassedBytes += uint64(size)
		c.PassedPackets++
		return "", 0, true
	}
	// The program's test: the bucket refilled to now, minus the packet,
	// stays at or above -queue. TokensAt is x/time/rate's own refill.
	if b.lim.TokensAt(now)-float64(size) < -b.queue {
		c.DroppedBytes += uint64(size)
		c.DroppedPackets++
		return region, 0, false
	}
	r := b.lim.ReserveN(now, size)
	if !r.OK() { // larger than the burst
		c.DroppedBytes += uint64(size)
		c.DroppedPackets++
		return region, 0, false
	}
	c.PassedBytes += uint64(size)
	c.PassedPackets++
	return region, r.DelayFrom(now), true
}

// Counters returns the totals per region with a rate entry.
func (l *Limiter) Counters() (map[string]Counters, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]Counters, len(l.buckets))
	for n, b := range l.buckets {
		out[n] = b.counters
	}
	return out, nil
}
