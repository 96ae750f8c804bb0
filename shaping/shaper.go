package shaping

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// ErrUnsupported is returned by New when the host cannot run the eBPF
// shaper (no BPF, no TCX, not enough privilege); Start then falls back to
// the userspace Limiter.
var ErrUnsupported = errors.New("ebpf shaping unsupported on this host")

// maxRegions matches MAX_REGIONS in bpf/shaper.c; id 0 is never used.
const maxRegions = 1024

// Options configure a Shaper.
type Options struct {
	// Interfaces are the devices whose egress is shaped, all with one set
	// of buckets: a region's rate holds for the sum of what leaves through
	// all of them (e.g. the VXLAN overlay and the WireGuard device).
	// Ethernet and L3 devices may be mixed. Required, unless Interface is
	// set.
	Interfaces []string
	// Interface is the shorthand for a single device: Interfaces
	// []string{Interface}. Setting both is an error unless they say the
	// same.
	Interface string
	// PinPath is the bpffs directory that holds this shaper's programs,
	// links and maps (e.g. /sys/fs/bpf/opencen/shaping). If it is not on a
	// bpffs, New mounts one there. Required.
	PinPath string
	// Mode is ModeQueue (default) or ModePolice.
	Mode Mode
	// QueueDelay bounds the queue per region in ModeQueue (default
	// DefaultQueueDelay).
	QueueDelay time.Duration
	// PreciseClock makes the program read bpf_ktime_get_ns instead of the
	// tick-resolution bpf_ktime_get_coarse_ns. See the package doc for what
	// each costs and measured.
	PreciseClock bool
	// Logger receives lifecycle messages (default: discard).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	switch {
	case len(o.Interfaces) == 0 && o.Interface == "":
		return errors.New("options: interfaces are required")
	case len(o.Interfaces) == 0:
		o.Interfaces = []string{o.Interface}
	case o.Interface != "" && !slices.Equal(o.Interfaces, []string{o.Interface}):
		return fmt.Errorf("options: interface %q and interfaces %q both set and differ", o.Interface, o.Interfaces)
	default:
		o.Interfaces = slices.Clone(o.Interfaces)
	}
	seen := map[string]bool{}
	for _, name := range o.Interfaces {
		if name == "" || strings.ContainsAny(name, "/ \t\n") {
			return fmt.Errorf("options: invalid interface name %q", name)
		}
		if seen[name] {
			return fmt.Errorf("options: interface %q listed twice", name)
		}
		seen[name] = true
	}
	if o.PinPath == "" {
		return errors.New("options: pin path is required")
	}
	if o.Mode != ModeQueue && o.Mode != ModePolice {
		return fmt.Errorf("options: unknown mode %d", int(o.Mode))
	}
	if o.QueueDelay < 0 || o.QueueDelay > time.Second {
		return fmt.Errorf("options: queue delay %v outside 0-1s", o.QueueDelay)
	}
	if o.QueueDelay == 0 {
		o.QueueDelay = DefaultQueueDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Shaper is the eBPF shaper of a gateway's egress devices. It is safe for
// concurrent use.
type Shaper struct {
	mu        sync.Mutex
	closeOnce sync.Once
	opts      Options
	log       *slog.Logger
	objs      shaperObjects // the maps, and the programs built for devs[0]
	devs      []*egress     // in Options.Interfaces order
	nl        *netlink.Handle
	mtu       int // the largest MTU of the devices: the burst floor
	mounted   bool
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

// New loads (or adopts) the shaper of opts.Interfaces. It must run in the
// network namespace of the interfaces. When PinPath already holds a
// shaper, its maps (buckets, counters, region ids) are reused and each
// pinned TCX link of a device still listed is updated in place to the
// program of this binary: never a second attachment, no moment without
// one. Links of devices no longer listed are detached.
func New(opts Options) (*Shaper, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	s := &Shaper{opts: opts, log: opts.Logger.With("interfaces", opts.Interfaces), nl: nl}
	s.bal.shares = map[uint32][]float64{}
	if err := s.open(); err != nil {
		s.closeFDs()
		nl.Close()
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
	if err := s.load(); err != nil {
		return err
	}
	return s.attach()
}

// load loads the programs, one per device (each knows its device's
// link-layer header length), all on the same maps: the pinned ones when
// there are.
func (s *Shaper) load() error {
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
	mounted, err := ensureBPFFS(s.opts.PinPath)
	if err != nil {
		return err
	}
	s.mounted = mounted
	if mounted {
		s.log.Info("mounted a bpffs for the shaper's pins", "path", s.opts.PinPath)
	}
	for i, d := range s.devs {
		if err := spec.Variables["l2_len"].Set(uint32(d.l2)); err != nil {
			return fmt.Errorf("set l2_len: %w", err)
		}
		if i == 0 {
			err = spec.LoadAndAssign(&s.objs, &ebpf.CollectionOptions{
				Maps: ebpf.MapOptions{PinPath: s.opts.PinPath},
			})
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
	s.ids = map[string]uint32{}
	var name bpfRegionName
	var id uint32
	it := s.objs.OcshRegions.Iterate()
	for it.Next(&name, &id) {
		s.ids[cString(name.Name[:])] = id
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read region ids: %w", err)
	}
	return s.pinProgs()
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
		bpfMapOcshRegions: s.objs.OcshRegions,
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
	errs = append(errs, s.setCfgs(cfgs)...)
	errs = append(errs, s.setPrefixes(d)...)
	// Deletes last: ids no longer named anywhere.
	for name := range s.ids {
		if keep[name] {
			continue
		}
		if err := s.objs.OcshRegions.Delete(regionKey(name)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("release region %q: %w", name, err))
			continue
		}
		delete(s.ids, name)
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
		if err := s.objs.OcshRegions.Update(regionKey(name), id, ebpf.UpdateAny); err != nil {
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

// desiredCfgs is the bucket configuration of every region with an entry in
// d.Regions, by bucket index.
func (s *Shaper) desiredCfgs(d Desired) map[uint32]bpfBucketCfg {
	out := map[uint32]bpfBucketCfg{}
	for name, rate := range d.Regions {
		id := s.ids[name]
		c := bpfBucketCfg{Rate: uint64(rate), Flags: cfgPresent}
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

// maxOversize bounds the IP bytes of one GSO packet (64 KiB of payload
// plus the headers of its segments).
const maxOversize = 1 << 17

// unitsPerByte matches UNITS_PER_BYTE in bpf/shaper.c.
const unitsPerByte = 8_000_000_000

func (s *Shaper) setCfgs(want map[uint32]bpfBucketCfg) []error {
	var errs []error
	var k uint32
	var v bpfBucketCfg
	it := s.objs.OcshCfg.Iterate()
	for it.Next(&k, &v) {
		w := want[k] // zero (absent) for regions without a bucket
		if v == w {
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

// lpmFlagControl matches FLAG_CONTROL in bpf/shaper.c.
const lpmFlagControl = 1

// cfgPresent matches CFG_PRESENT in bpf/shaper.c.
const cfgPresent = 1

func (s *Shaper) setPrefixes(d Desired) []error {
	var errs []error
	want4 := map[bpfLpm4Key]bpfLpmVal{}
	want6 := map[bpfLpm6Key]bpfLpmVal{}
	put := func(p netip.Prefix, v bpfLpmVal) {
		if p.Addr().Is4() {
			want4[lpm4(p)] = v
		} else {
			want6[lpm6(p)] = v
		}
	}
	for p, name := range d.Prefixes {
		put(p, bpfLpmVal{Region: s.ids[name]})
	}
	// Gateways' tunnel addresses are host entries flagged as control,
	// carrying the region of the prefix that covers them.
	table := newPrefixTable(d.Prefixes)
	for _, a := range d.ControlAddrs {
		a = a.Unmap()
		v := bpfLpmVal{Flags: lpmFlagControl}
		if name, ok := table.lookup(a); ok {
			v.Region = s.ids[name]
		}
		put(netip.PrefixFrom(a, a.BitLen()), v)
	}
	errs = append(errs, syncMap(s.objs.OcshPrefix4, want4, &s.lpm4, "ipv4 prefix")...)
	errs = append(errs, syncMap(s.objs.OcshPrefix6, want6, &s.lpm6, "ipv6 prefix")...)
	return errs
}

// syncMap makes m hold exactly want, writing only the differences from
// *mirror, what m is known to hold (read from m when nil). After a failed
// write the mirror is dropped, and the next sync reads m again.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V, mirror *map[K]V, what string) []error {
	var errs []error
	if *mirror == nil {
		have := map[K]V{}
		var k K
		var v V
		it := m.Iterate()
		for it.Next(&k, &v) {
			have[k] = v
		}
		if err := it.Err(); err != nil {
			return []error{fmt.Errorf("read %ss: %w", what, err)}
		}
		*mirror = have
	}
	have := *mirror
	for k, v := range want {
		if h, ok := have[k]; ok && h == v {
			continue
		}
		if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", what, err))
			continue
		}
		have[k] = v
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
			continue
		}
		delete(have, k)
	}
	if len(errs) > 0 {
		*mirror = nil
	}
	return errs
}

func lpm4(p netip.Prefix) bpfLpm4Key {
	a := p.Addr().As4()
	// The trie compares the address in network byte order; the key field
	// is a u32 marshalled in host (little-endian) order, so keep the bytes.
	return bpfLpm4Key{Prefixlen: uint32(p.Bits()), Addr: uint32(a[0]) | uint32(a[1])<<8 | uint32(a[2])<<16 | uint32(a[3])<<24}
}

func lpm6(p netip.Prefix) bpfLpm6Key {
	return bpfLpm6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func regionKey(name string) bpfRegionName {
	var k bpfRegionName
	for i := 0; i < len(name) && i < len(k.Name)-1; i++ {
		k.Name[i] = int8(name[i])
	}
	return k
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

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

// Close releases the shaper. Without cleanup the pinned programs, links,
// maps and qdiscs stay, so traffic keeps being shaped and the next New
// adopts them with their buckets intact. With cleanup it detaches the
// program from every device, removes the qdiscs it installed and every
// pin.
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
		for _, d := range s.devs {
			if d.link != nil {
				// Closing the last descriptor below detaches it.
				if err := d.link.Unpin(); err != nil {
					errs = append(errs, fmt.Errorf("unpin link of %q: %w", d.name, err))
				}
			}
			if err := s.deleteQdisc(d.index); err != nil {
				errs = append(errs, fmt.Errorf("%q: %w", d.name, err))
			}
			if err := d.prog.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin program of %q: %w", d.name, err))
			}
		}
		for _, m := range []*ebpf.Map{s.objs.OcshPrefix4, s.objs.OcshPrefix6, s.objs.OcshCfg, s.objs.OcshState, s.objs.OcshStats, s.objs.OcshRegions} {
			if err := m.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin map: %w", err))
			}
		}
	}
	s.closeFDs()
	if cleanup {
		if err := releaseBPFFS(s.opts.PinPath); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(s.opts.PinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			// A directory that still holds others' pins stays.
			s.log.Debug("pin directory kept", "path", s.opts.PinPath, "err", err)
		}
		s.log.Info("shaper removed")
	}
	s.nl.Close()
	return errors.Join(errs...)
}

func (s *Shaper) closeFDs() {
	for _, d := range s.devs {
		if d.link != nil {
			d.link.Close()
			d.link = nil
		}
		if d.ownProg && d.prog != nil {
			d.prog.Close()
		}
		d.prog = nil
	}
	s.objs.Close()
}
