package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/opencen/opencen/config"
	"github.com/spf13/cobra"
)

func newValidateCmd(_ *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file and print its effective bandwidth matrix",
		Long: `Check everything in a config file that can be checked without a kernel.
A bad file gets every error it has, one a line, as FILE:LINE:COL: message,
and cenctl exits 1. A good file prints the effective bandwidth of every pair
of distinct regions that have a gateway or a network.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cfg, err := loadConfig(cmd.ErrOrStderr(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), matrixJSON{Instance: cfg.Instance.Name, Pairs: nonNil(cfg.Matrix())})
			}
			printMatrix(cmd.OutOrStdout(), cfg)
			return nil
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

type matrixJSON struct {
	Instance string                 `json:"instance"`
	Pairs    []config.PairBandwidth `json:"pairs"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// loadConfig loads a file and, when it does not validate, prints every
// located error to stderr.
func loadConfig(stderr io.Writer, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	var list config.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "%s: %d error(s)\n", path, len(list))
		return nil, reportedError{}
	}
	return cfg, err
}

func printMatrix(w io.Writer, cfg *config.Config) {
	pairs := cfg.Matrix()
	fmt.Fprintf(w, "%s: valid. instance %s, %d gateway(s), %d network(s), %d region pair(s)\n",
		cfg.File, cfg.Instance.Name, len(cfg.Gateways), len(cfg.Networks), len(pairs))
	if len(pairs) == 0 {
		fmt.Fprintln(w, "all networks are in one region: traffic between them is never limited")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION A\tREGION B\tBANDWIDTH\tSOURCE")
	for _, p := range pairs {
		source := "default (no interconnection)"
		if p.Source == config.SourcePackage {
			source = "package " + p.Package
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Regions[0], p.Regions[1], p.Bandwidth, source)
	}
	tw.Flush()
	fmt.Fprintln(w, "Each direction of a pair gets the whole bandwidth; same-region traffic is unlimited.")
}
