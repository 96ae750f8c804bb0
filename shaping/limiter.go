package shaping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is the userspace fallback of the shaper, for hosts without eBPF
// or TCX. It cannot see the kernel's packets: it shapes only what a
// userspace forwarding path (e.g. a wireguard-go device) hands it through
// Admit. Its semantics are the program's: the same classification, a
// golang.org/x/time/rate bucket per destination region with the same rate
// and burst, the same debt bound in ModeQueue (the caller delays the packet
// by the returned duration instead of a qdisc doing it).
type Limiter struct {
	mu       sync.Mutex
	mode     Mode
	delay    time.Duration
	mtu      int
	log      *slog.Logger
	table    prefixTable
	control  map[netip.Addr]bool
	buckets  map[string]*bucket
	counters map[string]*Counters
}

type bucket struct {
	rate  Rate
	lim   *rate.Limiter // events are bytes
	queue float64       // bytes of debt allowed
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
	o := Options{Interface: "-", PinPath: "-", Mode: opts.Mode, QueueDelay: opts.QueueDelay, Logger: opts.Logger}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if opts.MTU < 0 {
		return nil, fmt.Errorf("options: negative mtu %d", opts.MTU)
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	return &Limiter{
		mode: o.Mode, delay: o.QueueDelay, mtu: opts.MTU, log: o.Logger,
		control: map[netip.Addr]bool{}, buckets: map[string]*bucket{}, counters: map[string]*Counters{},
	}, nil
}

// Set replaces what the Limiter enforces. A region whose rate is unchanged
// keeps its bucket; a changed rate keeps the bucket's tokens, as the
// program does.
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
		if b.lim != nil && b.rate == r {
			continue
		}
		b.rate = r
		if r == 0 {
			b.lim = nil
			continue
		}
		limit := rate.Limit(float64(r) / 8)
		burst := int(min(BurstBytes(r, l.mtu), math.MaxInt32))
		if b.lim == nil {
			b.lim = rate.NewLimiter(limit, burst)
		} else {
			b.lim.SetLimitAt(now, limit)
			b.lim.SetBurstAt(now, burst)
		}
		b.queue = 0
		if l.mode == ModeQueue {
			b.queue = float64(QueueBytes(r, l.delay))
		}
		if l.counters[name] == nil {
			l.counters[name] = &Counters{}
		}
	}
	for name := range l.buckets {
		if _, ok := d.Regions[name]; !ok {
			delete(l.buckets, name)
			delete(l.counters, name)
		}
	}
	for name := range d.Regions {
		if l.counters[name] == nil {
			l.counters[name] = &Counters{}
		}
	}
	return nil
}

// Admit decides the fate of one IP packet (IPv4 or IPv6, no link-layer
// header) leaving at now: ok false means drop it; otherwise send it after
// delay (always 0 in ModePolice).
func (l *Limiter) Admit(packet []byte, now time.Time) (delay time.Duration, ok bool) {
	h, err := parseIP(packet)
	if err != nil {
		return 0, true // not IP: not CEN traffic
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	region, found := l.table.lookup(h.dst)
	if !found {
		return 0, true
	}
	b := l.buckets[region]
	if b == nil {
		return 0, true
	}
	c := l.counters[region]
	size := len(packet)
	if h.control || l.control[h.src] && l.control[h.dst] || b.lim == nil {
		c.PassedBytes += uint64(size)
		c.PassedPackets++
		return 0, true
	}
	// The program's test: the bucket refilled to now, minus the packet,
	// stays at or above -queue. TokensAt is x/time/rate's own refill.
	if b.lim.TokensAt(now)-float64(size) < -b.queue {
		c.DroppedBytes += uint64(size)
		c.DroppedPackets++
		return 0, false
	}
	r := b.lim.ReserveN(now, size)
	if !r.OK() { // larger than the burst
		c.DroppedBytes += uint64(size)
		c.DroppedPackets++
		return 0, false
	}
	c.PassedBytes += uint64(size)
	c.PassedPackets++
	return r.DelayFrom(now), true
}

// Counters returns the totals per region with a rate entry.
func (l *Limiter) Counters() (map[string]Counters, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]Counters, len(l.counters))
	for n, c := range l.counters {
		out[n] = *c
	}
	return out, nil
}

// Close forgets everything; the Limiter holds no kernel state.
func (l *Limiter) Close(cleanup bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buckets = map[string]*bucket{}
	l.counters = map[string]*Counters{}
	l.table = prefixTable{}
	return nil
}

type ipHeader struct {
	src, dst netip.Addr
	control  bool // BGP or BFD
}

var errNotIP = errors.New("not an ip packet")

// parseIP reads what the program reads: addresses and, for the first
// fragment of TCP/UDP, the ports.
func parseIP(p []byte) (ipHeader, error) {
	var h ipHeader
	if len(p) < 1 {
		return h, errNotIP
	}
	var proto byte
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return h, errNotIP
		}
		ihl := int(p[0]&0xf) * 4
		h.src = netip.AddrFrom4([4]byte(p[12:16]))
		h.dst = netip.AddrFrom4([4]byte(p[16:20]))
		proto = p[9]
		if binary.BigEndian.Uint16(p[6:8])&0x1fff == 0 && len(p) >= ihl {
			l4 = p[ihl:]
		}
	case 6:
		if len(p) < 40 {
			return h, errNotIP
		}
		h.src = netip.AddrFrom16([16]byte(p[8:24]))
		h.dst = netip.AddrFrom16([16]byte(p[24:40]))
		proto = p[6]
		l4 = p[40:]
	default:
		return h, errNotIP
	}
	if len(l4) >= 4 {
		sport := binary.BigEndian.Uint16(l4[0:2])
		dport := binary.BigEndian.Uint16(l4[2:4])
		h.control = isControlPort(proto, sport, dport)
	}
	return h, nil
}

func isControlPort(proto byte, sport, dport uint16) bool {
	switch proto {
	case 6: // TCP: BGP
		return sport == 179 || dport == 179
	case 17: // UDP: BFD single-hop, multi-hop, echo
		for _, p := range []uint16{3784, 3785, 4784} {
			if sport == p || dport == p {
				return true
			}
		}
	}
	return false
}

// prefixTable is a longest-prefix-match table: one map per prefix length
// in use, searched from the longest.
type prefixTable struct {
	lens4, lens6 []int
	byLen        map[int]map[netip.Prefix]string
}

func newPrefixTable(m map[netip.Prefix]string) prefixTable {
	t := prefixTable{byLen: map[int]map[netip.Prefix]string{}}
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for p, r := range m {
		key := p.Bits()
		if p.Addr().Is6() {
			key += 1000
			if !seen6[p.Bits()] {
				seen6[p.Bits()] = true
				t.lens6 = append(t.lens6, p.Bits())
			}
		} else if !seen4[p.Bits()] {
			seen4[p.Bits()] = true
			t.lens4 = append(t.lens4, p.Bits())
		}
		if t.byLen[key] == nil {
			t.byLen[key] = map[netip.Prefix]string{}
		}
		t.byLen[key][p] = r
	}
	sort.Sort(sort.Reverse(sort.IntSlice(t.lens4)))
	sort.Sort(sort.Reverse(sort.IntSlice(t.lens6)))
	return t
}

func (t prefixTable) lookup(a netip.Addr) (string, bool) {
	a = a.Unmap()
	lens, off := t.lens4, 0
	if a.Is6() {
		lens, off = t.lens6, 1000
	}
	for _, n := range lens {
		p, _ := a.Prefix(n)
		if r, ok := t.byLen[n+off][p]; ok {
			return r, true
		}
	}
	return "", false
}
