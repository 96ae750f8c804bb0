package lab

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencen/opencen/config"
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

// Reach is one source network handing its flows of one address family to
// one gateway (its ingress; none for an on-premises network, whose router
// picks) toward one destination network: the pings of every forced path
// of the four (each source and destination address of the family, each
// gateway the answer can take).
type Reach struct {
	Family   string  `json:"family"` // FamilyIPv4 or FamilyIPv6
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

// Demo measures a lab that is up with its agents: reachability between
// every pair of hosts in each family, every shaped pair in both directions
// and both families against its allocation, IPv4 and IPv6 at once on one
// pair, the 1 Kbps default, and failover after killing a gateway.
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
	if d := rep.Default; d != nil {
		if d.PingReceived == 0 {
			rep.Failures = append(rep.Failures, "the 1 Kbps pair does not pass ping")
		}
		if d.PingSent6 > 0 && d.PingReceived6 == 0 {
			rep.Failures = append(rep.Failures, "the 1 Kbps pair does not pass ping over IPv6")
		}
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

var rttAvg = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// pingFrom runs a bounded ping in a host's namespace, of addr's family.
func (l *Lab) pingFrom(ctx context.Context, from, addr string, count int, interval time.Duration, extra ...string) (sent, received int, rtt float64) {
	deadline := int(time.Duration(count)*interval/time.Second) + 2
	family := "-4"
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		family = "-6"
	}
	argv := append([]string{"ping", family, "-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
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
// of each family along whatever path its routes pick (pings in parallel per source), or
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
					for _, v6 := range []bool{false, true} {
						if !from.Primary(v6).IsValid() || !to.Primary(v6).IsValid() {
							continue
						}
						// Every echo: a pair whose sessions came up during
						// the round answers only its last ones.
						if s, r, _ := l.pingFrom(ctx, from.Name, to.Primary(v6).String(), 3, 100*time.Millisecond); s == 0 || r < s {
							missing.Add(1)
						}
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

// reachMatrix sums the paths' pings per family, source network, ingress
// gateway and destination network.
func reachMatrix(paths []PathResult) []Reach {
	idx := map[[4]string]int{}
	var out []Reach
	rtt := map[[4]string]float64{}
	for _, p := range paths {
		fam := Family(p.IPv6())
		k := [4]string{fam, p.From, p.Ingress, p.To}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Reach{Family: fam, From: p.From, Gateway: p.Ingress, To: p.To})
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
		return strings.Compare(a.Family+"\x00"+a.From+"\x00"+a.Gateway+"\x00"+a.To, b.Family+"\x00"+b.From+"\x00"+b.Gateway+"\x00"+b.To)
	})
	return out
}

// Address families as the report names them.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
	// FamilyBoth marks a measurement of IPv4 and IPv6 flows at once.
	FamilyBoth = "ipv4+ipv6"
)

// FamilyTitle is how a page or a table names a family: IPv4, IPv6 or
// IPv4+IPv6.
func FamilyTitle(f string) string {
	return map[string]string{FamilyIPv4: "IPv4", FamilyIPv6: "IPv6", FamilyBoth: "IPv4+IPv6"}[f]
}

// Family is FamilyIPv6 or FamilyIPv4.
func Family(v6 bool) string {
	if v6 {
		return FamilyIPv6
	}
	return FamilyIPv4
}
