package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
)

// metrics are the agent's Prometheus series of SPEC section 6: shaper,
// tunnel, BGP, config and reconcile series. A scrape reads only memory:
// the shaper's counters and rates as the agent samples them every second,
// and a snapshot of the BGP sessions and WireGuard peers that the
// reconcile loop takes (refreshSnapshot), so a scrape costs no kernel
// dump, no call into GoBGP and no pass over the learned routes, however
// many there are, and a slow or failing subsystem cannot hold it up.
type metrics struct {
	a               *Agent
	reconcileErrors *prometheus.CounterVec
	reloads         *prometheus.CounterVec

	shaperBytes, shaperPackets, allocation, rate  *prometheus.Desc
	shaperMode                                    *prometheus.Desc
	bgpState                                      *prometheus.Desc
	handshakeAge, tunnelBytes, conflicts, configG *prometheus.Desc
	buildInfo, configInfo                         *prometheus.Desc
	bgp                                           *routing.StatusMetrics
}

// snapshot is what the reconcile loop read of the subsystems for the
// metrics. A nil part is a source that has not answered: its series are
// left out of the scrape, the others stay.
type snapshot struct {
	at      time.Time
	bgp     *routing.Status // without its Routes
	learned [2]int
	tunnels map[string]dataplane.PeerStatus // by peer name
}

// snapshotMaxAge is how old a snapshot may be before a scrape asks the
// loop for a new one. The scrape does not wait: it serves the snapshot
// there is, so a series may lag its source by up to this plus one scrape
// interval.
const snapshotMaxAge = 5 * time.Second

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
		bgp: routing.NewStatusMetrics(),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.reconcileErrors.Describe(ch)
	m.reloads.Describe(ch)
	for _, d := range []*prometheus.Desc{m.shaperBytes, m.shaperPackets, m.allocation, m.rate, m.shaperMode, m.bgpState, m.handshakeAge,
		m.tunnelBytes, m.conflicts, m.configG, m.buildInfo, m.configInfo} {
		ch <- d
	}
	m.bgp.Describe(ch)
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
	s := a.metricsSnapshot()
	if s == nil {
		return
	}
	if s.tunnels != nil {
		for _, p := range d.Peers {
			t, ok := s.tunnels[p.Name]
			if !ok {
				continue
			}
			if !t.LastHandshake.IsZero() {
				ch <- prometheus.MustNewConstMetric(m.handshakeAge, prometheus.GaugeValue, time.Since(t.LastHandshake).Seconds(), p.Name)
			}
			ch <- prometheus.MustNewConstMetric(m.tunnelBytes, prometheus.CounterValue, float64(max(t.ReceiveBytes, 0)), p.Name, "rx")
			ch <- prometheus.MustNewConstMetric(m.tunnelBytes, prometheus.CounterValue, float64(max(t.TransmitBytes, 0)), p.Name, "tx")
		}
	}
	if s.bgp != nil {
		m.collectBGP(ch, s)
	}
}

// collectBGP emits the snapshot's BGP series.
func (m *metrics) collectBGP(ch chan<- prometheus.Metric, s *snapshot) {
	for _, ss := range s.bgp.Sessions {
		ch <- prometheus.MustNewConstMetric(m.bgpState, prometheus.GaugeValue, 1, ss.Name, string(ss.Kind), ss.State)
	}
	m.bgp.Collect(ch, s.bgp, s.learned)
	ch <- prometheus.MustNewConstMetric(m.conflicts, prometheus.GaugeValue, float64(conflicts(*s.bgp)))
}

// metricsSnapshot returns the loop's latest snapshot (nil before the
// first), asking the loop for a new one when it is older than
// snapshotMaxAge.
func (a *Agent) metricsSnapshot() *snapshot {
	s := a.snap.Load()
	if s == nil || time.Since(s.at) > snapshotMaxAge {
		select {
		case a.snapKick <- struct{}{}:
		default:
		}
	}
	return s
}

// refreshSnapshot reads the subsystems for the metrics; the loop calls
// it. A subsystem that fails to answer leaves its part out.
func (a *Agent) refreshSnapshot() {
	dp, rt, _ := a.subsystems()
	s := &snapshot{at: time.Now()}
	if rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
		st, err := rt.Status(ctx)
		cancel()
		if err != nil {
			a.log.Debug("metrics: bgp status", "err", err)
		} else {
			st.Routes = nil
			s.bgp = &st
		}
	}
	if dp != nil {
		if peers, err := dp.Peers(); err != nil {
			a.log.Debug("metrics: wireguard peers", "err", err)
		} else {
			s.tunnels = make(map[string]dataplane.PeerStatus, len(peers))
			for _, p := range peers {
				s.tunnels[p.Name] = p
			}
		}
	}
	a.mu.Lock()
	s.learned = routing.LearnedByFamily(a.learn.routes)
	a.mu.Unlock()
	a.snap.Store(s)
}
