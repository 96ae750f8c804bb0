package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/opencen/opencen/lab"
	"github.com/spf13/cobra"
)

type labFlags struct {
	config, stateDir, cend, output string
	verbose                        bool
}

func (f *labFlags) add(cmd *cobra.Command, withCend bool) {
	cmd.Flags().StringVar(&f.config, "config", lab.DefaultConfig, "the lab's instance config")
	cmd.Flags().StringVar(&f.stateDir, "state-dir", lab.DefaultStateDir, "where the lab keeps keys, sockets, logs and its state")
	if withCend {
		cmd.Flags().StringVar(&f.cend, "cend", "", "the cend binary to run per gateway (default: the one beside cenctl, else on PATH)")
		cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "log every command the lab runs")
	}
}

func (f *labFlags) options(cmd *cobra.Command) lab.Options {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	return lab.Options{
		Config:   f.config,
		StateDir: f.stateDir,
		Cend:     f.cend,
		Logger:   slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
	}
}

// runE is the RunE of a command that runs the lab with its agents: it
// checks the flags (the output format; the cend binary, found when not
// given), then runs run with the command's context, cancelled on SIGINT
// or SIGTERM.
func (f *labFlags) runE(run func(ctx context.Context, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
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
		return run(ctx, cmd)
	}
}

// findCend is the cend beside this cenctl (as make build lays them out),
// or the one on PATH.
func findCend() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "cend")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("cend")
	if err != nil {
		return "", errors.New("cannot find cend beside cenctl or on PATH; run make build, or give --cend")
	}
	return p, nil
}

func newLabCmd(_ *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a whole multi-region instance on this machine, in network namespaces",
		Long: `Build (up), inspect (status) and remove (down) the namespace lab: a namespace
per gateway, a LAN per region with a host per VPC, an underlay between the
gateways, and an on-premises router running BIRD behind the VBR, with a cend
per gateway. Needs root. Lab addresses exist only inside the lab's
namespaces; none of them has a route out of the machine.`,
	}
	var up, down, status labFlags
	upCmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab and start a cend per gateway",
		Args:  exactArgs(),
		RunE: up.runE(func(ctx context.Context, cmd *cobra.Command) error {
			l, err := lab.Up(ctx, up.options(cmd))
			if err != nil {
				return err
			}
			return emit(cmd, up.output, l, func(w io.Writer, l *lab.Lab) { fmt.Fprint(w, l.Describe()) })
		}),
	}
	up.add(upCmd, true)
	outputFlag(upCmd, &up.output)

	downCmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: every namespace, process, link and file it made, even after a crash",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(context.WithoutCancel(cmd.Context()), down.options(cmd))
		},
	}
	down.add(downCmd, false)

	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "Show what of the lab is up; exits 1 when it is not (fully) up",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(status.output); err != nil {
				return err
			}
			st, err := lab.Status(status.options(cmd))
			if err != nil {
				return err
			}
			err = emit(cmd, status.output, st, func(w io.Writer, st *lab.StatusReport) { fmt.Fprint(w, st.String()) })
			if err == nil && !st.Up() {
				return reportedError{}
			}
			return err
		},
	}
	status.add(statusCmd, false)
	outputFlag(statusCmd, &status.output)
	cmd.AddCommand(upCmd, downCmd, statusCmd)
	return cmd
}
