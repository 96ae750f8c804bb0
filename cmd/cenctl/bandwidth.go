package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type bandwidthFlags struct {
	output   string
	watch    bool
	interval time.Duration
	count    int
}

func newBandwidthCmd(g *globals) *cobra.Command {
	var f bandwidthFlags
	cmd := &cobra.Command{
		Use:   "bandwidth",
		Short: "Show a gateway's egress per destination region against its allocation",
		Long: `Show, per destination region, this gateway's allocation, the current rate,
utilisation and the shaper's drops. With --watch the view refreshes every
--interval, until interrupted (or --count refreshes): on a terminal in place,
the way top does; into a pipe or file as one table after another, without
terminal control codes; with -o json as JSON Lines, one document a line.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(f.output); err != nil {
				return err
			}
			if f.interval < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %s is too short; use at least 100ms", f.interval)}
			}
			socket, err := g.socketPath()
			if err != nil {
				return err
			}
			return f.run(cmd, socket)
		},
	}
	outputFlag(cmd, &f.output)
	cmd.Flags().BoolVarP(&f.watch, "watch", "w", false, "keep refreshing")
	cmd.Flags().DurationVar(&f.interval, "interval", time.Second, "refresh interval with --watch")
	cmd.Flags().IntVar(&f.count, "count", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	return cmd
}

// run shows the gateway's bandwidth once, or with --watch every interval.
func (f bandwidthFlags) run(cmd *cobra.Command, socket string) error {
	client := api.NewClient(socket)
	w := cmd.OutOrStdout()
	fetch := func() ([]api.Bandwidth, error) {
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		rows, err := client.Bandwidth(ctx)
		return nonNil(rows), err
	}
	if !f.watch {
		rows, err := fetch()
		if err != nil {
			return err
		}
		return emit(cmd, f.output, rows, printBandwidth)
	}
	show := f.watchView(w, socket)
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
	defer stop()
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for i := 0; f.count == 0 || i < f.count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		rows, err := fetch()
		if err != nil {
			return err
		}
		if err := show(rows); err != nil {
			return err
		}
	}
	return nil
}

// watchView is how --watch writes one refresh to w: a JSON line with -o
// json; a table in place on a terminal; else a table under a header line.
func (f bandwidthFlags) watchView(w io.Writer, socket string) func([]api.Bandwidth) error {
	if f.output == "json" {
		enc := json.NewEncoder(w) // one compact document a line: JSON Lines
		return func(rows []api.Bandwidth) error { return enc.Encode(rows) }
	}
	terminal := isTerminal(w)
	return func(rows []api.Bandwidth) error {
		now := time.Now().Format(time.TimeOnly)
		if terminal {
			// Clear the screen and home the cursor, as top does.
			fmt.Fprint(w, "\x1b[H\x1b[2J")
			fmt.Fprintf(w, "cenctl bandwidth --socket %s   %s   (every %s, Ctrl-C to stop)\n\n", socket, now, f.interval)
		} else {
			fmt.Fprintf(w, "# %s %s\n", now, socket)
		}
		printBandwidth(w, rows)
		if !terminal {
			fmt.Fprintln(w)
		}
		return nil
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
