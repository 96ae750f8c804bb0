package shaping

import (
	"errors"
	"fmt"
	"sync"
)

// ErrUnsupported is returned by New when the host cannot run the eBPF
// shaper at the hook asked for (no BPF, no TCX, no clsact or cls_bpf, not
// enough privilege). [Probe] says which hooks a host has without changing
// anything.
var ErrUnsupported = errors.New("ebpf shaping unsupported on this host")

// Shaper is the eBPF shaper of a gateway's egress devices. It is safe for
// concurrent use.
type Shaper struct {
	// Fixed by New.
	*kernel           // the namespace of the devices, in which New ran
	opts    Options   // with their defaults
	devs    []*egress // in Options.Interfaces order
	mtu     int       // the largest MTU of the devices: the burst floor

	// mu guards the loaded objects, which Close releases, and what Set,
	// Counters and the balancer read and write.
	mu     sync.Mutex
	closed bool
	objs   shaperObjects // the maps, and the programs built for devs[0]
	mirror mirror        // what the maps hold, as this Shaper wrote them
	bal    balancer      // the bulk leaves' shares (ModeQueue, several devices)

	// loop is the balancer's goroutine: started by New when there is
	// something to balance, stopped once by Close.
	loop struct {
		stopOnce   sync.Once
		stop, done chan struct{}
	}
}

// mirror is what the maps hold, as this Shaper wrote them. Only the Shaper
// writes the maps, so Set diffs against memory rather than against a dump
// of every prefix.
type mirror struct {
	ids  map[string]uint32       // region id -> bucket index, read from ocsh_cfg by New
	cfgs map[uint32]bpfBucketCfg // the bucket configurations as last Set, by index
	// The prefix tries; nil until read from the (possibly adopted) maps.
	lpm4 map[bpfLpm4Key]bpfLpmVal
	lpm6 map[bpfLpm6Key]bpfLpmVal
}

// New starts (or adopts) the shaper of opts.Interfaces. It must run in the
// network namespace of the interfaces. It looks at what the kernel has
// attached to the namespace's devices, not at pins: where a device runs
// the shaper already (at TCX or tc, attached by an agent since killed,
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

// open finds the devices, adopts the maps of a running shaper, loads the
// programs, attaches them and pins them.
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

// Counters returns the totals of every region the shaper knows, summed
// over CPUs.
func (s *Shaper) Counters() (map[string]Counters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("shaper is closed")
	}
	out := make(map[string]Counters, len(s.mirror.ids))
	var per []bpfCounters
	for name, id := range s.mirror.ids {
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
	s.stopBalancer()
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
