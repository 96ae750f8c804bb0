package shaping

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
)

// kernelHZ are the tick rates Linux is built with.
var kernelHZ = []uint64{100, 250, 300, 1000}

// nsPerJiffy measures the kernel's tick: it samples jiffies and the
// monotonic clock in the kernel twice, 100 ms apart, and picks the
// standard HZ that fits. The buckets' clock is then jiffies * the result,
// exact for HZ 100, 250 and 1000 (HZ 300 is off by 1e-7).
func nsPerJiffy() (uint64, error) {
	spec, err := loadBpf()
	if err != nil {
		return 0, fmt.Errorf("load clock probe spec: %w", err)
	}
	var objs struct {
		Probe   *ebpf.Program  `ebpf:"ocsh_clock_probe"`
		Jiffies *ebpf.Variable `ebpf:"probe_jiffies"`
		NS      *ebpf.Variable `ebpf:"probe_ns"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return 0, fmt.Errorf("%w: load clock probe: %w", ErrUnsupported, err)
		}
		return 0, fmt.Errorf("load clock probe: %w", err)
	}
	defer objs.Probe.Close()
	sample := func() (j, ns uint64, err error) {
		if _, err := objs.Probe.Run(&ebpf.RunOptions{Data: make([]byte, 14)}); err != nil {
			return 0, 0, fmt.Errorf("run clock probe: %w", err)
		}
		if err := objs.Jiffies.Get(&j); err != nil {
			return 0, 0, err
		}
		if err := objs.NS.Get(&ns); err != nil {
			return 0, 0, err
		}
		return j, ns, nil
	}
	j0, n0, err := sample()
	if err != nil {
		return 0, err
	}
	time.Sleep(100 * time.Millisecond)
	j1, n1, err := sample()
	if err != nil {
		return 0, err
	}
	if j1 <= j0 || n1 <= n0 {
		return 0, errors.New("clock probe: jiffies did not advance")
	}
	hz := float64(j1-j0) / (float64(n1-n0) / 1e9)
	for _, h := range kernelHZ {
		if math.Abs(hz-float64(h)) <= 0.1*float64(h) {
			return uint64(1e9) / h, nil
		}
	}
	return 0, fmt.Errorf("clock probe: measured %.0f ticks/s, not a standard HZ; use Options.PreciseClock", hz)
}
