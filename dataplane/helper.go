package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// HelperOptions configure one userspace WireGuard device.
type HelperOptions struct {
	// Device is the TUN interface name; the UAPI socket is
	// /var/run/wireguard/Device.sock.
	Device string
	// MTU of the TUN at creation (the dataplane keeps it up to date over
	// netlink afterwards).
	MTU int
	// Logger receives the device's log lines; nil discards them.
	Logger *slog.Logger
	// Wrap, when set, is handed the TUN once the device's UAPI socket is
	// ours and returns the tun.Device wireguard-go runs on, e.g. one that
	// shapes what it reads (shaping.TUN). On error the TUN is closed and
	// the helper stops.
	Wrap func(tun.Device) (tun.Device, error)
}

// ServeUserspaceDevice creates a wireguard-go device on a new TUN in the
// calling process's network namespace (on opts.Wrap's device when set),
// serves its UAPI socket, and blocks
// until ctx is cancelled, the TUN link is deleted, or the UAPI socket file
// is removed. The device starts with no key and no peers: the dataplane
// configures it over UAPI. A stale socket with the same name (no process
// listening) is replaced.
func ServeUserspaceDevice(ctx context.Context, opts HelperOptions) error {
	if err := validDeviceName(opts.Device); err != nil {
		return err
	}
	if opts.MTU == 0 {
		opts.MTU = defaultMTU
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("device", opts.Device)

	tdev, err := tun.CreateTUN(opts.Device, opts.MTU)
	if err != nil {
		return fmt.Errorf("create tun %s: %w", opts.Device, err)
	}
	uapiFile, err := ipc.UAPIOpen(opts.Device)
	if err != nil {
		tdev.Close()
		return fmt.Errorf("open uapi socket for %s: %w", opts.Device, err)
	}
	if opts.Wrap != nil {
		w, err := opts.Wrap(tdev)
		if err != nil {
			uapiFile.Close()
			tdev.Close()
			return fmt.Errorf("wrap tun %s: %w", opts.Device, err)
		}
		tdev = w
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) },
	})
	defer dev.Close()
	uapi, err := ipc.UAPIListen(opts.Device, uapiFile)
	if err != nil {
		uapiFile.Close()
		return fmt.Errorf("listen on uapi socket for %s: %w", opts.Device, err)
	}
	defer uapi.Close()
	uapiErr := make(chan error, 1)
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				uapiErr <- err
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	log.Info("userspace wireguard device up", "mtu", opts.MTU, "pid", os.Getpid())
	select {
	case <-ctx.Done():
		log.Info("stopping on request")
		return nil
	case <-dev.Wait():
		log.Info("device closed (tun link deleted?)")
		return nil
	case err := <-uapiErr:
		// The socket file is gone or the listener failed: without
		// UAPI the device cannot be managed, so it goes away.
		log.Info("uapi socket gone, stopping", "err", err)
		return nil
	}
}
