package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// twinLab is two regions: A, whose two gateways A1 and A2 (the lab's gw0
// and gw1) share a LAN with the VPC host h, and B, whose only gateway
// (gw2) has the host hb behind it; with single, a third region S too,
// whose only gateway (gw3) has the host hs behind it. h has an address in
// each half of the VPC 10.99.0.0/16: the first half is homed at A1, the
// second at A2, and each twin hands the other's half to it over the LAN.
// Every twin has strict reverse-path filtering on (as RHEL ships): the
// handoff must not need it loosened.
type twinLab struct {
	*lab
	h, hb, hs string
}

var (
	twinPieces = [2]netip.Prefix{netip.MustParsePrefix("10.99.0.0/17"), netip.MustParsePrefix("10.99.128.0/17")}
	// twinHosts are h's addresses, homed at A1 and A2.
	twinHosts = [2]netip.Addr{netip.MustParseAddr("10.99.0.10"), netip.MustParseAddr("10.99.128.10")}
	// twinLANs are A1's and A2's addresses on the LAN.
	twinLANs = [2]netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")}
	// The networks behind B and S, and their hosts.
	remoteNet  = netip.MustParsePrefix("10.30.0.0/16")
	remoteHost = netip.MustParseAddr("10.30.0.10")
	singleNet  = netip.MustParsePrefix("10.40.0.0/16")
	singleHost = netip.MustParseAddr("10.40.0.10")
)

// twinLANLink is each twin's link to the LAN, and B's and S's to their
// host.
const twinLANLink = "ocdpv99"

func newTwinLab(tb testing.TB, single bool) *twinLab {
	n := 3
	if single {
		n = 4
	}
	l := newLab(tb, n)
	x := &twinLab{lab: l, h: newNetNS(tb)}
	run(tb, "ip", "-n", x.h, "link", "add", "ocdpbr9", "type", "bridge")
	for _, a := range twinHosts {
		run(tb, "ip", "-n", x.h, "addr", "add", netip.PrefixFrom(a, 16).String(), "dev", "ocdpbr9")
	}
	run(tb, "ip", "-n", x.h, "link", "set", "ocdpbr9", "up")
	for i := range 2 {
		port := fmt.Sprintf("ocdph%d", i)
		run(tb, "ip", "-n", l.gws[i].ns, "link", "add", twinLANLink, "type", "veth", "peer", "name", port, "netns", x.h)
		run(tb, "ip", "-n", x.h, "link", "set", port, "master", "ocdpbr9", "up")
		run(tb, "ip", "-n", l.gws[i].ns, "addr", "add", netip.PrefixFrom(twinLANs[i], 16).String(), "dev", twinLANLink)
		run(tb, "ip", "-n", l.gws[i].ns, "link", "set", twinLANLink, "up")
		run(tb, "ip", "netns", "exec", l.gws[i].ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	}
	x.hb = hostBehind(tb, l.gws[2].ns, remoteHost)
	if single {
		x.hs = hostBehind(tb, l.gws[3].ns, singleHost)
	}
	for i := range l.gws {
		if err := l.open(i).Set(context.Background(), x.desired(i)); err != nil {
			tb.Fatalf("gw%d: Set: %v", i, err)
		}
	}
	l.pingMesh()
	return x
}

// hostBehind makes a host namespace with address host/24 behind the
// gateway in gw, which gets the first address of that /24 and is the
// host's default route.
func hostBehind(tb testing.TB, gw string, host netip.Addr) string {
	ns := newNetNS(tb)
	first := netip.PrefixFrom(host, 24).Masked().Addr().Next()
	run(tb, "ip", "-n", gw, "link", "add", twinLANLink, "type", "veth", "peer", "name", "ocdph30", "netns", ns)
	run(tb, "ip", "-n", gw, "addr", "add", netip.PrefixFrom(first, 24).String(), "dev", twinLANLink)
	run(tb, "ip", "-n", gw, "link", "set", twinLANLink, "up")
	run(tb, "ip", "-n", ns, "addr", "add", netip.PrefixFrom(host, 24).String(), "dev", "ocdph30")
	run(tb, "ip", "-n", ns, "link", "set", "ocdph30", "up")
	run(tb, "ip", "-n", ns, "route", "add", "default", "via", first.String())
	return ns
}

// homedAt is what gateway j is the home of, besides its lab VPC.
func homedAt(j int) []netip.Prefix {
	switch j {
	case 0, 1:
		return twinPieces[j : j+1]
	case 2:
		return []netip.Prefix{remoteNet}
	}
	return []netip.Prefix{singleNet}
}

// desired is gateway i's state: the lab's, with what each peer is the
// home of in its AllowedIPs; A and S route to B's network, B to A's and
// S's; each twin hands the other's half to it.
func (x *twinLab) desired(i int) Desired {
	d := x.lab.desired(i)
	for k := range d.Peers {
		j, _ := strconv.Atoi(strings.TrimPrefix(d.Peers[k].Name, "gw"))
		d.Peers[k].AllowedIPs = append(d.Peers[k].AllowedIPs, homedAt(j)...)
	}
	// Each gateway's LAN: the twins' VPC, B's and S's host networks.
	d.LANPrefixes = append(d.LANPrefixes, []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("10.99.0.0/16"), remoteNet, singleNet}[i])
	switch i {
	case 2:
		d.Routes = append(d.Routes, twinPieces[:]...)
		if len(x.gws) > 3 {
			d.Routes = append(d.Routes, singleNet)
		}
	case 0, 1:
		d.Handoffs = []Handoff{{Twin: fmt.Sprintf("gw%d", 1-i), Via: []netip.Addr{twinLANs[1-i]}, Sources: []netip.Prefix{twinPieces[1-i]}}}
		fallthrough
	default:
		d.Routes = append(d.Routes, remoteNet)
	}
	return d
}

// force routes h's traffic to dst through twin i (a host route: no hash
// decides a path).
func (x *twinLab) force(dst netip.Addr, i int) {
	run(x.tb, "ip", "-n", x.h, "route", "replace", netip.PrefixFrom(dst, 32).String(), "via", twinLANs[i].String())
}

// counter reads one of a link's statistics (e.g. tx_packets) in ns.
func counter(tb testing.TB, ns, dev, stat string) int64 {
	tb.Helper()
	out := strings.TrimSpace(run(tb, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/statistics/"+stat))
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		tb.Fatalf("%s of %s: %q", stat, dev, out)
	}
	return n
}

// peerBytes is what B's device received from and sent to each twin.
func (x *twinLab) peerBytes() (rx, tx [2]int64) {
	st, err := x.gws[2].dp.Status()
	if err != nil {
		x.tb.Fatal(err)
	}
	for _, p := range st.Peers {
		j, _ := strconv.Atoi(strings.TrimPrefix(p.Name, "gw"))
		if j < 2 {
			rx[j], tx[j] = p.ReceiveBytes, p.TransmitBytes
		}
	}
	return rx, tx
}
