package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencen/opencen/internal/procx"
)

// StatusReport is what of a lab is up.
type StatusReport struct {
	StateDir   string            `json:"state_dir"`
	StateFile  bool              `json:"state_file"` // the state file is there
	Namespaces []NamespaceStatus `json:"namespaces"`
	Agents     []ProcessStatus   `json:"agents"`
	Routers    []RouterStatus    `json:"routers"`
}

// NamespaceStatus is one namespace the lab should have, or one with the
// lab's prefix that it does not know (Expected false: a leftover).
type NamespaceStatus struct {
	Name     string `json:"name"`
	Present  bool   `json:"present"`
	Expected bool   `json:"expected"`
}

// ProcessStatus is one agent.
type ProcessStatus struct {
	Name   string `json:"name"` // the gateway
	PID    int    `json:"pid"`
	Alive  bool   `json:"alive"`
	Socket string `json:"socket"`
}

// RouterStatus is one on-premises router and its eBGP session as BIRD
// reports it (birdc show protocols): State is BIRD's protocol state (up,
// start, ...), Info its detail (Established, Active, Connect, ...).
type RouterStatus struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Alive  bool   `json:"alive"`
	Socket string `json:"socket"`
	State  string `json:"state"`
	Info   string `json:"info"`
	Err    string `json:"err,omitempty"`
}

// Up reports whether the lab is whole: every expected namespace there,
// every recorded process alive.
func (s *StatusReport) Up() bool {
	if !s.StateFile {
		return false
	}
	for _, n := range s.Namespaces {
		if n.Expected && !n.Present {
			return false
		}
	}
	for _, a := range s.Agents {
		if !a.Alive {
			return false
		}
	}
	for _, r := range s.Routers {
		if !r.Alive {
			return false
		}
	}
	return true
}

// Status reports what is up: the namespaces (expected and stray), the
// agents, and each BIRD with its eBGP session state.
func Status(opts Options) (*StatusReport, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &StatusReport{StateDir: o.StateDir}
	present, _, _ := ownedNamespaces(o)
	l, err := readState(o.StateDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, n := range present {
			s.Namespaces = append(s.Namespaces, NamespaceStatus{Name: n, Present: true})
		}
		return s, nil
	}
	s.StateFile = true
	for _, n := range l.Namespaces {
		s.Namespaces = append(s.Namespaces, NamespaceStatus{Name: n, Present: slices.Contains(present, n), Expected: true})
	}
	for _, n := range present {
		if !slices.Contains(l.Namespaces, n) {
			s.Namespaces = append(s.Namespaces, NamespaceStatus{Name: n, Present: true})
		}
	}
	for _, g := range l.Gateways {
		if g.PID == 0 {
			continue
		}
		s.Agents = append(s.Agents, ProcessStatus{Name: g.Name, PID: g.PID, Alive: procx.Alive(g.PID) && cmdlineMentions(g.PID, o.StateDir), Socket: g.Socket})
	}
	for _, r := range l.Routers {
		rs := RouterStatus{Name: r.Name, PID: r.PID, Alive: procx.Alive(r.PID) && cmdlineMentions(r.PID, o.StateDir), Socket: r.Socket}
		if rs.Alive {
			st, info, err := bgpState(context.Background(), r.Socket)
			rs.State, rs.Info = st, info
			if err != nil {
				rs.Err = err.Error()
			}
		}
		s.Routers = append(s.Routers, rs)
	}
	return s, nil
}

// String is the status for people.
func (s *StatusReport) String() string {
	var b strings.Builder
	if !s.StateFile {
		fmt.Fprintf(&b, "no lab state in %s\n", s.StateDir)
	} else {
		state := "degraded"
		if s.Up() {
			state = "up"
		}
		fmt.Fprintf(&b, "lab %s (state %s)\n", state, s.StateDir)
	}
	if len(s.Namespaces) > 0 {
		b.WriteString("namespaces:\n")
		for _, n := range s.Namespaces {
			what := "present"
			switch {
			case !n.Present:
				what = "MISSING"
			case !n.Expected:
				what = "present, not in the state file (run lab down)"
			}
			fmt.Fprintf(&b, "  %-28s %s\n", n.Name, what)
		}
	}
	if len(s.Agents) > 0 {
		b.WriteString("agents:\n")
		for _, a := range s.Agents {
			fmt.Fprintf(&b, "  %-20s pid %-7d %-5s %s\n", a.Name, a.PID, aliveWord(a.Alive), a.Socket)
		}
	}
	if len(s.Routers) > 0 {
		b.WriteString("on-premises routers (BIRD):\n")
		for _, r := range s.Routers {
			fmt.Fprintf(&b, "  %-20s pid %-7d %-5s bgp %s %s %s\n", r.Name, r.PID, aliveWord(r.Alive), r.State, r.Info, r.Err)
		}
	}
	return b.String()
}

func aliveWord(a bool) string {
	if a {
		return "alive"
	}
	return "DEAD"
}

// bgpState reads the lab's eBGP protocol line from birdc show protocols:
//
//	cen        BGP        ---        start  12:00:00.000  Active        Socket: Connection refused
func bgpState(ctx context.Context, socket string) (state, info string, err error) {
	out, err := birdc(ctx, socket, "show", "protocols")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == BGPProtocol && f[1] == "BGP" {
			if len(f) >= 6 {
				info = strings.Join(f[5:], " ")
			}
			return f[3], info, nil
		}
	}
	return "", "", fmt.Errorf("birdc -s %s show protocols: no BGP protocol %q", socket, BGPProtocol)
}

// BGPState is the eBGP session state of a router (by router or VBR name),
// as BIRD reports it: state "up" with info "Established" once the gateway
// answers.
func (l *Lab) BGPState(ctx context.Context, router string) (state, info string, err error) {
	rt, err := l.findRouter(router)
	if err != nil {
		return "", "", err
	}
	return bgpState(ctx, rt.Socket)
}

// Birdc runs a birdc command against a router (by router or VBR name),
// such as "show", "route".
func (l *Lab) Birdc(ctx context.Context, router string, args ...string) ([]byte, error) {
	rt, err := l.findRouter(router)
	if err != nil {
		return nil, err
	}
	return birdc(ctx, rt.Socket, args...)
}

func (l *Lab) findRouter(name string) (*Router, error) {
	for i := range l.Routers {
		if l.Routers[i].Name == name || l.Routers[i].Network == name {
			return &l.Routers[i], nil
		}
	}
	return nil, fmt.Errorf("no router %q in the lab", name)
}

// StopAgent signals a gateway's cend (SIGTERM: a clean stop keeping
// routes; SIGKILL: a crash) and waits up to five seconds for it to exit.
func (l *Lab) StopAgent(ctx context.Context, gateway string, sig syscall.Signal) error {
	g := l.gateway(gateway)
	if g == nil {
		return fmt.Errorf("no gateway %q in the lab", gateway)
	}
	if g.PID == 0 || !procx.Alive(g.PID) {
		return fmt.Errorf("gateway %s: no agent running", gateway)
	}
	if err := syscall.Kill(g.PID, sig); err != nil {
		return fmt.Errorf("gateway %s: signal cend: %w", gateway, err)
	}
	if !waitGone(ctx, map[int]bool{g.PID: true}, 5*time.Second) {
		return fmt.Errorf("gateway %s: cend (pid %d) still runs 5s after %s", gateway, g.PID, sig)
	}
	g.PID = 0
	return l.save()
}

// StartAgent (re)starts a gateway's cend with the binary given, as Up
// does, with extra flags after the lab's own, and waits for its socket.
func (l *Lab) StartAgent(ctx context.Context, gateway, cend string, extra ...string) error {
	g := l.gateway(gateway)
	if g == nil {
		return fmt.Errorf("no gateway %q in the lab", gateway)
	}
	if g.PID != 0 && procx.Alive(g.PID) {
		return fmt.Errorf("gateway %s: cend already runs (pid %d)", gateway, g.PID)
	}
	if cend == "" {
		return fmt.Errorf("gateway %s: no cend binary given", gateway)
	}
	format := l.AgentLogFormat
	if format == "" {
		format = "text"
	}
	l.r = l.runner()
	if err := l.startAgent(ctx, cend, format, g, extra...); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	return waitSocket(ctx, g.Socket, g.PID, 20*time.Second)
}

// KillGateway simulates the death of a gateway host. First every wire of
// the gateway goes down (underlay, LAN and VBR ports), then every process
// in its namespace is killed (SIGKILL): cend, and the userspace WireGuard
// helper that would otherwise keep forwarding. The order matters: a
// killed cend's kernel closes its BGP sockets with a FIN, and a FIN that
// still gets out (the helper forwards it) tells the peers the session
// ended without a NOTIFICATION, which BGP graceful restart reads as an
// agent restart: they keep the dead gateway's routes as stale for the
// restart time (120 s), BFD's verdict notwithstanding, and traffic through
// it is lost for as long. A host that dies sends nothing. The namespace
// stays for ReviveGateway and Down.
func (l *Lab) KillGateway(ctx context.Context, gateway string) error {
	g := l.gateway(gateway)
	if g == nil {
		return fmt.Errorf("no gateway %q in the lab", gateway)
	}
	var errs []error
	for _, d := range l.gatewayPorts(g) {
		if err := l.runner().ip(ctx, g.Namespace, "link", "set", d, "down"); err != nil {
			errs = append(errs, err)
		}
	}
	pids := map[int]bool{}
	if out, err := l.runner().output(ctx, "ip", "netns", "pids", g.Namespace); err != nil {
		errs = append(errs, err)
	} else {
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
				pids[p] = true
			}
		}
	}
	if g.PID != 0 && procx.Alive(g.PID) {
		pids[g.PID] = true
	}
	for p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if !waitGone(ctx, pids, 5*time.Second) {
		errs = append(errs, fmt.Errorf("gateway %s: processes still run 5s after SIGKILL", gateway))
	}
	g.PID = 0
	errs = append(errs, l.save())
	return errors.Join(errs...)
}

// gatewayPorts are a gateway's links to the outside of its namespace.
func (l *Lab) gatewayPorts(g *Gateway) []string {
	devs := []string{ifUnderlay}
	if len(g.LANAddrs) > 0 {
		devs = append(devs, ifLAN)
	}
	for _, rt := range l.Routers {
		if rt.Gateway == g.Name {
			devs = append(devs, rt.GatewayIf)
		}
	}
	return devs
}

// ReviveGateway undoes KillGateway: the gateway's ports come up, it pings
// each VPC host of its region once (so their neighbour entries for it are
// valid again and their multipath routes use it), and, when cend is given,
// its agent starts again (and, its WireGuard helper having died with it,
// builds the device again).
func (l *Lab) ReviveGateway(ctx context.Context, gateway, cend string) error {
	g := l.gateway(gateway)
	if g == nil {
		return fmt.Errorf("no gateway %q in the lab", gateway)
	}
	for _, d := range l.gatewayPorts(g) {
		if err := l.runner().ip(ctx, g.Namespace, "link", "set", d, "up"); err != nil {
			return err
		}
	}
	var errs []error
	for _, h := range l.Hosts {
		if h.Kind == KindVPC && h.Region == g.Region {
			if _, err := l.Exec(ctx, g.Name, "ping", "-c", "1", "-W", "1", "-q", h.Address.Addr().String()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cend != "" {
		errs = append(errs, l.StartAgent(ctx, gateway, cend))
	}
	return errors.Join(errs...)
}
