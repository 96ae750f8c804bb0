package dataplane

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// RouteProtocol is the rtnetlink protocol number that marks every route
// opencen installs ("proto 79" in `ip route`). iproute2 reserves nothing at
// 79; add "79 opencen" to /etc/iproute2/rt_protos to see it by name.
const RouteProtocol = 79

// DefaultKeepalive is the persistent keepalive used when Peer.Keepalive is
// zero: it keeps NAT mappings open and lets both ends notice a dead peer.
const DefaultKeepalive = 25 * time.Second

// wireguardOverhead is subtracted from the underlay MTU (IPv6 outer header
// 40 + UDP 8 + WireGuard 32).
const wireguardOverhead = 80

// defaultMTU is used when no underlay interface can be found.
const defaultMTU = 1500 - wireguardOverhead

// Desired is everything one gateway's dataplane should have. It is plain
// data; the agent computes it from the config and the learned routes. The
// zero value means "nothing": Set(ctx, Desired{}) tears the dataplane down.
//
// Desired holds a private key: it never formats it (String and GoString
// redact it), and neither must callers.
type Desired struct {
	// PrivateKey is this gateway's WireGuard private key.
	PrivateKey wgtypes.Key
	// ListenPort is the UDP port the device listens on (the port of the
	// gateway's endpoint in the config). 1 to 65535.
	ListenPort int
	// Addresses are the gateway's own tunnel addresses, put on the device,
	// e.g. 100.64.0.1/32 and fd00:cen::1/128. At most one per family is
	// used as the preferred source of the routes of that family.
	Addresses []netip.Prefix
	// MTU of the device; 0 means the underlay MTU minus 80.
	MTU int
	// Peers are the other gateways of the instance.
	Peers []Peer
	// Routes are the remote prefixes (VPC CIDRs, on-premises prefixes)
	// and the gateways that carry them.
	Routes []Route
	// DirectRoutes are prefixes reached without the tunnel, through a
	// router on a directly connected network: the on-premises prefixes a
	// VBR's router announces to this gateway.
	DirectRoutes []DirectRoute
	// Sources are this gateway's local IPv4 prefixes (its region's VPC
	// CIDRs, its VBRs' on-premises prefixes) whose home it is: every other
	// gateway has them in this gateway's AllowedIPs (see Route.Home), so
	// packets from them may travel plain WireGuard instead of the overlay
	// (the fast path, see the package docs). IPv6 entries are ignored:
	// IPv6 always travels plain.
	Sources []netip.Prefix
	// SourcesComplete says that every IPv4 packet this gateway sends into
	// the CEN comes from one of Sources or from its own tunnel address
	// (a region with one gateway, whose VBRs announce nothing another
	// gateway's VBRs may announce too). The fast path then needs no
	// policy rules and no table of its own: the main table routes a
	// prefix whose home is up plain on the WireGuard device, one route
	// per prefix where the rules cost two.
	SourcesComplete bool
}

// DirectRoute is a prefix behind a directly connected router. The kernel
// resolves the outgoing interface from Via; several are a multipath route.
type DirectRoute struct {
	Prefix netip.Prefix
	Via    []netip.Addr
}

// Peer is one remote gateway.
type Peer struct {
	// Name identifies the peer in status and errors (the gateway name).
	Name string
	// PublicKey is the peer's WireGuard public key; unique among peers.
	PublicKey wgtypes.Key
	// Endpoint is the underlay address:port the peer listens on. A zero
	// value leaves the endpoint to be learned from the peer's packets.
	Endpoint netip.AddrPort
	// AllowedIPs are the prefixes that belong to the peer itself, at least
	// its tunnel address(es) as /32 or /128, and a kernel route to each is
	// installed. The IPv4 /32 entries are the peer's overlay addresses:
	// they get FDB and neighbour entries and are routed through the
	// overlay, while WireGuard is given them plus the peer's VTEP address
	// (see the package docs). Other entries are routed on the WireGuard
	// device. IPv6 route prefixes assigned to the peer and route prefixes
	// whose Home it is are added to its WireGuard AllowedIPs.
	AllowedIPs []netip.Prefix
	// HomeRanges are ranges every address of which has this peer as its
	// home (for example a VBR accept range only this peer may announce
	// into). They go into the peer's WireGuard AllowedIPs as they are,
	// with no kernel route: routes stay per learned prefix. A home route
	// inside one adds no AllowedIPs entry of its own, so a burst of
	// learned prefixes does not rewrite the peer's AllowedIPs.
	HomeRanges []netip.Prefix
	// Keepalive is the persistent keepalive interval; 0 means
	// DefaultKeepalive, a negative value turns it off.
	Keepalive time.Duration
}

// Route is a remote prefix and the gateways that carry it.
type Route struct {
	// Prefix is the destination, without host bits.
	Prefix netip.Prefix
	// Via lists the tunnel addresses of the gateways that carry the
	// prefix; each must fall in a peer's AllowedIPs. For an IPv4 prefix
	// they must be IPv4 and each is a nexthop of one kernel (ECMP) route
	// through the overlay. For an IPv6 prefix one is chosen per prefix by
	// a stable hash and the prefix goes into that peer's AllowedIPs (see
	// the package docs). The order does not matter.
	Via []netip.Addr
	// Home is the gateway the prefix is bound to in WireGuard (optional):
	// the prefix goes into that peer's AllowedIPs whether or not Home is
	// in Via, so packets from the prefix are accepted from Home directly,
	// and while Home is in Via, packets to the prefix from one of
	// Desired.Sources take plain WireGuard to Home. Every gateway must
	// compute the same Home for a prefix (PickGateway over the gateways
	// the config entitles to announce it does). It must be a tunnel
	// address in a peer's AllowedIPs. Zero: the prefix travels only in the
	// overlay (IPv4) or by PickGateway over Via (IPv6).
	Home netip.Addr
}

// String describes d without its private key.
func (d Desired) String() string {
	return fmt.Sprintf("dataplane.Desired{PrivateKey:<redacted> ListenPort:%d Addresses:%v MTU:%d Peers:%d Routes:%d DirectRoutes:%d}",
		d.ListenPort, d.Addresses, d.MTU, len(d.Peers), len(d.Routes), len(d.DirectRoutes))
}

// GoString is String: %#v must not print the key either.
func (d Desired) GoString() string { return d.String() }

// IsZero reports whether d is the empty desired state (tear down).
func (d Desired) IsZero() bool {
	return d.PrivateKey == (wgtypes.Key{}) && d.ListenPort == 0 && len(d.Addresses) == 0 &&
		d.MTU == 0 && len(d.Peers) == 0 && len(d.Routes) == 0 && len(d.DirectRoutes) == 0
}

// DeviceName derives a host-unique interface name (15 characters, the
// kernel's limit) from id, e.g. "cen-demo/gw-beijing-1". Device names must
// be unique across all namespaces of a host because WireGuard's UAPI
// sockets share one folder.
func DeviceName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "ocw" + hex.EncodeToString(sum[:])[:12]
}

// validDeviceName checks an interface name the kernel and the UAPI socket
// path both accept.
func validDeviceName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("device name %q: must be 1 to 15 characters", name)
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c > '~' {
			return fmt.Errorf("device name %q: character %q not allowed", name, c)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("device name %q: not allowed", name)
	}
	return nil
}

// plan is Desired resolved: the peers with their final AllowedIPs and the
// kernel routes, each route annotated with the peer that carries it.
type plan struct {
	peers  []plannedPeer
	routes []plannedRoute
	// own4 is the gateway's IPv4 tunnel address (the first IPv4 one of
	// Desired.Addresses): its overlay MAC and VTEP address derive from it
	// and it is the source of IPv4 routes. Without it there is no overlay.
	own4 netip.Addr
	// neighbours are the overlay neighbours (sorted): every peer's IPv4
	// tunnel addresses (IPv4 /32 AllowedIPs) and every IPv4 Via.
	neighbours []netip.Addr
	// sources are Desired.Sources, IPv4 only, sorted: each gets a policy
	// rule to the fast-path table. Without any, no fast table is built.
	sources []netip.Prefix
	// plainMain is Desired.SourcesComplete with an overlay: routes whose
	// home is up are plain in the main table, and there is no fast table.
	plainMain bool
}

type plannedPeer struct {
	Peer
	allowed []netip.Prefix // AllowedIPs plus assigned IPv6 route prefixes, sorted
}

type plannedRoute struct {
	prefix netip.Prefix
	// via is the chosen gateway (IPv6) or the first of vias (IPv4);
	// invalid for a peer's own prefix.
	via  netip.Addr
	peer string // the peer of via
	// vias are the gateways of an IPv4 route through the overlay (sorted,
	// unique), one nexthop each.
	vias []netip.Addr
	// direct holds the routers of a DirectRoute (sorted); peer is empty.
	direct []netip.Addr
	// home is an IPv4 route's Home (invalid without one) and homeUp
	// whether it is one of vias: the fast table sends the prefix plain to
	// it, or throws the lookup back to the overlay routes.
	home   netip.Addr
	homeUp bool
}

// resolve validates d and computes the plan. Every problem is reported,
// each naming the offending value.
func resolve(d Desired) (plan, error) { return resolveWith(d, nil) }

// planScratch keeps a plan's largest parts between reconciles, for the
// next resolve to fill again: a planned route and an owner entry per
// route, rebuilt on every Set (the agent calls Set for every batch of
// learned routes), were among the largest allocations in the routing
// pipeline's profile. The plan resolved with it is valid until the next
// use.
type planScratch struct {
	routes []plannedRoute
	owner  map[netip.Prefix]string
}

// resolveWith is resolve, filling scratch's memory when it is not nil.
func resolveWith(d Desired, scratch *planScratch) (plan, error) {
	var errs []error
	if d.PrivateKey == (wgtypes.Key{}) {
		errs = append(errs, errors.New("private key: missing"))
	}
	if d.ListenPort < 1 || d.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listen port %d: must be 1 to 65535", d.ListenPort))
	}
	if d.MTU != 0 && (d.MTU < 1280 || d.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu %d: must be 0 (automatic) or 1280 to 65535", d.MTU))
	}
	for _, a := range d.Addresses {
		if !a.IsValid() {
			errs = append(errs, errors.New("address: invalid prefix"))
		}
	}
	var p plan
	for _, a := range d.Addresses {
		if a.IsValid() && a.Addr().Is4() {
			p.own4 = a.Addr()
			break
		}
	}
	neigh := map[netip.Addr]bool{}
	keys := map[wgtypes.Key]string{}
	n := len(d.Routes) + len(d.DirectRoutes)
	for _, peer := range d.Peers {
		n += len(peer.AllowedIPs) + 1
	}
	var owner map[netip.Prefix]string
	if scratch != nil && scratch.owner != nil {
		owner = scratch.owner
		clear(owner)
	} else {
		owner = make(map[netip.Prefix]string, n)
	}
	if scratch != nil && cap(scratch.routes) >= n {
		clear(scratch.routes[:cap(scratch.routes)]) // drop the old plan's references
		p.routes = scratch.routes[:0]
	} else {
		p.routes = make([]plannedRoute, 0, n)
	}
	if scratch != nil {
		defer func() { scratch.routes, scratch.owner = p.routes, owner }()
	}
	ranges := map[netip.Prefix]string{} // home ranges
	for i, peer := range d.Peers {
		name := peer.Name
		if name == "" {
			name = fmt.Sprintf("peers[%d]", i)
			errs = append(errs, fmt.Errorf("peer %s: missing name", name))
		}
		if peer.PublicKey == (wgtypes.Key{}) {
			errs = append(errs, fmt.Errorf("peer %s: missing public key", name))
		} else if other, ok := keys[peer.PublicKey]; ok {
			errs = append(errs, fmt.Errorf("peer %s: public key already used by peer %s", name, other))
		} else if peer.PublicKey == d.PrivateKey.PublicKey() {
			errs = append(errs, fmt.Errorf("peer %s: public key is this gateway's own", name))
		}
		keys[peer.PublicKey] = name
		if peer.Endpoint.IsValid() && peer.Endpoint.Port() == 0 {
			errs = append(errs, fmt.Errorf("peer %s: endpoint %s: port 0", name, peer.Endpoint))
		}
		for _, a := range peer.AllowedIPs {
			if !a.IsValid() || a != a.Masked() {
				errs = append(errs, fmt.Errorf("peer %s: allowed ip %s: invalid or has host bits set", name, a))
				continue
			}
			if other, ok := owner[a]; ok {
				errs = append(errs, fmt.Errorf("peer %s: allowed ip %s: already allowed for peer %s", name, a, other))
				continue
			}
			owner[a] = name
		}
		for _, a := range peer.HomeRanges {
			if !a.IsValid() || a != a.Masked() {
				errs = append(errs, fmt.Errorf("peer %s: home range %s: invalid or has host bits set", name, a))
				continue
			}
			// WireGuard gives one prefix to one peer: the last one
			// configured would take it from the other.
			if other, ok := ranges[a]; ok {
				errs = append(errs, fmt.Errorf("peer %s: home range %s: already a home range of peer %s", name, a, other))
			}
			if other, ok := owner[a]; ok {
				errs = append(errs, fmt.Errorf("peer %s: home range %s: already allowed for peer %s", name, a, other))
			}
			ranges[a] = name
		}
		p.peers = append(p.peers, plannedPeer{Peer: peer, allowed: append(slices.Clone(peer.AllowedIPs), peer.HomeRanges...)})
		for _, a := range peer.AllowedIPs {
			pr := plannedRoute{prefix: a, peer: name}
			if a.IsValid() && a.Addr().Is4() && a.IsSingleIP() && p.own4.IsValid() {
				// The peer's tunnel address itself is reached through the
				// overlay too, so that packets to it from any source (a
				// VPC host answering the gateway) pass WireGuard's source
				// check; only VTEP-to-VTEP traffic uses WireGuard directly.
				neigh[a.Addr()] = true
				pr.vias = []netip.Addr{a.Addr()}
			}
			p.routes = append(p.routes, pr)
		}
	}
	for _, r := range d.Routes {
		if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
			errs = append(errs, fmt.Errorf("route %s: invalid prefix or host bits set", r.Prefix))
			continue
		}
		if len(r.Via) == 0 {
			errs = append(errs, fmt.Errorf("route %s: no via gateway", r.Prefix))
			continue
		}
		if other, ok := owner[r.Prefix]; ok {
			errs = append(errs, fmt.Errorf("route %s: already routed to peer %s", r.Prefix, other))
			continue
		}
		if r.Prefix.Addr().Is4() {
			// IPv4 goes through the overlay: every Via is a nexthop.
			vias := sortedUnique(r.Via)
			peer, ok := "", true
			for _, v := range vias {
				if !v.Is4() {
					errs = append(errs, fmt.Errorf("route %s: via %s: an ipv4 route needs ipv4 gateways (it travels in the ipv4 overlay)", r.Prefix, v))
					ok = false
					continue
				}
				idx := peerFor(p.peers, v)
				if idx < 0 {
					errs = append(errs, fmt.Errorf("route %s: via %s is in no peer's allowed ips", r.Prefix, v))
					ok = false
					continue
				}
				if peer == "" {
					peer = p.peers[idx].Name
				}
			}
			if ok && !p.own4.IsValid() {
				errs = append(errs, fmt.Errorf("route %s: ipv4 routes need an ipv4 tunnel address in addresses (the overlay's local address)", r.Prefix))
				ok = false
			}
			if !ok {
				continue
			}
			pr := plannedRoute{prefix: r.Prefix, via: vias[0], vias: vias, peer: peer}
			if r.Home.IsValid() {
				idx := peerFor(p.peers, r.Home)
				if !r.Home.Is4() || idx < 0 {
					errs = append(errs, fmt.Errorf("route %s: home %s is not an ipv4 address in a peer's allowed ips", r.Prefix, r.Home))
					continue
				}
				if !covers(p.peers[idx].HomeRanges, r.Prefix) {
					p.peers[idx].allowed = append(p.peers[idx].allowed, r.Prefix)
				}
				pr.home, pr.homeUp = r.Home, slices.Contains(vias, r.Home)
			}
			for _, v := range vias {
				neigh[v] = true
			}
			owner[r.Prefix] = peer
			p.routes = append(p.routes, pr)
			continue
		}
		via := PickGateway(r.Prefix, r.Via)
		if r.Home.IsValid() && slices.Contains(r.Via, r.Home) {
			via = r.Home
		}
		idx := peerFor(p.peers, via)
		if idx < 0 {
			errs = append(errs, fmt.Errorf("route %s: via %s is in no peer's allowed ips", r.Prefix, via))
			continue
		}
		owner[r.Prefix] = p.peers[idx].Name
		if !covers(p.peers[idx].HomeRanges, r.Prefix) {
			p.peers[idx].allowed = append(p.peers[idx].allowed, r.Prefix)
		}
		p.routes = append(p.routes, plannedRoute{prefix: r.Prefix, via: via, peer: p.peers[idx].Name})
	}
	for _, r := range d.DirectRoutes {
		if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
			errs = append(errs, fmt.Errorf("direct route %s: invalid prefix or host bits set", r.Prefix))
			continue
		}
		if other, ok := owner[r.Prefix]; ok {
			errs = append(errs, fmt.Errorf("direct route %s: already routed to peer %s", r.Prefix, other))
			continue
		}
		vias := sortedUnique(r.Via)
		ok := len(vias) > 0
		for _, v := range vias {
			if !v.IsValid() || v.BitLen() != r.Prefix.Addr().BitLen() {
				ok = false
			}
		}
		if !ok {
			errs = append(errs, fmt.Errorf("direct route %s: via %v: need routers of the prefix's address family", r.Prefix, r.Via))
			continue
		}
		owner[r.Prefix] = "direct via " + vias[0].String()
		p.routes = append(p.routes, plannedRoute{prefix: r.Prefix, via: vias[0], direct: vias})
	}
	for _, src := range d.Sources {
		switch {
		case !src.IsValid() || src != src.Masked():
			errs = append(errs, fmt.Errorf("source %s: invalid prefix or host bits set", src))
		case src.Addr().Is4() && !slices.Contains(p.sources, src):
			p.sources = append(p.sources, src)
		}
	}
	slices.SortFunc(p.sources, comparePrefix)
	p.plainMain = d.SourcesComplete && p.own4.IsValid()
	if len(p.sources) > 0 && !p.own4.IsValid() {
		errs = append(errs, errors.New("sources: need an ipv4 tunnel address in addresses"))
	}
	if p.own4.IsValid() {
		for a := range neigh {
			if a != p.own4 {
				p.neighbours = append(p.neighbours, a)
			}
		}
		slices.SortFunc(p.neighbours, netip.Addr.Compare)
		// Each neighbour's VTEP address belongs to its peer in WireGuard
		// and is routed on the WireGuard device: the overlay's outer
		// packets are the only ones WireGuard routes by itself.
		for _, a := range p.neighbours {
			if idx := peerFor(p.peers, a); idx >= 0 {
				v := netip.PrefixFrom(vtepAddr(a), 128)
				if !slices.Contains(p.peers[idx].allowed, v) {
					p.peers[idx].allowed = append(p.peers[idx].allowed, v)
					p.routes = append(p.routes, plannedRoute{prefix: v, peer: p.peers[idx].Name})
				}
			}
		}
	}
	for i := range p.peers {
		slices.SortFunc(p.peers[i].allowed, comparePrefix)
	}
	return p, errors.Join(errs...)
}

// covers reports whether one of ranges holds all of p.
func covers(ranges []netip.Prefix, p netip.Prefix) bool {
	for _, r := range ranges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// PickGateway chooses one gateway for prefix: a stable hash of the prefix
// over the sorted candidates, so prefixes spread across a region's
// gateways and the choice does not depend on the order the caller listed
// them in. Given the same candidates, every gateway picks the same one:
// the agent uses it to compute Route.Home and Desired.Sources.
func PickGateway(prefix netip.Prefix, via []netip.Addr) netip.Addr {
	if len(via) == 1 {
		return via[0]
	}
	sorted := slices.Clone(via)
	slices.SortFunc(sorted, netip.Addr.Compare)
	sorted = slices.Compact(sorted)
	h := fnv.New64a()
	b, _ := prefix.MarshalBinary()
	h.Write(b)
	// FNV's low bits depend only on the low bits of the input bytes
	// (10.1.0.0/16 and 10.11.0.0/16 land on the same gateway of two), so
	// mix the high bits down before taking the remainder (murmur3's
	// finaliser).
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return sorted[x%uint64(len(sorted))]
}

// peerFor returns the index of the peer whose own AllowedIPs contain a,
// choosing the most specific, or -1.
func peerFor(peers []plannedPeer, a netip.Addr) int {
	best, bits := -1, -1
	for i, p := range peers {
		for _, pfx := range p.AllowedIPs {
			if pfx.Contains(a) && pfx.Bits() > bits {
				best, bits = i, pfx.Bits()
			}
		}
	}
	return best
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func keepalive(p Peer) time.Duration {
	switch {
	case p.Keepalive == 0:
		return DefaultKeepalive
	case p.Keepalive < 0:
		return 0
	}
	return p.Keepalive
}

// sortedUnique returns addrs sorted without duplicates: addrs itself when
// it already is (one gateway, the usual case, costs no allocation), else
// a sorted copy. The plan never modifies it.
func sortedUnique(addrs []netip.Addr) []netip.Addr {
	for i := 1; i < len(addrs); i++ {
		if addrs[i-1].Compare(addrs[i]) >= 0 {
			out := slices.Clone(addrs)
			slices.SortFunc(out, netip.Addr.Compare)
			return slices.Compact(out)
		}
	}
	return addrs
}
