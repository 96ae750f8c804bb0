package routing

import (
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// StatusMetrics are a speaker's BGP series, per session (and per address
// family where they count prefixes) and in total, emitted from a Status
// the caller read: the agent serves them from the snapshot its reconcile
// loop keeps, so a scrape never calls into GoBGP.
type StatusMetrics struct {
	up, bfdUp, received, accepted, rejected *prometheus.Desc
	rejectedTotal, conflicts, learned       *prometheus.Desc
}

// NewStatusMetrics returns the series' descriptions.
func NewStatusMetrics() *StatusMetrics {
	l := []string{"session", "kind", "neighbor"}
	lf := append(slices.Clone(l), "family")
	return &StatusMetrics{
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

// Describe sends the series' descriptions, as prometheus.Collector does.
func (m *StatusMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.bfdUp, m.received, m.accepted, m.rejected, m.rejectedTotal, m.conflicts, m.learned} {
		ch <- d
	}
}

// Collect sends st's series; learned counts the routes delivered to the
// dataplane by family (LearnedByFamily), as st's Routes may be left out.
func (m *StatusMetrics) Collect(ch chan<- prometheus.Metric, st *Status, learned [2]int) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, ss := range st.Sessions {
		l := []string{ss.Name, string(ss.Kind), ss.Neighbor.String()}
		ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, b(ss.State == "established"), l...)
		if ss.BFD != "" {
			ch <- prometheus.MustNewConstMetric(m.bfdUp, prometheus.GaugeValue, b(ss.BFD == "up"), l...)
		}
		for _, f := range ss.Families {
			lf := append(slices.Clone(l), f.Family)
			ch <- prometheus.MustNewConstMetric(m.received, prometheus.GaugeValue, float64(f.Received), lf...)
			ch <- prometheus.MustNewConstMetric(m.accepted, prometheus.GaugeValue, float64(f.Accepted), lf...)
			ch <- prometheus.MustNewConstMetric(m.rejected, prometheus.GaugeValue, float64(f.Rejected), lf...)
		}
	}
	for r, n := range st.RejectedTotal {
		ch <- prometheus.MustNewConstMetric(m.rejectedTotal, prometheus.CounterValue, float64(n), string(r))
	}
	ch <- prometheus.MustNewConstMetric(m.conflicts, prometheus.CounterValue, float64(st.RejectedTotal[ReasonConflict]))
	for i, n := range learned {
		ch <- prometheus.MustNewConstMetric(m.learned, prometheus.GaugeValue, float64(n), familyName[i])
	}
}

// LearnedByFamily counts prefixes by address family, IPv4 first.
func LearnedByFamily[V any](routes map[netip.Prefix]V) [2]int {
	var n [2]int
	for p := range routes {
		n[family(p.Addr())]++
	}
	return n
}
