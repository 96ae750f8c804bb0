package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
)

var _ Source = (*Agent)(nil)

const statusTimeout = 5 * time.Second

func (a *Agent) routingStatus() (routing.Status, bool) {
	_, rt, _ := a.subsystems()
	if rt == nil {
		return routing.Status{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := rt.Status(ctx)
	return st, err == nil
}

func (a *Agent) dataplaneStatus() (dataplane.Status, bool) {
	dp, _, _ := a.subsystems()
	if dp == nil {
		return dataplane.Status{}, false
	}
	st, err := dp.Status()
	return st, err == nil
}

// Status is the gateway's summary.
func (a *Agent) Status() api.Status {
	rs, _ := a.routingStatus()
	ds, _ := a.dataplaneStatus()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := api.Status{
		Instance:         a.cfg.Instance.Name,
		Gateway:          a.opts.Gateway,
		Region:           a.desired.Region,
		ConfigFile:       a.cfg.File,
		ConfigLoadedAt:   a.loadedAt,
		ConfigGeneration: a.gen,
		StartedAt:        a.started,
		WireGuard:        string(ds.Mode),
		Shaping:          string(a.shPath),
		ShapedDevices:    a.shDevices,
		Device:           ds.Device,
		TunnelAddress:    a.desired.TunnelAddress.String(),
		PeersTotal:       len(rs.Sessions),
		Conflicts:        conflicts(rs),
	}
	for _, name := range []string{subDataplane, subRouting, subShaping} {
		s.Subsystems = append(s.Subsystems, *a.subsys[name])
	}
	for _, sess := range rs.Sessions {
		if sess.State == "established" {
			s.PeersUp++
		}
	}
	s.RoutesTotal = len(a.learn.routes)
	installed := installedSet(ds)
	for p := range a.learn.routes {
		if installed[p] {
			s.RoutesActive++
		}
	}
	return s
}

func conflicts(rs routing.Status) int {
	n := 0
	for _, r := range rs.Rejected {
		if r.Reason == routing.ReasonConflict {
			n++
		}
	}
	return n
}

func installedSet(ds dataplane.Status) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(ds.Routes))
	for _, r := range ds.Routes {
		if r.Installed {
			out[r.Prefix] = true
		}
	}
	return out
}

// ResetPeer brings back at once the session named name that max_prefixes
// shut down (cenctl peers reset).
func (a *Agent) ResetPeer(ctx context.Context, name string) error {
	_, rt, _ := a.subsystems()
	if rt == nil {
		return fmt.Errorf("reset %s: %w: routing is not running yet", name, routing.ErrUnknownSession)
	}
	return rt.ResetSession(ctx, name)
}

// Peers lists BGP sessions joined with their WireGuard tunnels.
func (a *Agent) Peers() []api.Peer {
	rs, _ := a.routingStatus()
	ds, _ := a.dataplaneStatus()
	a.mu.Lock()
	d := a.desired
	a.mu.Unlock()
	tunnels := map[string]dataplane.PeerStatus{}
	for _, p := range ds.Peers {
		tunnels[p.Name] = p
	}
	sessions := map[string]routing.SessionStatus{}
	for _, s := range rs.Sessions {
		sessions[s.Name] = s
	}
	var out []api.Peer
	for _, p := range d.Peers {
		ap := api.Peer{
			Name: p.Name, Kind: "gateway", Region: p.Region,
			Address: p.TunnelAddress.String(), Endpoint: p.Endpoint.String(), PublicKey: p.PublicKey.String(),
			BGPState: "idle",
		}
		if t, ok := tunnels[p.Name]; ok {
			ap.LatestHandshake = t.LastHandshake
			ap.RxBytes, ap.TxBytes = uint64(max(t.ReceiveBytes, 0)), uint64(max(t.TransmitBytes, 0))
			if t.Endpoint.IsValid() {
				ap.Endpoint = t.Endpoint.String()
			}
			for _, a := range t.AllowedIPs {
				ap.AllowedIPs = append(ap.AllowedIPs, a.String())
			}
		}
		fillSession(&ap, sessions[p.Name])
		out = append(out, ap)
	}
	for _, v := range d.VBRs {
		ap := api.Peer{Name: v.Network, Kind: "vbr", Region: d.Region, Address: v.Neighbor.String(), BGPState: "idle"}
		fillSession(&ap, sessions[v.Network])
		out = append(out, ap)
	}
	return out
}

func fillSession(ap *api.Peer, s routing.SessionStatus) {
	if s.State == "" {
		return
	}
	ap.BGPState = s.State
	ap.BGPUptimeSeconds = s.Uptime.Seconds()
	ap.BFDState = s.BFD
	ap.PrefixesReceived, ap.PrefixesAccepted, ap.PrefixesRejected = s.Received, s.Accepted, s.Rejected
	for _, f := range s.Families {
		ap.Families = append(ap.Families, api.PeerFamily{Family: f.Family, Received: f.Received, Accepted: f.Accepted, Rejected: f.Rejected})
	}
	switch {
	case s.State == "max-prefix-exceeded":
		ap.Note = "max_prefixes exceeded: session shut down until max_prefixes_restart, or cenctl peers reset " + s.Name
	case s.LastError != "":
		ap.Note = s.LastError
	}
}

// Routes lists what this gateway originates and what it learned.
func (a *Agent) Routes() []api.Route {
	ds, _ := a.dataplaneStatus()
	installed := installedSet(ds)
	a.mu.Lock()
	d, cfg := a.desired, a.cfg
	routes := sortedRoutes(a.learn.routes)
	held := desired.Routes{}
	for p, h := range a.learn.held {
		if _, ok := a.learn.routes[p]; !ok {
			held[p] = h.route
		}
	}
	a.mu.Unlock()
	isHeld := map[netip.Prefix]bool{}
	for p := range held {
		isHeld[p] = true
	}
	routes = append(routes, sortedRoutes(held)...)

	names := map[netip.Addr]string{}
	for _, g := range cfg.Gateways {
		names[g.TunnelAddress] = g.Name
	}
	var out []api.Route
	for _, o := range d.Originate {
		out = append(out, api.Route{
			Prefix: o.Prefix.String(), OriginRegion: d.Region, OriginNetwork: o.Network,
			Kind: string(config.VPC), Source: "local", Installed: true,
		})
	}
	for _, r := range routes {
		ar := api.Route{
			Prefix: r.Prefix.String(), OriginRegion: r.OriginRegion, OriginNetwork: r.OriginNetwork,
			Kind: string(networkKind(cfg, r.OriginNetwork)), Source: "gateway", Installed: installed[r.Prefix],
		}
		switch {
		case r.Direct:
			ar.Source = "vbr"
		case isHeld[r.Prefix]:
			ar.Source = "held" // its gateways' sessions are down; see agent/held.go
		}
		for _, nh := range r.NextHops {
			if n, ok := names[nh]; ok {
				ar.NextHops = append(ar.NextHops, fmt.Sprintf("%s (%s)", nh, n))
			} else {
				ar.NextHops = append(ar.NextHops, nh.String())
			}
		}
		out = append(out, ar)
	}
	slices.SortStableFunc(out, func(x, y api.Route) int { return strings.Compare(x.OriginRegion, y.OriginRegion) })
	return out
}

func networkKind(cfg *config.Config, name string) config.NetworkType {
	for _, n := range cfg.Networks {
		if n.Name == name {
			return n.Type
		}
	}
	return ""
}

// Bandwidth lists this gateway's egress per destination region.
func (a *Agent) Bandwidth() []api.Bandwidth {
	sample := a.rates.snapshot()
	a.mu.Lock()
	d := a.desired
	a.mu.Unlock()
	var out []api.Bandwidth
	for _, e := range d.Egress {
		c := sample.counters[e.Region]
		b := api.Bandwidth{
			Region: e.Region, AllocationBps: uint64(e.Rate), PairBps: uint64(e.PairRate),
			Source: e.Source, Package: e.Package, RateBps: sample.rates[e.Region],
			PassedBytes: c.PassedBytes, PassedPackets: c.PassedPackets,
			DroppedBytes: c.DroppedBytes, DroppedPackets: c.DroppedPackets,
			SampledAt: sample.at.UTC(), // zero until the first sample: omitted
		}
		if e.Rate > 0 {
			b.Utilisation = b.RateBps / float64(e.Rate)
		}
		out = append(out, b)
	}
	return out
}
