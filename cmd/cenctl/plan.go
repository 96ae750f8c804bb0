package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/opencen/opencen/config"
)

func printPlan(w io.Writer, p *config.Plan) {
	if !p.Changed() {
		fmt.Fprintf(w, "instance %s: no changes\n", p.Instance)
		return
	}
	counts := map[string]int{}
	for _, g := range p.Gateways {
		counts[g.Action]++
	}
	fmt.Fprintf(w, "instance %s: %d gateway(s) to add, %d to remove, %d to change, %d unchanged\n",
		p.Instance, counts[config.PlanAdd], counts[config.PlanRemove], counts[config.PlanChange], counts[config.PlanUnchanged])
	for _, g := range p.Gateways {
		switch g.Action {
		case config.PlanUnchanged:
			continue
		case config.PlanRemove:
			fmt.Fprintf(w, "\n- gateway %s: removed; its tunnels, sessions and routes go away\n", g.Gateway)
			continue
		case config.PlanAdd:
			fmt.Fprintf(w, "\n+ gateway %s: new\n", g.Gateway)
		default:
			fmt.Fprintf(w, "\n~ gateway %s\n", g.Gateway)
		}
		for _, s := range g.Settings {
			fmt.Fprintf(w, "    ~ %s: %s -> %s\n", s.Field, s.Old, s.New)
		}
		for _, name := range g.PeersAdded {
			fmt.Fprintf(w, "    + peer %s\n", name)
		}
		for _, name := range g.PeersRemoved {
			fmt.Fprintf(w, "    - peer %s\n", name)
		}
		for _, pc := range g.PeersChanged {
			var parts []string
			for _, c := range pc.Changes {
				parts = append(parts, fmt.Sprintf("%s %s -> %s", c.Field, orNone(c.Old), orNone(c.New)))
			}
			fmt.Fprintf(w, "    ~ peer %s: %s\n", pc.Peer, strings.Join(parts, "; "))
		}
		for _, pr := range g.OriginateAdded {
			fmt.Fprintf(w, "    + originate %s\n", pr)
		}
		for _, pr := range g.OriginateRemoved {
			fmt.Fprintf(w, "    - originate %s\n", pr)
		}
		for _, r := range g.Rates {
			fmt.Fprintf(w, "    ~ egress to %s: %s -> %s\n", r.Region, rate(r.Old), rate(r.New))
		}
		for _, name := range g.VBRsAdded {
			fmt.Fprintf(w, "    + vbr session %s\n", name)
		}
		for _, name := range g.VBRsRemoved {
			fmt.Fprintf(w, "    - vbr session %s\n", name)
		}
		for _, name := range g.VBRsChanged {
			fmt.Fprintf(w, "    ~ vbr session %s: reset with new settings\n", name)
		}
	}
	if len(p.Bandwidth) > 0 {
		fmt.Fprintln(w, "\nbandwidth:")
		for _, c := range p.Bandwidth {
			fmt.Fprintf(w, "    %s %s <-> %s: %s -> %s\n", pairMark(c), c.Regions[0], c.Regions[1], pairText(c.Old), pairText(c.New))
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func rate(b config.Bandwidth) string {
	if b == 0 {
		return "(none)"
	}
	return b.String()
}

func pairMark(c config.PairChange) string {
	switch {
	case c.Old == nil:
		return "+"
	case c.New == nil:
		return "-"
	}
	return "~"
}

func pairText(p *config.PairBandwidth) string {
	switch {
	case p == nil:
		return "(none)"
	case p.Source == config.SourcePackage:
		return fmt.Sprintf("%s (package %s)", p.Bandwidth, p.Package)
	}
	return fmt.Sprintf("%s (default)", p.Bandwidth)
}
