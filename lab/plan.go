package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencen/opencen/config"
)

// Interface names inside the lab's namespaces. Every namespace is the
// lab's own, so the names are fixed and short; they carry the "ocl-" mark
// so that one stray in the root namespace (there should never be one) is
// recognisably the lab's and swept by Down.
const (
	ifBridge   = "ocl-br"  // the bridge of the underlay and of each region LAN
	ifUnderlay = "ocl-ul"  // a gateway's underlay port
	ifLAN      = "ocl-lan" // a gateway's, host's or router's LAN port
	ifVBR      = "ocl-vbr" // the link between a VBR's gateway and its router
)

// Kinds of host.
const (
	KindVPC    = "vpc"    // a host inside a VPC, on its region's LAN
	KindOnPrem = "onprem" // a host of an on-premises data centre, behind its router
)

// DefaultPrefix starts the name of every namespace a real lab creates.
const DefaultPrefix = "ocl-"

var (
	prefixRE = regexp.MustCompile(`^ocl-[a-z0-9-]{0,24}$`)
	nsNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,200}$`)
)

// Lab is a built (or planned) lab: every namespace, address and process it
// holds. It is also the lab's state file (JSON), so a later process
// (cenctl lab status, lab down, a test) can find everything again.
type Lab struct {
	Prefix       string `json:"prefix"` // start of every namespace name
	StateDir     string `json:"state_dir"`
	SourceConfig string `json:"source_config"` // the config the lab is built from
	ConfigFile   string `json:"config_file"`   // the lab's own copy, with the lab's fresh keys
	Scripts      string `json:"scripts"`       // the scripts/lab folder the lab is built with
	// AgentLogFormat is cend's --log-format, AgentShaper its --shaper
	// (empty: cend's default), kept for StartAgent.
	AgentLogFormat string `json:"agent_log_format,omitempty"`
	AgentShaper    string `json:"agent_shaper,omitempty"`
	Underlay       string `json:"underlay"` // namespace holding the underlay bridge
	// UnderlayDelays is the one-way delay added toward each region's
	// gateways on the underlay (netem), by region; empty when the kernel has
	// no netem and the underlay is flat.
	UnderlayDelays map[string]time.Duration `json:"underlay_delays,omitempty"`
	LANs           []LAN                    `json:"lans"`
	Gateways       []Gateway                `json:"gateways"`
	Hosts          []Host                   `json:"hosts"`
	Routers        []Router                 `json:"routers"`
	// Namespaces is every namespace of the lab, in creation order.
	Namespaces []string `json:"namespaces"`

	r *runner // nil on a Lab read back from its state file
}

// LAN is the L2 segment of one region: its gateways and VPC hosts.
type LAN struct {
	Region    string `json:"region"`
	Namespace string `json:"namespace"` // holds the bridge
}

// Gateway is one gateway namespace and the agent running in it.
type Gateway struct {
	Name      string         `json:"name"`
	Region    string         `json:"region"`
	Area      string         `json:"area"`
	Namespace string         `json:"namespace"`
	Endpoint  netip.AddrPort `json:"endpoint"`
	// UnderlayAddr is the endpoint address with the underlay's prefix
	// length, as configured on the gateway's underlay port.
	UnderlayAddr netip.Prefix `json:"underlay_addr"`
	// LANAddrs are the gateway's addresses on its region LAN, one in the
	// first CIDR of every VPC of the region.
	LANAddrs []netip.Prefix `json:"lan_addrs"`
	// Agent, when the lab runs cend.
	Socket      string `json:"socket"`       // control socket, for cenctl --socket
	MetricsAddr string `json:"metrics_addr"` // inside the gateway's namespace
	StateDir    string `json:"state_dir"`
	LogFile     string `json:"log_file"`
	KeyFile     string `json:"key_file"` // private key, mode 0600
	PID         int    `json:"pid,omitempty"`
}

// Host is a VPC host or an on-premises host.
type Host struct {
	Name      string       `json:"name"` // the network's name (vpc-beijing, idc-beijing)
	Kind      string       `json:"kind"` // KindVPC or KindOnPrem
	Namespace string       `json:"namespace"`
	Region    string       `json:"region"`
	Network   string       `json:"network"`
	Address   netip.Prefix `json:"address"` // on its LAN
	// Extra are more addresses of a VPC host in a region with several
	// gateways: with Address, one in a piece of the VPC's first CIDR dealt
	// to each gateway (config.VPCPieces), so that every gateway is the
	// home of one of the host's addresses.
	Extra []netip.Prefix `json:"extra,omitempty"`
	// NextHops are where the host sends CEN traffic: its region's gateways
	// (a multipath route when there are several) or its on-premises router.
	NextHops []netip.Addr `json:"next_hops"`
	// Gateways name the gateway of each of NextHops; empty for an
	// on-premises host.
	Gateways []string `json:"gateways,omitempty"`
	// Routes are the prefixes the host routes via NextHops: every other
	// network of the instance.
	Routes []netip.Prefix `json:"routes"`
}

// Router is the on-premises router of one VBR, running BIRD.
type Router struct {
	Name      string `json:"name"`    // <vbr>-router
	Network   string `json:"network"` // the VBR
	Region    string `json:"region"`
	Gateway   string `json:"gateway"` // the gateway holding the VBR's session
	Namespace string `json:"namespace"`
	// Address is the router's side of its link to the gateway (the VBR's
	// configured neighbor); GatewayAddress the gateway's side.
	Address        netip.Prefix `json:"address"`
	GatewayAddress netip.Prefix `json:"gateway_address"`
	GatewayIf      string       `json:"gateway_if"` // the gateway's port toward this router
	ASN            uint32       `json:"asn"`        // the on-premises ASN (peer_asn)
	PeerASN        uint32       `json:"peer_asn"`   // the instance ASN
	BFD            bool         `json:"bfd"`
	// LAN is the router's address on the on-premises host's LAN; Extra, when
	// valid, a second prefix whose first address the router holds on its
	// loopback. Both are announced.
	LAN      netip.Prefix   `json:"lan"`
	Extra    netip.Prefix   `json:"extra,omitempty"`
	Announce []netip.Prefix `json:"announce"`
	Config   string         `json:"config"` // bird.conf
	Socket   string         `json:"socket"` // birdc -s
	LogFile  string         `json:"log_file"`
	PID      int            `json:"pid,omitempty"`
}

// BGPProtocol is the name of the router's eBGP protocol in its BIRD config.
const BGPProtocol = "cen"

// plan derives a whole lab from a validated config, without touching the
// system. Every address is checked for clashes so that a lab that cannot
// work is refused while nothing is built yet.
func plan(cfg *config.Config, prefix, stateDir string) (*Lab, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab name prefix %q: want \"ocl-\" followed by at most 24 of [a-z0-9-]", prefix)
	}
	if len(cfg.Gateways) == 0 {
		return nil, errors.New("config has no gateways")
	}
	p := &planner{
		cfg: cfg,
		l: &Lab{
			Prefix:       prefix,
			StateDir:     stateDir,
			SourceConfig: cfg.File,
			ConfigFile:   filepath.Join(stateDir, "lab.yaml"),
			Underlay:     prefix + "underlay",
		},
		used: map[string]string{},
	}
	p.ns("underlay", "the underlay")
	// Underlay: one flat subnet holding every endpoint.
	var eps []netip.Addr
	for _, g := range cfg.Gateways {
		eps = append(eps, g.Endpoint.Addr())
	}
	ul, err := commonPrefix(eps)
	if err != nil {
		return nil, err
	}
	p.claim(ul, "the underlay")
	p.gateways(ul)
	p.regionLANs()
	vbrIf := map[string]int{} // gateway -> VBR links so far
	for _, n := range cfg.Networks {
		if n.Type == config.VBR && n.BGP != nil {
			p.vbr(n, vbrIf)
		}
	}
	p.hostRoutes()
	p.checkSocketPaths()
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return p.l, nil
}

// planner builds a lab's plan. It keeps the namespaces and subnets
// claimed so far, so that a clash is refused with a message naming both
// users, and every problem found, so that one pass reports them all.
type planner struct {
	cfg     *config.Config
	l       *Lab
	used    map[string]string // namespace -> what
	subnets []claimedSubnet
	errs    []error
}

// claimedSubnet is a subnet in use and what uses it.
type claimedSubnet struct {
	p    netip.Prefix
	what string
}

// ns names a namespace of the lab for what, and records it in creation
// order.
func (p *planner) ns(name, what string) string {
	n := p.l.Prefix + name
	if !nsNameRE.MatchString(n) {
		p.errorf("%s: namespace name %q is not usable", what, n)
	} else if prev, ok := p.used[n]; ok {
		p.errorf("%s: namespace %q is already used by %s; rename one of them", what, n, prev)
	}
	p.used[n] = what
	p.l.Namespaces = append(p.l.Namespaces, n)
	return n
}

// claim records pfx as used by what, refusing an overlap with a subnet
// claimed already.
func (p *planner) claim(pfx netip.Prefix, what string) {
	for _, s := range p.subnets {
		if s.p.Overlaps(pfx) {
			p.errorf("%s %s overlaps %s %s", what, pfx, s.what, s.p)
			return
		}
	}
	p.subnets = append(p.subnets, claimedSubnet{pfx, what})
}

func (p *planner) errorf(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

// gateways plans a namespace per gateway, its underlay address in ul and
// the files of its agent.
func (p *planner) gateways(ul netip.Prefix) {
	for _, g := range p.cfg.Gateways {
		area := ""
		if r, ok := p.cfg.Region(g.Region); ok {
			area = r.Area
		}
		gdir := filepath.Join(p.l.StateDir, g.Name)
		p.l.Gateways = append(p.l.Gateways, Gateway{
			Name:         g.Name,
			Region:       g.Region,
			Area:         area,
			Namespace:    p.ns(g.Name, "gateway "+g.Name),
			Endpoint:     g.Endpoint,
			UnderlayAddr: netip.PrefixFrom(g.Endpoint.Addr(), ul.Bits()),
			Socket:       filepath.Join(gdir, "cend.sock"),
			MetricsAddr:  "127.0.0.1:9469",
			StateDir:     gdir,
			LogFile:      filepath.Join(gdir, "cend.log"),
			KeyFile:      filepath.Join(p.l.StateDir, "keys", g.Name+".key"),
		})
	}
}

// regionLANs plans a LAN per region holding a VPC, and a host per VPC on
// it.
func (p *planner) regionLANs() {
	var regions []string
	for _, n := range p.cfg.Networks {
		if n.Type == config.VPC && !slices.Contains(regions, n.Region) {
			regions = append(regions, n.Region)
		}
	}
	for _, region := range regions {
		var gws []*Gateway
		for i := range p.l.Gateways {
			if p.l.Gateways[i].Region == region {
				gws = append(gws, &p.l.Gateways[i])
			}
		}
		if len(gws) == 0 {
			p.errorf("region %s has a VPC but no gateway", region)
			continue
		}
		p.l.LANs = append(p.l.LANs, LAN{Region: region, Namespace: p.ns("lan-"+region, "the LAN of region "+region)})
		for _, n := range p.cfg.Networks {
			if n.Type == config.VPC && n.Region == region && len(n.CIDRs) > 0 {
				p.vpcHost(n, gws)
			}
		}
	}
}

// vpcHost plans VPC n's host on its region's LAN, and an address for
// each of the region's gateways gws in n's first CIDR: the host's next
// hops.
func (p *planner) vpcHost(n config.Network, gws []*Gateway) {
	for _, c := range n.CIDRs {
		p.claim(c, "vpc "+n.Name+" cidr")
	}
	first := n.CIDRs[0]
	host, err := hostAddr(first, 10)
	if err != nil {
		p.errorf("vpc %s: %w", n.Name, err)
		return
	}
	var hops []netip.Addr
	var names []string
	for i, g := range gws {
		a, err := hostAddr(first, uint64(1+i))
		if err != nil {
			p.errorf("vpc %s: %w", n.Name, err)
			continue
		}
		g.LANAddrs = append(g.LANAddrs, a)
		hops = append(hops, a.Addr())
		names = append(names, g.Name)
	}
	extra, err := homedAddrs(p.cfg, first, n.Region, host)
	if err != nil {
		p.errorf("vpc %s: %w", n.Name, err)
	}
	h := p.host(n, KindVPC, "vpc host "+n.Name, host, hops)
	h.Extra, h.Gateways = extra, names
	p.l.Hosts = append(p.l.Hosts, h)
}

// host is the host of network n, of kind, named after n, in a namespace
// of its own (for what), at address, sending CEN traffic to hops.
func (p *planner) host(n config.Network, kind, what string, address netip.Prefix, hops []netip.Addr) Host {
	return Host{
		Name:      n.Name,
		Kind:      kind,
		Namespace: p.ns(n.Name, what),
		Region:    n.Region,
		Network:   n.Name,
		Address:   address,
		NextHops:  hops,
	}
}

// vbr plans VBR n's on-premises router behind its gateway and a host
// behind the router. vbrIf counts each gateway's VBR links so far, to
// name the gateway's port.
func (p *planner) vbr(n config.Network, vbrIf map[string]int) {
	gw := p.l.gateway(n.Gateway)
	if gw == nil {
		p.errorf("vbr %s: gateway %q is not in the config", n.Name, n.Gateway)
		return
	}
	rside, gside, err := linkPair(n.BGP.Neighbor)
	if err != nil {
		p.errorf("vbr %s: %w", n.Name, err)
		return
	}
	p.claim(rside.Masked(), "vbr "+n.Name+" link")
	lan, extra, err := onPremPrefixes(n.BGP.Accept, n.BGP.AcceptAny)
	if err != nil {
		p.errorf("vbr %s: %w", n.Name, err)
		return
	}
	announce := []netip.Prefix{lan.Masked()}
	p.claim(lan.Masked(), "vbr "+n.Name+" on-premises LAN")
	if extra.IsValid() {
		announce = append(announce, extra.Masked())
		p.claim(extra.Masked(), "vbr "+n.Name+" on-premises prefix")
	}
	gi := fmt.Sprintf("%s%d", ifVBR, vbrIf[gw.Name])
	vbrIf[gw.Name]++
	rdir := filepath.Join(p.l.StateDir, n.Name+"-router")
	p.l.Routers = append(p.l.Routers, Router{
		Name:           n.Name + "-router",
		Network:        n.Name,
		Region:         n.Region,
		Gateway:        gw.Name,
		Namespace:      p.ns(n.Name+"-router", "router of vbr "+n.Name),
		Address:        rside,
		GatewayAddress: gside,
		GatewayIf:      gi,
		ASN:            n.BGP.PeerASN,
		PeerASN:        p.cfg.Instance.ASN,
		BFD:            n.BGP.BFD,
		LAN:            lan,
		Extra:          extra,
		Announce:       announce,
		Config:         filepath.Join(rdir, "bird.conf"),
		Socket:         filepath.Join(rdir, "bird.ctl"),
		LogFile:        filepath.Join(rdir, "bird.log"),
	})
	hostA, err := hostAddr(lan.Masked(), 10)
	if err != nil {
		p.errorf("vbr %s: %w", n.Name, err)
		return
	}
	p.l.Hosts = append(p.l.Hosts, p.host(n, KindOnPrem, "on-premises host of vbr "+n.Name, hostA, []netip.Addr{lan.Addr()}))
}

// hostRoutes has every host route every other network via its next hops:
// VPCs by their CIDRs, VBRs by their accept list (what the CEN may
// carry), or by what the lab's router announces when the list is omitted.
func (p *planner) hostRoutes() {
	for i := range p.l.Hosts {
		h := &p.l.Hosts[i]
		for _, n := range p.cfg.Networks {
			if n.Name == h.Network {
				continue
			}
			switch {
			case n.Type == config.VPC:
				h.Routes = append(h.Routes, n.CIDRs...)
			case n.BGP != nil && !n.BGP.AcceptAny:
				h.Routes = append(h.Routes, n.BGP.Accept...)
			default:
				if r := p.l.router(n.Name); r != nil {
					h.Routes = append(h.Routes, r.Announce...)
				}
			}
		}
	}
}

// checkSocketPaths refuses a control socket path longer than a unix
// socket path may be (107 bytes).
func (p *planner) checkSocketPaths() {
	for _, g := range p.l.Gateways {
		if len(g.Socket) > 107 {
			p.errorf("gateway %s: socket path %s is longer than 107 bytes; choose a shorter state dir", g.Name, g.Socket)
		}
	}
	for _, r := range p.l.Routers {
		if len(r.Socket) > 107 {
			p.errorf("router %s: socket path %s is longer than 107 bytes; choose a shorter state dir", r.Name, r.Socket)
		}
	}
}

func (l *Lab) gateway(name string) *Gateway {
	for i := range l.Gateways {
		if l.Gateways[i].Name == name {
			return &l.Gateways[i]
		}
	}
	return nil
}

func (l *Lab) router(network string) *Router {
	for i := range l.Routers {
		if l.Routers[i].Network == network {
			return &l.Routers[i]
		}
	}
	return nil
}

// Describe tells a person how to reach every host of the lab.
func (l *Lab) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "opencen lab: config %s, state %s\n", l.ConfigFile, l.StateDir)
	if len(l.UnderlayDelays) > 0 {
		fmt.Fprintf(&b, "underlay %s: netem delay per region %v\n", l.Underlay, l.UnderlayDelays)
	} else {
		fmt.Fprintf(&b, "underlay %s: flat (no netem in this kernel)\n", l.Underlay)
	}
	b.WriteString("\ngateways:\n")
	for _, g := range l.Gateways {
		fmt.Fprintf(&b, "  %-20s %-14s ns %-24s underlay %s lan %v\n", g.Name, g.Region, g.Namespace, g.UnderlayAddr, g.LANAddrs)
		if g.PID != 0 {
			fmt.Fprintf(&b, "  %-20s cenctl --socket %s status\n", "", g.Socket)
			fmt.Fprintf(&b, "  %-20s cend pid %d, log %s, metrics: ip netns exec %s curl -s http://%s/metrics\n", "", g.PID, g.LogFile, g.Namespace, g.MetricsAddr)
		} else {
			fmt.Fprintf(&b, "  %-20s no agent (lab built without cend)\n", "")
		}
	}
	b.WriteString("\nhosts:\n")
	for _, h := range l.Hosts {
		fmt.Fprintf(&b, "  %-20s %-6s %-14s ns %-24s address %s via %v\n", h.Name, h.Kind, h.Region, h.Namespace, h.Address, h.NextHops)
	}
	for _, r := range l.Routers {
		fmt.Fprintf(&b, "  %-20s router AS%d ns %s, eBGP %s -> %s (%s) AS%d, announces %v\n", r.Name, r.ASN, r.Namespace, r.Address.Addr(), r.GatewayAddress.Addr(), r.Gateway, r.PeerASN, r.Announce)
		fmt.Fprintf(&b, "  %-20s birdc -s %s show protocols\n", "", r.Socket)
	}
	b.WriteString("\ntry:\n")
	for i, h := range l.Hosts {
		for _, o := range l.Hosts[i+1:] {
			fmt.Fprintf(&b, "  ip netns exec %s ping -c 3 %s    # %s -> %s\n", h.Namespace, o.Address.Addr(), h.Name, o.Name)
		}
	}
	return b.String()
}

// Plan derives the lab opts describe without building anything: the
// addressing plan, for a dry run, and for the VM lab (scripts/lab/lab-plan.json
// is Plan of the shipped lab config, read by the Vagrantfile).
func Plan(opts Options) (*Lab, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(o.Config)
	if err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	l, err := plan(cfg, o.Prefix, o.StateDir)
	if err != nil {
		return nil, fmt.Errorf("lab config %s: %w", o.Config, err)
	}
	return l, nil
}
