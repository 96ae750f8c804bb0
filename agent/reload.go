package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencen/opencen/agent/api"
	"github.com/opencen/opencen/config"
)

// reloadTimeout bounds a reload's reconcile. It is shorter than cenctl
// reload's wait, so the caller hears how the reload ended.
const reloadTimeout = 90 * time.Second

// Reload re-reads the config file. The whole file is validated first, and
// this gateway's secrets read; on any problem the running config stays and
// the result carries every error. A good file is applied as a difference:
// subsystems are handed the new desired state and leave unchanged tunnels,
// sessions and buckets alone; an error applying it is in the result too
// ("applied, but: ...").
//
// Reloads run one at a time, SIGHUP's and the control socket's alike. Once
// started, a reload is not cut short by its caller going away (a client
// that disconnects, cenctl's timeout): the new config is swapped in and
// applied on a context of its own, which ends after reloadTimeout or when
// the agent stops.
func (a *Agent) Reload(ctx context.Context) api.ReloadResult {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	ctx, cancel := a.reloadContext(ctx)
	defer cancel()
	a.mu.Lock()
	old, gen := a.cfg, a.gen
	a.mu.Unlock()

	reject := func(errs ...string) api.ReloadResult {
		a.log.Error("reload rejected; keeping the running config", "generation", gen, "errors", len(errs), "first", errs[0])
		for _, e := range errs {
			a.log.Error("reload error", "error", e)
		}
		if a.metrics != nil {
			a.metrics.reloads.WithLabelValues("rejected").Inc()
		}
		return api.ReloadResult{Applied: false, Generation: gen, Errors: errs}
	}
	cfg, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			lines := make([]string, len(list))
			for i, e := range list {
				lines[i] = e.Error()
			}
			return reject(lines...)
		}
		return reject(err.Error())
	}
	d, err := cfg.Desired(a.opts.Gateway, config.DesiredOptions{})
	if err != nil {
		return reject(fmt.Sprintf("%v; to retire this gateway, stop it with --cleanup", err))
	}
	sec, err := readSecrets(cfg, d)
	if err != nil {
		return reject(err.Error())
	}
	plan := config.MakePlan(old, cfg)

	a.mu.Lock()
	a.cfg, a.sec, a.desired = cfg, sec, d
	a.gen++
	a.loadedAt = time.Now()
	gen = a.gen
	a.mu.Unlock()

	res := api.ReloadResult{Applied: true, Generation: gen, Changes: describeChanges(plan, a.opts.Gateway)}
	if err := a.reconcile(ctx); err != nil {
		res.Errors = append(res.Errors, "applied, but: "+err.Error())
		a.log.Error("config reloaded, but applying it failed; retrying in the loop", "generation", gen, "err", err)
	}
	a.log.Info("config reloaded", "generation", gen, "changes", len(res.Changes))
	if a.metrics != nil {
		a.metrics.reloads.WithLabelValues("applied").Inc()
	}
	return res
}

// reloadContext is ctx without its cancellation, bounded by
// reloadTimeout and by the agent's life.
func (a *Agent) reloadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reloadTimeout)
	a.mu.Lock()
	life := a.life
	a.mu.Unlock()
	if life == nil {
		return ctx, cancel
	}
	stop := context.AfterFunc(life, cancel)
	return ctx, func() { stop(); cancel() }
}

// describeChanges is the plan's lines for this gateway, in words.
func describeChanges(p *config.Plan, gateway string) []string {
	var out []string
	for _, g := range p.Gateways {
		if g.Gateway != gateway {
			continue
		}
		for _, s := range g.Settings {
			out = append(out, fmt.Sprintf("%s: %s -> %s", s.Field, s.Old, s.New))
		}
		for _, n := range g.PeersAdded {
			out = append(out, "peer added: "+n)
		}
		for _, n := range g.PeersRemoved {
			out = append(out, "peer removed: "+n)
		}
		for _, pc := range g.PeersChanged {
			for _, c := range pc.Changes {
				out = append(out, fmt.Sprintf("peer %s %s: %s -> %s", pc.Peer, c.Field, c.Old, c.New))
			}
		}
		for _, pr := range g.OriginateAdded {
			out = append(out, "originate: + "+pr.String())
		}
		for _, pr := range g.OriginateRemoved {
			out = append(out, "originate: - "+pr.String())
		}
		for _, r := range g.Rates {
			out = append(out, fmt.Sprintf("egress to %s: %s -> %s", r.Region, rateWord(r.Old), rateWord(r.New)))
		}
		for _, n := range g.VBRsAdded {
			out = append(out, "vbr session added: "+n)
		}
		for _, n := range g.VBRsRemoved {
			out = append(out, "vbr session removed: "+n)
		}
		for _, n := range g.VBRsChanged {
			out = append(out, "vbr session changed: "+n)
		}
	}
	return out
}

func rateWord(b config.Bandwidth) string {
	if b == 0 {
		return "none"
	}
	return b.String()
}
