package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/spf13/cobra"
)

// liveCmd builds a read command that asks the gateway on --socket for one
// document and prints it as a table, or as JSON with -o json.
func liveCmd[T any](g *globals, use, short string, fetch func(context.Context, *api.Client) (T, error), table func(io.Writer, T)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			v, err := fetch(ctx, api.NewClient(g.socket))
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			table(cmd.OutOrStdout(), v)
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func newStatusCmd(g *globals) *cobra.Command {
	return liveCmd(g, "status", "Show a gateway's summary: config, paths taken, subsystems, peers and routes",
		func(ctx context.Context, c *api.Client) (api.Status, error) { return c.Status(ctx) }, printStatus)
}

func newPeersCmd(g *globals) *cobra.Command {
	return liveCmd(g, "peers", "Show a gateway's BGP sessions and WireGuard tunnels",
		func(ctx context.Context, c *api.Client) ([]api.Peer, error) { return c.Peers(ctx) }, printPeers)
}

func newRoutesCmd(g *globals) *cobra.Command {
	return liveCmd(g, "routes", "Show the routes a gateway originates and learns, with their origin",
		func(ctx context.Context, c *api.Client) ([]api.Route, error) { return c.Routes(ctx) }, printRoutes)
}

func newReloadCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make a gateway re-read its config file (like SIGHUP)",
		Long: `Make the gateway re-read the config file it was started with. The new file
is validated completely first: a bad one is rejected with its located
errors and the gateway keeps running the old one (cenctl exits 1); a good
one is applied as a difference, leaving unchanged tunnels, sessions and
buckets alone.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			res, err := api.NewClient(g.socket).Reload(ctx)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(w, res); err != nil {
					return err
				}
			} else if res.Applied {
				fmt.Fprintf(w, "reloaded: config generation %d\n", res.Generation)
				for _, c := range res.Changes {
					fmt.Fprintf(w, "  %s\n", c)
				}
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "reload rejected; the gateway keeps running config generation %d:\n", res.Generation)
				for _, e := range res.Errors {
					fmt.Fprintln(cmd.ErrOrStderr(), e)
				}
			}
			if !res.Applied {
				return reportedError{}
			}
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func newBandwidthCmd(g *globals) *cobra.Command {
	var (
		output   string
		watch    bool
		interval time.Duration
		count    int
	)
	cmd := &cobra.Command{
		Use:   "bandwidth",
		Short: "Show a gateway's egress per destination region against its allocation",
		Long: `Show, per destination region, this gateway's allocation, the current rate,
utilisation and the shaper's drops. With --watch the view refreshes every
--interval the way top does, until interrupted (or --count refreshes).`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if interval < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %s is too short; use at least 100ms", interval)}
			}
			client := api.NewClient(g.socket)
			w := cmd.OutOrStdout()
			show := func(first bool) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				rows, err := client.Bandwidth(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(w, rows)
				}
				if watch {
					// Clear the screen and home the cursor, as top does.
					fmt.Fprint(w, "\x1b[H\x1b[2J")
					fmt.Fprintf(w, "cenctl bandwidth --socket %s   %s   (every %s, Ctrl-C to stop)\n\n", g.socket, time.Now().Format(time.TimeOnly), interval)
				}
				printBandwidth(w, rows)
				return nil
			}
			if !watch {
				return show(true)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; count == 0 || i < count; i++ {
				if i > 0 {
					select {
					case <-ctx.Done():
						return nil
					case <-tick.C:
					}
				}
				if err := show(i == 0); err != nil {
					return err
				}
			}
			return nil
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep refreshing")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval with --watch")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	return cmd
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// shapingWhere says how and where the gateway shapes.
func shapingWhere(s api.Status) string {
	switch {
	case len(s.ShapedDevices) == 0:
		return s.Shaping + ", not started"
	case s.Shaping == "userspace":
		return "userspace, in the WireGuard helper of " + strings.Join(s.ShapedDevices, ", ")
	}
	return s.Shaping + ", at the egress of " + strings.Join(s.ShapedDevices, ", ")
}

func printStatus(w io.Writer, s api.Status) {
	fmt.Fprintf(w, "gateway %s (region %s) of instance %s\n", s.Gateway, s.Region, s.Instance)
	fmt.Fprintf(w, "  config      %s, generation %d, loaded %s\n", s.ConfigFile, s.ConfigGeneration, ago(s.ConfigLoadedAt))
	fmt.Fprintf(w, "  up since    %s\n", ago(s.StartedAt))
	fmt.Fprintf(w, "  tunnel      %s on %s (%s WireGuard)\n", s.TunnelAddress, s.Device, s.WireGuard)
	fmt.Fprintf(w, "  shaping     %s\n", shapingWhere(s))
	fmt.Fprintf(w, "  peers       %d of %d established\n", s.PeersUp, s.PeersTotal)
	fmt.Fprintf(w, "  routes      %d of %d installed\n", s.RoutesActive, s.RoutesTotal)
	fmt.Fprintf(w, "  conflicts   %d\n", s.Conflicts)
	tw := table(w)
	fmt.Fprintln(tw, "\nSUBSYSTEM\tSTATE\tLAST APPLIED\tERROR")
	for _, sub := range s.Subsystems {
		state := "ok"
		if !sub.OK {
			state = "FAILING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sub.Name, state, ago(sub.LastApplied), sub.Error)
	}
	tw.Flush()
}

func printPeers(w io.Writer, peers []api.Peer) {
	tw := table(w)
	fmt.Fprintln(tw, "PEER\tKIND\tREGION\tADDRESS\tBGP\tUPTIME\tBFD\tPREFIXES RCVD/ACC/REJ\tHANDSHAKE\tRX\tTX\tNOTE")
	for _, p := range peers {
		handshake := "never"
		if !p.LatestHandshake.IsZero() {
			handshake = ago(p.LatestHandshake)
		}
		if p.Kind == "vbr" {
			handshake = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d/%d\t%s\t%s\t%s\t%s\n",
			p.Name, p.Kind, p.Region, p.Address, p.BGPState, seconds(p.BGPUptimeSeconds), dash(p.BFDState),
			p.PrefixesReceived, p.PrefixesAccepted, p.PrefixesRejected, handshake, byteCount(p.RxBytes), byteCount(p.TxBytes), p.Note)
	}
	tw.Flush()
}

func printRoutes(w io.Writer, routes []api.Route) {
	tw := table(w)
	fmt.Fprintln(tw, "PREFIX\tORIGIN REGION\tNETWORK\tKIND\tSOURCE\tNEXT HOPS\tINSTALLED")
	for _, r := range routes {
		installed := "no"
		if r.Installed {
			installed = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.OriginRegion, r.OriginNetwork, r.Kind, r.Source, dash(strings.Join(r.NextHops, ",")), installed)
	}
	tw.Flush()
}

func printBandwidth(w io.Writer, rows []api.Bandwidth) {
	tw := table(w)
	fmt.Fprintln(tw, "TO REGION\tALLOCATION\tPAIR\tSOURCE\tRATE\tUTIL\tPASSED\tDROPPED")
	for _, b := range rows {
		source := "default"
		if b.Source == config.SourcePackage {
			source = "package " + b.Package
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%5.1f%%\t%s / %d pkts\t%s / %d pkts\n",
			b.Region, config.Bandwidth(b.AllocationBps), config.Bandwidth(b.PairBps), source, rateText(b.RateBps),
			b.Utilisation*100, byteCount(b.PassedBytes), b.PassedPackets, byteCount(b.DroppedBytes), b.DroppedPackets)
	}
	tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(w, "(no other region has a gateway: nothing is shaped)")
	}
}

func rateText(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2fGbps", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.2fMbps", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.2fKbps", bps/1e3)
	}
	return fmt.Sprintf("%.0fbps", bps)
}

func byteCount(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return seconds(time.Since(t).Seconds()) + " ago"
}

func seconds(s float64) string {
	if s <= 0 {
		return "-"
	}
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
