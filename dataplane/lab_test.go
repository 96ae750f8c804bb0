package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/internal/testutil"
)

// lab is N gateways in namespaces of their own, joined by an underlay
// bridge, each with a "VPC" address 10.(i+1).0.1 on its loopback.
type lab struct {
	tb       testing.TB
	id       string
	stateDir string
	gws      []*gateway
	u        *underlay
	resync   time.Duration // Options.ResyncInterval; 0 means off
}

type gateway struct {
	ns       string
	key      wgtypes.Key
	underlay netip.Addr
	tunnel   netip.Addr
	lan      netip.Prefix
	dp       *Dataplane
}

const labPort = 51820

func newLab(tb testing.TB, n int) *lab {
	testutil.RequireRoot(tb)
	l := &lab{tb: tb, id: testutil.Suffix(4), stateDir: tb.TempDir()}
	u := newUnderlay(tb)
	l.u = u
	for i := range n {
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		g := &gateway{
			ns:       newNetNS(tb),
			key:      key,
			underlay: netip.AddrFrom4([4]byte{172, 16, 0, byte(i + 1)}),
			tunnel:   netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}),
			lan:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i + 1), 0, 0}), 16),
		}
		u.attach(tb, g.ns, netip.PrefixFrom(g.underlay, 24))
		run(tb, "ip", "-n", g.ns, "addr", "add", lanHost(g).String()+"/32", "dev", "lo")
		l.gws = append(l.gws, g)
	}
	return l
}

func lanHost(g *gateway) netip.Addr { return g.lan.Addr().Next() }

func (l *lab) device(i int) string { return fmt.Sprintf("ocdp%s%d", l.id, i) }

func (l *lab) options(i int) Options {
	resync := l.resync
	if resync == 0 {
		resync = -1 // the tests assert repair by netlink events
	}
	return Options{
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Device:         l.device(i),
		NetNS:          nsPath(l.gws[i].ns),
		StateDir:       l.stateDir,
		HelperCommand:  []string{os.Args[0], "wireguard-device"},
		ResyncInterval: resync,
	}
}

// desired is gateway i's view: every other gateway a peer, the home of
// its own VPC, which is routed through the tunnel.
func (l *lab) desired(i int) Desired {
	g := l.gws[i]
	d := Desired{
		PrivateKey:  g.key,
		ListenPort:  labPort,
		Addresses:   []netip.Prefix{netip.PrefixFrom(g.tunnel, 32)},
		LANPrefixes: []netip.Prefix{g.lan},
	}
	for j, o := range l.gws {
		if j == i {
			continue
		}
		d.Peers = append(d.Peers, Peer{
			Name:            fmt.Sprintf("gw%d", j),
			PublicKey:       o.key.PublicKey(),
			Endpoint:        netip.AddrPortFrom(o.underlay, labPort),
			TunnelAddresses: []netip.Prefix{netip.PrefixFrom(o.tunnel, 32)},
			AllowedIPs:      []netip.Prefix{o.lan},
			Keepalive:       time.Second,
		})
		d.Routes = append(d.Routes, o.lan)
	}
	return d
}

// open creates gateway i's Dataplane; cleanup removes everything even if
// the test failed half-way (Close(true), then a hard kill of any helper
// left and its socket).
func (l *lab) open(i int) *Dataplane {
	tb := l.tb
	dp, err := New(l.options(i))
	if err != nil {
		tb.Fatalf("gw%d: New: %v", i, err)
	}
	l.gws[i].dp = dp
	name := l.device(i)
	tb.Cleanup(func() {
		if err := dp.Close(true); err != nil {
			tb.Errorf("gw%d: Close(true): %v", i, err)
		}
		killHelper(tb, l.stateDir, name)
	})
	return dp
}

// killHelper is the last-resort cleanup for a device's helper.
func killHelper(tb testing.TB, stateDir, name string) {
	h := &host{stateDir: stateDir, log: slog.New(slog.DiscardHandler)}
	if pid := h.findHelper(name); pid != 0 {
		tb.Logf("killing leftover helper %d for %s", pid, name)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = os.Remove(filepath.Join(UAPIDir, name+".sock"))
}

func (l *lab) up(ctx context.Context) {
	for i := range l.gws {
		if err := l.open(i).Set(ctx, l.desired(i)); err != nil {
			l.tb.Fatalf("gw%d: Set: %v", i, err)
		}
	}
}

// pingMesh checks every gateway reaches every other's tunnel address and
// VPC address through the tunnel.
func (l *lab) pingMesh() {
	for i, g := range l.gws {
		for j, o := range l.gws {
			if i == j {
				continue
			}
			waitPing(l.tb, g.ns, o.tunnel, 10*time.Second)
			waitPing(l.tb, g.ns, lanHost(o), 5*time.Second)
		}
	}
}

// underlay6 gives every gateway fd00:172::(i+1)/64 on its underlay link,
// without duplicate address detection.
func (l *lab) underlay6() {
	for i, g := range l.gws {
		run(l.tb, "ip", "-n", g.ns, "addr", "add", fmt.Sprintf("fd00:172::%d/64", i+1), "dev", "ocdpeth0", "nodad")
	}
}

// handoffTo gives d a handoff to gateway j over the underlay (which
// underlay6 made dual stack): j's VPC and fd00:99:J::/64, homed at j, are
// handed to j's underlay addresses. The lab's gateways are no twins of a
// region; this gives a Set every kind of rule and table a handoff makes.
func (l *lab) handoffTo(d *Desired, j int) {
	o := l.gws[j]
	v6 := netip.MustParsePrefix(fmt.Sprintf("fd00:99:%d::/64", j+1))
	d.Handoffs = append(d.Handoffs, Handoff{Twin: fmt.Sprintf("gw%d", j),
		Via: []netip.Addr{o.underlay, netip.MustParseAddr(fmt.Sprintf("fd00:172::%d", j+1))}, Sources: []netip.Prefix{o.lan, v6}})
	for k := range d.Peers {
		if d.Peers[k].Name == fmt.Sprintf("gw%d", j) {
			d.Peers[k].AllowedIPs = append(d.Peers[k].AllowedIPs, v6)
		}
	}
}
