package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/shaping"
	"golang.zx2c4.com/wireguard/tun"
)

// ShaperMode is how a gateway shapes cross-region traffic (cend
// --shaper): ShaperAuto takes the first of the others the host supports.
type ShaperMode = shaping.Path

// The shaper modes.
const (
	ShaperAuto      = shaping.PathAuto
	ShaperTCX       = shaping.PathTCX
	ShaperTC        = shaping.PathTC
	ShaperUserspace = shaping.PathUserspace
)

// ShaperModes lists every mode, ShaperAuto first.
var ShaperModes = shaping.Paths

// DeviceOptions configure the userspace WireGuard device a helper serves.
type DeviceOptions struct {
	Name   string // the TUN interface
	MTU    int
	Logger *slog.Logger
}

// HelperLog is what the WireGuard helper logs through, given its stderr:
// where that is a file (the dataplane's DEVICE.log), the log is bounded
// (dataplane.CappedLog).
func HelperLog(stderr io.Writer) io.Writer {
	if f, ok := stderr.(*os.File); ok {
		return dataplane.CappedLog(f, dataplane.HelperLogMax)
	}
	return stderr
}

// ServeWireGuardDevice serves a userspace WireGuard device, the helper
// process the dataplane starts detached so the tunnel outlives the agent,
// until ctx ends, the TUN link is deleted or its UAPI socket removed. Its
// TUN is wrapped by the userspace shaper, whose buckets the agent sets
// over the shaper socket (shaping.SocketPath): in ShaperUserspace they
// shape what the device sends; otherwise they are empty and pass
// everything untouched.
func ServeWireGuardDevice(ctx context.Context, o DeviceOptions) error {
	log := o.Logger
	var srv *shaping.Server
	served := make(chan error, 1)
	wrap := func(dev tun.Device) (tun.Device, error) {
		t, err := shaping.NewTUN(dev, shaping.LimiterOptions{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("userspace shaper: %w", err)
		}
		srv, err = shaping.Listen(shaping.SocketPath(o.Name), t, log.With("subsystem", "shaping"))
		if err != nil {
			return nil, err
		}
		go func() { served <- srv.Serve() }()
		return t, nil
	}
	err := dataplane.ServeUserspaceDevice(ctx, dataplane.HelperOptions{Device: o.Name, MTU: o.MTU, Logger: log, Wrap: wrap})
	if srv != nil {
		err = errors.Join(err, srv.Close(), <-served)
	}
	return err
}
