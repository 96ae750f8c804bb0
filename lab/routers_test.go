package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The router's eBGP session comes up against a real speaker on the
// gateway's side (a second BIRD standing in for cend, without BFD although
// the router asks for it), routes flow both ways into the kernels, and the
// on-premises host reaches the gateway's VPC address through them.
func TestRouterPeersWithBGPSpeaker(t *testing.T) {
	ctx, l, o := upPrivileged(t, 60*time.Second)
	rt := l.Routers[0]
	gw, _ := l.Gateway(rt.Gateway)
	sock := startSpeaker(t, l, o, rt, gw)
	deadline := time.Now().Add(30 * time.Second)
	var state, info string
	var err error
	until(deadline, 200*time.Millisecond, func() bool {
		state, info, err = l.BGPState(ctx, rt.Network)
		return err == nil && state == "up" && strings.HasPrefix(info, "Established")
	})
	if state != "up" {
		t.Fatalf("router session %q %q (%v) 30s after the speaker started", state, info, err)
	}
	want, via := gw.LANAddrs[0].Masked().String(), "via "+rt.GatewayAddress.Addr().String()
	var out []byte
	if !until(deadline, 200*time.Millisecond, func() bool {
		out, err = l.Exec(ctx, rt.Name, "ip", "route", "show", want)
		return err == nil && strings.Contains(string(out), via)
	}) {
		t.Fatalf("router kernel lacks %s via the gateway: %s", want, out)
	}
	if !until(deadline, 200*time.Millisecond, func() bool {
		err = ping(ctx, l, rt.Network, gw.LANAddrs[0].Addr().String())
		return err == nil
	}) {
		t.Errorf("on-premises host -> %s over the learned routes: %v", gw.LANAddrs[0].Addr(), err)
	}
	st, err := Status(o)
	if err != nil || st.Routers[0].State != "up" {
		t.Errorf("status does not show the session up: %v\n%s", err, st)
	}
	checkAnnouncementChange(t, ctx, l, rt, sock, deadline)
}

// startSpeaker starts a BIRD in gateway gw's namespace that peers with
// router rt as cend would, and returns its control socket.
func startSpeaker(t *testing.T, l *Lab, o Options, rt Router, gw Gateway) string {
	t.Helper()
	conf := filepath.Join(o.StateDir, "speaker.conf")
	sock := filepath.Join(o.StateDir, "speaker.ctl")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`router id %s;
protocol device {}
protocol static cen { ipv4; route %s blackhole; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
protocol bgp vbr {
	local as %d;
	neighbor %s as %d;
	connect retry time 1;
	ipv4 { import all; export where proto = "cen"; };
}
`, rt.GatewayAddress.Addr(), gw.LANAddrs[0].Masked(), rt.PeerASN, rt.Address.Addr(), rt.ASN)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.spawn(gw.Namespace, filepath.Join(o.StateDir, "speaker.log"), "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(o.StateDir, "speaker.pid")); err != nil {
		t.Fatal(err)
	}
	return sock
}

// checkAnnouncementChange: the router also announces a VPC's CIDR (a
// hijack attempt, for the gateway to refuse), and the speaker at sock
// learns it; withdrawn, it goes.
func checkAnnouncementChange(t *testing.T, ctx context.Context, l *Lab, rt Router, sock string, deadline time.Time) {
	t.Helper()
	hijack := netip.MustParsePrefix("10.2.0.0/16")
	if err := l.SetAnnouncements(ctx, rt.Network, append(slices.Clone(rt.Announce), hijack)); err != nil {
		t.Fatal(err)
	}
	learned := func() string {
		out, _ := birdc(ctx, sock, "show", "route", "protocol", "vbr")
		return string(out)
	}
	until(deadline, 100*time.Millisecond, func() bool { return strings.Contains(learned(), hijack.String()) })
	if got := learned(); !strings.Contains(got, hijack.String()) || !strings.Contains(got, "192.168.100.0/24") {
		t.Errorf("the speaker did not learn the new announcement:\n%s", got)
	}
	if err := l.SetAnnouncements(ctx, rt.Network, nil); err != nil {
		t.Fatal(err)
	}
	until(deadline, 100*time.Millisecond, func() bool { return !strings.Contains(learned(), hijack.String()) })
	if got := learned(); strings.Contains(got, hijack.String()) {
		t.Errorf("the announcement is not withdrawn:\n%s", got)
	}
}

// until polls cond every interval until it holds or deadline passes, and
// reports whether it held.
func until(deadline time.Time, interval time.Duration, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// A region host's multipath route skips a dead gateway once its neighbour
// entry fails (fib_multipath_use_neigh with the short timers of
// host-routes.sh): a flow hashed onto gw-beijing-2 moves to gw-beijing-1,
// stays there, and returns when the gateway is revived.
func TestMultipathSkipsDeadGateway(t *testing.T) {
	ctx, l, _ := upPrivileged(t, 60*time.Second)
	h, _ := l.Host("vpc-beijing")
	dead, live := h.NextHops[1].String(), h.NextHops[0].String()
	routeVia := func(sport int) string {
		out, err := l.Exec(ctx, h.Name, "ip", "route", "get", "10.2.0.10", "from", h.Address.Addr().String(),
			"ipproto", "udp", "sport", fmt.Sprint(sport), "dport", "9")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(out))
		for i := range f[:len(f)-1] {
			if f[i] == "via" {
				return f[i+1]
			}
		}
		t.Fatalf("no next hop in %q", out)
		return ""
	}
	sport := 0
	for s := 40000; s < 40064 && sport == 0; s++ {
		if routeVia(s) == dead {
			sport = s
		}
	}
	if sport == 0 {
		t.Fatalf("no flow of 64 hashed onto %s: the route is not multipath", dead)
	}
	if err := ping(ctx, l, h.Name, dead); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.KillGateway(ctx, "gw-beijing-2"); err != nil {
		t.Fatal(err)
	}
	// Keep traffic toward the dead gateway flowing, as a host would, so its
	// neighbour entry is probed; bounded to 8 s.
	for time.Since(start) < 8*time.Second {
		_, _ = l.Exec(ctx, h.Name, "bash", "-c", "echo x > /dev/udp/"+dead+"/9")
		if routeVia(sport) == live {
			t.Logf("flow moved from %s to %s %s after the gateway died", dead, live, time.Since(start).Round(10*time.Millisecond))
			back := 0
			for range 30 {
				_, _ = l.Exec(ctx, h.Name, "bash", "-c", "echo x > /dev/udp/10.2.0.10/9")
				if routeVia(sport) == dead {
					back++
				}
				time.Sleep(100 * time.Millisecond)
			}
			if back > 0 {
				t.Errorf("the flow went back to the dead gateway in %d of 30 samples", back)
			}
			// Revived, the gateway gets its share again.
			if err := l.ReviveGateway(ctx, "gw-beijing-2", ""); err != nil {
				t.Fatal(err)
			}
			revived := time.Now()
			for time.Since(revived) < 3*time.Second {
				if routeVia(sport) == dead {
					t.Logf("flow back on %s %s after the revival", dead, time.Since(revived).Round(10*time.Millisecond))
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Fatalf("flow not back on the revived gateway %s after 3s", dead)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("flow still on the dead gateway %s after 8s", dead)
}
