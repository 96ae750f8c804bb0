package shaping

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// maxRegions matches MAX_REGIONS in bpf/shaper.c; id 0 is never used.
const maxRegions = 1024

// cfgPresent matches CFG_PRESENT in bpf/shaper.c.
const cfgPresent = 1

// Set makes the kernel enforce d. It is idempotent: it reads the maps and
// qdisc classes, writes only what differs, adds first and then deletes,
// and keeps going past failures (all are returned joined). Buckets of
// regions whose rate did not change are not touched; a changed rate keeps
// the bucket's credit. An empty Desired removes every bucket and prefix.
func (s *Shaper) Set(d Desired) error {
	if err := d.validate(); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	if err := s.checkCredit(d); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("shaper is closed")
	}
	var errs []error
	keep, err := s.allocIDs(d)
	if err != nil {
		return err
	}
	cfgs := s.desiredCfgs(d)
	s.mirror.cfgs = cfgs
	for id := range s.bal.shares {
		if cfgs[id].Rate == 0 {
			delete(s.bal.shares, id)
		}
	}
	if s.opts.Mode == ModeQueue {
		if err := s.setClasses(cfgs); err != nil {
			errs = append(errs, err)
		}
	}
	// Adds first, then deletes: the buckets, then the prefixes that lead
	// to them, then the ids d does not name are released (their entries
	// back to zero) once no prefix leads to them.
	errs = append(errs, s.setCfgs(cfgs, false)...)
	errs = append(errs, s.setPrefixes(d)...)
	errs = append(errs, s.setCfgs(cfgs, true)...)
	for name := range s.mirror.ids {
		if !keep[name] {
			delete(s.mirror.ids, name)
		}
	}
	return errors.Join(errs...)
}

// checkCredit refuses a rate whose burst, queue and one GSO packet would
// not fit a bucket's signed 64-bit credit.
func (s *Shaper) checkCredit(d Desired) error {
	var delay time.Duration // no queue outside ModeQueue
	if s.opts.Mode == ModeQueue {
		delay = s.opts.QueueDelay
	}
	for _, name := range sortedKeys(d.Regions) {
		r := d.Regions[name]
		if r != 0 && MaxExcessBytes(r, s.mtu, delay) > maxCreditBytes {
			return fmt.Errorf("region %q: rate %s with a %v queue needs more than %d bytes of bucket", name, r, s.opts.QueueDelay, maxCreditBytes)
		}
	}
	return nil
}

// allocIDs gives every region of d a bucket index, reusing the ones the
// maps hold. A fresh index has its bucket state and counters zeroed.
func (s *Shaper) allocIDs(d Desired) (map[string]bool, error) {
	keep := map[string]bool{}
	used := map[uint32]bool{}
	for _, id := range s.mirror.ids {
		used[id] = true
	}
	next := uint32(1)
	for _, name := range d.regionNames() {
		keep[name] = true
		if _, ok := s.mirror.ids[name]; ok {
			continue
		}
		for next < maxRegions && used[next] {
			next++
		}
		if next >= maxRegions {
			return nil, fmt.Errorf("too many regions: at most %d", maxRegions-1)
		}
		if err := s.resetBucket(next, name); err != nil {
			return nil, err
		}
		s.mirror.ids[name] = next
		used[next] = true
	}
	return keep, nil
}

// resetBucket zeroes the state and counters of bucket index id and names
// region in its configuration entry.
func (s *Shaper) resetBucket(id uint32, region string) error {
	if err := s.objs.OcshState.Update(id, bpfBucketState{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset bucket of region %q: %w", region, err)
	}
	zero := make([]bpfCounters, ebpf.MustPossibleCPU())
	if err := s.objs.OcshStats.Update(id, zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset counters of region %q: %w", region, err)
	}
	// The entry names the region from here on, shaped or not.
	if err := s.objs.OcshCfg.Update(id, bpfBucketCfg{Region: regionKey(region)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("record region %q: %w", region, err)
	}
	return nil
}

// desiredCfgs is the bucket configuration of every region d names, by
// bucket index: its name, and for a region with an entry in d.Regions its
// bucket.
func (s *Shaper) desiredCfgs(d Desired) map[uint32]bpfBucketCfg {
	out := map[uint32]bpfBucketCfg{}
	for _, name := range d.regionNames() {
		id := s.mirror.ids[name]
		c := bpfBucketCfg{Region: regionKey(name)}
		rate, ok := d.Regions[name]
		if ok {
			c.Rate, c.Flags = uint64(rate), cfgPresent
		}
		if rate > 0 {
			c.Burst = BurstBytes(rate, s.mtu) * unitsPerByte
			if s.opts.Mode == ModeQueue {
				c.Queue = QueueBytes(rate, s.opts.QueueDelay) * unitsPerByte
				c.Classid = bulkClassID(id)
				c.ClassidSmall = smallClassID(id)
			}
			// Past FillNs any bucket is full, even one in the debt of an
			// oversize GSO packet.
			c.FillNs = (c.Burst + c.Queue + maxOversize*unitsPerByte + c.Rate - 1) / c.Rate
		}
		out[id] = c
	}
	return out
}

// setCfgs writes the configuration entries that differ from want; with
// release, entries want does not hold go back to zero (a released id).
func (s *Shaper) setCfgs(want map[uint32]bpfBucketCfg, release bool) []error {
	var errs []error
	var k uint32
	var v bpfBucketCfg
	it := s.objs.OcshCfg.Iterate()
	for it.Next(&k, &v) {
		w, ok := want[k]
		if v == w || (!ok && !release) {
			continue
		}
		if w.Rate > 0 && v.Rate == 0 {
			// The bucket starts shaping: it starts full.
			st := bpfBucketState{Tokens: int64(w.Burst)}
			if err := s.objs.OcshState.Update(k, st, ebpf.UpdateAny); err != nil {
				errs = append(errs, fmt.Errorf("fill bucket %d: %w", k, err))
				continue
			}
		}
		if w.Rate > 0 && v.Rate > w.Rate {
			// The rate goes down: the debt run up at the old rate would be
			// paid back at the new one (100 ms of 20 Mbps at 1 Kbps is half
			// an hour without a packet). Bring the bucket within the new
			// bounds; the few packets in flight meanwhile count either way.
			var st bpfBucketState
			if err := s.objs.OcshState.Lookup(k, &st); err == nil {
				st.Tokens = max(min(st.Tokens, int64(w.Burst)), -int64(w.Queue))
				if err := s.objs.OcshState.Update(k, st, ebpf.UpdateAny); err != nil {
					errs = append(errs, fmt.Errorf("clamp bucket %d: %w", k, err))
				}
			}
		}
		if err := s.objs.OcshCfg.Update(k, w, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("set bucket %d: %w", k, err))
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read buckets: %w", err))
	}
	return errs
}
