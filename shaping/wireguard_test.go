package shaping

import (
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/opencen/opencen/internal/testutil"
)

// wgDevice starts a wireguard-go device on a TUN named name inside ns,
// configured through its UAPI (IpcSet, the protocol wgctrl speaks), and
// closes it at cleanup. With wrap, the device runs on what wrap makes of
// the TUN (the userspace shaper).
func wgDevice(t testing.TB, ns *testNS, name string, key wgtypes.Key, port int, peer wgtypes.Key, endpoint, allowed string, wrap func(tun.Device) (tun.Device, error)) {
	t.Helper()
	var dev *device.Device
	err := ns.do(func() error {
		td, err := tun.CreateTUN(name, 1420)
		if err != nil {
			return fmt.Errorf("create tun: %w", err)
		}
		if wrap != nil {
			if td, err = wrap(td); err != nil {
				return err
			}
		}
		dev = device.NewDevice(td, nsBind{conn.NewDefaultBind(), ns}, device.NewLogger(device.LogLevelSilent, ""))
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\n", hex.EncodeToString(key[:]), port, hex.EncodeToString(peer[:]), endpoint)
		for _, a := range splitComma(allowed) {
			cfg += "allowed_ip=" + a + "\n"
		}
		if err := dev.IpcSet(cfg); err != nil {
			return fmt.Errorf("configure wireguard: %w", err)
		}
		return dev.Up()
	})
	if err != nil {
		if dev != nil {
			dev.Close()
		}
		t.Fatalf("wireguard device %s: %v", name, err)
	}
	t.Cleanup(dev.Close)
}

// nsBind opens wireguard-go's UDP sockets in the test's namespace. The
// device opens them again whenever the TUN goes down and up, from its own
// event goroutine, on whatever thread that runs: without nsBind that can
// be the host namespace, where the peer never sends, and the tunnel never
// completes a handshake. The agent's helper is a process of its own
// inside the namespace and does not need this.
type nsBind struct {
	conn.Bind
	ns *testNS
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	nsErr := b.ns.do(func() error {
		fns, actual, err = b.Bind.Open(port)
		return nil
	})
	return fns, actual, errors.Join(nsErr, err)
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// tunnelPath is a WireGuard tunnel (wireguard-go on TUN: an L3 device, no
// Ethernet header) between two gateway namespaces, with traffic forwarded
// from a source namespace into it: src (10.210.1.2) -> gwA -> wgA ->
// gwB, which owns 10.212.0.1 (region r-b). wgA is gwA's tunnel device.
type tunnelPath struct {
	src, gwA, gwB *testNS
	wgA           string
}

// newTunnelPath builds the path; wrap, when set, wraps gwA's TUN.
func newTunnelPath(t testing.TB, wrap func(tun.Device) (tun.Device, error)) *tunnelPath {
	t.Helper()
	p := &tunnelPath{src: newNS(t), gwA: newNS(t), gwB: newNS(t)}
	src, gwA, gwB := p.src, p.gwA, p.gwB
	sfx := testutil.Suffix(3)
	a, b, c, d := "ocsh"+sfx+"a", "ocsh"+sfx+"b", "ocsh"+sfx+"c", "ocsh"+sfx+"d"
	wgA, wgB := "ocsh"+sfx+"w", "ocsh"+sfx+"x"
	p.wgA = wgA
	src.sh(t, "ip link add "+a+" type veth peer name "+b+" netns "+gwA.name)
	gwA.sh(t, "ip link add "+c+" type veth peer name "+d+" netns "+gwB.name)
	src.sh(t, "ip addr add 10.210.1.2/24 dev "+a)
	src.sh(t, "ip link set "+a+" up")
	src.sh(t, "ip route add 10.212.0.0/16 via 10.210.1.1")
	gwA.sh(t, "ip addr add 10.210.1.1/24 dev "+b)
	gwA.sh(t, "ip link set "+b+" up")
	gwA.sh(t, "ip addr add 172.16.210.1/24 dev "+c)
	gwA.sh(t, "ip link set "+c+" up")
	gwA.sh(t, "sysctl -qw net.ipv4.ip_forward=1")
	gwB.sh(t, "ip addr add 172.16.210.2/24 dev "+d)
	gwB.sh(t, "ip link set "+d+" up")
	gwB.sh(t, "ip addr add 10.212.0.1/32 dev lo")

	keyA, _ := wgtypes.GeneratePrivateKey()
	keyB, _ := wgtypes.GeneratePrivateKey()
	wgDevice(t, gwA, wgA, keyA, 51820, keyB.PublicKey(), "172.16.210.2:51820", "10.212.0.0/16,100.64.210.2/32", wrap)
	wgDevice(t, gwB, wgB, keyB, 51820, keyA.PublicKey(), "172.16.210.1:51820", "10.210.0.0/16,100.64.210.1/32", nil)
	gwA.sh(t, "ip addr add 100.64.210.1/32 dev "+wgA)
	gwA.sh(t, "ip link set "+wgA+" up")
	gwA.sh(t, "ip route add 10.212.0.0/16 dev "+wgA)
	gwA.sh(t, "ip route add 100.64.210.2/32 dev "+wgA)
	gwB.sh(t, "ip addr add 100.64.210.2/32 dev "+wgB)
	gwB.sh(t, "ip link set "+wgB+" up")
	gwB.sh(t, "ip route add 10.210.0.0/16 dev "+wgB)
	gwB.sh(t, "ip route add 100.64.210.1/32 dev "+wgB)
	return p
}

// userspaceTunnel is a tunnelPath whose gwA device runs on the userspace
// shaper, up, with an iperf3 server on gwB.
func userspaceTunnel(t testing.TB) (*tunnelPath, *TUN) {
	t.Helper()
	var shaped *TUN
	p := newTunnelPath(t, func(d tun.Device) (tun.Device, error) {
		var err error
		shaped, err = NewTUN(d, LimiterOptions{})
		return shaped, err
	})
	p.up(t)
	iperfServer(t, p.gwB, 5201)
	return p, shaped
}

// tunnelDesired shapes r-b (the tunnel's far side) at rate.
func tunnelDesired(rate Rate) Desired {
	return Desired{
		Regions:      map[string]Rate{"r-b": rate},
		Prefixes:     map[netipPrefix]string{mustPrefix("10.212.0.0/16"): "r-b", mustPrefix("10.210.0.0/16"): "r-a"},
		ControlAddrs: []netipAddr{mustAddr("100.64.210.1"), mustAddr("100.64.210.2")},
	}
}

// up waits for the tunnel's first handshake, which a loaded machine may
// take seconds to complete (its pings lost meanwhile).
func (p *tunnelPath) up(t testing.TB) {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if out, err = p.src.run("ping -c 1 -W 1 10.212.0.1"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("ping through the tunnel for 10 s: %v\n%s", err, out)
	}
}

// TestWireGuardTunnel shapes a real WireGuard tunnel with the program on
// wgA's egress.
func TestWireGuardTunnel(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping: 10 s of iperf3 in -short mode")
	}
	p := newTunnelPath(t, nil)
	var s *Shaper
	if err := p.gwA.do(func() error {
		var err error
		s, err = New(Options{Interface: p.wgA, PinPath: pinDir(t)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(true) })
	if s.devs[0].l2 != 0 {
		t.Fatalf("wireguard device taken for Ethernet (l2 %d)", s.devs[0].l2)
	}
	const rate = 50 * Mbps
	if err := s.Set(tunnelDesired(rate)); err != nil {
		t.Fatal(err)
	}
	p.up(t)
	iperfServer(t, p.gwB, 5201)
	bps, err := iperf(p.src, "10.212.0.1", 5201, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ratio := bps / float64(rate)
	cnt, _ := s.Counters()
	t.Logf("wireguard tunnel at %s: goodput %.2f Mbps, ratio %.4f; shaper %+v", rate, bps/1e6, ratio, cnt["r-b"])
	if ratio < 0.95 || ratio > 1.0 {
		t.Errorf("goodput ratio %.4f outside 0.95-1.00", ratio)
	}
}

// TestUserspaceTunnel shapes the same tunnel in userspace: gwA's
// wireguard-go device runs on the shaper's TUN, as the helper's does, and
// TCP goodput through it holds 0.95-1.00 of the allocation.
func TestUserspaceTunnel(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping: 16 s of iperf3 in -short mode")
	}
	p, shaped := userspaceTunnel(t)
	for _, c := range []struct {
		rate  Rate
		flows int
	}{{10 * Mbps, 1}, {100 * Mbps, 4}} {
		if err := shaped.Set(tunnelDesired(c.rate)); err != nil {
			t.Fatal(err)
		}
		start, _ := shaped.Counters()
		bps, err := iperf(p.src, "10.212.0.1", 5201, 8, c.flows)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := shaped.Counters()
		ratio := bps / float64(c.rate)
		t.Logf("userspace shaper at %s, %d flow(s): goodput %.2f Mbps, ratio %.4f; dropped %d packets", c.rate, c.flows, bps/1e6, ratio, after["r-b"].DroppedPackets-start["r-b"].DroppedPackets)
		if ratio < 0.95 || ratio > 1.0 {
			t.Errorf("%s, %d flow(s): goodput ratio %.4f outside 0.95-1.00", c.rate, c.flows, ratio)
		}
	}
}
