package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencen/opencen/config"
	"github.com/spf13/cobra"
)

func newTopologyCmd(_ *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "topology FILE",
		Short: "Print the instance as a Graphviz DOT graph",
		Long: `Print the instance described by FILE as Graphviz DOT: regions grouped in
their areas, the gateways and networks of each region, and the region pairs
with their bandwidth (dashed: the 1 Kbps default). Render it with, for
example, cenctl topology FILE | dot -Tsvg > cen.svg`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, "text", args[0])
			if err != nil {
				return err
			}
			writeDOT(cmd.OutOrStdout(), cfg)
			return nil
		},
	}
}

func writeDOT(w io.Writer, cfg *config.Config) {
	escape := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	q := func(s string) string { return `"` + escape.Replace(s) + `"` }
	fmt.Fprintf(w, "graph %s {\n", q(cfg.Instance.Name))
	fmt.Fprintf(w, "  label=%s;\n  labelloc=t;\n  compound=true;\n  node [fontname=Helvetica, fontsize=10];\n", q("CEN instance "+cfg.Instance.Name+" (AS "+fmt.Sprint(cfg.Instance.ASN)+")"))

	used := cfg.UsedRegions()
	byArea := map[string][]string{}
	var areas []string
	for _, id := range used {
		r, _ := cfg.Region(id)
		if _, ok := byArea[r.Area]; !ok {
			areas = append(areas, r.Area)
		}
		byArea[r.Area] = append(byArea[r.Area], id)
	}
	slices.Sort(areas)
	// anchor is a node inside each region cluster that region edges attach
	// to; lhead/ltail clip the edge to the cluster's border.
	anchor := map[string]string{}
	for _, area := range areas {
		fmt.Fprintf(w, "  subgraph %s {\n    label=%s;\n    style=rounded;\n", q("cluster_area_"+area), q("area "+area))
		for _, id := range byArea[area] {
			r, _ := cfg.Region(id)
			fmt.Fprintf(w, "    subgraph %s {\n      label=%s;\n      style=filled;\n      fillcolor=\"#eef3fb\";\n", q("cluster_region_"+id), q(id+"\n"+r.Name))
			for _, g := range cfg.GatewaysIn(id) {
				node := "gw:" + g.Name
				if anchor[id] == "" {
					anchor[id] = node
				}
				fmt.Fprintf(w, "      %s [shape=box, style=\"rounded,filled\", fillcolor=white, label=%s];\n",
					q(node), q(fmt.Sprintf("%s\n%s\ntunnel %s", g.Name, g.Endpoint, g.TunnelAddress)))
			}
			for _, n := range cfg.Networks {
				if n.Region != id {
					continue
				}
				node := "net:" + n.Name
				if anchor[id] == "" {
					anchor[id] = node
				}
				label, shape := n.Name+" (vpc)", "ellipse"
				for _, c := range n.CIDRs {
					label += "\n" + c.String()
				}
				if n.Type == config.VBR {
					shape = "cylinder"
					label = fmt.Sprintf("%s (vbr)\nAS %d via %s", n.Name, n.BGP.PeerASN, n.Gateway)
				}
				fmt.Fprintf(w, "      %s [shape=%s, label=%s];\n", q(node), shape, q(label))
				if n.Type == config.VBR && n.Gateway != "" {
					fmt.Fprintf(w, "      %s -- %s [style=dotted, label=eBGP];\n", q(node), q("gw:"+n.Gateway))
				}
			}
			fmt.Fprintln(w, "    }")
		}
		fmt.Fprintln(w, "  }")
	}
	for _, p := range cfg.Matrix() {
		a, b := p.Regions[0], p.Regions[1]
		attrs := fmt.Sprintf("ltail=%s, lhead=%s, label=%s", q("cluster_region_"+a), q("cluster_region_"+b), q(p.Bandwidth.String()+"\n"+p.Package))
		if p.Source == config.SourceDefault {
			attrs = fmt.Sprintf("ltail=%s, lhead=%s, label=%s, style=dashed, color=gray", q("cluster_region_"+a), q("cluster_region_"+b), q(p.Bandwidth.String()+" default"))
		} else {
			attrs += ", penwidth=2"
		}
		fmt.Fprintf(w, "  %s -- %s [%s];\n", q(anchor[a]), q(anchor[b]), attrs)
	}
	fmt.Fprintln(w, "}")
}
