package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/iperf3"
)

// DemoOptions tune Demo's measurements.
type DemoOptions struct {
	// IperfSeconds is how long each shaped pair is measured in each
	// direction; default 5.
	IperfSeconds int
	// Streams is the number of parallel TCP flows per measurement, so that
	// a region's several gateways each carry some; default 8.
	Streams int
	// FailoverGateway is the gateway killed to measure failover; default
	// the first gateway of a region that has two.
	FailoverGateway string
	// ConvergeTimeout bounds the wait for every host to reach every other;
	// default 90s.
	ConvergeTimeout time.Duration
	// Progress receives a line per step; nil discards.
	Progress func(format string, args ...any)
}

// Report is what Demo measured, for people and (as JSON) for tools.
type Report struct {
	Instance     string    `json:"instance"`
	StartedAt    time.Time `json:"started_at"`
	Duration     float64   `json:"duration_seconds"`
	Reachability []Reach   `json:"reachability"`
	// Paths are the forced paths behind Reachability, each with its pings.
	Paths    []PathResult   `json:"paths"`
	Pairs    []PairMeasure  `json:"pairs"`
	Default  *DefaultPair   `json:"default_pair,omitempty"`
	Failover *FailoverTrial `json:"failover,omitempty"`
	Failures []string       `json:"failures,omitempty"`
}

// Reach is one source network handing its flows to one gateway (its
// ingress; none for an on-premises network, whose router picks) toward one
// destination network: the pings of every forced path of the three (each
// source and destination address, each gateway the answer can take).
type Reach struct {
	From     string  `json:"from"`
	Gateway  string  `json:"gateway,omitempty"`
	To       string  `json:"to"`
	Paths    int     `json:"paths"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	RTTms    float64 `json:"rtt_avg_ms"`
}

// OK reports whether every echo came back.
func (r Reach) OK() bool { return r.Sent > 0 && r.Received == r.Sent }

// PairMeasure is one direction of a shaped region pair: iperf3 goodput
// against the pair's allocation.
type PairMeasure struct {
	FromRegion    string  `json:"from_region"`
	ToRegion      string  `json:"to_region"`
	From          string  `json:"from_host"`
	To            string  `json:"to_host"`
	AllocationBps uint64  `json:"allocation_bps"`
	Package       string  `json:"package"`
	GoodputBps    float64 `json:"goodput_bps"`
	// ShareBps is the part of the allocation held by the sending gateways
	// that carried the flows (all of it unless the hosts' flow hashes left
	// a gateway of the region without any); Ratio is the goodput against
	// it.
	ShareBps uint64         `json:"share_bps"`
	Gateways []GatewayCarry `json:"gateways,omitempty"`
	Ratio    float64        `json:"ratio"`
	Error    string         `json:"error,omitempty"`
}

// DefaultPair shows a pair left on the 1 Kbps default: ping passes, bulk
// traffic does not.
type DefaultPair struct {
	Regions      [2]string `json:"regions"`
	PingSent     int       `json:"ping_sent"`
	PingReceived int       `json:"ping_received"`
	GoodputBps   float64   `json:"goodput_bps"`
}

// FailoverTrial is a gateway killed under UDP probe flows through it: the
// outage is the worst flow's longest gap between echoes.
type FailoverTrial struct {
	Gateway string `json:"gateway"`
	From    string `json:"from"`
	To      string `json:"to"`
	// KilledAt is when the kill began, to read the agents' logs against;
	// each flow's gap start is relative to it.
	KilledAt time.Time `json:"killed_at"`
	// Flows probed, each IntervalMs apart, and how many of them lost
	// anything (those the dead gateway carried one way or the other).
	Flows       int     `json:"flows"`
	IntervalMs  float64 `json:"interval_ms"`
	Interrupted int     `json:"interrupted_flows"`
	Sent        int     `json:"sent"` // over every flow
	Lost        int     `json:"lost"` // by the worst flow
	OutageMs    float64 `json:"outage_ms"`
	// Recovered is false when some flow did not get through again within
	// the probe: the outage then lasts at least OutageMs.
	Recovered bool         `json:"recovered"`
	PerFlow   []FlowOutage `json:"per_flow,omitempty"`
}

// Demo measures a lab that is up with its agents: reachability between
// every pair of hosts, every shaped pair in both directions against its
// allocation, the 1 Kbps default, and failover after killing a gateway.
// It leaves the lab up (with the killed gateway dead): the caller takes it
// down.
func Demo(ctx context.Context, l *Lab, o DemoOptions) (*Report, error) {
	if o.IperfSeconds <= 0 {
		o.IperfSeconds = 5
	}
	if o.Streams <= 0 {
		o.Streams = 8
	}
	if o.ConvergeTimeout <= 0 {
		o.ConvergeTimeout = 90 * time.Second
	}
	say := o.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	cfg, err := config.Load(l.ConfigFile)
	if err != nil {
		return nil, err
	}
	rep := &Report{Instance: cfg.Instance.Name, StartedAt: time.Now()}
	defer func() { rep.Duration = time.Since(rep.StartedAt).Seconds() }()

	say("waiting for every host to reach every other (BGP convergence)")
	l.converge(ctx, o.ConvergeTimeout)
	rep.Paths = l.pingEveryPath(ctx, say)
	rep.Reachability = reachMatrix(rep.Paths)
	for _, r := range rep.Paths {
		if !r.OK() {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %d of %d pings answered%s", r.Path, r.Received, r.Sent, r.Error))
		}
	}
	l.measurePairs(ctx, cfg, o, say, rep)
	if rep.Default != nil && rep.Default.PingReceived == 0 {
		rep.Failures = append(rep.Failures, "the 1 Kbps pair does not pass ping")
	}
	if f, err := l.failover(ctx, o, say); err != nil {
		rep.Failures = append(rep.Failures, "failover: "+err.Error())
	} else {
		rep.Failover = f
		rep.Failures = append(rep.Failures, f.Verdict()...)
	}
	return rep, nil
}

// pingEveryPath pings every path of the lab, each forced through its
// gateways with host routes. A path can miss its first echoes while the
// last routes and handoff addresses spread after the sessions come up:
// the failed ones get one more round, and that round's verdict counts.
func (l *Lab) pingEveryPath(ctx context.Context, say func(string, ...any)) []PathResult {
	paths := l.Paths()
	say("pinging %d paths, each forced through its gateways with host routes", len(paths))
	res := l.PingPaths(ctx, paths, 3, 100*time.Millisecond)
	var again []Path
	for _, r := range res {
		if !r.OK() {
			again = append(again, r.Path)
		}
	}
	if len(again) == 0 {
		return res
	}
	time.Sleep(5 * time.Second)
	retried := l.PingPaths(ctx, again, 3, 100*time.Millisecond)
	for i, r := range res {
		if j := slices.IndexFunc(retried, func(x PathResult) bool { return x.Path == r.Path }); j >= 0 {
			res[i] = retried[j]
		}
	}
	return res
}

// measurePairs measures, between a VPC host of each region, the first
// pair left on the 1 Kbps default and every shaped pair in both
// directions, into rep.
func (l *Lab) measurePairs(ctx context.Context, cfg *config.Config, o DemoOptions, say func(string, ...any), rep *Report) {
	hostIn := map[string]Host{}
	for _, h := range l.Hosts {
		if h.Kind == KindVPC {
			if _, ok := hostIn[h.Region]; !ok {
				hostIn[h.Region] = h
			}
		}
	}
	for _, p := range cfg.Matrix() {
		a, aok := hostIn[p.Regions[0]]
		b, bok := hostIn[p.Regions[1]]
		if !aok || !bok {
			continue
		}
		if p.Source == config.SourceDefault {
			if rep.Default == nil {
				say("default pair %s <-> %s: ping, then bulk traffic", a.Region, b.Region)
				rep.Default = l.defaultPair(ctx, a, b)
			}
			continue
		}
		for _, dir := range [][2]Host{{a, b}, {b, a}} {
			m, failure := l.measurePair(ctx, p, dir[0], dir[1], o, say)
			if failure != "" {
				rep.Failures = append(rep.Failures, failure)
			}
			rep.Pairs = append(rep.Pairs, m)
		}
	}
}

// measurePair measures the shaped pair p from host from to host to
// against its allocation, or against the share of the gateways that
// carry every flow when the hosts hash them onto some of the source
// region's gateways only. failure says what is wrong, if anything.
func (l *Lab) measurePair(ctx context.Context, p config.PairBandwidth, from, to Host, o DemoOptions, say func(string, ...any)) (m PairMeasure, failure string) {
	say("shaped pair %s -> %s: iperf3 %ds (after 1 s of slow start) x %d flows against %s", from.Region, to.Region, o.IperfSeconds, o.Streams, p.Bandwidth)
	m = PairMeasure{FromRegion: from.Region, ToRegion: to.Region, From: from.Name, To: to.Name,
		AllocationBps: uint64(p.Bandwidth), Package: p.Package}
	g, err := l.ShapedGoodput(ctx, from.Name, to.Name, IperfOptions{Seconds: o.IperfSeconds, Streams: o.Streams, Omit: 1})
	if err != nil {
		m.Error = err.Error()
		failure = fmt.Sprintf("%s -> %s: %v", m.FromRegion, m.ToRegion, err)
	}
	m.GoodputBps, m.ShareBps, m.Gateways = g.Bps, g.ShareBps, g.Gateways
	if m.ShareBps == 0 {
		m.ShareBps = m.AllocationBps
	}
	m.Ratio = m.GoodputBps / float64(m.ShareBps)
	if m.ShareBps < m.AllocationBps {
		say("  every flow hashed onto some of %s's gateways: %s; measured against their share, %s", m.FromRegion, g.Carriers(), config.Bandwidth(m.ShareBps))
	}
	if err == nil && (m.Ratio < MinGoodputRatio || m.Ratio > 1) {
		failure = fmt.Sprintf("%s -> %s: goodput %.3f of the allocation, outside %.2f to 1.00", m.FromRegion, m.ToRegion, m.Ratio, MinGoodputRatio)
	}
	return m, failure
}

// MinGoodputRatio is the least share of its allocation a shaped pair's TCP
// goodput must reach: TCP's headers and acknowledgements are charged to
// the allocation but are not goodput, so a perfect shaper stays under 1.
const MinGoodputRatio = 0.95

var rttAvg = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// pingFrom runs a bounded ping in a host's namespace.
func (l *Lab) pingFrom(ctx context.Context, from, addr string, count int, interval time.Duration, extra ...string) (sent, received int, rtt float64) {
	deadline := int(time.Duration(count)*interval/time.Second) + 2
	argv := append([]string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-W", "1", "-w", strconv.Itoa(deadline)}, extra...)
	out, _ := l.Exec(ctx, from, append(argv, addr)...)
	if m := pingSummaryRE.FindStringSubmatch(string(out)); m != nil {
		sent, _ = strconv.Atoi(m[1])
		received, _ = strconv.Atoi(m[2])
	}
	if m := rttAvg.FindStringSubmatch(string(out)); m != nil {
		rtt, _ = strconv.ParseFloat(m[1], 64)
	}
	return sent, received, rtt
}

var pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// converge waits until every host reaches every other's primary address
// along whatever path its routes pick (pings in parallel per source), or
// timeout: the forced paths are measured on a converged instance.
func (l *Lab) converge(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		var missing atomic.Int32
		var wg sync.WaitGroup
		for _, from := range l.Hosts {
			wg.Add(1)
			go func(from Host) {
				defer wg.Done()
				for _, to := range l.Hosts {
					if to.Name == from.Name {
						continue
					}
					// Every echo: a pair whose sessions came up during the
					// round answers only its last ones.
					if s, r, _ := l.pingFrom(ctx, from.Name, to.Address.Addr().String(), 3, 100*time.Millisecond); s == 0 || r < s {
						missing.Add(1)
					}
				}
			}(from)
		}
		wg.Wait()
		if missing.Load() == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(time.Second)
	}
}

// reachMatrix sums the paths' pings per source network, ingress gateway
// and destination network.
func reachMatrix(paths []PathResult) []Reach {
	idx := map[[3]string]int{}
	var out []Reach
	rtt := map[[3]string]float64{}
	for _, p := range paths {
		k := [3]string{p.From, p.Ingress, p.To}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Reach{From: p.From, Gateway: p.Ingress, To: p.To})
		}
		out[i].Paths++
		out[i].Sent += p.Sent
		out[i].Received += p.Received
		rtt[k] += p.RTTms * float64(p.Received)
	}
	for k, i := range idx {
		if out[i].Received > 0 {
			out[i].RTTms = rtt[k] / float64(out[i].Received)
		}
	}
	slices.SortFunc(out, func(a, b Reach) int {
		return strings.Compare(a.From+"\x00"+a.Gateway+"\x00"+a.To, b.From+"\x00"+b.Gateway+"\x00"+b.To)
	})
	return out
}

// IperfOptions shape one Goodput measurement.
type IperfOptions struct {
	Port    string // default 5201
	Seconds int
	Streams int // parallel TCP flows
	Omit    int // leading seconds left out (slow start); 0 counts them
	// Congestion is the sender's TCP congestion control; default cubic,
	// Linux's default, whatever the host's own default is: a host may
	// default to bbr, whose ProbeRTT phase stops sending for about 200 ms
	// every 10 s, and against a shaper's shallow queue that costs goodput
	// and measures BBR, not the shaper.
	Congestion string
}

// Goodput measures TCP goodput in bits per second from one host to another
// with iperf3 (a one-off server on the receiver, stopped afterwards).
func (l *Lab) Goodput(ctx context.Context, from, to string, o IperfOptions) (float64, error) {
	if o.Port == "" {
		o.Port = "5201"
	}
	if o.Congestion == "" {
		o.Congestion = "cubic"
	}
	dst, ok := l.Host(to)
	if !ok {
		return 0, fmt.Errorf("no host %q in the lab", to)
	}
	srv, err := l.Command(ctx, to, "iperf3", "-s", "-1", "-p", o.Port)
	if err != nil {
		return 0, err
	}
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			srv.Process.Kill()
		}
	}()
	var res iperf3.Result
	var out []byte
	// The server needs a moment to listen; iperf3 -J may exit 0 on a
	// refused connection, so the verdict is in its JSON.
	start := time.Now()
	for try := 0; try < 50 && time.Since(start) < 5*time.Second; try++ {
		cctx, cancel := context.WithTimeout(ctx, time.Duration(o.Seconds+o.Omit+15)*time.Second)
		out, err = l.Exec(cctx, from, "iperf3", "-c", dst.Address.Addr().String(), "-p", o.Port,
			"-t", strconv.Itoa(o.Seconds), "-O", strconv.Itoa(o.Omit), "-P", strconv.Itoa(max(o.Streams, 1)),
			"-C", o.Congestion, "-J", "--connect-timeout", "2000")
		cancel()
		res.Error = ""
		if json.Unmarshal(out, &res) == nil && !strings.Contains(res.Error, "unable to connect") && !strings.Contains(res.Error, "busy") {
			break
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %v: %s", from, to, err, firstLine(out))
	}
	if res.Error != "" {
		return res.End.SumReceived.BitsPerSecond, fmt.Errorf("iperf3 %s -> %s: %s", from, to, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// defaultPair pings across a 1 Kbps pair and tries bulk traffic over it.
func (l *Lab) defaultPair(ctx context.Context, a, b Host) *DefaultPair {
	d := &DefaultPair{Regions: [2]string{a.Region, b.Region}}
	d.PingSent, d.PingReceived, _ = l.pingFrom(ctx, a.Name, b.Address.Addr().String(), 3, time.Second)
	d.GoodputBps, _ = l.Goodput(ctx, a.Name, b.Name, IperfOptions{Seconds: 3, Streams: 1})
	return d
}

// Verdict lists what is not as it should be in a failover trial. SPEC
// section 5: a dead peer is detected, and traffic moved, in under one
// second.
func (f *FailoverTrial) Verdict() []string {
	var out []string
	switch {
	case !f.Recovered:
		out = append(out, fmt.Sprintf("failover: traffic through the dead gateway did not come back within %.0f ms of probing", f.OutageMs))
	case f.OutageMs >= 1000:
		out = append(out, fmt.Sprintf("failover took %.0f ms, over the 1 s SPEC allows", f.OutageMs))
	}
	if f.Interrupted == 0 {
		// Every flow has to lose at least the packets in flight while BFD
		// decides; none did, so none crossed the gateway killed.
		out = append(out, fmt.Sprintf("failover: none of the %d flows crossed %s, so nothing was measured", f.Flows, f.Gateway))
	}
	return out
}

// failover kills a gateway of a region with two while UDP probe flows run
// from a host of another region to a host behind it, and measures the
// outage.
func (l *Lab) failover(ctx context.Context, o DemoOptions, say func(string, ...any)) (*FailoverTrial, error) {
	victim := o.FailoverGateway
	if victim == "" {
		count := map[string]int{}
		for _, g := range l.Gateways {
			count[g.Region]++
		}
		for _, g := range l.Gateways {
			if count[g.Region] > 1 {
				victim = g.Name
				break
			}
		}
	}
	g, ok := l.Gateway(victim)
	if !ok {
		return nil, errors.New("no region has two gateways: nothing to fail over to")
	}
	var to, from Host
	for _, h := range l.Hosts {
		if h.Kind != KindVPC {
			continue
		}
		if h.Region == g.Region && to.Name == "" {
			to = h
		} else if h.Region != g.Region && from.Name == "" {
			from = h
		}
	}
	if to.Name == "" || from.Name == "" {
		return nil, errors.New("need a VPC host behind the gateway and one elsewhere")
	}
	// The twin takes over only with its sessions up: one still connecting
	// when the victim dies would be measured as a slow failover.
	if err := l.WaitEstablished(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return l.FailoverTrial(ctx, victim, from.Name, to.Name, ProbeOptions{}, say)
}

// WaitEstablished waits until every BGP session of every gateway of the
// lab is established, at most timeout.
func (l *Lab) WaitEstablished(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pending := ""
		for _, g := range l.Gateways {
			peers, err := api.NewClient(g.Socket).Peers(ctx)
			if err != nil {
				pending = fmt.Sprintf("%s: %v", g.Name, err)
				break
			}
			for _, p := range peers {
				if p.BGPState != "established" {
					pending = fmt.Sprintf("%s's session with %s is %s", g.Name, p.Name, p.BGPState)
					break
				}
			}
			if pending != "" {
				break
			}
		}
		if pending == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("sessions not all established after %v: %s", timeout, pending)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// FailoverTrial kills gateway (KillGateway: a host failure) one second
// into UDP probe flows from one host to another, and measures each flow's
// outage. Probing goes on for three seconds after the kill and then until
// every flow has had every echo for a second, bounded at ten seconds.
func (l *Lab) FailoverTrial(ctx context.Context, gateway, from, to string, po ProbeOptions, say func(string, ...any)) (*FailoverTrial, error) {
	if say == nil {
		say = func(string, ...any) {}
	}
	po = po.withDefaults()
	p, err := l.StartProbe(ctx, from, to, po)
	if err != nil {
		return nil, err
	}
	say("failover: killing %s (its wires down, then its processes) under %d UDP flows of %.0f pps %s -> %s",
		gateway, po.Flows, float64(time.Second)/float64(po.Interval), from, to)
	time.Sleep(time.Second)
	kill := time.Now()
	if err := l.KillGateway(ctx, gateway); err != nil {
		p.Stop()
		return nil, err
	}
	// At least three seconds (the loss has to have started to be seen to
	// end), at most ten.
	for time.Since(kill) < 10*time.Second && ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		if time.Since(kill) >= 3*time.Second && p.settled(time.Second) {
			break
		}
	}
	f := &FailoverTrial{Gateway: gateway, From: from, To: to, KilledAt: kill, Flows: po.Flows, IntervalMs: ms(po.Interval), Recovered: true}
	f.PerFlow = p.Outages(kill)
	for _, fo := range f.PerFlow {
		f.Sent += fo.Sent
		f.Lost = max(f.Lost, fo.Lost)
		f.OutageMs = max(f.OutageMs, fo.GapMs)
		if fo.Lost > 0 || fo.GapMs >= 5*f.IntervalMs {
			f.Interrupted++
		}
		if !fo.Recovered {
			f.Recovered = false
		}
	}
	return f, nil
}
