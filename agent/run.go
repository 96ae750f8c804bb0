package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
)

// Run brings the gateway up and keeps it reconciled until ctx is done, then
// stops it (keeping or removing its state as Options.Cleanup says).
func (a *Agent) Run(ctx context.Context) (err error) {
	a.mu.Lock()
	a.started, a.life = time.Now(), ctx
	a.mu.Unlock()
	if err := a.Prepare(); err != nil {
		return err
	}
	if err := os.MkdirAll(a.opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	restarting, stale := takeSavedState(a.opts.StateDir, a.log)
	a.mu.Lock()
	a.learn.stale = stale
	for p, r := range a.learn.stale {
		if r.Handoff {
			a.learn.staleHandoffs[p] = r
			delete(a.learn.stale, p)
		}
	}
	a.mu.Unlock()
	up := false
	defer func() {
		if err != nil && !up {
			a.logLeftInPlace(err)
		}
		err = errors.Join(err, a.close())
	}()

	if err := a.mountBPFFS(); err != nil {
		return err
	}
	cfg := a.snapshotConfig()
	dp, err := dataplane.New(dataplane.Options{
		Logger:        a.log.With("subsystem", subDataplane),
		ID:            cfg.Instance.Name + "/" + a.opts.Gateway,
		StateDir:      filepath.Join(a.opts.StateDir, "dataplane"),
		HelperCommand: a.opts.HelperCommand,
		Mode:          a.wireGuardMode(),
	})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	a.setSubsystem(func() { a.dp = dp })
	// The tunnel comes first: BGP rides inside it, and the shaper attaches
	// to it. Without a device nothing else can start: say why and stop.
	firstErr := a.reconcile(ctx)
	st, _ := a.dp.Status()
	if st.Mode == "" {
		return fmt.Errorf("no tunnel device: %w", firstErr)
	}
	if firstErr != nil {
		a.log.Error("first reconcile incomplete; retrying in the loop", "err", firstErr)
	}
	a.log.Info("wireguard path", "mode", st.Mode, "device", st.Device)

	if err := a.startShaper(st.Mode == dataplane.ModeUserspace); err != nil {
		return fmt.Errorf("shaping: %w", err)
	}
	if err := a.startRouting(ctx, restarting); err != nil {
		return err
	}
	if err := a.reconcile(ctx); err != nil {
		a.log.Error("reconcile incomplete; retrying in the loop", "err", err)
	}
	a.log.Info("gateway up", "instance", cfg.Instance.Name, "region", a.snapshotDesired().Region, "restarting", restarting)
	up = true
	if a.opts.Ready != nil {
		a.opts.Ready()
	}
	return a.loop(ctx)
}

// startRouting starts the BGP speaker.
func (a *Agent) startRouting(ctx context.Context, restarting bool) error {
	rt, err := routing.New(routing.Options{
		Logger:     a.log.With("subsystem", subRouting),
		Port:       a.opts.BGPPort,
		OnRoutes:   a.onRoutes,
		OnSessions: a.onSessions,
		Restarting: restarting,
		// BFD between gateways hears only what comes out of the tunnel.
		TunnelDevice: a.dp.Device(),
	})
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	a.setSubsystem(func() { a.rt = rt })
	if err := a.rt.Start(ctx); err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	return nil
}

// close stops the subsystems in the reverse order of their start. It
// waits for a reconcile under way (a reload's) and leaves none to run.
func (a *Agent) close() error {
	a.applyMu.Lock()
	a.closed = true
	a.applyMu.Unlock()
	var errs []error
	graceful := !a.opts.Cleanup
	if a.rt != nil {
		errs = append(errs, a.rt.Close(graceful))
	}
	if a.sh != nil {
		errs = append(errs, a.sh.Close(a.opts.Cleanup))
	} else if a.opts.Cleanup {
		errs = append(errs, a.removeShaper())
	}
	if a.opts.Cleanup && a.opts.PinPath == "" && a.dp != nil {
		// The default pin folder's parent is ours too; leave it if
		// another gateway's shaper still pins there.
		_ = os.Remove(filepath.Dir(a.pinPath()))
		errs = append(errs, a.releaseBPFFS())
	}
	if a.dp != nil {
		errs = append(errs, a.dp.Close(a.opts.Cleanup))
	}
	if graceful {
		a.mu.Lock()
		routes := make(desired.Routes, len(a.learn.routes)+len(a.learn.handoffs))
		for p, r := range a.learn.routes {
			routes[p] = r
		}
		for p, r := range a.learn.handoffs {
			routes[p] = r
		}
		a.mu.Unlock()
		// The routes first, then the marker that makes the next agent
		// read them: a crash between the two leaves them unread.
		errs = append(errs, saveRoutes(routesFile(a.opts.StateDir), routes))
		errs = append(errs, writeFileSynced(gracefulMarker(a.opts.StateDir), []byte(time.Now().UTC().Format(time.RFC3339)+"\n")))
	} else {
		// Only what the agent wrote: the folder may hold an operator's or
		// a lab's files too.
		for _, p := range []string{routesFile(a.opts.StateDir), gracefulMarker(a.opts.StateDir), filepath.Join(a.opts.StateDir, "dataplane")} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(a.opts.StateDir) // if it is now empty
	}
	return errors.Join(errs...)
}
