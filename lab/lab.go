// Package lab builds opencen's namespace lab (SPEC section 7): from a lab
// config, network namespaces standing in for every gateway, one LAN per
// region with a host per VPC, an underlay joining the gateways, and an
// on-premises router running BIRD 2 behind each VBR, with a host behind it;
// then, when given a cend binary, one agent per gateway.
//
// Network safety: every address lives inside a namespace the lab creates,
// nothing is connected to the root namespace (veth pairs are created
// directly inside lab namespaces, never in the root one), and no namespace
// has a default route: hosts route the CEN's prefixes only.
//
// Up refuses to run when the same lab is already up (ErrAlreadyUp: its
// state file, or a namespace it would create): building twice would hide
// which agents belong to which lab. Down is idempotent and works from the
// state file and from the namespaces the config's plan names, so it cleans
// up after a crash; neither touches a namespace of another lab whose
// longer prefix merely starts with this one's.
//
// The kernel-facing steps run iproute2 commands (logged at debug level) and
// the shell scripts of scripts/lab, which the VM lab (Vagrantfile) runs
// too: a person can replay any step by hand.
//
// Agents run as an operator runs them, through ip netns exec (their own
// mount namespace and /sys, where cend mounts a bpffs of its own), with
// nothing prepared for them. Agents and BIRD are detached (own session, logs in the state dir) and outlive
// the process that called Up. A Lab's methods are not safe for concurrent
// use.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of Options.
const (
	DefaultConfig   = "examples/lab.yaml"
	DefaultStateDir = "/run/opencen-lab"
)

// ErrAlreadyUp is returned by Up when a lab with the same prefix or state
// dir is up; run Down first.
var ErrAlreadyUp = errors.New("lab is already up")

const (
	stateFile  = "lab.json"
	markerFile = ".opencen-lab" // marks a state dir as the lab's, so Down may remove it
)

// Options configure Up, Down, Status and Load.
type Options struct {
	// Config is the lab config; default examples/lab.yaml.
	Config string
	// StateDir holds keys, the lab's config copy, sockets, logs, BIRD's
	// files and the state file; default /run/opencen-lab.
	StateDir string
	// Cend is the cend binary; empty builds the topology without agents.
	Cend string
	// CendLogFormat is passed as --log-format; default text.
	CendLogFormat string
	// CendShaper is passed as --shaper when set (tcx, tc, userspace).
	CendShaper string
	// Logger receives progress (info) and every command run (debug).
	Logger *slog.Logger
	// Prefix starts every namespace name; default "ocl-". Tests use
	// "ocl-t<random>-" so they never touch a real lab.
	Prefix string
	// Scripts is the folder of the provisioning scripts; default the
	// scripts/lab folder of the checkout holding the working directory or
	// the config.
	Scripts string
	// NoDelay keeps the underlay flat even where the kernel has netem.
	NoDelay bool
	// StartTimeout bounds how long an agent or BIRD may take to open its
	// socket; default 20s.
	StartTimeout time.Duration
	// Measure says the demo's measurements follow (Up then checks for
	// iperf3 too, ahead of building anything).
	Measure bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Config == "" {
		o.Config = DefaultConfig
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return o, fmt.Errorf("state dir: %w", err)
	}
	o.StateDir = filepath.Clean(abs)
	if strings.Count(o.StateDir, "/") < 2 {
		// The state dir is removed by Down: refuse a top-level folder.
		return o, fmt.Errorf("state dir %s: want a folder of its own, such as %s", o.StateDir, DefaultStateDir)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(o.Prefix) {
		return o, fmt.Errorf("lab name prefix %q: want \"ocl-\" followed by at most 24 of [a-z0-9-]", o.Prefix)
	}
	if o.CendLogFormat == "" {
		o.CendLogFormat = "text"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 20 * time.Second
	}
	return o, nil
}

// findScripts locates scripts/lab: beside the working directory or the
// config, walking up to the checkout's root.
func findScripts(o Options) (string, error) {
	if o.Scripts != "" {
		if _, err := os.Stat(filepath.Join(o.Scripts, "bird-conf.sh")); err != nil {
			return "", fmt.Errorf("scripts folder %s: %w", o.Scripts, err)
		}
		return o.Scripts, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if abs, err := filepath.Abs(o.Config); err == nil {
		starts = append(starts, filepath.Dir(abs))
	}
	for _, d := range starts {
		for {
			s := filepath.Join(d, "scripts", "lab")
			if _, err := os.Stat(filepath.Join(s, "bird-conf.sh")); err == nil {
				return s, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("scripts/lab not found above the working directory or the config; run from an opencen checkout or set the scripts folder")
}

// Load reads the state file of a lab that is up, for status, tests and
// the demo.
func Load(opts Options) (*Lab, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	l, err := readState(o.StateDir)
	if err != nil {
		return nil, err
	}
	l.r = &runner{log: o.Logger}
	return l, nil
}

func readState(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &l, nil
}

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp := filepath.Join(l.StateDir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.StateDir, stateFile)); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// Namespace resolves a host, gateway or router name (or a namespace name
// of the lab, or "underlay") to its namespace.
func (l *Lab) Namespace(name string) (string, error) {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h.Namespace, nil
		}
	}
	for _, g := range l.Gateways {
		if g.Name == name {
			return g.Namespace, nil
		}
	}
	for _, r := range l.Routers {
		if r.Name == name {
			return r.Namespace, nil
		}
	}
	if name == "underlay" {
		return l.Underlay, nil
	}
	for _, n := range l.Namespaces {
		if n == name {
			return n, nil
		}
	}
	return "", fmt.Errorf("no host, gateway or router named %q in the lab", name)
}

// Host returns the VPC or on-premises host of that name.
func (l *Lab) Host(name string) (Host, bool) {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// Gateway returns the gateway of that name.
func (l *Lab) Gateway(name string) (Gateway, bool) {
	if g := l.gateway(name); g != nil {
		return *g, true
	}
	return Gateway{}, false
}

// GatewaysIn returns the gateways of a region.
func (l *Lab) GatewaysIn(region string) []Gateway {
	var out []Gateway
	for _, g := range l.Gateways {
		if g.Region == region {
			out = append(out, g)
		}
	}
	return out
}

// Command prepares argv to run in the namespace of a host, gateway or
// router (see Namespace), for callers that stream or background it
// (iperf3 servers). The caller starts and waits for it.
func (l *Lab) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: no command")
	}
	ns, err := l.Namespace(host)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...), nil
}

// Exec runs argv in the namespace of a host, gateway or router and returns
// its combined output; a failure's error holds the output too.
func (l *Lab) Exec(ctx context.Context, host string, argv ...string) ([]byte, error) {
	cmd, err := l.Command(ctx, host, argv...)
	if err != nil {
		return nil, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w: %s", host, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// runner is the lab's runner, or one that logs nowhere for a Lab decoded
// by hand.
func (l *Lab) runner() *runner {
	if l.r == nil {
		return &runner{log: slog.New(slog.DiscardHandler)}
	}
	return l.r
}

// runner runs iproute2 and helper commands, logging each at debug.
type runner struct{ log *slog.Logger }

func (r *runner) run(ctx context.Context, argv ...string) error {
	_, err := r.output(ctx, argv...)
	return err
}

func (r *runner) output(ctx context.Context, argv ...string) ([]byte, error) {
	r.log.Debug("run", "cmd", strings.Join(argv, " "))
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// ip runs an iproute2 command inside namespace ns.
func (r *runner) ip(ctx context.Context, ns string, args ...string) error {
	return r.run(ctx, append([]string{"ip", "-n", ns}, args...)...)
}
