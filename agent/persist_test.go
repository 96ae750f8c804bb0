package agent

import (
	"bytes"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/desired"
)

// TestSavedRoutesOnlyAfterAGracefulStop: routes a graceful stop saved are
// read by the next agent once, and gone after: an agent started after that
// one crashed relearns everything instead of installing routes from
// before; routes without the graceful marker (left by a crash) are removed
// unread; a file of another format version is not read.
func TestSavedRoutesOnlyAfterAGracefulStop(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := testLogger(&logs)
	p := netip.MustParsePrefix("10.9.0.0/16")
	routes := desired.Routes{p: config.LearnedRoute{Prefix: p, OriginRegion: "r", OriginNetwork: "n", NextHops: []netip.Addr{netip.MustParseAddr("100.64.0.9")}}}
	gracefulStop := func() {
		t.Helper()
		if err := saveRoutes(routesFile(dir), routes); err != nil {
			t.Fatal(err)
		}
		if err := writeFileSynced(gracefulMarker(dir), []byte(time.Now().String())); err != nil {
			t.Fatal(err)
		}
	}
	gracefulStop()
	if restarting, got := takeSavedState(dir, log); !restarting || len(got) != 1 || got[p].NextHops[0] != routes[p].NextHops[0] {
		t.Fatalf("after a graceful stop: restarting %v, routes %v; want true and the saved route", restarting, got)
	}
	// That agent crashes: nothing is left to read.
	if restarting, got := takeSavedState(dir, log); restarting || len(got) != 0 {
		t.Fatalf("after a crash that followed a graceful stop: restarting %v, routes %v; want nothing", restarting, got)
	}
	// Routes without the marker: removed unread.
	if err := saveRoutes(routesFile(dir), routes); err != nil {
		t.Fatal(err)
	}
	if restarting, got := takeSavedState(dir, log); restarting || len(got) != 0 {
		t.Fatalf("routes without the marker: restarting %v, routes %v; want nothing", restarting, got)
	}
	if _, err := os.Stat(routesFile(dir)); !os.IsNotExist(err) {
		t.Errorf("routes without the marker left in place: %v", err)
	}
	// Another version is not read.
	gracefulStop()
	b, _ := os.ReadFile(routesFile(dir))
	os.WriteFile(routesFile(dir), bytes.Replace(b, []byte(`"version":1`), []byte(`"version":2`), 1), 0o600)
	if restarting, got := takeSavedState(dir, log); !restarting || len(got) != 0 || !strings.Contains(logs.String(), "another format") {
		t.Fatalf("a file of version 2: restarting %v, routes %v; want a restart without routes, and a warning", restarting, got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("state left: %v", entries)
	}
}
