package routing

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gatherMetrics reads c's metrics keyed by name and their session or
// reason labels.
func gatherMetrics(t *testing.T, c prometheus.Collector) map[string]float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				if n := lp.GetName(); n == "session" || n == "reason" || n == "family" {
					key += "/" + lp.GetValue()
				}
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return got
}

// statusCollector is a Status read once, as a prometheus.Collector.
type statusCollector struct {
	m  *StatusMetrics
	st *Status
}

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) { c.m.Describe(ch) }
func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	routes := make(map[netip.Prefix]LearnedRoute, len(c.st.Routes))
	for _, r := range c.st.Routes {
		routes[r.Prefix] = r
	}
	c.m.Collect(ch, c.st, LearnedByFamily(routes))
}
