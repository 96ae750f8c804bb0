package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/lab"
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
		Short: "Bring the lab up, prove reachability and measure every shaped pair over IPv4 and IPv6, and a failover; print a report, tear down",
		Long: `Bring the namespace lab up with a cend per gateway, then measure:
reachability between every pair of hosts (VPCs and the on-premises
networks) over IPv4 and IPv6, every path forced through each gateway it
can take, every shaped region pair in both directions and both families
with iperf3 against its allocation, IPv4 and IPv6 flows at once on one pair
against its one allocation, the 1 Kbps default pair (ping passes, bulk
does not), and the outage when a gateway of a region with two is killed. Prints the report,
writes it as JSON (and with --html as a page), and takes the lab down, also
when interrupted. Needs root. Exits 1 when something is not as it should be.`,
		Args: exactArgs(),
		RunE: f.runE(func(ctx context.Context, cmd *cobra.Command) error {
			opts := f.options(cmd)
			opts.Measure = true
			stderr := cmd.ErrOrStderr()
			say := func(format string, args ...any) {
				fmt.Fprintf(stderr, "demo: "+format+"\n", args...)
			}
			// A machine that cannot run the demo is told so in one line,
			// ahead of anything else.
			plan, err := lab.Plan(opts)
			if err != nil {
				return err
			}
			if err := lab.CheckHost(len(plan.Routers) > 0, true); err != nil {
				return err
			}
			say("bringing the lab up from %s", f.config)
			l, err := lab.Up(ctx, opts)
			if err != nil {
				// Up removes what it built when it fails; a lab that is
				// already up (ErrAlreadyUp) is someone else's to take down.
				return err
			}
			defer func() {
				say("taking the lab down")
				if err := lab.Down(context.WithoutCancel(ctx), opts); err != nil {
					say("lab down: %v", err)
				}
			}()
			rep, err := lab.Demo(ctx, l, lab.DemoOptions{IperfSeconds: seconds, Progress: say})
			if err != nil {
				return err
			}
			if err := writeReportFiles(rep, jsonFile, htmlFile, say); err != nil {
				return err
			}
			err = emit(cmd, f.output, rep, printReport)
			if err == nil && len(rep.Failures) > 0 {
				return reportedError{}
			}
			return err
		}),
	}
	f.add(cmd, true)
	outputFlag(cmd, &f.output)
	cmd.Flags().StringVar(&jsonFile, "json", "opencen-demo.json", "write the report as JSON to this file (empty: don't)")
	cmd.Flags().StringVar(&htmlFile, "html", "", "also write the report as an HTML page with a bandwidth chart per pair")
	cmd.Flags().IntVar(&seconds, "seconds", 5, "iperf3 duration per pair and direction")
	return cmd
}

// writeReportFiles writes the demo's report as JSON to jsonFile and as a
// page to htmlFile, each unless its name is empty.
func writeReportFiles(rep *lab.Report, jsonFile, htmlFile string, say func(string, ...any)) error {
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
	return nil
}

// printReachability is the matrix of forced paths of each family: a row
// per source network and the gateway it hands its flows to, a column per
// destination network.
func printReachability(w io.Writer, reach []lab.Reach) {
	for i, fam := range []string{lab.FamilyIPv4, lab.FamilyIPv6} {
		var of []lab.Reach
		for _, r := range reach {
			if r.Family == fam {
				of = append(of, r)
			}
		}
		if len(of) == 0 {
			continue
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		printFamilyReachability(w, fam, of)
	}
}

// printFamilyReachability is printReachability's matrix of one family.
func printFamilyReachability(w io.Writer, family string, reach []lab.Reach) {
	var rows, cols []string
	cell := map[[2]string]lab.Reach{}
	for _, r := range reach {
		row := r.From
		if r.Gateway != "" {
			row += " via " + r.Gateway
		}
		if !slices.Contains(rows, row) {
			rows = append(rows, row)
		}
		if !slices.Contains(cols, r.To) {
			cols = append(cols, r.To)
		}
		cell[[2]string{row, r.To}] = r
	}
	slices.Sort(cols)
	fmt.Fprintf(w, "Reachability over %s (ping over every path, each forced: from row to column):\n", lab.FamilyTitle(family))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t", row)
		for _, c := range cols {
			text := "-"
			if r, ok := cell[[2]string{row, c}]; ok {
				text = fmt.Sprintf("ok %.1fms", r.RTTms)
				if !r.OK() {
					text = fmt.Sprintf("FAIL %d/%d", r.Received, r.Sent)
				}
			}
			fmt.Fprintf(tw, "%s\t", text)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func printReport(w io.Writer, rep *lab.Report) {
	fmt.Fprintf(w, "opencen demo: instance %s, %s\n\n", rep.Instance, time.Duration(rep.Duration*float64(time.Second)).Round(time.Second))
	printReachability(w, rep.Reachability)

	printPairs(w, rep.Pairs)
	if d := rep.Default; d != nil {
		ping6 := ""
		if d.PingSent6 > 0 {
			ping6 = fmt.Sprintf(", over IPv6 %d/%d", d.PingReceived6, d.PingSent6)
		}
		fmt.Fprintf(w, "\nDefault pair %s <-> %s (1 Kbps, no package): ping %d/%d answered%s; bulk TCP %s\n",
			d.Regions[0], d.Regions[1], d.PingReceived, d.PingSent, ping6, rateText(d.GoodputBps))
	}
	if f := rep.Failover; f != nil {
		back := ""
		if !f.Recovered {
			back = " and did not come back"
		}
		fmt.Fprintf(w, "\nFailover: %s killed under %d UDP flows %s -> %s, %d of them through it: the worst was cut for %.0f ms%s (lost %d packets)\n",
			f.Gateway, f.Flows, f.From, f.To, f.Interrupted, f.OutageMs, back, f.Lost)
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

// printPairs is the table of shaped pairs: each direction in each family,
// and IPv4 and IPv6 flows at once on one pair (their goodputs and sum
// against the one allocation).
func printPairs(w io.Writer, pairs []lab.PairMeasure) {
	fmt.Fprintln(w, "\nShaped pairs (iperf3 TCP goodput against the allocation):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tFAMILY\tALLOCATION\tPACKAGE\tGOODPUT\tRATIO")
	partial := false
	for _, p := range pairs {
		alloc := config.Bandwidth(p.AllocationBps).String()
		if p.ShareBps != 0 && p.ShareBps < p.AllocationBps {
			alloc = fmt.Sprintf("%s (%s*)", alloc, config.Bandwidth(p.ShareBps))
			partial = true
		}
		goodput := rateText(p.GoodputBps)
		if len(p.ByFamily) > 0 {
			var parts []string
			for _, f := range p.ByFamily {
				parts = append(parts, rateText(f.GoodputBps))
			}
			goodput = strings.Join(parts, " + ") + " = " + goodput
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.3f\n", p.FromRegion, p.ToRegion, lab.FamilyTitle(p.Family), alloc, p.Package, goodput, p.Ratio)
	}
	tw.Flush()
	if partial {
		fmt.Fprintln(w, "* every flow hashed onto some of the region's gateways: the ratio is against their share of the pair")
	}
}

func writeHTMLReport(path string, rep *lab.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
