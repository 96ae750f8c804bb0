package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/opencen/opencen/internal/netipx"
)

// Path is one way a flow between two lab hosts can go, every choice in it
// made by the lab and none left to a hash: from a source address of the
// source host, handed to one of its region's gateways (its ingress), to a
// destination address of the destination host, answered through one of
// that region's gateways (the return). Which gateway sends the flow into
// the tunnel and which receives it follow from the addresses' homes.
type Path struct {
	From    string     `json:"from"`
	To      string     `json:"to"`
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	Ingress string     `json:"ingress,omitempty"` // empty: the host has one way out (an on-premises router)
	Return  string     `json:"return,omitempty"`
}

// IPv6 reports whether the path is an IPv6 one.
func (p Path) IPv6() bool { return p.Dst.Is6() }

func (p Path) String() string {
	s := fmt.Sprintf("%s %s -> %s %s", p.From, p.Src, p.To, p.Dst)
	if p.Ingress != "" {
		s += " in at " + p.Ingress
	}
	if p.Return != "" {
		s += ", back through " + p.Return
	}
	return s
}

// lanAddrs are every address of a host on its LAN, primary ones first.
func (h Host) lanAddrs() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range append([]netip.Prefix{h.Address, h.Address6}, h.Extra...) {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// addresses are a host's addresses of one family, its primary first.
func (h Host) addresses(v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range h.lanAddrs() {
		if a.Addr().Is6() == v6 {
			out = append(out, a.Addr())
		}
	}
	return out
}

// Primary is the host's address of one family, invalid when it has none.
func (h Host) Primary(v6 bool) netip.Addr {
	if v6 {
		return h.Address6.Addr()
	}
	return h.Address.Addr()
}

// exits are a host's ways into the CEN: one per next hop, named by its
// gateway (empty for an on-premises host's router).
func (h Host) exits() []string {
	if len(h.Gateways) == 0 {
		return []string{""}
	}
	return h.Gateways
}

// Paths lists every path between every ordered pair of the lab's hosts,
// IPv4 ones first, then IPv6 ones: each source address of the family,
// through each gateway the source host can hand a flow to, to each
// destination address of the family, answered through each gateway the
// destination host can answer through. A pair has paths in each family
// both hosts have addresses of.
func (l *Lab) Paths() []Path {
	var out []Path
	for _, v6 := range []bool{false, true} {
		out = append(out, l.familyPaths(v6)...)
	}
	return out
}

// familyPaths are Paths of one family.
func (l *Lab) familyPaths(v6 bool) []Path {
	var out []Path
	for _, from := range l.Hosts {
		for _, to := range l.Hosts {
			if from.Name == to.Name {
				continue
			}
			for _, src := range from.addresses(v6) {
				for _, in := range from.exits() {
					for _, dst := range to.addresses(v6) {
						for _, back := range to.exits() {
							out = append(out, Path{From: from.Name, To: to.Name, Src: src, Dst: dst, Ingress: in, Return: back})
						}
					}
				}
			}
		}
	}
	return out
}

// Force makes p's flow take p: a host route to the destination through
// the ingress gateway on the source host, and one back to the source
// through the return gateway on the destination host. The returned
// function removes both (it is safe to call after an error).
func (l *Lab) Force(ctx context.Context, p Path) (func(), error) {
	var undo []func()
	cleanup := func() {
		for _, u := range slices.Backward(undo) {
			u()
		}
	}
	for _, leg := range []struct {
		host, gateway string
		dst           netip.Addr
	}{{p.From, p.Ingress, p.Dst}, {p.To, p.Return, p.Src}} {
		if leg.gateway == "" {
			continue
		}
		u, err := l.hostRoute(ctx, leg.host, leg.dst, leg.gateway)
		if err != nil {
			cleanup()
			return func() {}, err
		}
		undo = append(undo, u)
	}
	return cleanup, nil
}

// hostRoute routes dst from host through gateway with a host route.
func (l *Lab) hostRoute(ctx context.Context, host string, dst netip.Addr, gateway string) (func(), error) {
	h, ok := l.Host(host)
	if !ok {
		return nil, fmt.Errorf("no host %q in the lab", host)
	}
	i := slices.Index(h.Gateways, gateway)
	hops := h.hops(dst.Is6())
	if i < 0 || i >= len(hops) {
		return nil, fmt.Errorf("host %s cannot hand an %s flow to %s (its gateways: %s)", host, familyName(dst.Is6()), gateway, strings.Join(h.Gateways, ", "))
	}
	route := []string{netipx.Host(dst).String(), "via", hops[i].String(), "dev", ifLAN}
	if err := l.runner().ip(ctx, h.Namespace, append([]string{"route", "replace"}, route...)...); err != nil {
		return nil, fmt.Errorf("force %s -> %s through %s: %w", host, dst, gateway, err)
	}
	return func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = l.runner().ip(dctx, h.Namespace, append([]string{"route", "del"}, route...)...)
	}, nil
}

// PathResult is one path's pings.
type PathResult struct {
	Path
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	RTTms    float64 `json:"rtt_avg_ms"`
	Error    string  `json:"error,omitempty"`
}

// OK reports whether every echo came back.
func (r PathResult) OK() bool { return r.Error == "" && r.Sent > 0 && r.Received == r.Sent }

// PingPaths forces each path in turn (paths share host routes, so one at a
// time) and pings its destination from its source address count times.
func (l *Lab) PingPaths(ctx context.Context, paths []Path, count int, interval time.Duration) []PathResult {
	out := make([]PathResult, 0, len(paths))
	for _, p := range paths {
		r := PathResult{Path: p}
		undo, err := l.Force(ctx, p)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Sent, r.Received, r.RTTms = l.pingFrom(ctx, p.From, p.Dst.String(), count, interval, "-I", p.Src.String())
		}
		undo()
		out = append(out, r)
	}
	return out
}
