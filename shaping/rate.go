package shaping

import (
	"fmt"
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

// unitsPerByte matches UNITS_PER_BYTE in bpf/shaper.c: a bucket of rate r
// bits/s earns exactly r credit units a nanosecond.
const unitsPerByte = 8_000_000_000

// maxOversize bounds the IP bytes of one GSO packet (64 KiB of payload
// plus the headers of its segments).
const maxOversize = 1 << 17

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

// Mode selects what happens to a packet that finds its bucket empty.
type Mode int

const (
	// ModeQueue (the default) lets a bucket run into debt up to
	// QueueBytes and stamps every admitted packet with the region's HTB
	// class, whose rate equals the bucket's: the debt is a queue in the
	// qdisc, so TCP sees delay first and loss only beyond the debt, where
	// the program drops.
	ModeQueue Mode = iota
	// ModePolice drops every packet that does not fit the bucket. No qdisc
	// is touched. TCP falls short of the allocation under it (every drop
	// cuts a window that has no queue to drain from); it is kept for hosts
	// where the qdisc belongs to someone else and for the benchmark.
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
