package shaping

import (
	"net/netip"
	"testing"
	"time"
)

// The exemption: the gateways' own traffic, never a port (see the package
// doc), for the program and for the userspace Limiter alike.

// tenantPorts are the ports of the gateways' own protocols (BGP, BFD,
// micro-BFD and echo, VXLAN, WireGuard): a tenant's traffic on them is
// charged like any other.
var tenantPorts = []uint16{179, 3784, 3785, 4784, 4789, 51820}

// tenantPackets are TCP and UDP packets of a tenant toward 10.5.0.1 with
// each of tenantPorts as destination and as source port.
func tenantPackets(size int) []pkt {
	var out []pkt
	for _, port := range tenantPorts {
		for _, proto := range []byte{6, 17} {
			out = append(out,
				pkt{src: "10.100.0.1", dst: "10.5.0.1", proto: proto, sport: 40000, dport: port, size: size},
				pkt{src: "10.100.0.1", dst: "10.5.0.1", proto: proto, sport: port, dport: 40000, size: size})
		}
	}
	return out
}

// TestLimiterTenantPorts: with the bucket empty, a tenant's TCP and UDP on
// every port of the gateways' own protocols is dropped, and only traffic
// between two gateways passes, whatever its port.
func TestLimiterTenantPorts(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{Mode: ModePolice, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Set(Desired{
		Regions:      map[string]Rate{"r-a": Kbps},
		Prefixes:     map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a"},
		ControlAddrs: []netip.Addr{mustAddr("10.0.0.1"), mustAddr("10.0.0.2")},
	}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	if _, ok := l.Admit(pkt{src: "10.100.0.1", dst: "10.5.0.1", size: 1500}.ip(), t0); !ok {
		t.Fatal("a full bucket dropped its first packet")
	}
	for _, p := range tenantPackets(100) {
		if _, ok := l.Admit(p.ip(), t0); ok {
			t.Errorf("tenant packet %+v passed an empty bucket", p)
		}
	}
	for _, port := range tenantPorts {
		for _, proto := range []byte{6, 17} {
			p := pkt{src: "10.0.0.1", dst: "10.0.0.2", proto: proto, sport: port, dport: port, size: 1400}
			if _, ok := l.Admit(p.ip(), t0); !ok {
				t.Errorf("gateway-to-gateway packet %+v dropped", p)
			}
		}
	}
	c, _ := l.Counters()
	if want := uint64(len(tenantPackets(100))); c["r-a"].DroppedPackets != want || c["r-a"].PassedPackets != 1+12 {
		t.Fatalf("counters %+v, want %d dropped and 13 passed", c["r-a"], want)
	}
}

// TestProgControlExempt: only the gateways' own traffic is exempt: both
// ends gateway addresses, and sent by this host (at egress a forwarded
// packet carries the device it came in on). A tenant's TCP and UDP on the
// ports of the gateways' protocols, a packet with one gateway end, and a
// forwarded packet that claims a gateway's address as its source are all
// charged: with the bucket empty they are dropped.
func TestProgControlExempt(t *testing.T) {
	f := newFixture(t, false, ModePolice)
	d := Desired{
		Regions:      map[string]Rate{"r-a": Kbps},
		Prefixes:     map[netip.Prefix]string{mustPrefix("10.0.0.0/8"): "r-a", mustPrefix("fd00::/16"): "r-a"},
		ControlAddrs: []netip.Addr{mustAddr("10.0.0.1"), mustAddr("10.0.0.2"), mustAddr("fd00::1"), mustAddr("fd00::2")},
	}
	f.set(d)
	now := uint64(time.Second)
	// Exhaust the bucket (burst = 1500 bytes at 1 Kbps).
	f.run(pkt{src: "10.100.0.1", dst: "10.5.0.1", size: 1500}, now)
	if ret, _ := f.run(pkt{src: "10.100.0.1", dst: "10.5.0.1", size: 100}, now); ret != retDrop {
		t.Fatal("ordinary packet passed an empty bucket")
	}
	local, forwarded := skbCtx{}, skbCtx{}
	forwarded[ctxIngressIfindex] = 7
	for _, p := range []pkt{
		{src: "10.0.0.1", dst: "10.0.0.2", proto: 17, sport: 4784, dport: 4784, size: 1400},
		{src: "10.0.0.2", dst: "10.0.0.1", proto: 6, sport: 40000, dport: 179, size: 1400},
		{src: "10.0.0.1", dst: "10.0.0.2", proto: 6, sport: 5201, dport: 5201, size: 1400},
		{src: "fd00::1", dst: "fd00::2", proto: 1, size: 1400},
	} {
		if ret, _ := f.runCtx(f.frame(p), now, local); ret != retNext {
			t.Errorf("gateway-to-gateway packet %+v dropped", p)
		}
		if ret, _ := f.runCtx(f.frame(p), now, forwarded); ret != retDrop {
			t.Errorf("forwarded packet with gateway addresses %+v passed an empty bucket", p)
		}
	}
	charged := append(tenantPackets(100),
		pkt{src: "10.100.0.1", dst: "10.0.0.2", proto: 17, sport: 4784, dport: 4784, size: 100},
		pkt{src: "10.0.0.1", dst: "10.5.0.1", proto: 6, sport: 179, dport: 40000, size: 100},
		pkt{src: "fd00:100::1", dst: "fd00::9", proto: 6, sport: 179, dport: 50000, size: 100},
		pkt{src: "fd00:100::1", dst: "fd00::9", proto: 17, sport: 50000, dport: 3784, size: 100},
	)
	for _, p := range charged {
		if ret, _ := f.runCtx(f.frame(p), now, local); ret != retDrop {
			t.Errorf("tenant packet %+v passed an empty bucket", p)
		}
	}
	if c := f.counters()["r-a"]; c.DroppedPackets != uint64(1+4+len(charged)) {
		t.Errorf("dropped %d packets, want %d", c.DroppedPackets, 1+4+len(charged))
	}
}
