package shaping

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// The balancer. With several devices in ModeQueue, a region's backlog
// sits in as many HTBs as there are devices, each of which may drain the
// whole rate. With the traffic split, none drains slower than it is fed:
// the bucket's debt has no backlog behind it and admission degrades into
// a policer (see the package doc). The balancer gives the
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

// leafStats is one reading of a bulk leaf: what it sent, the link
// header included on Ethernet.
type leafStats struct{ bytes, packets uint64 }

// balancer is the state of the balancing loop, guarded by Shaper.mu.
type balancer struct {
	shares map[uint32][]float64   // bucket index -> share of each device's bulk leaf; absent: 1
	last   []map[uint32]leafStats // the bulk leaves of each device at the last reading
	at     time.Time              // the time of that reading
}

// share is the part of region id's rate the bulk leaf of device i may use.
func (s *Shaper) share(id uint32, i int) float64 {
	if sh, ok := s.bal.shares[id]; ok && i < len(sh) {
		return sh[i]
	}
	return 1
}

// setShare records the share of device i of n in region id's rate.
func (b *balancer) setShare(id uint32, i, n int, share float64) {
	sh, ok := b.shares[id]
	if !ok {
		sh = make([]float64, n)
		for j := range sh {
			sh[j] = 1
		}
		b.shares[id] = sh
	}
	sh[i] = share
}

// startBalancer runs the loop when there is something to balance.
func (s *Shaper) startBalancer() {
	if len(s.devs) < 2 || s.opts.Mode != ModeQueue {
		return
	}
	s.loop.stop, s.loop.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.loop.done)
		t := time.NewTimer(balanceEvery)
		defer t.Stop()
		for {
			select {
			case <-s.loop.stop:
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

// stopBalancer stops the loop, if it runs, and waits for it; only the
// first call does anything.
func (s *Shaper) stopBalancer() {
	s.loop.stopOnce.Do(func() {
		if s.loop.stop == nil {
			return
		}
		close(s.loop.stop)
		<-s.loop.done
	})
}

// rebalance reads the bulk leaves of every device and moves the shares
// that changed by minStep or more. active reports whether any leaf sent
// anything since the last reading.
func (s *Shaper) rebalance(now time.Time) (active bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.mirror.cfgs) == 0 {
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
	for id, c := range s.mirror.cfgs {
		if c.Rate == 0 || c.Classid == 0 {
			continue
		}
		if cur, sent, next, ok := s.nextShares(id, c, stats, last, dt); ok {
			errs = append(errs, s.moveShares(id, c, cur, sent, next)...)
		}
	}
	return active, errors.Join(errs...)
}

// nextShares divides region id's rate among the devices from what their
// bulk leaves sent in the dt seconds between last and stats: the current
// shares, what each sent (a fraction of the rate) and the next shares. ok
// is false when a reading is missing or went back (a class made anew).
func (s *Shaper) nextShares(id uint32, c bpfBucketCfg, stats, last []map[uint32]leafStats, dt float64) (cur, sent, next []float64, ok bool) {
	rate := float64(c.Rate)
	floor := min(max(minShare, float64(minShareRate)/rate), 1)
	h := bulkClassID(id)
	cur = make([]float64, len(s.devs))
	sent = make([]float64, len(s.devs))
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
	switch {
	case floor >= 1:
		// Too slow a region to balance: full shares.
		return cur, sent, allocate(cur, make([]float64, len(cur)), 1), true
	case complete:
		return cur, sent, allocate(cur, sent, floor), true
	}
	return nil, nil, nil, false
}

// moveShares gives each device's bulk leaf of region id its next share,
// where it moved enough to be worth a class change.
func (s *Shaper) moveShares(id uint32, c bpfBucketCfg, cur, sent, next []float64) []error {
	var errs []error
	for i, d := range s.devs {
		// Small moves are not worth a class change; back to full is.
		if next[i] == cur[i] || (math.Abs(next[i]-cur[i]) < minStep*max(next[i], cur[i]) && next[i] < 1) {
			continue
		}
		s.log.Debug("device share", "interface", d.name, "bucket", id, "sent", sent[i], "share", cur[i], "next", next[i])
		cls := d.htbClasses(id, c, next[i])[2] // the bulk leaf
		if err := s.nl.ClassChange(cls); err != nil {
			errs = append(errs, fmt.Errorf("%q: change htb class %x: %w", d.name, bulkClassID(id), err))
			continue
		}
		s.bal.setShare(id, i, len(s.devs), next[i])
	}
	return errs
}

// readLeaves reads the statistics of our bulk leaves on device d.
func (s *Shaper) readLeaves(d *egress) (map[uint32]leafStats, error) {
	classes, err := s.ourClasses(d.index)
	if err != nil {
		return nil, err
	}
	out := map[uint32]leafStats{}
	for _, c := range classes {
		a := c.Attrs()
		if a.Handle&0xf000 != 0x2000 || a.Statistics == nil || a.Statistics.Basic == nil {
			continue
		}
		out[a.Handle] = leafStats{bytes: a.Statistics.Basic.Bytes, packets: uint64(a.Statistics.Basic.Packets)}
	}
	return out, nil
}
