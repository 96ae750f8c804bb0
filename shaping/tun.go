package shaping

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// TUN is the userspace shaper (PathUserspace): a tun.Device whose Read
// shapes every packet the userspace WireGuard device (wireguard-go) reads
// from its TUN, that is every packet leaving through the tunnel, while it
// is still unencrypted. Each packet goes through the Limiter (the
// program's classification and buckets) and then:
//
//   - not shaped (no region, the gateway's own region, an unlimited
//     region, the gateways' own traffic): handed to WireGuard at once, in
//     place, with no copy;
//   - refused by its bucket (beyond burst plus the queue bound): dropped;
//   - admitted with a delay: a small packet (at most 256 bytes: pings,
//     keystrokes, DNS) goes at once, as the kernel's small-packet class
//     lets it; any other waits in its region's FIFO until the time the
//     bucket gave it, while every other region's packets go on.
//
// The delay is ModeQueue's debt: at most the queue bound, 100 ms by
// default, so TCP sees a queue drained at the rate, not a policer. No
// goroutine and no copy on the common path: Read releases due packets
// first, and sets the TUN file's read deadline to the next due time, so a
// blocked read returns when a queued packet is due. Read must be called
// from one goroutine at a time, as wireguard-go does.
type TUN struct {
	tun.Device
	lim *Limiter // safe for concurrent use: Set and Counters go to it

	// Read's own state, with no lock: Read runs on one goroutine at a
	// time.
	file     *os.File     // the TUN's, whose read deadline wakes Read
	deadline time.Time    // the read deadline set on file
	waiting  regionQueues // packets admitted with a delay
}

// smallPacketBytes matches SMALL_PACKET in bpf/shaper.c.
const smallPacketBytes = 256

// NewTUN wraps dev, a TUN whose File can take a read deadline (as
// wireguard-go's Linux TUN can). It passes everything until Set.
func NewTUN(dev tun.Device, opts LimiterOptions) (*TUN, error) {
	f := dev.File()
	if f == nil {
		return nil, errors.New("tun device has no file")
	}
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("tun device cannot wake its reader: %w", err)
	}
	if mtu, err := dev.MTU(); err == nil && opts.MTU == 0 {
		opts.MTU = mtu
	}
	lim, err := NewLimiter(opts)
	if err != nil {
		return nil, err
	}
	return &TUN{Device: dev, lim: lim, file: f, waiting: regionQueues{byRegion: map[string]*pktQueue{}}}, nil
}

// Set makes the device enforce d, as Shaper.Set does; Desired{} lets
// everything pass.
func (t *TUN) Set(d Desired) error {
	if mtu, err := t.Device.MTU(); err == nil {
		t.lim.setMTU(mtu)
	}
	return t.lim.Set(d)
}

// Counters returns the totals per region, as Shaper.Counters does.
func (t *TUN) Counters() (map[string]Counters, error) { return t.lim.Counters() }

// Read reads packets for WireGuard to send: queued packets whose time has
// come first, then what the TUN holds, shaped. A packet the shaper drops
// or queues is returned with size 0, which wireguard-go skips.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		now := time.Now()
		if n := t.waiting.release(now, bufs, sizes, offset); n > 0 {
			return n, nil
		}
		if err := t.wakeAt(t.waiting.nextDue()); err != nil {
			return 0, err
		}
		n, err := t.Device.Read(bufs, sizes, offset)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if n > 0 && !t.lim.idle.Load() {
			t.shape(bufs[:n], sizes, offset, time.Now())
		}
		return n, err
	}
}

// shape decides the packets just read, in place.
func (t *TUN) shape(bufs [][]byte, sizes []int, offset int, now time.Time) {
	for i := range bufs {
		p := bufs[i][offset : offset+sizes[i]]
		region, delay, ok := t.lim.admit(p, now)
		switch {
		case !ok:
			sizes[i] = 0
		case delay <= 0 && t.waiting.empty(region), len(p) <= smallPacketBytes:
			// Goes now.
		default:
			t.waiting.push(region, p, now.Add(delay))
			sizes[i] = 0
		}
	}
}

// wakeAt makes a blocked read return at due (never, for zero).
func (t *TUN) wakeAt(due time.Time) error {
	if due.Equal(t.deadline) {
		return nil
	}
	if err := t.file.SetReadDeadline(due); err != nil {
		return fmt.Errorf("set tun read deadline: %w", err)
	}
	t.deadline = due
	return nil
}
