package shaping

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// ErrUnsupported is returned by New when the host cannot run the eBPF
// shaper (no BPF, no TCX, not enough privilege); Start then falls back to
// the userspace Limiter.
var ErrUnsupported = errors.New("ebpf shaping unsupported on this host")

// Pin names under Options.PinPath. Maps are pinned by their own names
// (ocsh_cfg, ocsh_state, ...).
const (
	pinProg = "ocsh_shape_prog"
	pinLink = "ocsh_shape_link"
)

// maxRegions matches MAX_REGIONS in bpf/shaper.c; id 0 is never used.
const maxRegions = 1024

// Options configure a Shaper.
type Options struct {
	// Interface is the tunnel device whose egress is shaped (required).
	Interface string
	// PinPath is the bpffs directory that holds this shaper's program, link
	// and maps, one per interface (e.g. /sys/fs/bpf/opencen/shaping/wg-cen).
	// If it is not on a bpffs, New mounts one there. Required.
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
	if o.Interface == "" {
		return errors.New("options: interface is required")
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

// Shaper is the eBPF shaper of one tunnel device. It is safe for
// concurrent use.
type Shaper struct {
	mu      sync.Mutex
	opts    Options
	log     *slog.Logger
	objs    bpfObjects
	link    link.Link
	nl      *netlink.Handle
	ifindex int
	l2      int // link-layer header length in front of IP: 14 or 0
	mtu     int
	mounted bool
	closed  bool
	ids     map[string]uint32 // region id -> bucket index
}

// New loads (or adopts) the shaper of opts.Interface. It must run in the
// network namespace of the interface. When PinPath already holds a shaper
// for the interface, its maps (buckets, counters, region ids) are reused
// and the pinned TCX link is updated in place to the program of this
// binary: never a second attachment, no moment without one.
func New(opts Options) (*Shaper, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	s := &Shaper{opts: opts, log: opts.Logger.With("interface", opts.Interface), nl: nl}
	if err := s.open(); err != nil {
		s.closeFDs()
		nl.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shaper) open() error {
	lk, err := s.nl.LinkByName(s.opts.Interface)
	if err != nil {
		return fmt.Errorf("find interface %q: %w", s.opts.Interface, err)
	}
	s.ifindex = lk.Attrs().Index
	s.mtu = lk.Attrs().MTU
	switch lk.Attrs().EncapType {
	case "ether":
		s.l2 = 14
	case "none":
		s.l2 = 0
	default:
		return fmt.Errorf("interface %q: unsupported link type %q (want an L3 tunnel or ethernet)", s.opts.Interface, lk.Attrs().EncapType)
	}

	if err := s.load(); err != nil {
		return err
	}
	return s.attach()
}

// load loads the collection, reusing pinned maps.
func (s *Shaper) load() error {
	spec, err := loadBpf()
	if err != nil {
		return fmt.Errorf("load program spec: %w", err)
	}
	if err := spec.Variables["l2_len"].Set(uint32(s.l2)); err != nil {
		return fmt.Errorf("set l2_len: %w", err)
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
	err = spec.LoadAndAssign(&s.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: s.opts.PinPath},
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: load program: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("load program: %w", err)
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
	progPin := filepath.Join(s.opts.PinPath, pinProg)
	if err := os.Remove(progPin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace pinned program: %w", err)
	}
	if err := s.objs.OcshShape.Pin(progPin); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	return nil
}

// attach adopts the pinned link of the interface or makes one.
func (s *Shaper) attach() error {
	linkPin := filepath.Join(s.opts.PinPath, pinLink)
	old, err := link.LoadPinnedLink(linkPin, nil)
	switch {
	case err == nil:
		info, ierr := old.Info()
		if ierr == nil && info.Type == link.TCXType && info.TCX() != nil && int(info.TCX().Ifindex) == s.ifindex {
			if err := old.Update(s.objs.OcshShape); err != nil {
				old.Close()
				return fmt.Errorf("update adopted link: %w", err)
			}
			s.link = old
			s.log.Info("adopted pinned shaper link", "pin", linkPin)
			return nil
		}
		// The device the link was attached to is gone (or was recreated):
		// the link is dead, replace it.
		s.log.Warn("replacing stale pinned shaper link", "pin", linkPin)
		if err := old.Unpin(); err != nil {
			old.Close()
			return fmt.Errorf("unpin stale link: %w", err)
		}
		old.Close()
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("load pinned link: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: s.ifindex,
		Program:   s.objs.OcshShape,
		Attach:    ebpf.AttachTCXEgress,
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("%w: attach tcx: %w", ErrUnsupported, err)
		}
		return fmt.Errorf("attach tcx egress of %q: %w", s.opts.Interface, err)
	}
	if err := l.Pin(linkPin); err != nil {
		l.Close()
		return fmt.Errorf("pin link: %w", err)
	}
	s.link = l
	s.log.Info("attached shaper at tcx egress", "pin", linkPin)
	return nil
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
		q := uint64(0)
		if s.opts.Mode == ModeQueue {
			q = QueueBytes(r, s.opts.QueueDelay)
		}
		if BurstBytes(r, s.mtu)+q+maxOversize > maxCreditBytes {
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
	errs = append(errs, syncMap(s.objs.OcshPrefix4, want4, "ipv4 prefix")...)
	errs = append(errs, syncMap(s.objs.OcshPrefix6, want6, "ipv6 prefix")...)
	return errs
}

// syncMap makes m hold exactly want, writing only the differences.
func syncMap[K comparable, V comparable](m *ebpf.Map, want map[K]V, what string) []error {
	var errs []error
	have := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read %ss: %w", what, err))
	}
	for k, v := range want {
		if h, ok := have[k]; ok && h == v {
			continue
		}
		if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", what, err))
		}
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
		}
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

// Close releases the shaper. Without cleanup the pinned program, link,
// maps and qdisc stay, so traffic keeps being shaped and the next New
// adopts them with their buckets intact. With cleanup it detaches the
// program, removes the qdisc it installed and every pin.
func (s *Shaper) Close(cleanup bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if cleanup {
		if s.link != nil {
			if err := s.link.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin link: %w", err))
			}
		}
		if err := s.deleteQdisc(); err != nil {
			errs = append(errs, err)
		}
		if err := s.objs.OcshShape.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin program: %w", err))
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
	if s.link != nil {
		s.link.Close()
		s.link = nil
	}
	s.objs.Close()
}
