package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/shaping"
	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/tun"
)

// helperCommand is the userspace WireGuard helper: the dataplane runs
// `cend wireguard-device --device NAME --mtu N` detached, so the device
// outlives the agent. Its TUN is wrapped by the userspace shaper, whose
// buckets the agent sets over the shaper socket (shaping.SocketPath): in
// --shaper userspace they shape what the device sends; otherwise they are
// empty and pass everything untouched.
func helperCommand(stderr io.Writer) *cobra.Command {
	var name string
	var mtu int
	var verbose bool
	cmd := &cobra.Command{
		Use:    "wireguard-device --device NAME [--mtu N]",
		Short:  "Serve a userspace WireGuard device (started by cend itself)",
		Hidden: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("wireguard-device: unexpected argument %q", args[0])}
			}
			return nil
		},
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
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var srv *shaping.Server
	served := make(chan error, 1)
	wrap := func(dev tun.Device) (tun.Device, error) {
		t, err := shaping.NewTUN(dev, shaping.LimiterOptions{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("userspace shaper: %w", err)
		}
		srv, err = shaping.Listen(shaping.SocketPath(name), t, log.With("subsystem", "shaping"))
		if err != nil {
			return nil, err
		}
		go func() { served <- srv.Serve() }()
		return t, nil
	}
	err := dataplane.ServeUserspaceDevice(ctx, dataplane.HelperOptions{Device: name, MTU: mtu, Logger: log, Wrap: wrap})
	if srv != nil {
		err = errors.Join(err, srv.Close(), <-served)
	}
	return err
}
