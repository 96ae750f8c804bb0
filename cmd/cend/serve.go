package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/opencen/opencen/agent"
	"github.com/opencen/opencen/internal/buildinfo"
	"github.com/opencen/opencen/internal/sdnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// checkFlags checks what every mode that reads the config needs.
func checkFlags(f flags) error {
	if f.config == "" || f.gateway == "" {
		return usageError{errors.New("--config and --gateway are required")}
	}
	if !slices.Contains(agent.ShaperModes, agent.ShaperMode(f.shaper)) {
		return usageError{fmt.Errorf("--shaper %q: use auto, tcx, tc or userspace", f.shaper)}
	}
	return nil
}

// preflight is cend --check: one line per check, exit 1 when one fails.
func preflight(f flags, stdout io.Writer) error {
	if err := checkFlags(f); err != nil {
		return err
	}
	results := agent.Check(agent.Options{ConfigPath: f.config, Gateway: f.gateway, Shaper: agent.ShaperMode(f.shaper)})
	for _, r := range results {
		fmt.Fprintln(stdout, r)
	}
	if agent.Failed(results) {
		return reportedError{}
	}
	return nil
}

func serve(ctx context.Context, f flags, stderr io.Writer) error {
	if err := checkFlags(f); err != nil {
		return err
	}
	log, err := newLogger(f.logFormat, stderr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := newAgent(f, log, reg)
	if err != nil {
		return err
	}
	// The config and key files are checked first, so their errors show
	// even when run by hand without the capabilities.
	if err := agent.CheckCaps(0); err != nil {
		return err
	}
	// Where no shaper can enforce, nothing is touched.
	if err := a.Prepare(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	control, err := agent.ListenControl(f.socket, a, log)
	if err != nil {
		return err
	}
	defer control.Close()
	go func() {
		if err := control.Serve(); err != nil {
			log.Error("control socket stopped", "err", err)
		}
	}()
	if f.metricsAddr != "" {
		srv, err := agent.ServeMetrics(f.metricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	go reloadOnHUP(ctx, a, log)
	go watchdog(ctx, a, log)
	err = a.Run(ctx)
	notify(log, sdnotify.Stopping)
	log.Info("stopped", "cleanup", f.cleanup, "err", err)
	return err
}

func newAgent(f flags, log *slog.Logger, reg *prometheus.Registry) (*agent.Agent, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	build := buildinfo.Get()
	return agent.New(agent.Options{
		ConfigPath: f.config,
		Gateway:    f.gateway,
		StateDir:   f.stateDir,
		Cleanup:    f.cleanup,
		Logger:     log,
		// Every series carries the gateway's name, so one dashboard serves
		// a whole instance without relabelling.
		Registerer:    prometheus.WrapRegistererWith(prometheus.Labels{"gateway": f.gateway}, reg),
		HelperCommand: []string{self, "wireguard-device"},
		Shaper:        agent.ShaperMode(f.shaper),
		Ready:         func() { notify(log, sdnotify.Ready) },
		Build:         agent.BuildInfo{Version: build.Version, Commit: build.Commit},
	})
}

// reloadOnHUP reloads on every SIGHUP main has caught (hangups), those
// from before the agent ran included.
func reloadOnHUP(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hangups:
			log.Info("SIGHUP: reloading config")
			a.Reload(ctx)
		}
	}
}

// notify tells systemd state, when cend runs under it.
func notify(log *slog.Logger, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		log.Warn("systemd notify", "state", state, "err", err)
	}
}

// watchdog pings systemd's watchdog (WatchdogSec in the unit) while the
// agent answers: each ping waits for a status read, which takes the lock
// the reconcile loop, reload and the control socket share, so a wedged
// agent misses its pings and systemd restarts it.
func watchdog(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	every, on, err := sdnotify.WatchdogInterval()
	if err != nil {
		log.Warn("systemd watchdog", "err", err)
	}
	if !on {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		answered := make(chan struct{})
		go func() { a.Status(); close(answered) }()
		select {
		case <-answered:
			notify(log, sdnotify.Watchdog)
		case <-time.After(every):
			log.Error("the agent did not answer a status read within the watchdog interval; withholding the watchdog ping", "interval", every)
		case <-ctx.Done():
			return
		}
	}
}
