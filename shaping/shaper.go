package shaping

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// ErrUnsupported is returned by New when the host cannot run the eBPF
// shaper at the hook asked for (no BPF, no TCX, no clsact or cls_bpf, not
// enough privilege). [Probe] says which hooks a host has before anything
// is changed.
var ErrUnsupported = errors.New("ebpf shaping unsupported on this host")

// maxRegions matches MAX_REGIONS in bpf/shaper.c; id 0 is never used.
const maxRegions = 1024

// Shaper is the eBPF shaper of a gateway's egress devices. It is safe for
// concurrent use.
type Shaper struct {
	*kernel // the namespace of the devices, where New was called

	mu        sync.Mutex
	closeOnce sync.Once
	opts      Options
	objs      shaperObjects // the maps, and the programs built for devs[0]
	devs      []*egress     // in Options.Interfaces order
	mtu       int           // the largest MTU of the devices: the burst floor
	closed    bool
	ids       map[string]uint32       // region id -> bucket index
	cfgs      map[uint32]bpfBucketCfg // as last Set, by bucket index
	bal       balancer                // shares of the devices (ModeQueue, several devices)
	// What the prefix tries hold, as this Shaper wrote them; nil until
	// read from the (possibly adopted) maps. Only the Shaper writes them,
	// so a Set diffs against memory rather than dumping 100,000 entries.
	lpm4 map[bpfLpm4Key]bpfLpmVal
	lpm6 map[bpfLpm6Key]bpfLpmVal
}

// shaperObjects are the objects of the first load. The .bss section
// (clock_override, the clock probe's samples) is shared by the programs of
// every device like the maps, so the test clock drives them all.
type shaperObjects struct {
	bpfObjects
	Bss *ebpf.Map `ebpf:".bss"`
}

func (o *shaperObjects) Close() {
	o.bpfObjects.Close()
	if o.Bss != nil {
		o.Bss.Close()
	}
}

// New starts (or adopts) the shaper of opts.Interfaces. It must run in the
// network namespace of the interfaces. It looks at what the kernel has
// attached to the namespace's devices, not at pins: where a device runs
// the shaper already (at TCX or tc, attached by an agent that was killed,
// whose bpffs may have gone with its mount namespace), its maps (buckets,
// counters, region ids) are reused and its program is replaced in one step
// by this binary's, at the same hook: never a second attachment, no moment
// without one. A device shaped at the other hook is detached there first,
// then attached at opts.Attach. Programs of ours on devices not listed are
// detached (with their HTB).
func New(opts Options) (*Shaper, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	k, err := openKernel(opts.Logger.With("interfaces", opts.Interfaces, "attach", string(opts.Attach)))
	if err != nil {
		return nil, err
	}
	s := &Shaper{kernel: k, opts: opts}
	s.bal.shares = map[uint32][]float64{}
	if err := s.open(); err != nil {
		s.closeFDs()
		k.close()
		return nil, err
	}
	s.startBalancer()
	return s, nil
}

func (s *Shaper) open() error {
	for _, name := range s.opts.Interfaces {
		d, err := s.findDevice(name)
		if err != nil {
			return err
		}
		s.devs = append(s.devs, d)
		s.mtu = max(s.mtu, d.mtu)
	}
	found, err := s.scan()
	if err != nil {
		return err
	}
	defer closeAll(found)
	adopted, from := s.adoptMaps(found)
	defer func() {
		for _, m := range adopted {
			m.Close()
		}
	}()
	if err := s.load(adopted, from); err != nil {
		return err
	}
	if err := s.attach(found); err != nil {
		return err
	}
	return s.pin()
}

// load loads the programs, one per device (each knows its device's
// link-layer header length), all on the same maps: the adopted ones when
// there are and they fit this binary's layout.
func (s *Shaper) load(adopted map[string]*ebpf.Map, from *attachment) error {
	spec, err := loadBpf()
	if err != nil {
		return fmt.Errorf("load program spec: %w", err)
	}
	precise := uint32(0)
	if s.opts.PreciseClock {
		precise = 1
	} else {
		npj, err := nsPerJiffy()
		if err != nil {
			return err
		}
		if err := spec.Variables["ns_per_jiffy"].Set(npj); err != nil {
			return fmt.Errorf("set ns_per_jiffy: %w", err)
		}
		s.log.Debug("shaper clock", "ns_per_jiffy", npj)
	}
	if err := spec.Variables["precise_clock"].Set(precise); err != nil {
		return fmt.Errorf("set precise_clock: %w", err)
	}
	for i, d := range s.devs {
		if err := spec.Variables["l2_len"].Set(uint32(d.l2)); err != nil {
			return fmt.Errorf("set l2_len: %w", err)
		}
		if i == 0 {
			err = spec.LoadAndAssign(&s.objs, &ebpf.CollectionOptions{MapReplacements: adopted})
			if errors.Is(err, ebpf.ErrMapIncompatible) {
				s.log.Warn("the running shaper's maps have another layout: starting with fresh buckets and counters", "from", from.String(), "err", err)
				err = spec.LoadAndAssign(&s.objs, nil)
			} else if err == nil && from != nil {
				s.log.Info("adopted the running shaper's buckets and counters", "from", from.String())
			}
			d.prog = s.objs.OcshShape
		} else {
			var o struct {
				Shape *ebpf.Program `ebpf:"ocsh_shape"`
			}
			err = spec.LoadAndAssign(&o, &ebpf.CollectionOptions{MapReplacements: s.sharedMaps()})
			d.prog, d.ownProg = o.Shape, true
		}
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: load program: %w", ErrUnsupported, err)
			}
			return fmt.Errorf("load program for %q: %w", d.name, err)
		}
	}
	return s.readIDs()
}

// readIDs learns which bucket index is which region from the (possibly
// adopted) configuration array.
func (s *Shaper) readIDs() error {
	s.ids = map[string]uint32{}
	var id uint32
	var c bpfBucketCfg
	it := s.objs.OcshCfg.Iterate()
	for it.Next(&id, &c) {
		if name := cString(c.Region[:]); name != "" && id > 0 {
			s.ids[name] = id
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read region ids: %w", err)
	}
	return nil
}

// sharedMaps are the maps every device's program uses: all but .rodata,
// which holds the device's constants.
func (s *Shaper) sharedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpfMapOcshPrefix4: s.objs.OcshPrefix4,
		bpfMapOcshPrefix6: s.objs.OcshPrefix6,
		bpfMapOcshCfg:     s.objs.OcshCfg,
		bpfMapOcshState:   s.objs.OcshState,
		bpfMapOcshStats:   s.objs.OcshStats,
		".bss":            s.objs.Bss,
	}
}

// Set makes the kernel enforce d. It is idempotent: it reads the maps and
// qdisc classes, writes only what differs, adds before it deletes, and
// keeps going past failures (all are returned joined). Buckets of regions
// whose rate did not change are not touched; a changed rate keeps the
// bucket's credit. An empty Desired removes every bucket and prefix.
func (s *Shaper) Set(d Desired) error {
	if err := d.validate(); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	for _, name := range sortedKeys(d.Regions) {
		r := d.Regions[name]
		if r == 0 {
			continue
		}
		var delay time.Duration // no queue outside ModeQueue
		if s.opts.Mode == ModeQueue {
			delay = s.opts.QueueDelay
		}
		if MaxExcessBytes(r, s.mtu, delay) > maxCreditBytes {
			return fmt.Errorf("invalid desired state: region %q: rate %s with a %v queue needs more than %d bytes of bucket", name, r, s.opts.QueueDelay, maxCreditBytes)
		}
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
	s.cfgs = cfgs
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
	// Add before delete: the buckets first, then the prefixes that lead
	// to them, then the ids no longer named anywhere are released (their
	// entries back to zero) once no prefix leads to them.
	errs = append(errs, s.setCfgs(cfgs, false)...)
	errs = append(errs, s.setPrefixes(d)...)
	errs = append(errs, s.setCfgs(cfgs, true)...)
	for name := range s.ids {
		if !keep[name] {
			delete(s.ids, name)
		}
	}
	return errors.Join(errs...)
}

// allocIDs gives every region of d a bucket index, reusing the pinned ones.
// A fresh index has its bucket state and counters zeroed.
func (s *Shaper) allocIDs(d Desired) (map[string]bool, error) {
	keep := map[string]bool{}
	used := map[uint32]bool{}
	for _, id := range s.ids {
		used[id] = true
	}
	next := uint32(1)
	for _, name := range d.regionNames() {
		keep[name] = true
		if _, ok := s.ids[name]; ok {
			continue
		}
		for next < maxRegions && used[next] {
			next++
		}
		if next >= maxRegions {
			return nil, fmt.Errorf("too many regions: at most %d", maxRegions-1)
		}
		id := next
		if err := s.objs.OcshState.Update(id, bpfBucketState{}, ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("reset bucket of region %q: %w", name, err)
		}
		zero := make([]bpfCounters, ebpf.MustPossibleCPU())
		if err := s.objs.OcshStats.Update(id, zero, ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("reset counters of region %q: %w", name, err)
		}
		// The entry names the region from now on, shaped or not.
		if err := s.objs.OcshCfg.Update(id, bpfBucketCfg{Region: regionKey(name)}, ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("record region %q: %w", name, err)
		}
		s.ids[name] = id
		used[id] = true
	}
	return keep, nil
}

// The HTB classes of a bucket index: the region's class (its rate) and
// its two leaves, small packets (served first) and bulk.
func classID(id uint32) uint32      { return netlink.MakeHandle(htbMajor, uint16(id)) }
func smallClassID(id uint32) uint32 { return netlink.MakeHandle(htbMajor, uint16(0x1000|id)) }
func bulkClassID(id uint32) uint32  { return netlink.MakeHandle(htbMajor, uint16(0x2000|id)) }

// desiredCfgs is the bucket configuration of every region d names, by
// bucket index: its name, and for a region with an entry in d.Regions its
// bucket.
func (s *Shaper) desiredCfgs(d Desired) map[uint32]bpfBucketCfg {
	out := map[uint32]bpfBucketCfg{}
	for _, name := range d.regionNames() {
		id := s.ids[name]
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

// cfgPresent matches CFG_PRESENT in bpf/shaper.c.
const cfgPresent = 1

// Counters returns the totals of every region the shaper knows, summed
// over CPUs.
func (s *Shaper) Counters() (map[string]Counters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("shaper is closed")
	}
	out := make(map[string]Counters, len(s.ids))
	var per []bpfCounters
	for name, id := range s.ids {
		if err := s.objs.OcshStats.Lookup(id, &per); err != nil {
			return nil, fmt.Errorf("read counters of region %q: %w", name, err)
		}
		var c Counters
		for _, p := range per {
			c.PassedBytes += p.PassBytes
			c.PassedPackets += p.PassPackets
			c.DroppedBytes += p.DropBytes
			c.DroppedPackets += p.DropPackets
		}
		out[name] = c
	}
	return out, nil
}

// Close releases the shaper. Without cleanup everything stays attached and
// in the kernel, so traffic keeps being shaped and the next New adopts it
// with its buckets intact; only this process's descriptors go. With
// cleanup it detaches every program of ours in the namespace (both hooks),
// removes its HTB qdiscs, clsact qdiscs it left empty, and its pins.
func (s *Shaper) Close(cleanup bool) error {
	s.closeOnce.Do(s.stopBalancer)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if cleanup {
		errs = append(errs, s.removeAll())
	}
	s.closeFDs()
	if cleanup {
		errs = append(errs, removePins(s.opts.PinPath, s.log))
		s.log.Info("shaper removed")
	}
	s.kernel.close()
	return errors.Join(errs...)
}

func (s *Shaper) closeFDs() {
	for _, d := range s.devs {
		if d.ownProg && d.prog != nil {
			d.prog.Close()
		}
		d.prog = nil
	}
	s.objs.Close()
}
