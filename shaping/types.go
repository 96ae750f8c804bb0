package shaping

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// Rate is a bandwidth in bits per second, decimal (1 Kbps = 1000 bps), as
// in the config file. In Desired.Regions, 0 means unlimited.
type Rate uint64

// Common rates.
const (
	Bps  Rate = 1
	Kbps Rate = 1000
	Mbps Rate = 1000 * Kbps
	Gbps Rate = 1000 * Mbps
)

// MaxRate is the highest rate a bucket takes. With 8e9 credit units per
// byte a bucket's burst, queue and one GSO packet of debt must fit a
// signed 64-bit counter (maxCreditBytes); Set also checks that bound with
// the configured queue delay.
const MaxRate = 50 * Gbps

// maxCreditBytes bounds burst + queue + one GSO packet, in bytes:
// 2^30 * 8e9 < 2^63.
const maxCreditBytes = 1 << 30

func (r Rate) String() string {
	switch {
	case r == 0:
		return "unlimited"
	case r%Gbps == 0:
		return fmt.Sprintf("%dGbps", r/Gbps)
	case r%Mbps == 0:
		return fmt.Sprintf("%dMbps", r/Mbps)
	case r%Kbps == 0:
		return fmt.Sprintf("%dKbps", r/Kbps)
	}
	return fmt.Sprintf("%dbps", uint64(r))
}

// Desired is everything the shaper of one gateway should enforce on its
// tunnel device's egress. It is plain data: the agent computes it from the
// config (rates of this gateway's share per destination region) and the
// routes (which prefix lives in which region).
type Desired struct {
	// Regions maps a destination region id (e.g. "us-west-1") to the egress
	// rate this gateway may send toward it, in bits per second; 0 means
	// unlimited (counted, never dropped). A region absent from Regions is
	// not shaped and not counted: this gateway's own region belongs here
	// only by absence.
	Regions map[string]Rate
	// Prefixes maps every CEN prefix to the region that holds it, the
	// gateway's own region included, so that the longest match decides
	// (10.0.0.0/8 in one region and 10.1.0.0/16 in another both work).
	// Prefixes must have no host bits set. Traffic to an address that
	// matches no prefix is not CEN traffic and passes untouched.
	Prefixes map[netip.Prefix]string
	// ControlAddrs are the addresses of all gateways of the instance
	// (their tunnel addresses, IPv4 and IPv6). A packet whose source and
	// destination are both in this set, and which the gateway itself sent,
	// is its own control traffic (BGP, BFD, probes) and is never shaped.
	// No port is exempt: a tenant's traffic is charged whatever its port.
	ControlAddrs []netip.Addr
}

// Counters are one destination region's totals since its bucket was made.
// Bytes are IP bytes, the headers of every GSO segment included.
type Counters struct {
	PassedBytes    uint64
	PassedPackets  uint64
	DroppedBytes   uint64
	DroppedPackets uint64
}

// Mode selects what happens to a packet that finds its bucket empty.
type Mode int

const (
	// ModeQueue (the default) lets a bucket run into debt up to
	// QueueBytes and stamps every admitted packet with the region's HTB
	// class, whose rate equals the bucket's: the debt is a queue in the
	// qdisc, so TCP sees delay before it sees loss. Packets beyond the
	// debt are dropped by the program.
	ModeQueue Mode = iota
	// ModePolice drops every packet that does not fit the bucket. No qdisc
	// is touched. Measured to fall short of the allocation with TCP; kept
	// for hosts where the qdisc belongs to someone else and for the
	// benchmark.
	ModePolice
)

func (m Mode) String() string {
	switch m {
	case ModeQueue:
		return "queue"
	case ModePolice:
		return "police"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// BurstWindow is how much time worth of rate a bucket holds when full.
const BurstWindow = 10 * time.Millisecond

// DefaultQueueDelay bounds the debt of a bucket in ModeQueue: the longest
// a packet waits in the region's HTB class.
const DefaultQueueDelay = 100 * time.Millisecond

// BurstBytes is a bucket's depth for a rate and a device whose largest
// packet is maxPacket IP bytes (its MTU):
//
//	burst = max(rate/8 * BurstWindow, maxPacket)
//
// Why: 10 ms of rate absorbs the back-to-back segments a TSO/GRO sender or
// one dequeue round of the qdisc puts on the wire without counting them as
// excess, and is short enough that a flow cannot exceed its allocation by
// more than 10 ms worth of bytes. The floor of one full packet keeps every
// packet size deliverable at any rate: at 1 Kbps (125 B/s) a default ping
// (84 IP bytes a second) always fits, and a full-size packet still gets
// through about every 12 s instead of never.
func BurstBytes(rate Rate, maxPacket int) uint64 {
	b := uint64(rate) / 8 * uint64(BurstWindow) / uint64(time.Second)
	if b < uint64(maxPacket) {
		b = uint64(maxPacket)
	}
	return b
}

// QueueBytes is the debt a bucket may run into in ModeQueue: delay worth
// of rate.
func QueueBytes(rate Rate, delay time.Duration) uint64 {
	if delay <= 0 {
		return 0
	}
	return uint64(float64(rate) / 8 * delay.Seconds())
}

// MaxExcessBytes bounds what a bucket may admit beyond rate*T over any
// window T: it may start the window full (burst), end it in debt (queue,
// in ModeQueue; pass 0 otherwise) and admit one oversize GSO packet past
// that debt. A rate measured from the counters over T can exceed the
// allocation by this much divided by T, and no more.
func MaxExcessBytes(rate Rate, maxPacket int, queueDelay time.Duration) uint64 {
	return BurstBytes(rate, maxPacket) + QueueBytes(rate, queueDelay) + maxOversize
}

// maxRegionName is the longest region id, in bytes.
const maxRegionName = 63

// validate checks d; it reports every problem it finds.
func (d Desired) validate() error {
	var errs []error
	for _, name := range sortedKeys(d.Regions) {
		if err := checkRegionName(name); err != nil {
			errs = append(errs, fmt.Errorf("regions: %w", err))
		}
		if r := d.Regions[name]; r > MaxRate {
			errs = append(errs, fmt.Errorf("regions: region %q: rate %d bps is above the maximum %s", name, uint64(r), MaxRate))
		}
	}
	for p, name := range d.Prefixes {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("prefixes: invalid prefix %v for region %q", p, name))
		case p != p.Masked():
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q has host bits set (want %v)", p, name, p.Masked()))
		case p.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q is IPv4-mapped IPv6; write it as IPv4", p, name))
		case p.Addr().Zone() != "":
			errs = append(errs, fmt.Errorf("prefixes: prefix %v of region %q has a zone", p, name))
		}
		if err := checkRegionName(name); err != nil {
			errs = append(errs, fmt.Errorf("prefixes: prefix %v: %w", p, err))
		}
	}
	for _, a := range d.ControlAddrs {
		if !a.IsValid() {
			errs = append(errs, errors.New("control_addrs: invalid address"))
		}
	}
	return errors.Join(errs...)
}

func checkRegionName(name string) error {
	if name == "" {
		return errors.New("empty region id")
	}
	if len(name) > maxRegionName {
		return fmt.Errorf("region id %q is longer than %d bytes", name, maxRegionName)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return fmt.Errorf("region id %q contains a NUL byte", name)
		}
	}
	return nil
}

// regionNames is every region d mentions, sorted.
func (d Desired) regionNames() []string {
	set := map[string]bool{}
	for n := range d.Regions {
		set[n] = true
	}
	for _, n := range d.Prefixes {
		set[n] = true
	}
	return sortedKeys(set)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
