package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/test/lab"
	"github.com/spf13/cobra"
)

func newDemoCmd(_ *globals) *cobra.Command {
	var (
		f        labFlags
		jsonFile string
		htmlFile string
		seconds  int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring the lab up, prove reachability, measure every shaped pair and a failover, print a report, tear down",
		Long: `Bring the namespace lab up with a cend per gateway, then measure:
reachability between every pair of hosts (VPCs and the on-premises network),
every shaped region pair in both directions with iperf3 against its
allocation, the 1 Kbps default pair (ping passes, bulk does not), and the
outage when a gateway of a region with two is killed. Prints the report,
writes it as JSON (and with --html as a page), and takes the lab down, also
when interrupted. Needs root. Exits 1 when something is not as it should be.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(f.output); err != nil {
				return err
			}
			if f.cend == "" {
				var err error
				if f.cend, err = findCend(); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := f.options(cmd)
			stderr := cmd.ErrOrStderr()
			say := func(format string, args ...any) {
				fmt.Fprintf(stderr, "demo: "+format+"\n", args...)
			}
			say("bringing the lab up from %s", f.config)
			l, err := lab.Up(ctx, opts)
			defer func() {
				say("taking the lab down")
				if err := lab.Down(context.WithoutCancel(ctx), opts); err != nil {
					say("lab down: %v", err)
				}
			}()
			if err != nil {
				return err
			}
			rep, err := lab.Demo(ctx, l, lab.DemoOptions{IperfSeconds: seconds, Progress: say})
			if err != nil {
				return err
			}
			if jsonFile != "" {
				b, _ := json.MarshalIndent(rep, "", "  ")
				if err := os.WriteFile(jsonFile, append(b, '\n'), 0o644); err != nil {
					return err
				}
				say("report written to %s", jsonFile)
			}
			if htmlFile != "" {
				if err := writeHTMLReport(htmlFile, rep); err != nil {
					return err
				}
				say("page written to %s", htmlFile)
			}
			if f.output == "json" {
				err = writeJSON(cmd.OutOrStdout(), rep)
			} else {
				printReport(cmd.OutOrStdout(), rep)
			}
			if err == nil && len(rep.Failures) > 0 {
				return reportedError{}
			}
			return err
		},
	}
	f.add(cmd, true)
	outputFlag(cmd, &f.output)
	cmd.Flags().StringVar(&jsonFile, "json", "opencen-demo.json", "write the report as JSON to this file (empty: don't)")
	cmd.Flags().StringVar(&htmlFile, "html", "", "also write the report as an HTML page with a bandwidth chart per pair")
	cmd.Flags().IntVar(&seconds, "seconds", 5, "iperf3 duration per pair and direction")
	return cmd
}

func printReport(w io.Writer, rep *lab.Report) {
	fmt.Fprintf(w, "opencen demo: instance %s, %s\n\n", rep.Instance, time.Duration(rep.Duration*float64(time.Second)).Round(time.Second))
	hosts := []string{}
	seen := map[string]bool{}
	ok := map[[2]string]lab.Reach{}
	for _, r := range rep.Reachability {
		for _, h := range []string{r.From, r.To} {
			if !seen[h] {
				seen[h] = true
				hosts = append(hosts, h)
			}
		}
		ok[[2]string{r.From, r.To}] = r
	}
	fmt.Fprintln(w, "Reachability (ping, from row to column):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, h := range hosts {
		fmt.Fprintf(tw, "%s\t", h)
	}
	fmt.Fprintln(tw)
	for _, from := range hosts {
		fmt.Fprintf(tw, "%s\t", from)
		for _, to := range hosts {
			cell := "-"
			if r, found := ok[[2]string{from, to}]; found {
				cell = fmt.Sprintf("ok %.1fms", r.RTTms)
				if r.Received < r.Sent {
					cell = fmt.Sprintf("FAIL %d/%d", r.Received, r.Sent)
				}
			}
			fmt.Fprintf(tw, "%s\t", cell)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nShaped pairs (iperf3 TCP goodput against the allocation):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tALLOCATION\tPACKAGE\tGOODPUT\tRATIO")
	for _, p := range rep.Pairs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.3f\n", p.FromRegion, p.ToRegion, config.Bandwidth(p.AllocationBps), p.Package, rateText(p.GoodputBps), p.Ratio)
	}
	tw.Flush()
	if d := rep.Default; d != nil {
		fmt.Fprintf(w, "\nDefault pair %s <-> %s (1 Kbps, no package): ping %d/%d answered; bulk TCP %s\n",
			d.Regions[0], d.Regions[1], d.PingReceived, d.PingSent, rateText(d.GoodputBps))
	}
	if f := rep.Failover; f != nil {
		fmt.Fprintf(w, "\nFailover: %s killed under 100 pps pings %s -> %s: worst flow lost %d packets, an outage of %.0f ms\n",
			f.Gateway, f.From, f.To, f.Lost, f.OutageMs)
	}
	if len(rep.Failures) == 0 {
		fmt.Fprintln(w, "\nEverything as expected.")
		return
	}
	fmt.Fprintln(w, "\nNot as expected:")
	for _, s := range rep.Failures {
		fmt.Fprintf(w, "  - %s\n", s)
	}
}

// reportPage is the HTML report: the reachability table, and a bar chart
// per shaped pair of goodput against allocation (inline SVG, no scripts).
var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"mbps":  func(v float64) string { return fmt.Sprintf("%.2f", v/1e6) },
	"alloc": func(v uint64) string { return config.Bandwidth(v).String() },
	"bar":   func(v, scale float64) string { return fmt.Sprintf("%.1f", 360*v/scale) },
	"f64":   func(v uint64) float64 { return float64(v) },
	"scale": func(ps []lab.PairMeasure) float64 {
		m := 1.0
		for _, p := range ps {
			m = max(m, float64(p.AllocationBps), p.GoodputBps)
		}
		return m
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opencen demo: {{.Instance}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#176d2c}.fail{color:#b00020;font-weight:bold}svg text{font-size:12px}</style></head>
<body><h1>opencen demo: {{.Instance}}</h1>
<p>Started {{.StartedAt.Format "2006-01-02 15:04:05 MST"}}, took {{printf "%.0f" .Duration}} s.
{{if .Failures}}<span class="fail">{{len .Failures}} thing(s) not as expected.</span>{{else}}<span class="ok">Everything as expected.</span>{{end}}</p>
{{if .Failures}}<ul id="failures">{{range .Failures}}<li class="fail">{{.}}</li>{{end}}</ul>{{end}}
<h2>Shaped pairs</h2>
{{$scale := scale .Pairs}}{{range $i, $p := .Pairs}}<figure class="pair" id="pair-{{$i}}">
<figcaption>{{$p.FromRegion}} &rarr; {{$p.ToRegion}}: {{mbps $p.GoodputBps}} Mbps of {{alloc $p.AllocationBps}} ({{printf "%.3f" $p.Ratio}}), package {{$p.Package}}</figcaption>
<svg width="480" height="50" role="img" aria-label="{{$p.FromRegion}} to {{$p.ToRegion}}: goodput against allocation">
<text x="0" y="17">allocation</text><rect class="allocation" x="90" y="5" height="16" width="{{bar (f64 $p.AllocationBps) $scale}}" fill="#9fb3c8"/>
<text x="0" y="41">goodput</text><rect class="goodput" x="90" y="29" height="16" width="{{bar $p.GoodputBps $scale}}" fill="#2a6fdb"/>
</svg></figure>
{{end}}
{{with .Default}}<h2>Default pair</h2><p id="default">{{index .Regions 0}} &harr; {{index .Regions 1}} (1 Kbps, no package): ping {{.PingReceived}}/{{.PingSent}} answered; bulk TCP {{printf "%.0f" .GoodputBps}} bps.</p>{{end}}
{{with .Failover}}<h2>Failover</h2><p id="failover">{{.Gateway}} killed under 100 pps pings {{.From}} &rarr; {{.To}}: worst flow lost {{.Lost}} packets, an outage of {{printf "%.0f" .OutageMs}} ms.</p>{{end}}
<h2>Reachability</h2><table id="reachability"><tr><th>from</th><th>to</th><th>answered</th><th>rtt</th></tr>
{{range .Reachability}}<tr><td>{{.From}}</td><td>{{.To}}</td><td class="{{if lt .Received .Sent}}fail{{else}}ok{{end}}">{{.Received}}/{{.Sent}}</td><td>{{printf "%.2f" .RTTms}} ms</td></tr>
{{end}}</table>
</body></html>
`))

func writeHTMLReport(path string, rep *lab.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := reportPage.Execute(f, rep); err != nil {
		f.Close()
		return fmt.Errorf("render %s: %w", path, err)
	}
	return f.Close()
}
