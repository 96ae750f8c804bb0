package main

import (
	"context"
	"fmt"
	"io"
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
	cmd := &cobra.Command{Use: use, Short: short, Args: exactArgs()}
	cmd.RunE = liveRunE(g, &output, 30*time.Second, fetch, func(cmd *cobra.Command, v T) error {
		return emit(cmd, output, v, table)
	})
	outputFlag(cmd, &output)
	return cmd
}

// liveRunE is the RunE of a command that asks the gateway on --socket for
// one document, within timeout, and has show print it; *output is the
// command's -o, checked first.
func liveRunE[T any](g *globals, output *string, timeout time.Duration, fetch func(context.Context, *api.Client) (T, error),
	show func(*cobra.Command, T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		socket, err := g.socketPath()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		v, err := fetch(ctx, api.NewClient(socket))
		if err != nil {
			return err
		}
		return show(cmd, v)
	}
}

func newStatusCmd(g *globals) *cobra.Command {
	return liveCmd(g, "status", "Show a gateway's summary: config, paths taken, subsystems, peers and routes",
		func(ctx context.Context, c *api.Client) (api.Status, error) { return c.Status(ctx) }, printStatus)
}

func newPeersCmd(g *globals) *cobra.Command {
	cmd := liveCmd(g, "peers", "Show a gateway's BGP sessions and WireGuard tunnels",
		func(ctx context.Context, c *api.Client) ([]api.Peer, error) { return c.Peers(ctx) }, printPeers)
	cmd.AddCommand(newPeersResetCmd(g))
	return cmd
}

func newPeersResetCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "reset NAME",
		Short: "Bring back at once a BGP session max_prefixes shut down",
		Long: `Bring back the BGP session NAME (a VBR's network, or a gateway) that
max_prefixes shut down, without waiting for its max_prefixes_restart. The
session connects again and counts from zero; if the peer still sends too
much, it is shut down again.`,
		Args: exactArgs("NAME"),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		reset := func(ctx context.Context, c *api.Client) (api.PeerReset, error) { return c.ResetPeer(ctx, args[0]) }
		return liveRunE(g, &output, 30*time.Second, reset, func(cmd *cobra.Command, r api.PeerReset) error {
			return emit(cmd, output, r, func(w io.Writer, r api.PeerReset) { fmt.Fprintf(w, "session %s reset\n", r.Name) })
		})(cmd, args)
	}
	outputFlag(cmd, &output)
	return cmd
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
	}
	reload := func(ctx context.Context, c *api.Client) (api.ReloadResult, error) { return c.Reload(ctx) }
	cmd.RunE = liveRunE(g, &output, 2*time.Minute, reload, func(cmd *cobra.Command, res api.ReloadResult) error {
		return showReload(cmd, output, res)
	})
	outputFlag(cmd, &output)
	return cmd
}

// showReload prints the result of a reload: as JSON with -o json, else
// the changes of an applied one, and on stderr every error: those of a
// rejected one, or those of applying an accepted one ("applied, but").
// Either is the command's failure.
func showReload(cmd *cobra.Command, output string, res api.ReloadResult) error {
	w, ew := cmd.OutOrStdout(), cmd.ErrOrStderr()
	switch {
	case output == "json":
		if err := writeJSON(w, res); err != nil {
			return err
		}
	case res.Applied:
		fmt.Fprintf(w, "reloaded: config generation %d\n", res.Generation)
		for _, c := range res.Changes {
			fmt.Fprintf(w, "  %s\n", c)
		}
		if len(res.Errors) > 0 {
			fmt.Fprintf(ew, "config generation %d is in place, but applying it failed (cend retries):\n", res.Generation)
		}
	default:
		fmt.Fprintf(ew, "reload rejected; the gateway keeps running config generation %d:\n", res.Generation)
	}
	if output != "json" {
		for _, e := range res.Errors {
			fmt.Fprintln(ew, e)
		}
	}
	if !res.Applied || len(res.Errors) > 0 {
		return reportedError{}
	}
	return nil
}

// writeTable writes header, then a row of cells per item, aligned in
// columns (header and rows separate their columns with tabs).
func writeTable[T any](w io.Writer, header string, items []T, cells func(T) []string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, strings.Join(cells(it), "\t"))
	}
	tw.Flush()
}

// either is yes when cond holds, else no.
func either(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

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
	writeTable(w, "\nSUBSYSTEM\tSTATE\tLAST APPLIED\tERROR", s.Subsystems, func(sub api.SubsystemStatus) []string {
		return []string{sub.Name, either(sub.OK, "ok", "FAILING"), ago(sub.LastApplied), sub.Error}
	})
}

func printPeers(w io.Writer, peers []api.Peer) {
	writeTable(w, "PEER\tKIND\tREGION\tADDRESS\tBGP\tUPTIME\tBFD\tIPV4 RCVD/ACC/REJ\tIPV6 RCVD/ACC/REJ\tHANDSHAKE\tRX\tTX\tNOTE", peers, func(p api.Peer) []string {
		handshake := ago(p.LatestHandshake) // "never" when there is none
		if p.Kind == "vbr" {
			handshake = "-" // a VBR's router has no tunnel
		}
		return []string{p.Name, p.Kind, p.Region, p.Address, p.BGPState, seconds(p.BGPUptimeSeconds), dash(p.BFDState),
			familyCounts(p, "ipv4"), familyCounts(p, "ipv6"),
			handshake, byteCount(p.RxBytes), byteCount(p.TxBytes), p.Note}
	})
}

func printRoutes(w io.Writer, routes []api.Route) {
	writeTable(w, "PREFIX\tORIGIN REGION\tNETWORK\tKIND\tSOURCE\tNEXT HOPS\tINSTALLED", routes, func(r api.Route) []string {
		return []string{r.Prefix, r.OriginRegion, r.OriginNetwork, r.Kind, r.Source, dash(strings.Join(r.NextHops, ",")), either(r.Installed, "yes", "no")}
	})
}

func printBandwidth(w io.Writer, rows []api.Bandwidth) {
	writeTable(w, "TO REGION\tALLOCATION\tPAIR\tSOURCE\tRATE\tUTIL\tPASSED\tDROPPED", rows, func(b api.Bandwidth) []string {
		return []string{b.Region, config.Bandwidth(b.AllocationBps).String(), config.Bandwidth(b.PairBps).String(),
			either(b.Source == config.SourcePackage, "package "+b.Package, "default"), rateText(b.RateBps),
			fmt.Sprintf("%5.1f%%", b.Utilisation*100),
			fmt.Sprintf("%s / %d pkts", byteCount(b.PassedBytes), b.PassedPackets),
			fmt.Sprintf("%s / %d pkts", byteCount(b.DroppedBytes), b.DroppedPackets)}
	})
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

// familyCounts is a peer's received/accepted/rejected prefixes in one
// family, "-" when its session never reported them.
func familyCounts(p api.Peer, family string) string {
	for _, f := range p.Families {
		if f.Family == family {
			return fmt.Sprintf("%d/%d/%d", f.Received, f.Accepted, f.Rejected)
		}
	}
	return "-"
}
