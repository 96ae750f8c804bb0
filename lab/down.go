package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/wgdev"
)

// Down removes a lab: every process in its namespaces and every agent or
// BIRD started for it, its namespaces (and with them every link and
// address), any stray link with the prefix in the root namespace, and its
// state dir. It works from the state file when there is one, and from the
// namespaces the plan of its config names and the processes using the state
// dir whether or not there is, so it cleans up after a crash. It never
// removes a namespace merely because its name starts with the prefix:
// other labs (tests use "ocl-t1a2b-") share the default "ocl-". Nothing up
// is success; running it twice is harmless.
func Down(ctx context.Context, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	r := &runner{log: o.Logger}
	var errs []error
	nss, strays, known := ownedNamespaces(o)
	if !known && len(strays) > 0 {
		errs = append(errs, fmt.Errorf("no state file in %s and config %s not readable: cannot tell whether namespaces %s are this lab's or another's; give the lab's config, or delete them by hand",
			o.StateDir, o.Config, strings.Join(strays, ", ")))
	}
	killed, err := killLab(ctx, r, o, nss)
	errs = append(errs, err)
	for _, ns := range nss {
		if err := r.run(ctx, "ip", "netns", "del", ns); err != nil && nsExists(ns) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeStrayLinks(ctx, r, o.Prefix))
	// A gateway killed outright (as the demo's failover does) leaves its
	// WireGuard helper's UAPI socket in the host-wide folder; the device
	// went with its namespace. Remove the lab's dead ones.
	for _, sock := range deadUAPISockets(o) {
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stale uapi socket: %w", err))
		}
	}
	errs = append(errs, removeStateDir(o.StateDir))
	if len(nss) > 0 || killed > 0 {
		o.Logger.Info("lab down", "namespaces", len(nss), "processes", killed)
	}
	return errors.Join(errs...)
}

// killLab ends the lab's processes: those the state file names (if they
// are still ours), those whose command line points into the state dir,
// and everything inside the lab's namespaces nss. It kills in rounds
// until the namespaces are empty: an agent that is starting, or
// repairing a helper that just died, may start a process after a
// listing, and a process left in a namespace keeps it (and its tunnel)
// alive, unnamed and unreachable, once the name is deleted. It returns
// how many processes it signalled.
func killLab(ctx context.Context, r *runner, o Options, nss []string) (int, error) {
	pids := recordedProcesses(o.StateDir)
	for _, p := range stateDirProcesses(o.StateDir, o.Cend) {
		pids[p] = true
	}
	const rounds = 5
	var errs []error
	all := map[int]bool{}
	for round := range rounds {
		for _, ns := range nss {
			out, err := r.output(ctx, "ip", "netns", "pids", ns)
			if err != nil {
				if round == 0 {
					errs = append(errs, err)
				}
				continue
			}
			for _, f := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(f); err == nil {
					pids[p] = true
				}
			}
		}
		delete(pids, os.Getpid())
		delete(pids, os.Getppid())
		if len(pids) == 0 {
			break
		}
		if err := killAll(ctx, pids); err != nil && round == rounds-1 {
			errs = append(errs, err)
		}
		for p := range pids {
			all[p] = true
		}
		pids = map[int]bool{}
	}
	return len(all), errors.Join(errs...)
}

// removeStrayLinks deletes the links named with the lab's prefix in the
// root namespace: nothing of the lab belongs there.
func removeStrayLinks(ctx context.Context, r *runner, prefix string) error {
	out, err := r.output(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return nil // nothing listed, nothing to remove
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix) {
			if err := r.run(ctx, "ip", "link", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeStateDir removes the lab's state dir, and only if it holds the
// lab's marker: a mistyped state dir never loses someone's files.
func removeStateDir(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return fmt.Errorf("state dir %s has no lab marker; left in place", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}

// deadUAPISockets are the UAPI sockets of the lab's gateways' devices (named
// from the instance and gateway, as the agent names them) that nothing
// answers any more.
func deadUAPISockets(o Options) []string {
	var cfgs []*config.Config
	if l, err := readState(o.StateDir); err == nil {
		if cfg, err := config.Load(l.ConfigFile); err == nil {
			cfgs = append(cfgs, cfg)
		}
	}
	if cfg, err := config.Load(o.Config); err == nil {
		cfgs = append(cfgs, cfg)
	}
	var out []string
	for _, cfg := range cfgs {
		for _, g := range cfg.Gateways {
			sock := wgdev.Socket(wgdev.Name(cfg.Instance.Name + "/" + g.Name))
			if slices.Contains(out, sock) {
				continue
			}
			if _, err := os.Stat(sock); err != nil {
				continue
			}
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				continue // a live device: not ours to touch
			}
			out = append(out, sock)
		}
	}
	return out
}

// ownedNamespaces lists the namespaces present that are this lab's: those
// its state file names and those the plan of its config would create. A
// bare prefix match is not enough: "ocl-" (the default lab's) is also the
// start of every test lab's prefix ("ocl-t1a2b-", "ocl-e1a2b3c-"), and a
// sweep by prefix alone would tear down other people's running labs.
// known reports whether either source is available; when neither is,
// strays holds what matches the prefix alone, for the caller to refuse.
func ownedNamespaces(o Options) (owned, strays []string, known bool) {
	want := map[string]bool{}
	if l, err := readState(o.StateDir); err == nil {
		known = true
		for _, n := range l.Namespaces {
			want[n] = true
		}
	}
	if cfg, err := config.Load(o.Config); err == nil {
		if l, err := plan(cfg, o.Prefix, o.StateDir); err == nil {
			known = true
			for _, n := range l.Namespaces {
				want[n] = true
			}
		}
	}
	for _, n := range labNamespaces(o.Prefix) {
		if want[n] {
			owned = append(owned, n)
		} else {
			strays = append(strays, n)
		}
	}
	return owned, strays, known
}

// labNamespaces lists the named namespaces starting with prefix (this
// lab's and possibly other labs' with a longer prefix: see
// ownedNamespaces).
func labNamespaces(prefix string) []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}
