package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/opencen/opencen/agent"
	"github.com/spf13/cobra"
)

// helperCommand is the userspace WireGuard helper: the dataplane runs
// `cend wireguard-device --device NAME --mtu N` detached, so the device
// (agent.ServeWireGuardDevice) outlives the agent.
func helperCommand(stderr io.Writer) *cobra.Command {
	var name string
	var mtu int
	var verbose bool
	cmd := &cobra.Command{
		Use:    "wireguard-device --device NAME [--mtu N]",
		Short:  "Serve a userspace WireGuard device (started by cend itself)",
		Hidden: true,
		Args:   noArgs("wireguard-device: "),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageError{errors.New("wireguard-device: --device is required")}
			}
			return runHelper(cmd.Context(), name, mtu, verbose, stderr)
		},
	}
	cmd.Flags().StringVar(&name, "device", "", "TUN interface name")
	cmd.Flags().IntVar(&mtu, "mtu", 1420, "initial MTU")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log wireguard-go debug lines")
	return cmd
}

// runHelper serves the device until SIGTERM or SIGINT (SIGHUP is
// ignored: the helper outlives the agent's terminal), the TUN link's
// deletion, or the removal of its UAPI socket; it logs to stderr (the
// dataplane points it at its state folder).
func runHelper(ctx context.Context, name string, mtu int, verbose bool, stderr io.Writer) error {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(agent.HelperLog(stderr), &slog.HandlerOptions{Level: level}))
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	return agent.ServeWireGuardDevice(ctx, agent.DeviceOptions{Name: name, MTU: mtu, Logger: log})
}
