package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencen/opencen/config"
	"github.com/opencen/opencen/internal/procx"
)

// areaDelay is the delay netem adds on the underlay toward a gateway of each
// area, when the kernel has netem: a packet from A to B waits B's value, so
// a pair's round trip is the sum of its two ends' values (10 ms within
// mainland China, 70 ms Beijing to Frankfurt).
var areaDelay = map[string]time.Duration{
	"mainland-china": 5 * time.Millisecond,
	"asia-pacific":   15 * time.Millisecond,
	"north-america":  50 * time.Millisecond,
	"europe":         65 * time.Millisecond,
	"australia":      60 * time.Millisecond,
}

const defaultAreaDelay = 20 * time.Millisecond

// Up builds the lab described by opts.Config and, when opts.Cend is set,
// starts one agent per gateway. On failure it removes whatever it built.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	l, cfg, src, err := prepare(&o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.StateDir, markerFile), []byte("opencen lab state; removed by cenctl lab down\n"), 0o644); err != nil {
		return nil, fmt.Errorf("mark state dir: %w", err)
	}
	// The state file goes first, so a crash halfway leaves Down a map.
	if err := l.save(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := l.bringUp(ctx, o, cfg, src); err != nil {
		o.Logger.Error("lab up failed; removing what it built", "err", err)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return nil, errors.Join(err, Down(dctx, o))
	}
	o.Logger.Info("lab up", "namespaces", len(l.Namespaces), "agents", o.Cend != "", "took", time.Since(start).Round(time.Millisecond))
	return l, nil
}

// prepare checks everything Up needs while nothing is built yet: the
// config and its plan, the scripts, the tools, the cend binary (made an
// absolute path in o), and that this lab is not up already. It returns
// the plan, the config and the config file's text.
func prepare(o *Options) (*Lab, *config.Config, []byte, error) {
	src, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read lab config: %w", err)
	}
	cfg, err := config.Load(o.Config)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("lab config: %w", err)
	}
	l, err := plan(cfg, o.Prefix, o.StateDir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("lab config %s: %w", o.Config, err)
	}
	scripts, err := findScripts(*o)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := CheckHost(len(l.Routers) > 0, o.Measure); err != nil {
		return nil, nil, nil, err
	}
	if o.Cend != "" {
		if o.Cend, err = exec.LookPath(o.Cend); err != nil {
			return nil, nil, nil, fmt.Errorf("cend binary: %w", err)
		}
		if o.Cend, err = filepath.Abs(o.Cend); err != nil {
			return nil, nil, nil, fmt.Errorf("cend binary: %w", err)
		}
	}
	if err := checkNotUp(*o); err != nil {
		return nil, nil, nil, err
	}
	l.r = &runner{log: o.Logger}
	if l.Scripts, err = filepath.Abs(scripts); err != nil {
		return nil, nil, nil, fmt.Errorf("scripts folder: %w", err)
	}
	return l, cfg, src, nil
}

// bringUp builds the planned lab l of cfg (src is the config file's
// text), writes its keys and config copy, starts its routers and, when
// o.Cend is set, its agents, saving the state file after each process.
func (l *Lab) bringUp(ctx context.Context, o Options, cfg *config.Config, src []byte) error {
	if err := l.build(ctx, o); err != nil {
		return err
	}
	labCfg, err := writeKeysAndConfig(l, src)
	if err != nil {
		return err
	}
	if labCfg.Instance.ASN != cfg.Instance.ASN || len(labCfg.Gateways) != len(cfg.Gateways) {
		return errors.New("lab config copy differs from its source beyond keys")
	}
	for i := range l.Routers {
		if err := l.startBird(ctx, o, l.Scripts, &l.Routers[i]); err != nil {
			return err
		}
		if err := l.save(); err != nil {
			return err
		}
	}
	if o.Cend != "" {
		if err := l.startAgents(ctx, o); err != nil {
			return err
		}
	}
	return l.save()
}

// startAgents starts a cend per gateway and waits for every control
// socket.
func (l *Lab) startAgents(ctx context.Context, o Options) error {
	l.AgentLogFormat = o.CendLogFormat
	l.AgentShaper = o.CendShaper
	for i := range l.Gateways {
		if err := l.startAgent(ctx, o.Cend, o.CendLogFormat, &l.Gateways[i]); err != nil {
			return err
		}
		if err := l.save(); err != nil {
			return err
		}
	}
	for _, g := range l.Gateways {
		if err := waitSocket(ctx, g.Socket, g.PID, o.StartTimeout); err != nil {
			return fmt.Errorf("cend of %s: %w%s", g.Name, err, logTail(g.LogFile))
		}
	}
	return nil
}

// checkNotUp refuses a second lab over a running one: a state file, or any
// namespace this lab would create (not merely one with the prefix: a test
// lab "ocl-t1a2b-..." running beside it is not in the way).
func checkNotUp(o Options) error {
	if _, err := os.Stat(filepath.Join(o.StateDir, stateFile)); err == nil {
		return fmt.Errorf("%w: state file %s exists; run lab down first", ErrAlreadyUp, filepath.Join(o.StateDir, stateFile))
	}
	if nss, _, _ := ownedNamespaces(o); len(nss) > 0 {
		return fmt.Errorf("%w: namespaces %s exist; run lab down first", ErrAlreadyUp, strings.Join(nss, ", "))
	}
	entries, err := os.ReadDir(o.StateDir)
	if err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(o.StateDir, markerFile)); err != nil {
			return fmt.Errorf("state dir %s holds files that are not a lab's; choose another", o.StateDir)
		}
	}
	return nil
}

// build creates the namespaces, links, addresses and routes. veth pairs are
// created with both ends inside lab namespaces (ip -n A link add ... peer
// ... netns B), so nothing ever appears in the root namespace.
func (l *Lab) build(ctx context.Context, o Options) error {
	for _, ns := range l.Namespaces {
		if err := l.r.run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := l.r.ip(ctx, ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	if err := l.buildUnderlay(ctx); err != nil {
		return err
	}
	if !o.NoDelay {
		l.addDelays(ctx, o)
	}
	for _, lan := range l.LANs {
		if err := l.buildLAN(ctx, lan); err != nil {
			return err
		}
	}
	for _, rt := range l.Routers {
		if err := l.buildRouter(ctx, rt); err != nil {
			return err
		}
	}
	// Host routes toward the gateways (or the router), CEN prefixes only.
	for _, h := range l.Hosts {
		if len(h.Routes) == 0 {
			continue
		}
		hops := joinAddrs(append(append([]netip.Addr{}, h.NextHops...), h.NextHops6...))
		argv := []string{"ip", "netns", "exec", h.Namespace, "sh", filepath.Join(l.Scripts, "host-routes.sh"), ifLAN, hops}
		for _, p := range h.Routes {
			argv = append(argv, p.String())
		}
		if err := l.r.run(ctx, argv...); err != nil {
			return err
		}
	}
	return nil
}

// bridge creates the bridge of namespace ns, up.
func (l *Lab) bridge(ctx context.Context, ns string) error {
	if err := l.r.ip(ctx, ns, "link", "add", ifBridge, "type", "bridge"); err != nil {
		return err
	}
	return l.r.ip(ctx, ns, "link", "set", ifBridge, "up")
}

// port joins the bridge of ns, through its port named port, to device
// dev in peerNS.
func (l *Lab) port(ctx context.Context, ns, port, peerNS, dev string) error {
	if err := l.r.ip(ctx, ns, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", peerNS); err != nil {
		return err
	}
	if err := l.r.ip(ctx, ns, "link", "set", port, "master", ifBridge, "up"); err != nil {
		return err
	}
	return l.r.ip(ctx, peerNS, "link", "set", dev, "up")
}

// underlayMTU is the MTU of the underlay's links: room for WireGuard's 80
// bytes around a full 1500-byte packet, so each gateway's tunnel (the
// underlay's MTU less 80) carries the hosts' LAN packets whole, as a
// provider's backbone with jumbo frames does. A 1500-byte underlay shrinks
// the tunnel to 1420, and an IPv6 TCP segment (60 bytes of headers and 12
// of timestamps) then carries 1348 bytes of goodput per 1420 charged to
// its pair: under 0.95 of any allocation, however exact the shaper.
const underlayMTU = 1580

// buildUnderlay joins every gateway to the underlay's bridge with links of
// underlayMTU, addressed, with the gateway's sysctls set.
func (l *Lab) buildUnderlay(ctx context.Context) error {
	if err := l.bridge(ctx, l.Underlay); err != nil {
		return err
	}
	mtu := strconv.Itoa(underlayMTU)
	for i, g := range l.Gateways {
		port := fmt.Sprintf("ocl-u%d", i)
		if err := l.port(ctx, l.Underlay, port, g.Namespace, ifUnderlay); err != nil {
			return err
		}
		if err := l.r.ip(ctx, l.Underlay, "link", "set", port, "mtu", mtu); err != nil {
			return err
		}
		if err := l.r.ip(ctx, g.Namespace, "link", "set", ifUnderlay, "mtu", mtu); err != nil {
			return err
		}
		if err := l.addAddr(ctx, g.Namespace, g.UnderlayAddr, ifUnderlay); err != nil {
			return err
		}
		if err := l.r.run(ctx, "ip", "netns", "exec", g.Namespace, "sh", filepath.Join(l.Scripts, "gateway-sysctls.sh")); err != nil {
			return err
		}
	}
	return l.r.ip(ctx, l.Underlay, "link", "set", ifBridge, "mtu", mtu)
}

// buildLAN joins a region's gateways and VPC hosts to its LAN's bridge,
// each with its addresses.
func (l *Lab) buildLAN(ctx context.Context, lan LAN) error {
	if err := l.bridge(ctx, lan.Namespace); err != nil {
		return err
	}
	type member struct {
		ns    string
		addrs []netip.Prefix
	}
	var members []member
	for _, g := range l.GatewaysIn(lan.Region) {
		members = append(members, member{g.Namespace, g.LANAddrs})
	}
	for _, h := range l.Hosts {
		if h.Kind == KindVPC && h.Region == lan.Region {
			members = append(members, member{h.Namespace, h.lanAddrs()})
		}
	}
	for k, m := range members {
		if err := l.port(ctx, lan.Namespace, fmt.Sprintf("ocl-p%d", k), m.ns, ifLAN); err != nil {
			return err
		}
		for _, a := range m.addrs {
			if err := l.addAddr(ctx, m.ns, a, ifLAN); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildRouter links an on-premises router to its VBR's gateway and to its
// on-premises host, addressed in both families, and makes it forward.
func (l *Lab) buildRouter(ctx context.Context, rt Router) error {
	g := l.gateway(rt.Gateway)
	if err := l.r.ip(ctx, g.Namespace, "link", "add", rt.GatewayIf, "type", "veth", "peer", "name", ifVBR, "netns", rt.Namespace); err != nil {
		return err
	}
	h, _ := l.Host(rt.Network)
	if err := l.r.ip(ctx, rt.Namespace, "link", "add", ifLAN, "type", "veth", "peer", "name", ifLAN, "netns", h.Namespace); err != nil {
		return err
	}
	addrs := []struct {
		ns, dev string
		a       netip.Prefix
	}{
		{g.Namespace, rt.GatewayIf, rt.GatewayAddress}, {g.Namespace, rt.GatewayIf, rt.OtherGatewayAddress},
		{rt.Namespace, ifVBR, rt.Address}, {rt.Namespace, ifVBR, rt.OtherAddress},
		{rt.Namespace, ifLAN, rt.LAN}, {rt.Namespace, ifLAN, rt.LAN6},
		{h.Namespace, ifLAN, h.Address}, {h.Namespace, ifLAN, h.Address6},
		// On loopback as a host prefix (a kernel may lack dummy
		// interfaces); BIRD announces the whole prefix.
		{rt.Namespace, "lo", hostOf(rt.Extra)}, {rt.Namespace, "lo", hostOf(rt.Extra6)},
	}
	for _, a := range addrs {
		if err := l.addAddr(ctx, a.ns, a.a, a.dev); err != nil {
			return err
		}
	}
	for _, s := range [][]string{{g.Namespace, rt.GatewayIf}, {rt.Namespace, ifVBR}, {rt.Namespace, ifLAN}, {h.Namespace, ifLAN}} {
		if err := l.r.ip(ctx, s[0], "link", "set", s[1], "up"); err != nil {
			return err
		}
	}
	// The router forwards like a gateway. (The gateway's new port needs
	// nothing: its sysctls set the defaults new interfaces inherit.)
	return l.r.run(ctx, "ip", "netns", "exec", rt.Namespace, "sh", filepath.Join(l.Scripts, "gateway-sysctls.sh"))
}

// hostOf is p's first address as a host prefix, invalid for an invalid p.
func hostOf(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	return netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
}

// addAddr adds address a to dev in namespace ns; nothing for an invalid
// a. IPv6 addresses skip duplicate address detection (nodad): every
// address of the lab is planned unique, and a tentative address would
// neither answer nor be announced for a second or two.
func (l *Lab) addAddr(ctx context.Context, ns string, a netip.Prefix, dev string) error {
	if !a.IsValid() {
		return nil
	}
	argv := []string{"addr", "add", a.String(), "dev", dev}
	if a.Addr().Is6() {
		argv = append(argv, "nodad")
	}
	return l.r.ip(ctx, ns, argv...)
}

// addDelays puts a netem delay on each underlay port toward a gateway, by
// the gateway's area, when the kernel has netem; otherwise the underlay
// stays flat and the lab says so.
func (l *Lab) addDelays(ctx context.Context, o Options) {
	delays := map[string]time.Duration{}
	for i, g := range l.Gateways {
		d, ok := areaDelay[g.Area]
		if !ok {
			d = defaultAreaDelay
		}
		dev := fmt.Sprintf("ocl-u%d", i)
		err := l.r.run(ctx, "tc", "-n", l.Underlay, "qdisc", "add", "dev", dev, "root", "netem", "delay", fmt.Sprintf("%dms", d.Milliseconds()))
		if err != nil {
			if i == 0 {
				o.Logger.Info("no netem in this kernel: the underlay is flat", "err", err)
				return
			}
			o.Logger.Warn("netem delay failed on one port; underlay delays are partial", "gateway", g.Name, "err", err)
			continue
		}
		delays[g.Region] = d
	}
	l.UnderlayDelays = delays
}

// startAgent starts cend in its gateway's namespace.
func (l *Lab) startAgent(ctx context.Context, cend, logFormat string, g *Gateway, extra ...string) error {
	if err := os.MkdirAll(g.StateDir, 0o755); err != nil {
		return fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	_ = os.Remove(g.Socket)
	// As an operator starts it: ip netns exec, nothing prepared (cend
	// mounts its own bpffs in the fresh /sys ip netns exec gives it).
	args := []string{cend, "--config", l.ConfigFile, "--gateway", g.Name, "--socket", g.Socket,
		"--metrics-addr", g.MetricsAddr, "--state-dir", g.StateDir, "--log-format", logFormat}
	if l.AgentShaper != "" {
		args = append(args, "--shaper", l.AgentShaper)
	}
	pid, err := l.spawn(g.Namespace, g.LogFile, append(args, extra...)...)
	if err != nil {
		return fmt.Errorf("gateway %s: start cend: %w", g.Name, err)
	}
	g.PID = pid
	l.r.log.Info("cend started", "gateway", g.Name, "pid", pid, "socket", g.Socket)
	return nil
}

// spawn starts argv in namespace ns, detached (own session, output
// appended to logFile), and reaps it in the background so a process that
// dies is not left a zombie while this one lives. ip netns exec execs the
// command, so the PID is the command's own.
func (l *Lab) spawn(ns, logFile string, argv ...string) (int, error) {
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	l.r.log.Debug("spawn", "ns", ns, "cmd", strings.Join(argv, " "), "log", logFile)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// waitSocket waits until a unix socket accepts connections, or the
// process dies, or the timeout passes.
func waitSocket(ctx context.Context, path string, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if !procx.Alive(pid) {
			return fmt.Errorf("exited before opening %s", path)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket %s after %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logTail is the end of a log file, to explain a failed start.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "; log " + path + " ends:\n" + strings.TrimRight(string(b), "\n")
}
