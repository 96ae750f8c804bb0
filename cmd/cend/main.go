// Command cend is the opencen gateway agent: one process per gateway host,
// running its WireGuard tunnels, BGP speaker, kernel routes and shaper from
// the instance's config file. It wires the parts together; the work is done
// in package agent and the subsystems below it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/opencen/opencen/agent"
	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/buildinfo"
	"github.com/opencen/opencen/internal/cmddoc"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type usageError struct{ error }

// noArgs refuses positional arguments as a usage error, the message led by
// prefix (a subcommand's name and a colon, or nothing).
func noArgs(prefix string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("%sunexpected argument %q", prefix, args[0])}
		}
		return nil
	}
}

// hangups receives SIGHUP from the first thing main does: a SIGHUP that
// arrives while cend starts (a `systemctl reload` racing the start) waits
// here for the reload loop instead of taking the default action, which
// ends the process.
var hangups = make(chan os.Signal, 1)

func main() {
	signal.Notify(hangups, syscall.SIGHUP)
	// cend holds the gateway's private key and TCP-MD5 passwords: no core
	// dump, and no /proc/PID/mem or ptrace for anyone without
	// CAP_SYS_PTRACE, the same uid included.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "cend: cannot mark the process non-dumpable: %v\n", err)
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

type flags struct {
	config, gateway, socket, metricsAddr, stateDir, logFormat, shaper string
	cleanup, check, version                                           bool
}

func run(args []string, stderr io.Writer) int {
	return runWith(args, os.Stdout, stderr)
}

func runWith(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	var list config.ErrorList
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(reportedError)):
		return exitFailure
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "cend: %v\nRun 'cend --help' for usage.\n", err)
		return exitUsage
	case errors.As(err, &list):
		for _, e := range list {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "cend: %s does not validate (%d error(s)); nothing is changed\n", list[0].File, len(list))
		return exitFailure
	default:
		fmt.Fprintf(stderr, "cend: %v\n", err)
		return exitFailure
	}
}

// reportedError marks a failure whose details are printed already (the
// preflight's failing checks): exit 1 with nothing more.
type reportedError struct{}

func (reportedError) Error() string { return "reported" }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var f flags
	root := &cobra.Command{
		Use:   "cend --config FILE --gateway NAME",
		Short: "The opencen gateway agent",
		Long: `cend runs one gateway of an opencen instance: WireGuard tunnels to every other
gateway, BGP over them and with the VBRs' on-premises routers, kernel routes,
and the eBPF shaper of cross-region traffic. SIGHUP reloads the config file;
SIGTERM and SIGINT stop, leaving forwarding in place for the next cend unless
--cleanup is given.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case f.version:
				fmt.Fprintln(stdout, "cend", buildinfo.Get())
				return nil
			case f.check:
				return preflight(f, stdout)
			}
			return serve(cmd.Context(), f, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	fl := root.Flags()
	fl.StringVar(&f.config, "config", "", "the instance's config file (required)")
	fl.StringVar(&f.gateway, "gateway", "", "which gateway of the config this host is (required)")
	fl.StringVar(&f.socket, "socket", api.DefaultSocket, "control socket for cenctl")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9469", "address of the Prometheus /metrics endpoint; empty turns it off")
	fl.StringVar(&f.stateDir, "state-dir", "", "folder for state that outlives this process (default /var/lib/opencen/GATEWAY)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.BoolVar(&f.cleanup, "cleanup", false, "on exit, remove everything this gateway installed instead of keeping it for a restart")
	fl.StringVar(&f.shaper, "shaper", string(agent.ShaperAuto), "how cross-region traffic is shaped: auto, tcx (Linux 6.6+), tc (clsact + cls_bpf) or userspace (in the userspace WireGuard device)")
	fl.BoolVar(&f.check, "check", false, "check the host and the config, changing nothing: one line per check, exit 1 when one fails")
	fl.BoolVar(&f.version, "version", false, "print the version and the commit cend was built from")

	// The userspace WireGuard device lives in a helper process of its own so
	// that tunnels outlive the agent; this hidden command is that helper.
	root.AddCommand(helperCommand(stderr), cmddoc.ManCommand(root))
	return root
}

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: use text or json", format)}
}
