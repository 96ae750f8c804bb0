package dataplane

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeKernel is a stateful stand-in for rtnetlink, WireGuard and the host
// in one namespace: links, addresses, routes, devices, helpers, sockets.
// It counts every write so tests can assert that nothing was written.
type fakeKernel struct {
	mu          sync.Mutex
	kernelWG    bool // LinkAdd of a wireguard link succeeds
	underlayMTU int
	nextIndex   int
	links       map[string]netlink.Link
	addrs       map[int][]netip.Prefix
	routes      map[routeID]netlink.Route
	devices     map[string]*wgtypes.Device
	sockets     map[string]sockState
	helpers     map[string]int
	sysctls     map[string]string
	neighs      map[neighID]netlink.Neigh
	rules       []netlink.Rule
	guards      map[string]string // nftables guard table -> device its rule names
	nextPID     int

	failRoute      map[netip.Prefix]error // RouteReplace of these fails
	dumpInterrupts int                    // next route dumps to interrupt
	routeDumps     int                    // route dumps served

	writes     int      // any state change
	ops        []string // route writes in order
	configured []wgtypes.Config
	started    int
}

// neighID keys FDB entries by (link, MAC, destination), as a vxlan device
// keeps several remotes per MAC, and neighbour entries by (link, IP).
type neighID struct {
	link   int
	family int
	mac    string
	ip     netip.Addr
}

func neighKey(n *netlink.Neigh) neighID {
	id := neighID{link: n.LinkIndex, family: n.Family, ip: ipAddr(n.IP)}
	if n.Family == syscall.AF_BRIDGE {
		id.mac = n.HardwareAddr.String()
	}
	return id
}

type routeID struct {
	table int
	dst   netip.Prefix
}

func newFakeKernel() *fakeKernel {
	k := &fakeKernel{
		underlayMTU: 1500, nextIndex: 10, nextPID: 1000,
		links: map[string]netlink.Link{}, addrs: map[int][]netip.Prefix{}, routes: map[routeID]netlink.Route{},
		devices: map[string]*wgtypes.Device{}, sockets: map[string]sockState{}, helpers: map[string]int{},
		sysctls: map[string]string{}, failRoute: map[netip.Prefix]error{},
		neighs: map[neighID]netlink.Neigh{}, guards: map[string]string{},
	}
	return k
}

// newFakeDataplane builds a Dataplane on k without watchers.
func newFakeDataplane(k *fakeKernel, device string) *Dataplane {
	opts := Options{Device: device, ResyncInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	if err := opts.defaults(); err != nil {
		panic(err)
	}
	d := newDataplane(opts)
	d.nl, d.wg, d.host, d.guard = k, k, k, k
	d.writers = []routeWriter{k, k, k}
	return d
}

// --- netlinkOps ---

func (k *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.links[name]
	if !ok {
		return nil, errNoLink
	}
	return l, nil
}

func (k *fakeKernel) LinkByIndex(idx int) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range k.links {
		if l.Attrs().Index == idx {
			return l, nil
		}
	}
	return nil, errNoLink
}

func (k *fakeKernel) addLinkLocked(l netlink.Link) {
	k.nextIndex++
	l.Attrs().Index = k.nextIndex
	k.links[l.Attrs().Name] = l
	k.writes++
}

func (k *fakeKernel) LinkAdd(l netlink.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := l.(*netlink.Wireguard); ok && !k.kernelWG {
		return syscall.EOPNOTSUPP
	}
	if _, ok := k.links[l.Attrs().Name]; ok {
		return syscall.EEXIST
	}
	k.addLinkLocked(l)
	if _, ok := l.(*netlink.Wireguard); ok {
		k.devices[l.Attrs().Name] = &wgtypes.Device{Name: l.Attrs().Name, Type: wgtypes.LinuxKernel}
	}
	return nil
}

func (k *fakeKernel) delLinkLocked(name string) {
	l, ok := k.links[name]
	if !ok {
		return
	}
	idx := l.Attrs().Index
	delete(k.links, name)
	delete(k.addrs, idx)
	delete(k.devices, name)
	k.flushRoutesLocked(idx)
	for id := range k.neighs {
		if id.link == idx {
			delete(k.neighs, id)
		}
	}
	k.writes++
}

// flushRoutesLocked drops the routes through link idx, as the kernel does
// when a link goes down or away.
func (k *fakeKernel) flushRoutesLocked(idx int) {
	for id, r := range k.routes {
		on := r.LinkIndex == idx
		for _, nh := range r.MultiPath {
			on = on || nh.LinkIndex == idx
		}
		if on {
			delete(k.routes, id)
		}
	}
}

func (k *fakeKernel) LinkDel(l netlink.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.links[l.Attrs().Name]; !ok {
		return syscall.ENODEV
	}
	k.delLinkLocked(l.Attrs().Name)
	return nil
}

func (k *fakeKernel) LinkSetUp(l netlink.Link) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.links[l.Attrs().Name]
	if !ok {
		return syscall.ENODEV
	}
	cur.Attrs().Flags |= net.FlagUp
	k.writes++
	return nil
}

// setDown is "ip link set down": the kernel flushes the link's routes.
func (k *fakeKernel) setDown(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.links[name]
	l.Attrs().Flags &^= net.FlagUp
	k.flushRoutesLocked(l.Attrs().Index)
}

func (k *fakeKernel) LinkSetHardwareAddr(l netlink.Link, mac net.HardwareAddr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.links[l.Attrs().Name]
	if !ok {
		return syscall.ENODEV
	}
	cur.Attrs().HardwareAddr = slices.Clone(mac)
	k.writes++
	return nil
}

func (k *fakeKernel) NeighList(idx, family int) ([]netlink.Neigh, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Neigh
	for id, n := range k.neighs {
		if id.link == idx && id.family == family {
			out = append(out, n)
		}
	}
	return out, nil
}

func (k *fakeKernel) NeighAppend(n *netlink.Neigh) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := neighKey(n)
	if _, ok := k.neighs[id]; ok {
		return syscall.EEXIST
	}
	k.neighs[id] = *n
	k.writes++
	return nil
}

func (k *fakeKernel) NeighSet(n *netlink.Neigh) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.neighs[neighKey(n)] = *n
	k.writes++
	return nil
}

func (k *fakeKernel) NeighDel(n *netlink.Neigh) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := neighKey(n)
	if _, ok := k.neighs[id]; !ok {
		return syscall.ENOENT
	}
	delete(k.neighs, id)
	k.writes++
	return nil
}

// neighsOf returns the FDB (AF_BRIDGE) or neighbour (AF_INET) entries of
// link name, as "ip mac" strings, sorted.
func (k *fakeKernel) neighsOf(name string, family int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.links[name]
	if !ok {
		return nil
	}
	var out []string
	for id, n := range k.neighs {
		if id.link == l.Attrs().Index && id.family == family {
			out = append(out, fmt.Sprintf("%s %s", ipAddr(n.IP), n.HardwareAddr))
		}
	}
	slices.Sort(out)
	return out
}

// --- guardOps ---

func (k *fakeKernel) ensureGuard(table, dev string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.guards[table] == dev {
		return false, nil
	}
	k.guards[table] = dev
	k.writes++
	return true, nil
}

func (k *fakeKernel) removeGuard(table string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.guards[table]; ok {
		delete(k.guards, table)
		k.writes++
	}
	return nil
}

func (k *fakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.links[l.Attrs().Name]
	if !ok {
		return syscall.ENODEV
	}
	cur.Attrs().MTU = mtu
	k.writes++
	return nil
}

func (k *fakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Addr
	for _, p := range k.addrs[l.Attrs().Index] {
		n := prefixToIPNetHost(p)
		out = append(out, netlink.Addr{IPNet: &n, LinkIndex: l.Attrs().Index})
	}
	return out, nil
}

func addrOf(a *netlink.Addr) netip.Prefix {
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ipAddr(a.IP), ones)
}

func (k *fakeKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := addrOf(a)
	idx := l.Attrs().Index
	if slices.Contains(k.addrs[idx], p) {
		return syscall.EEXIST
	}
	k.addrs[idx] = append(k.addrs[idx], p)
	k.writes++
	return nil
}

func (k *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := addrOf(a)
	idx := l.Attrs().Index
	i := slices.Index(k.addrs[idx], p)
	if i < 0 {
		return syscall.EADDRNOTAVAIL
	}
	k.addrs[idx] = slices.Delete(k.addrs[idx], i, i+1)
	k.writes++
	return nil
}

func (k *fakeKernel) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dumpInterrupts > 0 {
		k.dumpInterrupts--
		return nil, netlink.ErrDumpInterrupted
	}
	k.routeDumps++
	var out []netlink.Route
	for _, r := range k.routes {
		if mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table {
			continue
		}
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (k *fakeKernel) RuleList(family int) ([]netlink.Rule, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.rules), nil
}

func sameRule(a, b *netlink.Rule) bool {
	return a.Priority == b.Priority && a.Table == b.Table && a.Protocol == b.Protocol && ruleSource(a) == ruleSource(b)
}

func (k *fakeKernel) RuleAdd(r *netlink.Rule) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.rules {
		if sameRule(&k.rules[i], r) {
			return syscall.EEXIST
		}
	}
	k.ops = append(k.ops, fmt.Sprintf("rule add from %s table %d", ruleSource(r), r.Table))
	k.rules = append(k.rules, *r)
	k.writes++
	return nil
}

func (k *fakeKernel) RuleDel(r *netlink.Rule) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range k.rules {
		if sameRule(&k.rules[i], r) {
			k.ops = append(k.ops, fmt.Sprintf("rule del from %s table %d", ruleSource(r), r.Table))
			k.rules = slices.Delete(k.rules, i, i+1)
			k.writes++
			return nil
		}
	}
	return syscall.ENOENT
}

func (k *fakeKernel) RouteGet(dst net.IP) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return []netlink.Route{{LinkIndex: 2, MTU: k.underlayMTU}}, nil
}

func (k *fakeKernel) RouteReplace(r *netlink.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := routeKey(r)
	k.ops = append(k.ops, "replace "+key.String())
	if err := k.failRoute[key]; err != nil {
		return err
	}
	c := *r
	if c.Src != nil {
		c.Src = slices.Clone(c.Src)
	}
	k.routes[routeID{r.Table, key}] = c
	k.writes++
	return nil
}

func (k *fakeKernel) RouteDel(r *netlink.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := routeKey(r)
	k.ops = append(k.ops, "delete "+key.String())
	id := routeID{r.Table, key}
	if _, ok := k.routes[id]; !ok {
		return syscall.ESRCH
	}
	delete(k.routes, id)
	k.writes++
	return nil
}

// --- wgOps ---

func (k *fakeKernel) Device(name string) (*wgtypes.Device, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[name]
	if !ok {
		return nil, fmt.Errorf("no device %s", name)
	}
	c := *d
	c.Peers = slices.Clone(d.Peers)
	for i := range c.Peers {
		c.Peers[i].AllowedIPs = slices.Clone(c.Peers[i].AllowedIPs)
	}
	return &c, nil
}

// handshakeAt is when fake peers "handshook"; a touched peer is given a
// new handshake, as a reset session would get after traffic.
var handshakeAt = time.Unix(1_700_000_000, 0)

func (k *fakeKernel) ConfigureDevice(name string, cfg wgtypes.Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[name]
	if !ok {
		return fmt.Errorf("no device %s", name)
	}
	k.configured = append(k.configured, cfg)
	k.writes++
	if cfg.PrivateKey != nil {
		d.PrivateKey, d.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey, LastHandshakeTime: handshakeAt})
			i = len(d.Peers) - 1
		} else {
			d.Peers[i].LastHandshakeTime = d.Peers[i].LastHandshakeTime.Add(time.Minute)
		}
		p := &d.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

// --- hostOps ---

func (k *fakeKernel) startHelper(name string, mtu int) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.started++
	k.nextPID++
	k.helpers[name] = k.nextPID
	k.addLinkLocked(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, Mode: netlink.TUNTAP_MODE_TUN})
	k.devices[name] = &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	k.sockets[name] = sockLive
	return k.nextPID, nil
}

func (k *fakeKernel) findHelper(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.helpers[name]
}

// crashHelper kills a helper: its TUN goes, its socket stays stale.
func (k *fakeKernel) crashHelper(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.helpers, name)
	k.delLinkLocked(name)
	k.sockets[name] = sockStale
}

func (k *fakeKernel) stopHelper(name string, pid int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.helpers[name] != pid {
		return nil
	}
	delete(k.helpers, name)
	k.delLinkLocked(name)
	delete(k.sockets, name)
	return nil
}

func (k *fakeKernel) socketState(name string) sockState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sockets[name]
}

func (k *fakeKernel) removeSocket(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.sockets, name)
	return nil
}

func (k *fakeKernel) removeState(string) error { return nil }
func (k *fakeKernel) logTail(string) string    { return "" }

func (k *fakeKernel) setSysctl(key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sysctls[key] != value {
		k.sysctls[key] = value
		k.writes++
	}
	return nil
}
