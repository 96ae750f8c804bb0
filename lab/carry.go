package lab

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/opencen/opencen/agent/api"
)

// A region pair's bandwidth is split among the sending region's gateways
// (SPEC section 3: in proportion to weight), and hosts spread their flows
// over those gateways by a hash of addresses and ports. When every flow of
// a measurement hashes onto one gateway, the other gateways' shares go
// unused and the pair gets only the carrier's share: that is the contract,
// not a shaping error. A measurement therefore reads what each gateway of
// the sending region passed meanwhile and holds the goodput against the
// shares of the gateways that carried it.

// GatewayCarry is what one gateway of the sending region passed toward the
// receiving region during a measurement.
type GatewayCarry struct {
	Gateway       string `json:"gateway"`
	AllocationBps uint64 `json:"allocation_bps"` // its share of the pair
	PassedBytes   uint64 `json:"passed_bytes"`
	Carried       bool   `json:"carried"`
}

// ShapedGoodput is a goodput measurement with what each gateway carried.
type ShapedGoodput struct {
	// Bps is the goodput of every run of the measurement together; Runs
	// each run's, in the order asked for.
	Bps      float64        `json:"goodput_bps"`
	Runs     []float64      `json:"runs_bps,omitempty"`
	Gateways []GatewayCarry `json:"gateways"`
	// ShareBps is the sum of the carriers' shares: what the flows could
	// get. With every gateway carrying some, it is the pair's bandwidth.
	ShareBps uint64 `json:"share_bps"`
}

// carryFloor is the part of the passed bytes below which a gateway did not
// carry the measurement (a stray ping or iperf3's control connection).
const carryFloor = 0.05

// ShapedGoodput runs Goodput once per options given, all at once (each on
// a port of its own: IPv4 and IPv6 flows sharing one pair's allocation),
// and reads every sending gateway's counters toward the receiving host's
// region at their start and at their end.
func (l *Lab) ShapedGoodput(ctx context.Context, from, to string, runs ...IperfOptions) (ShapedGoodput, error) {
	if len(runs) == 0 {
		return ShapedGoodput{}, errors.New("shaped goodput: no run asked for")
	}
	src, ok := l.Host(from)
	if !ok {
		return ShapedGoodput{}, fmt.Errorf("no host %q in the lab", from)
	}
	dst, ok := l.Host(to)
	if !ok {
		return ShapedGoodput{}, fmt.Errorf("no host %q in the lab", to)
	}
	var gws []Gateway
	for _, g := range l.Gateways {
		if g.Region == src.Region {
			gws = append(gws, g)
		}
	}
	read := func() ([]api.Bandwidth, error) {
		out := make([]api.Bandwidth, len(gws))
		for i, g := range gws {
			bw, err := api.NewClient(g.Socket).Bandwidth(ctx)
			if err != nil {
				return nil, fmt.Errorf("gateway %s bandwidth: %w", g.Name, err)
			}
			for _, b := range bw {
				if b.Region == dst.Region {
					out[i] = b
				}
			}
		}
		return out, nil
	}
	before, err := read()
	if err != nil {
		return ShapedGoodput{}, err
	}
	res := ShapedGoodput{Runs: make([]float64, len(runs))}
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, o := range runs {
		if o.Port == "" {
			o.Port = strconv.Itoa(5201 + i)
		}
		wg.Go(func() { res.Runs[i], errs[i] = l.Goodput(ctx, from, to, o) })
	}
	wg.Wait()
	for _, b := range res.Runs {
		res.Bps += b
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	after, err := read()
	if err != nil {
		return res, err
	}
	total := uint64(0)
	for i, g := range gws {
		c := GatewayCarry{Gateway: g.Name, AllocationBps: after[i].AllocationBps}
		if after[i].PassedBytes >= before[i].PassedBytes {
			c.PassedBytes = after[i].PassedBytes - before[i].PassedBytes
		}
		total += c.PassedBytes
		res.Gateways = append(res.Gateways, c)
	}
	for i := range res.Gateways {
		c := &res.Gateways[i]
		c.Carried = total > 0 && float64(c.PassedBytes) >= carryFloor*float64(total)
		if c.Carried {
			res.ShareBps += c.AllocationBps
		}
	}
	if res.ShareBps == 0 {
		return res, fmt.Errorf("no gateway of %s passed traffic toward %s during the measurement", src.Region, dst.Region)
	}
	return res, nil
}

// Ratio is the goodput against the carriers' shares.
func (s ShapedGoodput) Ratio() float64 { return s.Bps / float64(s.ShareBps) }

// Carriers says which gateways carried the flows, for people.
func (s ShapedGoodput) Carriers() string {
	out := ""
	for _, c := range s.Gateways {
		mark := ""
		if !c.Carried {
			mark = " (no flow)"
		}
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("%s %.1f MB%s", c.Gateway, float64(c.PassedBytes)/1e6, mark)
	}
	return out
}
