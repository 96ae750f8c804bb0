package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/opencen/opencen/internal/cmddoc"
	"github.com/spf13/cobra"
)

// Exit codes of SPEC section 4.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks a bad command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// reportedError marks a failure whose details are printed already (for
// example every located error of a config): exit 1 with nothing more.
type reportedError struct{}

func (reportedError) Error() string { return "reported" }

// globals are the flags every command shares.
type globals struct {
	socket, gateway string
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(reportedError)):
		return exitFailure
	case errors.As(err, new(usageError)) || isCobraUsage(err):
		fmt.Fprintf(stderr, "cenctl: %v\nRun 'cenctl --help' for usage.\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "cenctl: %v\n", err)
		return exitFailure
	}
}

// isCobraUsage recognises the errors cobra raises for an unknown command
// or flag, which none of ours sees.
func isCobraUsage(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "cenctl",
		Short:         "Operate an opencen Cloud Enterprise Network",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	g.addSocketFlags(root)
	root.AddCommand(
		newValidateCmd(g),
		newPlanCmd(g),
		newTopologyCmd(g),
		newStatusCmd(g),
		newPeersCmd(g),
		newRoutesCmd(g),
		newBandwidthCmd(g),
		newReloadCmd(g),
		newLabCmd(g),
		newDemoCmd(g),
		newVersionCmd(),
	)
	root.AddCommand(cmddoc.ManCommand(root))
	root.InitDefaultCompletionCmd()
	strictGroups(root)
	return root
}

// strictGroups makes every command below root that only groups others
// (lab, completion) take an unknown subcommand as bad usage, exit 2, where
// cobra would print its help and succeed. Run bare, a group prints its
// help.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
	if !c.HasParent() || c.Runnable() || !c.HasSubCommands() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		return usageError{fmt.Errorf("unknown command %q for %q; use one of %s", args[0], cmd.CommandPath(), strings.Join(names, ", "))}
	}
}

// outputFlag adds -o/--output to a read command.
func outputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "text", "output format: text or json")
}

func checkOutput(format string) error {
	if format != "text" && format != "json" {
		return usageError{fmt.Errorf("unknown output format %q; use text or json", format)}
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a usage error, and names what is wanted.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageError{fmt.Errorf("%s takes %s, got %d argument(s)", cmd.Name(), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

// emit writes v to the command's output: as JSON when output is "json",
// else as text by print.
func emit[T any](cmd *cobra.Command, output string, v T, print func(io.Writer, T)) error {
	if output == "json" {
		return writeJSON(cmd.OutOrStdout(), v)
	}
	print(cmd.OutOrStdout(), v)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
