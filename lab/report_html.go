package lab

import (
	"fmt"
	"html/template"
	"io"

	"github.com/opencen/opencen/config"
)

// Chart geometry of the HTML report, shared with the test that renders the
// page in a browser and measures the bars.
const (
	// ChartBarX is where every bar starts; ChartBarMax the width of the
	// largest value of the page (an allocation or a goodput), to which all
	// bars of every pair are scaled.
	ChartBarX   = 90
	ChartBarMax = 360
	// ChartAllocationColor and ChartGoodputColor fill the two bars.
	ChartAllocationColor = "#9fb3c8"
	ChartGoodputColor    = "#2a6fdb"
)

// reportPage is the HTML report: a bar chart per shaped pair, direction
// and family (goodput against allocation, every pair on one scale), the
// default pair, the failover and the reachability table of both
// families. The charts are inline SVG and the page has no script, so it
// reads the same in any browser, in a mail client or saved to disk; every
// chart carries its figures (and its family) in data attributes for tools.
var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"mbps":  func(v float64) string { return fmt.Sprintf("%.2f Mbps", v/1e6) },
	"alloc": func(v uint64) string { return config.Bandwidth(v).String() },
	"bar": func(v, scale float64) string {
		return fmt.Sprintf("%.1f", ChartBarMax*v/scale)
	},
	"valx": func(v, scale float64) string {
		return fmt.Sprintf("%.1f", ChartBarX+ChartBarMax*v/scale+6)
	},
	"f64":    func(v uint64) float64 { return float64(v) },
	"family": FamilyTitle,
	"x":      func() int { return ChartBarX },
	"acolor": func() string { return ChartAllocationColor },
	"gcolor": func() string { return ChartGoodputColor },
	"scale": func(ps []PairMeasure) float64 {
		m := 1.0
		for _, p := range ps {
			m = max(m, float64(p.AllocationBps), p.GoodputBps)
		}
		return m
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opencen demo: {{.Instance}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#176d2c}.fail{color:#b00020;font-weight:bold}figure{margin:.6em 0}svg text{font-size:12px}</style></head>
<body><h1>opencen demo: {{.Instance}}</h1>
<p>Started {{.StartedAt.Format "2006-01-02 15:04:05 MST"}}, took {{printf "%.0f" .Duration}} s.
{{if .Failures}}<span class="fail">{{len .Failures}} thing(s) not as expected.</span>{{else}}<span class="ok">Everything as expected.</span>{{end}}</p>
{{if .Failures}}<ul id="failures">{{range .Failures}}<li class="fail">{{.}}</li>{{end}}</ul>{{end}}
<h2>Shaped pairs</h2>
<p>iperf3 TCP goodput in each direction and each address family against the pair's allocation, and IPv4 and IPv6 flows at once against one allocation; every bar on one scale.</p>
{{$scale := scale .Pairs}}{{range $i, $p := .Pairs}}<figure class="pair" id="pair-{{$i}}" data-family="{{$p.Family}}" data-from="{{$p.FromRegion}}" data-to="{{$p.ToRegion}}" data-allocation-bps="{{$p.AllocationBps}}" data-goodput-bps="{{printf "%.0f" $p.GoodputBps}}">
<figcaption>{{$p.FromRegion}} &rarr; {{$p.ToRegion}} over {{family $p.Family}}: {{range $j, $f := $p.ByFamily}}{{if $j}} + {{end}}{{family $f.Family}} {{mbps $f.GoodputBps}}{{end}}{{if $p.ByFamily}} = {{end}}{{mbps $p.GoodputBps}} of {{alloc $p.AllocationBps}} ({{printf "%.3f" $p.Ratio}}{{if and $p.ShareBps (lt $p.ShareBps $p.AllocationBps)}} of the {{alloc $p.ShareBps}} share of the gateways that carried the flows{{end}}), package {{$p.Package}}{{with $p.Error}} <span class="fail">{{.}}</span>{{end}}</figcaption>
<svg class="chart" width="560" height="50" role="img" aria-label="{{$p.FromRegion}} to {{$p.ToRegion}}: goodput {{mbps $p.GoodputBps}} against allocation {{alloc $p.AllocationBps}}">
<text x="0" y="17">allocation</text><rect class="allocation" x="{{x}}" y="5" height="16" width="{{bar (f64 $p.AllocationBps) $scale}}" fill="{{acolor}}"/><text class="value" x="{{valx (f64 $p.AllocationBps) $scale}}" y="17">{{alloc $p.AllocationBps}}</text>
<text x="0" y="41">goodput</text><rect class="goodput" x="{{x}}" y="29" height="16" width="{{bar $p.GoodputBps $scale}}" fill="{{gcolor}}"/><text class="value" x="{{valx $p.GoodputBps $scale}}" y="41">{{mbps $p.GoodputBps}}</text>
</svg></figure>
{{end}}
{{with .Default}}<h2>Default pair</h2><p id="default">{{index .Regions 0}} &harr; {{index .Regions 1}} (1 Kbps, no package): ping {{.PingReceived}}/{{.PingSent}} answered{{if .PingSent6}}, over IPv6 {{.PingReceived6}}/{{.PingSent6}}{{end}}; bulk TCP {{printf "%.0f" .GoodputBps}} bps.</p>{{end}}
{{with .Failover}}<h2>Failover</h2><p id="failover">{{.Gateway}} killed under {{.Flows}} UDP flows {{.From}} &rarr; {{.To}}: {{.Interrupted}} flows crossed it; the worst was cut for {{printf "%.0f" .OutageMs}} ms{{if not .Recovered}} and did not come back{{end}} (lost {{.Lost}} packets).</p>{{end}}
<h2>Reachability</h2><p>Every path forced with host routes, over IPv4 and over IPv6: each source and destination address of the family, each gateway a flow can enter by and its answer leave by.</p>
<table id="reachability"><tr><th>family</th><th>from</th><th>via</th><th>to</th><th>paths</th><th>answered</th><th>rtt</th></tr>
{{range .Reachability}}<tr data-family="{{.Family}}"><td>{{family .Family}}</td><td>{{.From}}</td><td>{{.Gateway}}</td><td>{{.To}}</td><td>{{.Paths}}</td><td class="{{if lt .Received .Sent}}fail{{else}}ok{{end}}">{{.Received}}/{{.Sent}}</td><td>{{printf "%.2f" .RTTms}} ms</td></tr>
{{end}}</table>
</body></html>
`))

// WriteHTML writes the report as a page (what cenctl demo --html writes).
func (r *Report) WriteHTML(w io.Writer) error {
	if err := reportPage.Execute(w, r); err != nil {
		return fmt.Errorf("render report page: %w", err)
	}
	return nil
}
