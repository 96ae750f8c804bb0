package test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencen/opencen/agent/api"
)

// TestControlTrafficUnderSaturation saturates two region pairs' buckets,
// gw-x to gw-y on the 1 Kbps default and gw-x to gw-z at 1 Mbps, in both
// directions, with a tenant's TCP and UDP on port 179 (BGP's): for 60 s
// the BGP sessions between those gateways stay established (none
// restarts), BFD stays up, and no route is withdrawn, because the
// gateways' own traffic is exempt by its addresses, not by its port. It
// runs once, in the userspace mode (the lab's other tests run tcx), and
// checks that the buckets are saturated (they drop tenant traffic).
func TestControlTrafficUnderSaturation(t *testing.T) {
	l, _ := upLabShaper(t, ownInstance(t, "testdata/shaping.yaml"), "userspace")
	waitEstablished(t, l, "gw-x", "gw-y", "gw-z")
	setRates(t, l, 0, 1)
	x := gatewayOf(t, l, "gw-x")
	dropped := func() [2]uint64 {
		return [2]uint64{toward(t, x, "us-west-1").DroppedPackets, toward(t, x, "eu-central-1").DroppedPackets}
	}
	before := dropped()
	uptime := map[string]float64{}
	check := func() error {
		for _, c := range []struct{ gw, peers string }{{"gw-x", "gw-y gw-z"}, {"gw-y", "gw-x"}, {"gw-z", "gw-x"}} {
			var peers []api.Peer
			cenctlJSON(t, gatewayOf(t, l, c.gw).Socket, &peers, "peers")
			for _, p := range peers {
				key := c.gw + "-" + p.Name
				if p.BGPState != "established" || p.BFDState != "up" {
					return fmt.Errorf("%s: session %s, bfd %s", key, p.BGPState, p.BFDState)
				}
				if p.BGPUptimeSeconds < uptime[key] {
					return fmt.Errorf("%s: session restarted (uptime %.0f s, was %.0f s)", key, p.BGPUptimeSeconds, uptime[key])
				}
				uptime[key] = p.BGPUptimeSeconds
			}
			var routes []api.Route
			cenctlJSON(t, gatewayOf(t, l, c.gw).Socket, &routes, "routes")
			if n := installedRemote(routes); n != 4 {
				return fmt.Errorf("%s: %d remote routes installed, want the other 2 regions' VPCs, IPv4 and IPv6: %+v", c.gw, n, routes)
			}
		}
		return nil
	}
	if err := check(); err != nil {
		t.Fatalf("before the flood: %v", err)
	}

	const flood = 60 * time.Second
	flows := []tenantFlow{{"tcp", 179, 0}, {"udp", 179, 0}}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, c := range [][2]string{{"vpc-x", "vpc-y"}, {"vpc-y", "vpc-x"}, {"vpc-x", "vpc-z"}, {"vpc-z", "vpc-x"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tenantTraffic(l, c[0], c[1], flows, flood); err != nil {
				errs <- fmt.Errorf("%s -> %s: %w", c[0], c[1], err)
			}
		}()
	}
	var failed error
	for end := time.Now().Add(flood); time.Now().Before(end) && failed == nil; time.Sleep(2 * time.Second) {
		failed = check()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if failed != nil {
		t.Fatalf("during 60 s of tenant traffic on port 179: %v", failed)
	}
	after := dropped()
	t.Logf("tenant packets dropped during the flood: %d toward us-west-1 (1 Kbps), %d toward eu-central-1 (1 Mbps); session uptimes %v", after[0]-before[0], after[1]-before[1], uptime)
	if after[0] == before[0] || after[1] == before[1] {
		t.Fatalf("the buckets were not saturated: drops %v -> %v", before, after)
	}
}

// installedRemote counts the installed routes learned from other
// gateways.
func installedRemote(routes []api.Route) int {
	n := 0
	for _, r := range routes {
		if r.Source == "gateway" && r.Installed {
			n++
		}
	}
	return n
}
