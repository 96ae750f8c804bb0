package agent

import (
	"time"

	"github.com/opencen/opencen/shaping"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series of SPEC section 6: shaper,
// tunnel, config and reconcile series. Counters of the shaper and WireGuard
// are read from the subsystems at scrape time, so a scrape always sees the
// kernel's own numbers. BGP series come from routing.NewCollector.
type metrics struct {
	a               *Agent
	reconcileErrors *prometheus.CounterVec
	reloads         *prometheus.CounterVec

	shaperBytes, shaperPackets, allocation, rate  *prometheus.Desc
	shaperMode                                    *prometheus.Desc
	bgpState                                      *prometheus.Desc
	handshakeAge, tunnelBytes, conflicts, configG *prometheus.Desc
	buildInfo, configInfo                         *prometheus.Desc
}

func newMetrics(a *Agent) *metrics {
	pair := []string{"src_region", "dst_region"}
	return &metrics{
		a: a,
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opencen_reconcile_errors_total", Help: "Reconciles of a subsystem that failed.",
		}, []string{"subsystem"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opencen_config_reloads_total", Help: "Config reloads, by result (applied or rejected).",
		}, []string{"result"}),
		shaperBytes:   prometheus.NewDesc("opencen_shaper_bytes_total", "Bytes the shaper passed or dropped toward a region.", append(pair, "action"), nil),
		shaperPackets: prometheus.NewDesc("opencen_shaper_packets_total", "Packets the shaper passed or dropped toward a region.", append(pair, "action"), nil),
		allocation:    prometheus.NewDesc("opencen_shaper_allocation_bits_per_second", "This gateway's allocation toward a region.", pair, nil),
		rate:          prometheus.NewDesc("opencen_shaper_rate_bits_per_second", "Current egress rate toward a region, over the last second.", pair, nil),
		shaperMode:    prometheus.NewDesc("opencen_shaper_mode", "How the gateway shapes (cend --shaper): 1 for the mode in use, 0 for the others.", []string{"mode"}, nil),
		bgpState:      prometheus.NewDesc("opencen_bgp_session_state", "BGP session state (the series of the current state is 1).", []string{"peer", "kind", "state"}, nil),
		handshakeAge:  prometheus.NewDesc("opencen_tunnel_handshake_age_seconds", "Seconds since the tunnel's latest WireGuard handshake.", []string{"peer"}, nil),
		tunnelBytes:   prometheus.NewDesc("opencen_tunnel_bytes_total", "Bytes through the tunnel to a peer, by direction.", []string{"peer", "direction"}, nil),
		conflicts:     prometheus.NewDesc("opencen_route_conflicts", "VBR prefixes refused as route conflicts (SPEC rule 6).", nil, nil),
		configG:       prometheus.NewDesc("opencen_config_generation", "Configs applied since start.", nil, nil),
		buildInfo:     prometheus.NewDesc("opencen_build_info", "The cend binary's version and commit (the series is 1).", []string{"version", "commit"}, nil),
		configInfo: prometheus.NewDesc("opencen_config_info", "The config in use: its instance and the digest of its file (the series is 1); "+
			"gateways of one instance with different digests run different configs.", []string{"cen", "digest"}, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.reconcileErrors.Describe(ch)
	m.reloads.Describe(ch)
	for _, d := range []*prometheus.Desc{m.shaperBytes, m.shaperPackets, m.allocation, m.rate, m.shaperMode, m.bgpState, m.handshakeAge, m.tunnelBytes, m.conflicts, m.configG, m.buildInfo, m.configInfo} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.reconcileErrors.Collect(ch)
	m.reloads.Collect(ch)
	a := m.a
	a.mu.Lock()
	d, gen, mode, cfg := a.desired, a.gen, a.shPath, a.cfg
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.configG, prometheus.GaugeValue, float64(gen))
	ch <- prometheus.MustNewConstMetric(m.buildInfo, prometheus.GaugeValue, 1, a.opts.Build.Version, a.opts.Build.Commit)
	ch <- prometheus.MustNewConstMetric(m.configInfo, prometheus.GaugeValue, 1, cfg.Instance.Name, cfg.Digest)
	// Every mode has a series, so a dashboard sees a mode change as one
	// series going to 0 and another to 1.
	for _, p := range []shaping.Path{shaping.PathTCX, shaping.PathTC, shaping.PathUserspace} {
		v := 0.0
		if p == mode {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.shaperMode, prometheus.GaugeValue, v, string(p))
	}

	for _, b := range a.Bandwidth() {
		src, dst := d.Region, b.Region
		ch <- prometheus.MustNewConstMetric(m.shaperBytes, prometheus.CounterValue, float64(b.PassedBytes), src, dst, "passed")
		ch <- prometheus.MustNewConstMetric(m.shaperBytes, prometheus.CounterValue, float64(b.DroppedBytes), src, dst, "dropped")
		ch <- prometheus.MustNewConstMetric(m.shaperPackets, prometheus.CounterValue, float64(b.PassedPackets), src, dst, "passed")
		ch <- prometheus.MustNewConstMetric(m.shaperPackets, prometheus.CounterValue, float64(b.DroppedPackets), src, dst, "dropped")
		ch <- prometheus.MustNewConstMetric(m.allocation, prometheus.GaugeValue, float64(b.AllocationBps), src, dst)
		ch <- prometheus.MustNewConstMetric(m.rate, prometheus.GaugeValue, b.RateBps, src, dst)
	}
	// Session up/down, BFD and prefix counts come from the routing
	// package's own collector; this adds the state by name.
	for _, p := range a.Peers() {
		ch <- prometheus.MustNewConstMetric(m.bgpState, prometheus.GaugeValue, 1, p.Name, p.Kind, p.BGPState)
		if p.Kind == "gateway" {
			if !p.LatestHandshake.IsZero() {
				ch <- prometheus.MustNewConstMetric(m.handshakeAge, prometheus.GaugeValue, time.Since(p.LatestHandshake).Seconds(), p.Name)
			}
			ch <- prometheus.MustNewConstMetric(m.tunnelBytes, prometheus.CounterValue, float64(p.RxBytes), p.Name, "rx")
			ch <- prometheus.MustNewConstMetric(m.tunnelBytes, prometheus.CounterValue, float64(p.TxBytes), p.Name, "tx")
		}
	}
	ch <- prometheus.MustNewConstMetric(m.conflicts, prometheus.GaugeValue, float64(a.Status().Conflicts))
}
