package main

// The commands over config files, which need no gateway: validate and
// plan, and what they share.

import (
	"errors"
	"fmt"
	"io"

	"github.com/opencen/opencen/config"
	"github.com/spf13/cobra"
)

func newValidateCmd(_ *globals) *cobra.Command {
	return configCmd(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file and print its effective bandwidth matrix",
		Long: `Check everything in a config file that can be checked without a kernel.
A bad file gets every error it has, one a line, as FILE:LINE:COL: message,
and cenctl exits 1. A good file prints the effective bandwidth of every pair
of distinct regions that have a gateway or a network.`,
		Args: exactArgs("FILE"),
	}, func(cfgs []*config.Config) matrix {
		return matrix{Instance: cfgs[0].Instance.Name, Pairs: nonNil(cfgs[0].Matrix()), cfg: cfgs[0]}
	}, printMatrix)
}

func newPlanCmd(_ *globals) *cobra.Command {
	return configCmd(&cobra.Command{
		Use:   "plan OLD NEW",
		Short: "Show what changing a config from OLD to NEW would do, gateway by gateway",
		Long: `Compare two config files and print, for every gateway, the peers, prefixes,
egress rates and VBR sessions a change would add, remove or alter, and the
region pairs whose bandwidth changes. Both files must validate.`,
		Args: exactArgs("OLD", "NEW"),
	}, func(cfgs []*config.Config) *config.Plan { return config.MakePlan(cfgs[0], cfgs[1]) }, printPlan)
}

// configCmd completes cmd into a command over the config files its
// arguments name: it loads each (printing every located error of one
// that does not validate), and prints what result makes of them, as
// text, or as JSON with -o json.
func configCmd[T any](cmd *cobra.Command, result func([]*config.Config) T, print func(io.Writer, T)) *cobra.Command {
	var output string
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		var cfgs []*config.Config
		for _, a := range args {
			cfg, err := loadConfig(cmd, output, a)
			if err != nil {
				return err
			}
			cfgs = append(cfgs, cfg)
		}
		return emit(cmd, output, result(cfgs), print)
	}
	outputFlag(cmd, &output)
	return cmd
}

// matrix is a valid config's effective bandwidth matrix, as validate
// reports it.
type matrix struct {
	Instance string                 `json:"instance"`
	Pairs    []config.PairBandwidth `json:"pairs"`
	cfg      *config.Config         // for the text form
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// loadConfig loads a file. When it does not validate, every located error
// is printed: one a line on stderr, or with -o json as one document on
// stdout, {"file": FILE, "errors": [{"file", "line", "column",
// "message"}]}, that a file that cannot be read gets too.
func loadConfig(cmd *cobra.Command, output, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err == nil {
		return cfg, nil
	}
	var list config.ErrorList
	if !errors.As(err, &list) {
		list = config.ErrorList{{File: path, Msg: err.Error()}}
		if output != "json" {
			return nil, err
		}
	}
	if output == "json" {
		if err := writeJSON(cmd.OutOrStdout(), invalidFile{File: path, Errors: list}); err != nil {
			return nil, err
		}
		return nil, reportedError{}
	}
	for _, e := range list {
		fmt.Fprintln(cmd.ErrOrStderr(), e)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error(s)\n", path, len(list))
	return nil, reportedError{}
}

// invalidFile is what -o json prints of a file that does not validate.
type invalidFile struct {
	File   string           `json:"file"`
	Errors config.ErrorList `json:"errors"`
}

func printMatrix(w io.Writer, m matrix) {
	cfg, pairs := m.cfg, m.Pairs
	fmt.Fprintf(w, "%s: valid. instance %s, %d gateway(s), %d network(s), %d region pair(s)\n",
		cfg.File, cfg.Instance.Name, len(cfg.Gateways), len(cfg.Networks), len(pairs))
	if len(pairs) == 0 {
		fmt.Fprintln(w, "all networks are in one region: traffic between them is never limited")
		return
	}
	writeTable(w, "REGION A\tREGION B\tBANDWIDTH\tSOURCE", pairs, func(p config.PairBandwidth) []string {
		return []string{p.Regions[0], p.Regions[1], p.Bandwidth.String(),
			either(p.Source == config.SourcePackage, "package "+p.Package, "default (no interconnection)")}
	})
	fmt.Fprintln(w, "Each direction of a pair gets the whole bandwidth; same-region traffic is unlimited.")
}
