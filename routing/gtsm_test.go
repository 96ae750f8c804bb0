package routing

import (
	"context"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// TestTTLSecurity: with ttl_security a VBR session comes up only with a
// router that sends TTL 255 (GTSM, RFC 5082); an eBGP router sending its
// usual TTL 1 never gets past the kernel's minimum TTL.
func TestTTLSecurity(t *testing.T) {
	for _, c := range []struct {
		name     string
		gtsm     bool
		routerUp bool
	}{
		{"router sends TTL 1", false, false},
		{"router sends TTL 255", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := freePort(t)
			d := desiredA(port)
			d.Gateways = nil
			d.VBRs[0].TTLSecurity = true
			a := startNode(t, port, d)
			rawRouter(t, addrOnprem, 65010, port, addrA, testASN, func(p *api.Peer) {
				if c.gtsm {
					p.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
				}
			})
			established := func() bool {
				st, _ := a.s.Status(context.Background())
				return len(st.Sessions) == 1 && st.Sessions[0].State == "established"
			}
			if c.routerUp {
				waitFor(t, 20*time.Second, "the session with a GTSM router up", established)
				return
			}
			// Several connect retries (1 s each) in both directions.
			for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if established() {
					t.Fatal("the session came up with a router sending TTL 1")
				}
			}
		})
	}
}
