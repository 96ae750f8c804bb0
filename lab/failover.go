package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencen/opencen/agent/api"
)

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
