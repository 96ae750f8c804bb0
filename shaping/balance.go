package shaping

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The balancer. With several devices in ModeQueue, a region's backlog
// sits in as many HTBs as there are devices, each of which may drain the
// whole rate. With the traffic split, none drains slower than it is fed:
// the bucket's debt has no backlog behind it and admission degrades into
// a policer (see the package doc for the figures). The balancer gives the
// bulk leaf of each device a ceiling that is its share of the rate, so
// that the shares of the devices in use add up to the rate and the debt is
// a real queue again: every balanceEvery it reads what each device's bulk
// leaf sent and divides the rate (allocate). It only moves the ceilings of
// bulk leaves: the shared bucket still decides admission, so the
// allocation holds whatever the shares (they may add up to more than the
// rate: the bucket bounds the sum), and small packets keep the full rate
// on every device.
const balanceEvery = 100 * time.Millisecond

// balanceIdle is the interval while no bulk leaf sent anything.
const balanceIdle = time.Second

// Tuning of allocate.
const (
	busyUse   = 0.95 // a leaf that sent this part of its ceiling is held by it
	saturated = 0.9  // the devices together sent this part of the rate: all of it is in use
	growth    = 1.5  // room for a device below its share to grow into, while there is spare rate
	fitMargin = 1.25 // the same, when the rate is all in use
	decay     = 0.9  // the most a device's share falls in one step (bursty flows)
	minStep   = 0.05 // smaller changes of a share are not worth a class change
	minShare  = 0.1
	// minShareRate: a share never goes below this rate (below it, balancing
	// is not worth its HTB delay): a region of 1 Mbps or less is not
	// balanced at all.
	minShareRate = 1 * Mbps
)

// allocate divides a region's rate among the bulk leaves of its devices.
// cur are the current shares (fractions of the rate), sent what each leaf
// sent in the last interval (fraction of the rate), floor the least
// share. A device that sent (almost) its ceiling is held by it (busy) and
// may want more. Pure.
//
//   - Rate to spare: the busy devices split what the others do not use;
//     the others get what they use plus room to grow, at least the spare
//     rate (an idle region goes back to full shares, so a new flow on any
//     device starts at the whole rate).
//   - The rate all in use and some device busy: max-min fair shares, the
//     busy devices wanting without bound and the others what they send;
//     one that sends more than the fair level is cut to it (it may be held
//     by the bucket rather than by its ceiling). The others keep a margin.
//   - The rate all in use and none busy: the bucket holds them all (the
//     policer case); each gets the part it sends, which makes it busy
//     next time.
//
// A share above what its device uses falls by decay a step at most, so a
// flow that sends in bursts keeps room for them. (Whether a leaf holds a
// backlog says little: one GSO packet of a light flow is 64 KB.)
func allocate(cur, sent []float64, floor float64) []float64 {
	n := len(cur)
	next := make([]float64, n)
	total := 0.0
	for _, x := range sent {
		total += x
	}
	full := total >= saturated
	busy := make([]bool, n)
	nbusy, used := 0, 0.0
	for i := range cur {
		busy[i] = sent[i] >= busyUse*cur[i]
		if busy[i] {
			nbusy++
		} else {
			used += sent[i]
		}
	}
	level := fairLevel(sent, busy)
	for i := range cur {
		switch {
		case full && nbusy == 0:
			next[i] = sent[i] / total
		case !full && busy[i]:
			next[i] = (1 - used) / float64(nbusy)
		case !full:
			next[i] = max(sent[i]*growth+floor, sent[i]+1-total, cur[i]*decay)
		case busy[i] || sent[i] > level:
			next[i] = level
		default:
			next[i] = min(max(sent[i]*fitMargin, cur[i]*decay), level)
		}
		next[i] = min(max(next[i], floor), 1)
	}
	return next
}

// fairLevel is the max-min fair share of the rate (1) when the busy
// devices want without bound and the others what they sent.
func fairLevel(sent []float64, busy []bool) float64 {
	var demands []float64
	for i, x := range sent {
		if !busy[i] {
			demands = append(demands, x)
		}
	}
	sort.Float64s(demands)
	left, k := 1.0, len(sent)
	for _, d := range demands {
		if d*float64(k) > left {
			break
		}
		left -= d
		k--
	}
	if k == 0 {
		return 1
	}
	return left / float64(k)
}

// leafStats is one reading of a bulk leaf: what it sent, the link
// header included on Ethernet.
type leafStats struct{ bytes, packets uint64 }

// balancer is the state of the balancing loop.
type balancer struct {
	shares map[uint32][]float64 // bucket index -> share of each device's bulk leaf; absent: 1
	last   []map[uint32]leafStats
	at     time.Time
	stop   chan struct{}
	done   chan struct{}
}

// share is the part of region id's rate the bulk leaf of device i may use.
func (s *Shaper) share(id uint32, i int) float64 {
	if sh, ok := s.bal.shares[id]; ok && i < len(sh) {
		return sh[i]
	}
	return 1
}

// startBalancer runs the loop when there is something to balance.
func (s *Shaper) startBalancer() {
	if len(s.devs) < 2 || s.opts.Mode != ModeQueue {
		return
	}
	s.bal.stop, s.bal.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.bal.done)
		t := time.NewTimer(balanceEvery)
		defer t.Stop()
		for {
			select {
			case <-s.bal.stop:
				return
			case now := <-t.C:
				active, err := s.rebalance(now)
				if err != nil {
					s.log.Debug("balancing the devices' shares", "err", err)
				}
				// An idle gateway reads its leaves once a second, not ten
				// times: the idle agent's CPU budget is under 1%.
				if active {
					t.Reset(balanceEvery)
				} else {
					t.Reset(balanceIdle)
				}
			}
		}
	}()
}

func (s *Shaper) stopBalancer() {
	if s.bal.stop == nil {
		return
	}
	close(s.bal.stop)
	<-s.bal.done
	s.bal.stop = nil
}

// rebalance reads the bulk leaves of every device and moves the shares
// that changed by minStep or more. active reports whether any leaf sent
// anything since the last reading.
func (s *Shaper) rebalance(now time.Time) (active bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.cfgs) == 0 {
		s.bal.last = nil
		return false, nil
	}
	stats := make([]map[uint32]leafStats, len(s.devs))
	for i, d := range s.devs {
		st, err := s.readLeaves(d)
		if err != nil {
			s.bal.last = nil
			return false, fmt.Errorf("%q: %w", d.name, err)
		}
		stats[i] = st
	}
	last, dt := s.bal.last, now.Sub(s.bal.at).Seconds()
	s.bal.last, s.bal.at = stats, now
	if last == nil || dt <= 0 {
		return true, nil
	}
	for i := range stats {
		for h, a := range stats[i] {
			if b, ok := last[i][h]; !ok || a.packets != b.packets {
				active = true
			}
		}
	}
	var errs []error
	for id, c := range s.cfgs {
		if c.Rate == 0 || c.Classid == 0 {
			continue
		}
		rate := float64(c.Rate)
		floor := min(max(minShare, float64(minShareRate)/rate), 1)
		h := bulkClassID(id)
		cur := make([]float64, len(s.devs))
		sent := make([]float64, len(s.devs))
		complete := true
		for i, d := range s.devs {
			cur[i] = s.share(id, i)
			a, ok1 := stats[i][h]
			b, ok2 := last[i][h]
			if !ok1 || !ok2 || a.bytes < b.bytes || a.packets < b.packets {
				complete = false
				continue
			}
			// IP bytes, as the bucket counts them.
			ip := float64(a.bytes-b.bytes) - float64(d.l2)*float64(a.packets-b.packets)
			sent[i] = max(ip, 0) * 8 / dt / rate
		}
		var next []float64
		switch {
		case floor >= 1:
			// Too slow a region to balance: full shares.
			next = allocate(cur, make([]float64, len(cur)), 1)
		case complete:
			next = allocate(cur, sent, floor)
		default:
			continue
		}
		for i, d := range s.devs {
			// Small moves are not worth a class change; back to full is.
			if next[i] == cur[i] || (math.Abs(next[i]-cur[i]) < minStep*max(next[i], cur[i]) && next[i] < 1) {
				continue
			}
			s.log.Debug("device share", "interface", d.name, "bucket", id, "sent", sent[i], "share", cur[i], "next", next[i])
			cls := d.htbClasses(id, c, next[i])[2] // the bulk leaf
			if err := s.nl.ClassChange(cls); err != nil {
				errs = append(errs, fmt.Errorf("%q: change htb class %x: %w", d.name, h, err))
				continue
			}
			sh, ok := s.bal.shares[id]
			if !ok {
				sh = make([]float64, len(s.devs))
				for j := range sh {
					sh[j] = 1
				}
				s.bal.shares[id] = sh
			}
			sh[i] = next[i]
		}
	}
	return active, errors.Join(errs...)
}

// readLeaves reads the statistics of our bulk leaves on device d.
func (s *Shaper) readLeaves(d *egress) (map[uint32]leafStats, error) {
	lk := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: d.index}}
	classes, err := s.nl.ClassList(lk, 0)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("list htb classes: %w", err)
	}
	out := map[uint32]leafStats{}
	for _, c := range classes {
		a := c.Attrs()
		if a.Handle>>16 != htbMajor || a.Handle&0xf000 != 0x2000 || a.Statistics == nil || a.Statistics.Basic == nil {
			continue
		}
		out[a.Handle] = leafStats{bytes: a.Statistics.Basic.Bytes, packets: uint64(a.Statistics.Basic.Packets)}
	}
	return out, nil
}
