package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// startBird renders the router's config with the shared script and runs
// BIRD in the router's namespace, in the foreground of its own session so
// the lab records its PID and it outlives the command that started it.
func (l *Lab) startBird(ctx context.Context, o Options, scripts string, rt *Router) error {
	if err := os.MkdirAll(filepath.Dir(rt.Config), 0o755); err != nil {
		return fmt.Errorf("router %s: %w", rt.Name, err)
	}
	if err := l.writeBirdConf(ctx, scripts, rt, rt.Announce); err != nil {
		return err
	}
	pid, err := l.spawn(rt.Namespace, rt.LogFile, "bird", "-f", "-c", rt.Config, "-s", rt.Socket, "-P", filepath.Join(filepath.Dir(rt.Config), "bird.pid"))
	if err != nil {
		return fmt.Errorf("router %s: start bird: %w", rt.Name, err)
	}
	rt.PID = pid
	if err := waitSocket(ctx, rt.Socket, pid, o.StartTimeout); err != nil {
		return fmt.Errorf("router %s: bird: %w%s", rt.Name, err, logTail(rt.LogFile))
	}
	o.Logger.Info("bird up", "router", rt.Name, "pid", pid, "socket", rt.Socket)
	return nil
}

// writeBirdConf renders a router's BIRD config with the shared script,
// announcing prefixes: it checks that BIRD parses the new config, and only
// then replaces the old one.
func (l *Lab) writeBirdConf(ctx context.Context, scripts string, rt *Router, announce []netip.Prefix) error {
	conf, err := l.runner().output(ctx, append([]string{"sh", filepath.Join(scripts, "bird-conf.sh")}, rt.birdConfArgs(announce)...)...)
	if err != nil {
		return fmt.Errorf("router %s: render bird config: %w", rt.Name, err)
	}
	tmp := rt.Config + ".new"
	if err := os.WriteFile(tmp, conf, 0o644); err != nil {
		return fmt.Errorf("router %s: %w", rt.Name, err)
	}
	if err := l.runner().run(ctx, "bird", "-p", "-c", tmp); err != nil {
		return fmt.Errorf("router %s: bird config does not parse: %w", rt.Name, err)
	}
	if err := os.Rename(tmp, rt.Config); err != nil {
		return fmt.Errorf("router %s: %w", rt.Name, err)
	}
	return nil
}

// SetAnnouncements changes what a router (by router or VBR name)
// announces to its gateway, for route conflict and hijack scenarios: its
// config is rendered again with prefixes and BIRD reconfigures without a
// restart. Nil restores the lab's own announcements.
func (l *Lab) SetAnnouncements(ctx context.Context, router string, prefixes []netip.Prefix) error {
	rt, err := l.findRouter(router)
	if err != nil {
		return err
	}
	if prefixes == nil {
		prefixes = rt.Announce
	}
	if err := l.writeBirdConf(ctx, l.Scripts, rt, prefixes); err != nil {
		return err
	}
	out, err := birdc(ctx, rt.Socket, "configure")
	if err != nil {
		return fmt.Errorf("router %s: %w", rt.Name, err)
	}
	if !strings.Contains(string(out), "Reconfigured") && !strings.Contains(string(out), "Reconfiguration in progress") {
		return fmt.Errorf("router %s: birdc configure: %s", rt.Name, strings.TrimSpace(string(out)))
	}
	return nil
}

// birdConfArgs are the arguments of scripts/lab/bird-conf.sh for router
// r announcing prefixes: its router id (its IPv4 link address), the ASNs,
// the session's neighbor (the gateway), BFD, and its own link address of
// each family ("-" for none), the next hop it announces in the family the
// session does not run in.
func (r Router) birdConfArgs(announce []netip.Prefix) []string {
	bfd := "off"
	if r.BFD {
		bfd = "on"
	}
	nh := func(v6 bool) string {
		if a := r.LinkAddress(v6, false); a.IsValid() {
			return a.Addr().String()
		}
		return "-"
	}
	argv := []string{r.LinkAddress(false, false).Addr().String(), strconv.FormatUint(uint64(r.ASN), 10),
		r.GatewayAddress.Addr().String(), strconv.FormatUint(uint64(r.PeerASN), 10), bfd, nh(false), nh(true)}
	for _, p := range announce {
		argv = append(argv, p.String())
	}
	return argv
}
