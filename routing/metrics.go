package routing

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a speaker's Status as Prometheus metrics. The agent
// registers it on its own registry (no global registration here).
type Collector struct {
	s                                       *Speaker
	up, bfdUp, received, accepted, rejected *prometheus.Desc
	rejectedTotal, conflicts, learned       *prometheus.Desc
}

// NewCollector returns a collector reading s at scrape time.
func NewCollector(s *Speaker) *Collector {
	l := []string{"session", "kind", "neighbor"}
	lf := append(slices.Clone(l), "family")
	return &Collector{
		s:             s,
		up:            prometheus.NewDesc("opencen_bgp_session_up", "1 if the BGP session is established.", l, nil),
		bfdUp:         prometheus.NewDesc("opencen_bgp_bfd_up", "1 if BFD is up on the session (absent when BFD is off).", l, nil),
		received:      prometheus.NewDesc("opencen_bgp_prefixes_received", "Prefixes the peer currently announces, by address family.", lf, nil),
		accepted:      prometheus.NewDesc("opencen_bgp_prefixes_accepted", "Announced prefixes that passed import policy, by address family.", lf, nil),
		rejected:      prometheus.NewDesc("opencen_bgp_prefixes_rejected", "Announced prefixes refused by import policy, by address family.", lf, nil),
		rejectedTotal: prometheus.NewDesc("opencen_bgp_routes_rejected_total", "Prefixes refused since start, by reason.", []string{"reason"}, nil),
		conflicts:     prometheus.NewDesc("opencen_route_conflicts_total", "VBR prefixes refused as conflicting with an instance CIDR since start.", nil, nil),
		learned:       prometheus.NewDesc("opencen_bgp_learned_routes", "Routes delivered to the dataplane, by address family.", []string{"family"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.bfdUp, c.received, c.accepted, c.rejected, c.rejectedTotal, c.conflicts, c.learned} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.s.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.up, err)
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, ss := range st.Sessions {
		l := []string{ss.Name, string(ss.Kind), ss.Neighbor.String()}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b(ss.State == "established"), l...)
		if ss.BFD != "" {
			ch <- prometheus.MustNewConstMetric(c.bfdUp, prometheus.GaugeValue, b(ss.BFD == "up"), l...)
		}
		for _, f := range ss.Families {
			lf := append(slices.Clone(l), f.Family)
			ch <- prometheus.MustNewConstMetric(c.received, prometheus.GaugeValue, float64(f.Received), lf...)
			ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.GaugeValue, float64(f.Accepted), lf...)
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.GaugeValue, float64(f.Rejected), lf...)
		}
	}
	for r, n := range st.RejectedTotal {
		ch <- prometheus.MustNewConstMetric(c.rejectedTotal, prometheus.CounterValue, float64(n), string(r))
	}
	ch <- prometheus.MustNewConstMetric(c.conflicts, prometheus.CounterValue, float64(st.RejectedTotal[ReasonConflict]))
	var learned [2]int
	for _, r := range st.Routes {
		learned[family(r.Prefix.Addr())]++
	}
	for i, n := range learned {
		ch <- prometheus.MustNewConstMetric(c.learned, prometheus.GaugeValue, float64(n), familyName[i])
	}
}
