package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/opencen/opencen/config"
)

// PairMeasure is one direction of a shaped region pair in one address
// family (or in both at once): iperf3 goodput against the pair's
// allocation.
type PairMeasure struct {
	// Family is FamilyIPv4, FamilyIPv6, or FamilyBoth for IPv4 and IPv6
	// flows run together (ByFamily then holds each family's goodput, whose
	// sum is GoodputBps): one pair, one allocation, both families.
	Family        string  `json:"family"`
	FromRegion    string  `json:"from_region"`
	ToRegion      string  `json:"to_region"`
	From          string  `json:"from_host"`
	To            string  `json:"to_host"`
	AllocationBps uint64  `json:"allocation_bps"`
	Package       string  `json:"package"`
	GoodputBps    float64 `json:"goodput_bps"`
	// ByFamily is each family's part of GoodputBps when Family is
	// FamilyBoth.
	ByFamily []FamilyGoodput `json:"by_family,omitempty"`
	// ShareBps is the part of the allocation held by the sending gateways
	// that carried the flows (all of it unless the hosts' flow hashes left
	// a gateway of the region without any); Ratio is the goodput against
	// it.
	ShareBps uint64         `json:"share_bps"`
	Gateways []GatewayCarry `json:"gateways,omitempty"`
	Ratio    float64        `json:"ratio"`
	Error    string         `json:"error,omitempty"`
}

// FamilyGoodput is one family's goodput in a measurement of both.
type FamilyGoodput struct {
	Family     string  `json:"family"`
	GoodputBps float64 `json:"goodput_bps"`
}

// DefaultPair shows a pair left on the 1 Kbps default: ping passes, over
// IPv4 and (where both hosts have it) IPv6, and bulk traffic does not.
type DefaultPair struct {
	Regions       [2]string `json:"regions"`
	PingSent      int       `json:"ping_sent"`
	PingReceived  int       `json:"ping_received"`
	PingSent6     int       `json:"ping6_sent,omitempty"`
	PingReceived6 int       `json:"ping6_received,omitempty"`
	GoodputBps    float64   `json:"goodput_bps"`
}

// measurePairs measures, between a VPC host of each region, the first
// pair left on the 1 Kbps default and every shaped pair in both
// directions, in IPv4 and in IPv6, then IPv4 and IPv6 at once over the
// first shaped pair, into rep.
func (l *Lab) measurePairs(ctx context.Context, cfg *config.Config, o DemoOptions, say func(string, ...any), rep *Report) {
	hostIn := map[string]Host{}
	for _, h := range l.Hosts {
		if h.Kind == KindVPC {
			if _, ok := hostIn[h.Region]; !ok {
				hostIn[h.Region] = h
			}
		}
	}
	var mixed *[2]Host
	var mixedPair config.PairBandwidth
	for _, p := range cfg.Matrix() {
		a, aok := hostIn[p.Regions[0]]
		b, bok := hostIn[p.Regions[1]]
		if !aok || !bok {
			continue
		}
		if p.Source == config.SourceDefault {
			if rep.Default == nil {
				say("default pair %s <-> %s: ping over each family, then bulk traffic", a.Region, b.Region)
				rep.Default = l.defaultPair(ctx, a, b)
			}
			continue
		}
		for _, v6 := range []bool{false, true} {
			for _, dir := range [][2]Host{{a, b}, {b, a}} {
				if !dir[0].Primary(v6).IsValid() || !dir[1].Primary(v6).IsValid() {
					continue
				}
				l.measurePair(ctx, p, dir, Family(v6), o, say, rep)
			}
		}
		if mixed == nil && a.Address6.IsValid() && b.Address6.IsValid() {
			mixed, mixedPair = &[2]Host{a, b}, p
			if len(l.GatewaysIn(b.Region)) < len(l.GatewaysIn(a.Region)) {
				mixed = &[2]Host{b, a}
			}
		}
	}
	if mixed != nil {
		l.measurePair(ctx, mixedPair, *mixed, FamilyBoth, o, say, rep)
	}
}

// measurePair measures the shaped pair p from dir[0] to dir[1] in family
// (FamilyBoth: an IPv4 and an IPv6 iperf3 at once, each with the flows a
// single family gets) against its allocation, or against the share of the
// gateways that carry every flow when the hosts hash them onto some of the
// source region's gateways only, into rep: the measure, and a failure if
// something is wrong.
func (l *Lab) measurePair(ctx context.Context, p config.PairBandwidth, dir [2]Host, family string, o DemoOptions, say func(string, ...any), rep *Report) {
	from, to := dir[0], dir[1]
	say("shaped pair %s -> %s over %s: iperf3 %ds (after 1 s of slow start) x %d flows against %s", from.Region, to.Region, family, o.IperfSeconds, o.Streams, p.Bandwidth)
	m := PairMeasure{Family: family, FromRegion: from.Region, ToRegion: to.Region, From: from.Name, To: to.Name,
		AllocationBps: uint64(p.Bandwidth), Package: p.Package}
	run := IperfOptions{Seconds: o.IperfSeconds, Streams: o.Streams, Omit: 1, IPv6: family == FamilyIPv6}
	runs := []IperfOptions{run}
	if family == FamilyBoth {
		v6 := run
		v6.IPv6 = true
		runs = append(runs, v6)
	}
	g, err := l.ShapedGoodput(ctx, from.Name, to.Name, runs...)
	what := fmt.Sprintf("%s -> %s over %s", m.FromRegion, m.ToRegion, family)
	var failure string
	if err != nil {
		m.Error = err.Error()
		failure = fmt.Sprintf("%s: %v", what, err)
	}
	m.GoodputBps, m.ShareBps, m.Gateways = g.Bps, g.ShareBps, g.Gateways
	if family == FamilyBoth && len(g.Runs) == 2 {
		m.ByFamily = []FamilyGoodput{{FamilyIPv4, g.Runs[0]}, {FamilyIPv6, g.Runs[1]}}
	}
	if m.ShareBps == 0 {
		m.ShareBps = m.AllocationBps
	}
	m.Ratio = m.GoodputBps / float64(m.ShareBps)
	if m.ShareBps < m.AllocationBps {
		say("  every flow hashed onto some of %s's gateways: %s; measured against their share, %s", m.FromRegion, g.Carriers(), config.Bandwidth(m.ShareBps))
	}
	if err == nil && (m.Ratio < MinGoodputRatio || m.Ratio > 1) {
		failure = fmt.Sprintf("%s: goodput %.3f of the allocation, outside %.2f to 1.00", what, m.Ratio, MinGoodputRatio)
	}
	if failure != "" {
		rep.Failures = append(rep.Failures, failure)
	}
	rep.Pairs = append(rep.Pairs, m)
}

// defaultPair pings across a 1 Kbps pair in each family both hosts have,
// then tries bulk traffic over it.
func (l *Lab) defaultPair(ctx context.Context, a, b Host) *DefaultPair {
	d := &DefaultPair{Regions: [2]string{a.Region, b.Region}}
	d.PingSent, d.PingReceived, _ = l.pingFrom(ctx, a.Name, b.Address.Addr().String(), 3, time.Second)
	if a.Address6.IsValid() && b.Address6.IsValid() {
		d.PingSent6, d.PingReceived6, _ = l.pingFrom(ctx, a.Name, b.Address6.Addr().String(), 3, time.Second)
	}
	d.GoodputBps, _ = l.Goodput(ctx, a.Name, b.Name, IperfOptions{Seconds: 3, Streams: 1})
	return d
}
