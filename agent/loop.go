package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/dataplane"
	"github.com/opencen/opencen/desired"
	"github.com/opencen/opencen/routing"
	"github.com/opencen/opencen/shaping"
)

// loop keeps the gateway reconciled until ctx is done.
func (a *Agent) loop(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.sampleRates(ctx) }()
	defer wg.Wait()

	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	// A reconcile costs time in proportion to the whole table (it computes
	// and diffs the complete desired state). While a burst of new routes
	// pours in, one that only adds routes waits as long as the last one
	// took (at least minPace, at most maxPace), so that the agent spends
	// at most about half its time reconciling and each reconcile takes a
	// large batch:
	// 100,000 routes arriving in thousands of small batches would
	// otherwise cost a reconcile of the growing table per batch, starving
	// BGP and BFD of CPU. Withdrawals, session changes and reloads (kick)
	// never wait.
	// A burst has ended when no new routes came for quietAfter (the
	// speaker hands over a batch every 100 ms while they pour in): then
	// the pace has nothing left to protect and the last routes are
	// installed at once.
	const minPace, maxPace = 250 * time.Millisecond, 500 * time.Millisecond
	const quietAfter = 200 * time.Millisecond
	var paceUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-a.grow:
			if !a.paceGrowth(ctx, paceUntil, quietAfter) {
				return nil
			}
		case <-resync.C:
		case <-a.snapKick:
			a.refreshSnapshot()
			continue
		}
		// This reconcile takes in everything asked for so far.
		select {
		case <-a.grow:
		default:
		}
		start := time.Now()
		if err := a.reconcile(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("reconcile incomplete", "err", err)
		}
		paceUntil = time.Now().Add(min(max(time.Since(start), minPace), maxPace))
	}
}

// paceGrowth delays a reconcile that only adds routes: until
// paceUntil, or until the routes stopped coming for quiet, or a kick. It
// returns false when ctx ended.
func (a *Agent) paceGrowth(ctx context.Context, paceUntil time.Time, quiet time.Duration) bool {
	quietAt := func() time.Time { return time.Unix(0, a.lastGrow.Load()).Add(quiet) }
	for {
		until := paceUntil
		if q := quietAt(); q.Before(until) {
			until = q
		}
		wait := time.Until(until)
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-a.kick:
			t.Stop()
			return true
		case <-t.C:
			// The quiet deadline may have moved: more routes came.
		}
	}
}

// growReconcile asks the loop for a paced reconcile: only routes are
// added.
func (a *Agent) growReconcile() {
	a.lastGrow.Store(time.Now().UnixNano())
	select {
	case a.grow <- struct{}{}:
	default:
	}
}

// kickReconcile asks the loop for a reconcile without waiting.
func (a *Agent) kickReconcile() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) snapshotConfig() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) snapshotDesired() *config.Desired {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired
}

// wants are the subsystems' desired values at one reconcile.
type wants struct {
	tunnel  dataplane.Desired
	routing routing.Desired
	shaping shaping.Desired
	// missing names twins up without a known LAN address.
	missing []string
}

// reconcile computes the desired state now and applies it to every
// subsystem that exists, recording each one's outcome.
func (a *Agent) reconcile(ctx context.Context) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if a.closed {
		return errors.New("the agent is stopping")
	}
	w, err := a.want()
	if err != nil {
		return err
	}
	if len(w.missing) > 0 {
		a.log.Warn("twin gateways up but with no LAN address known: they cannot be handed traffic, so they are home of nothing here",
			"twins", w.missing)
	}
	var errs []error
	if a.dp != nil {
		errs = append(errs, a.apply(subDataplane, func() error { return a.dp.Set(ctx, w.tunnel) }))
	}
	if a.rt != nil {
		errs = append(errs, a.apply(subRouting, func() error { return a.rt.Set(ctx, w.routing) }))
	}
	if a.sh != nil {
		errs = append(errs, a.apply(subShaping, func() error { return a.sh.Set(w.shaping) }))
	}
	return errors.Join(errs...)
}

// want computes the subsystems' desired values from the config and what
// the agent knows now; a.applyMu is held.
func (a *Agent) want() (wants, error) {
	a.mu.Lock()
	cfg, sec := a.cfg, a.sec
	d, err := cfg.Desired(a.opts.Gateway, config.DesiredOptions{Down: a.down})
	if err != nil {
		a.mu.Unlock()
		return wants{}, err
	}
	a.desired = d
	v := desired.View{Routes: a.routesNow(time.Now()), Down: a.down, LAN: a.lanAddrs()}
	w := wants{
		tunnel:  desired.TunnelInto(cfg, d, sec, v, &a.buf),
		shaping: toShaping(desired.ShapingOf(cfg, d, v.Routes)),
		missing: desired.MissingHandoffs(d, v),
	}
	a.mu.Unlock()
	var links []config.LinkAddresses
	if a.dp != nil {
		if links, err = a.dp.LocalAddresses(); err != nil {
			a.log.Warn("reading the gateway's addresses", "err", err)
		}
	}
	connected, handoff := desired.ConnectedAndHandoff(d, links)
	w.routing = desired.RoutingOf(cfg, d, sec, links, connected, handoff)
	return w, nil
}

// apply runs one subsystem's apply and records its outcome.
func (a *Agent) apply(name string, fn func() error) error {
	err := fn()
	a.mu.Lock()
	s := a.subsys[name]
	s.LastApplied = time.Now()
	s.OK, s.Error = err == nil, ""
	if err != nil {
		s.Error = err.Error()
	}
	a.mu.Unlock()
	if err != nil {
		if a.metrics != nil {
			a.metrics.reconcileErrors.WithLabelValues(name).Inc()
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
