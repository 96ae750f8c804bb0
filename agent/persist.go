package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/internal/netipx"
)

// stateVersion is the version of the routes file's format; a file of
// another version is not read (the routes are relearned from BGP).
const stateVersion = 1

// savedState is the routes file: what a graceful stop leaves for the
// next agent.
type savedState struct {
	Version int          `json:"version"`
	SavedAt time.Time    `json:"saved_at"`
	Routes  []savedRoute `json:"routes"`
}

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
	st := savedState{Version: stateVersion, SavedAt: time.Now().UTC(), Routes: make([]savedRoute, 0, len(routes))}
	for _, r := range sortedRoutes(routes) {
		st.Routes = append(st.Routes, savedRoute{r.Prefix, r.OriginRegion, r.OriginNetwork, r.NextHops, r.Direct, r.Gateways, r.Handoff})
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileSynced(path, data)
}

// writeFileSynced replaces path with data durably: written to a temporary
// file that is synced, renamed into place, and the folder synced, so a
// crash or power loss leaves the old file or the new one, whole.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// loadRoutes reads what saveRoutes wrote; a missing or damaged file, or
// one of another version, is an empty table (the routes are then
// relearned from BGP).
func loadRoutes(path string, log *slog.Logger) desired.Routes {
	data, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot read the routes the last agent saved", "err", err)
		}
		return desired.Routes{}
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		log.Warn("the routes the last agent saved are damaged; relearning them", "file", path, "err", err)
		return desired.Routes{}
	}
	if st.Version != stateVersion {
		log.Warn("the routes the last agent saved are of another format; relearning them", "file", path, "version", st.Version, "want", stateVersion)
		return desired.Routes{}
	}
	out := make(desired.Routes, len(st.Routes))
	for _, r := range st.Routes {
		if r.Prefix.IsValid() {
			out[r.Prefix] = config.LearnedRoute{Prefix: r.Prefix, OriginRegion: r.Region, OriginNetwork: r.Network, NextHops: r.NextHops,
				Direct: r.Direct, Gateways: r.Gateways, Handoff: r.Handoff}
		}
	}
	return out
}

// takeSavedState reads, and removes, what the last agent left: after a
// graceful stop, its marker and its routes (restarting is true and the
// routes are kept until BGP has synced). Both are used once: a later
// crash leaves nothing, so the agent after it relearns everything rather
// than install routes from before. Routes without the marker are from
// before a crash: removed unread.
func takeSavedState(stateDir string, log *slog.Logger) (restarting bool, routes desired.Routes) {
	marker, routesFile := gracefulMarker(stateDir), routesFile(stateDir)
	_, err := os.Stat(marker)
	restarting = err == nil
	routes = desired.Routes{}
	if restarting {
		routes = loadRoutes(routesFile, log)
	} else if _, err := os.Stat(routesFile); err == nil {
		log.Warn("ignoring routes saved before an unclean stop", "file", routesFile)
	}
	var errs []error
	for _, p := range []string{routesFile, marker} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(append(errs, syncDir(stateDir))...); err != nil {
		log.Warn("removing the state the last agent left", "err", err)
	}
	return restarting, routes
}

// gracefulMarker is written when an agent stops leaving its state in place,
// so the next one tells BGP peers it is restarting.
func gracefulMarker(stateDir string) string { return filepath.Join(stateDir, "graceful-restart") }

func routesFile(stateDir string) string { return filepath.Join(stateDir, "learned-routes.json") }

// sortedRoutes lists routes in prefix order.
func sortedRoutes(routes desired.Routes) []config.LearnedRoute {
	out := make([]config.LearnedRoute, 0, len(routes))
	for _, r := range routes {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b config.LearnedRoute) int { return netipx.ComparePrefix(a.Prefix, b.Prefix) })
	return out
}
