package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
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
	// first CIDR of each family of every VPC of the region (a VPC's IPv4
	// one ahead of its IPv6 one): IPv6 hands traffic to a twin, and is
	// announced to the twins, as IPv4 does.
	LANAddrs []netip.Prefix `json:"lan_addrs"`
	// Agent, when the lab runs cend.
	Socket      string `json:"socket"`       // control socket, for cenctl --socket
	MetricsAddr string `json:"metrics_addr"` // inside the gateway's namespace
	StateDir    string `json:"state_dir"`
	LogFile     string `json:"log_file"`
	KeyFile     string `json:"key_file"` // private key, mode 0600
	PID         int    `json:"pid,omitempty"`
}

// Host is a VPC host or an on-premises host. A network with CIDRs (or an
// accept list) of both families makes a dual-stack host.
type Host struct {
	Name      string `json:"name"` // the network's name (vpc-beijing, idc-beijing)
	Kind      string `json:"kind"` // KindVPC or KindOnPrem
	Namespace string `json:"namespace"`
	Region    string `json:"region"`
	Network   string `json:"network"`
	// Address is the host's IPv4 address on its LAN and Address6 its IPv6
	// one; either is invalid when the network has no CIDR (VPC) or accept
	// entry (VBR) of that family.
	Address  netip.Prefix `json:"address,omitzero"`
	Address6 netip.Prefix `json:"address6,omitzero"`
	// Extra are more addresses of a VPC host in a region with several
	// gateways: with Address and Address6, one in a piece of the VPC's
	// first CIDR of each family dealt to each gateway (config.VPCPieces),
	// so that every gateway is the home of one of the host's addresses of
	// each family.
	Extra []netip.Prefix `json:"extra,omitempty"`
	// NextHops and NextHops6 are where the host sends CEN traffic of each
	// family: its region's gateways (a multipath route when there are
	// several) or its on-premises router.
	NextHops  []netip.Addr `json:"next_hops"`
	NextHops6 []netip.Addr `json:"next_hops6,omitempty"`
	// Gateways name the gateway of each of NextHops (and of NextHops6, in
	// the same order); empty for an on-premises host.
	Gateways []string `json:"gateways,omitempty"`
	// Routes are the prefixes the host routes via its next hops of their
	// family: every other network of the instance, in each family the host
	// has an address of.
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
	// configured neighbor, of either family); GatewayAddress the gateway's
	// side. OtherAddress and OtherGatewayAddress are the link's addresses
	// of the other family (see otherFamily): the next hops each side
	// announces in the family the session does not run in.
	Address             netip.Prefix `json:"address"`
	GatewayAddress      netip.Prefix `json:"gateway_address"`
	OtherAddress        netip.Prefix `json:"other_address,omitzero"`
	OtherGatewayAddress netip.Prefix `json:"other_gateway_address,omitzero"`
	GatewayIf           string       `json:"gateway_if"` // the gateway's port toward this router
	ASN                 uint32       `json:"asn"`        // the on-premises ASN (peer_asn)
	PeerASN             uint32       `json:"peer_asn"`   // the instance ASN
	BFD                 bool         `json:"bfd"`
	// LAN and LAN6 are the router's addresses on the on-premises host's
	// LAN (either invalid when the VBR may announce nothing of its family);
	// Extra and Extra6, when valid, a second prefix of each family whose
	// first address the router holds on its loopback. All are announced.
	LAN      netip.Prefix   `json:"lan,omitzero"`
	LAN6     netip.Prefix   `json:"lan6,omitzero"`
	Extra    netip.Prefix   `json:"extra,omitzero"`
	Extra6   netip.Prefix   `json:"extra6,omitzero"`
	Announce []netip.Prefix `json:"announce"`
	Config   string         `json:"config"` // bird.conf
	Socket   string         `json:"socket"` // birdc -s
	LogFile  string         `json:"log_file"`
	PID      int            `json:"pid,omitempty"`
}

// LinkAddress is the router's (or, with gateway set, the gateway's)
// address of one family on the VBR link.
func (r Router) LinkAddress(v6, gateway bool) netip.Prefix {
	a, o := r.Address, r.OtherAddress
	if gateway {
		a, o = r.GatewayAddress, r.OtherGatewayAddress
	}
	if a.Addr().Is6() == v6 {
		return a
	}
	return o
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
// each of the region's gateways gws in n's first CIDR of each family: the
// host's next hops.
func (p *planner) vpcHost(n config.Network, gws []*Gateway) {
	for _, c := range n.CIDRs {
		p.claim(c, "vpc "+n.Name+" cidr")
	}
	h := p.host(n, KindVPC, "vpc host "+n.Name)
	for _, g := range gws {
		h.Gateways = append(h.Gateways, g.Name)
	}
	for _, v6 := range []bool{false, true} {
		i := slices.IndexFunc(n.CIDRs, func(c netip.Prefix) bool { return c.Addr().Is6() == v6 })
		if i < 0 {
			continue
		}
		first := n.CIDRs[i]
		host, err := hostAddr(first, 10)
		if err != nil {
			p.errorf("vpc %s: %w", n.Name, err)
			return
		}
		var hops []netip.Addr
		for j, g := range gws {
			a, err := hostAddr(first, uint64(1+j))
			if err != nil {
				p.errorf("vpc %s: %w", n.Name, err)
				return
			}
			g.LANAddrs = append(g.LANAddrs, a)
			hops = append(hops, a.Addr())
		}
		extra, err := homedAddrs(p.cfg, first, n.Region, host)
		if err != nil {
			p.errorf("vpc %s: %w", n.Name, err)
		}
		h.Extra = append(h.Extra, extra...)
		h.setFamily(v6, host, hops)
	}
	p.l.Hosts = append(p.l.Hosts, h)
}

// setFamily sets the host's address and next hops of one family.
func (h *Host) setFamily(v6 bool, address netip.Prefix, hops []netip.Addr) {
	if v6 {
		h.Address6, h.NextHops6 = address, hops
	} else {
		h.Address, h.NextHops = address, hops
	}
}

// host is the host of network n, of kind, named after n, in a namespace
// of its own (for what); its addresses are set by the caller.
func (p *planner) host(n config.Network, kind, what string) Host {
	return Host{
		Name:      n.Name,
		Kind:      kind,
		Namespace: p.ns(n.Name, what),
		Region:    n.Region,
		Network:   n.Name,
	}
}

// vbr plans VBR n's on-premises router behind its gateway and a host
// behind the router, both dual stack as far as n's accept list allows.
// vbrIf counts each gateway's VBR links so far, to name the gateway's
// port.
func (p *planner) vbr(n config.Network, vbrIf map[string]int) {
	gw := p.l.gateway(n.Gateway)
	if gw == nil {
		p.errorf("vbr %s: gateway %q is not in the config", n.Name, n.Gateway)
		return
	}
	rt := Router{
		Name:      n.Name + "-router",
		Network:   n.Name,
		Region:    n.Region,
		Gateway:   gw.Name,
		Namespace: p.ns(n.Name+"-router", "router of vbr "+n.Name),
		GatewayIf: fmt.Sprintf("%s%d", ifVBR, vbrIf[gw.Name]),
		ASN:       n.BGP.PeerASN,
		PeerASN:   p.cfg.Instance.ASN,
		BFD:       n.BGP.BFD,
	}
	vbrIf[gw.Name]++
	if err := p.vbrLink(n, &rt); err != nil {
		p.errorf("vbr %s: %w", n.Name, err)
		return
	}
	h := p.host(n, KindOnPrem, "on-premises host of vbr "+n.Name)
	for _, v6 := range []bool{false, true} {
		lan, extra, err := onPremPrefixes(n.BGP.Accept, n.BGP.AcceptAny, v6)
		if err != nil {
			p.errorf("vbr %s: %w", n.Name, err)
			return
		}
		if !lan.IsValid() {
			continue
		}
		hostA, err := hostAddr(lan.Masked(), 10)
		if err != nil {
			p.errorf("vbr %s: %w", n.Name, err)
			return
		}
		h.setFamily(v6, hostA, []netip.Addr{lan.Addr()})
		rt.Announce = append(rt.Announce, lan.Masked())
		p.claim(lan.Masked(), "vbr "+n.Name+" on-premises LAN")
		if extra.IsValid() {
			rt.Announce = append(rt.Announce, extra.Masked())
			p.claim(extra.Masked(), "vbr "+n.Name+" on-premises prefix")
		}
		if v6 {
			rt.LAN6, rt.Extra6 = lan, extra
		} else {
			rt.LAN, rt.Extra = lan, extra
		}
	}
	if len(rt.Announce) == 0 {
		p.errorf("vbr %s: accept list is empty, so the router may announce nothing", n.Name)
		return
	}
	rdir := filepath.Join(p.l.StateDir, rt.Name)
	rt.Config, rt.Socket, rt.LogFile = filepath.Join(rdir, "bird.conf"), filepath.Join(rdir, "bird.ctl"), filepath.Join(rdir, "bird.log")
	p.l.Routers = append(p.l.Routers, rt)
	p.l.Hosts = append(p.l.Hosts, h)
}

// vbrLink addresses the link between VBR n's gateway and its router in
// both families: the session's at the configured neighbor, the other's
// derived from it (otherFamily).
func (p *planner) vbrLink(n config.Network, rt *Router) error {
	var err error
	if rt.Address, rt.GatewayAddress, err = linkPair(n.BGP.Neighbor); err != nil {
		return err
	}
	other, err := otherFamily(n.BGP.Neighbor)
	if err != nil {
		return err
	}
	if rt.OtherAddress, rt.OtherGatewayAddress, err = linkPair(other); err != nil {
		return err
	}
	p.claim(rt.Address.Masked(), "vbr "+n.Name+" link")
	p.claim(rt.OtherAddress.Masked(), "vbr "+n.Name+" link")
	return nil
}

// hostRoutes has every host route every other network via its next hops:
// VPCs by their CIDRs, VBRs by their accept list (what the CEN may
// carry), or by what the lab's router announces when the list is omitted;
// in each family the host has next hops of.
func (p *planner) hostRoutes() {
	for i := range p.l.Hosts {
		h := &p.l.Hosts[i]
		var routes []netip.Prefix
		for _, n := range p.cfg.Networks {
			if n.Name == h.Network {
				continue
			}
			switch {
			case n.Type == config.VPC:
				routes = append(routes, n.CIDRs...)
			case n.BGP != nil && !n.BGP.AcceptAny:
				routes = append(routes, n.BGP.Accept...)
			default:
				if r := p.l.router(n.Name); r != nil {
					routes = append(routes, r.Announce...)
				}
			}
		}
		for _, r := range routes {
			if len(h.hops(r.Addr().Is6())) > 0 {
				h.Routes = append(h.Routes, r)
			}
		}
	}
}

// hops are the host's next hops of one family.
func (h Host) hops(v6 bool) []netip.Addr {
	if v6 {
		return h.NextHops6
	}
	return h.NextHops
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
