package agent

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/internal/netipx"
)

// savedRoute is a learned route as kept across a restart.
type savedRoute struct {
	Prefix   netip.Prefix `json:"prefix"`
	Region   string       `json:"origin_region"`
	Network  string       `json:"origin_network"`
	NextHops []netip.Addr `json:"next_hops"`
	Direct   bool         `json:"direct,omitempty"`
	Gateways []netip.Addr `json:"gateways,omitempty"`
	Handoff  bool         `json:"handoff,omitempty"`
}

// saveRoutes writes the learned routes (the twins' handoff addresses
// among them) so that the next agent keeps their kernel routes and its
// handoffs until BGP has resynced (graceful restart), instead of flushing
// them at its first reconcile.
func saveRoutes(path string, routes desired.Routes) error {
	out := make([]savedRoute, 0, len(routes))
	for _, r := range sortedRoutes(routes) {
		out = append(out, savedRoute{r.Prefix, r.OriginRegion, r.OriginNetwork, r.NextHops, r.Direct, r.Gateways, r.Handoff})
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadRoutes reads what saveRoutes wrote; a missing or damaged file is an
// empty table (the routes are then relearned from BGP).
func loadRoutes(path string, log *slog.Logger) desired.Routes {
	data, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot read the routes the last agent saved", "err", err)
		}
		return desired.Routes{}
	}
	var in []savedRoute
	if err := json.Unmarshal(data, &in); err != nil {
		log.Warn("the routes the last agent saved are damaged; relearning them", "file", path, "err", err)
		return desired.Routes{}
	}
	out := make(desired.Routes, len(in))
	for _, r := range in {
		if r.Prefix.IsValid() {
			out[r.Prefix] = config.LearnedRoute{Prefix: r.Prefix, OriginRegion: r.Region, OriginNetwork: r.Network, NextHops: r.NextHops,
				Direct: r.Direct, Gateways: r.Gateways, Handoff: r.Handoff}
		}
	}
	return out
}

// sortedRoutes lists routes in prefix order.
func sortedRoutes(routes desired.Routes) []config.LearnedRoute {
	out := make([]config.LearnedRoute, 0, len(routes))
	for _, r := range routes {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b config.LearnedRoute) int { return netipx.ComparePrefix(a.Prefix, b.Prefix) })
	return out
}
