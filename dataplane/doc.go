// Package dataplane owns a gateway's forwarding state: its WireGuard device
// and peers, the tunnel addresses on that device, the kernel routes and
// policy rules behind it, the guard in front of it and the sysctls a
// router needs. It keeps them equal to a plain-data [Desired] value and
// repairs drift.
//
// # Shape
//
// [New] opens a [Dataplane] for one device in one network namespace.
// [Dataplane.Set] stores the desired state and reconciles the kernel and
// the WireGuard device against it; it is idempotent and minimal: calling it
// twice with the same value writes nothing, and a peer whose settings did
// not change is never reconfigured (its handshake and session survive). A
// background loop watches netlink (link, address, route and rule events in
// the target namespace) and re-applies the last desired state when someone
// deletes a route, a rule or an address, sets a link down, or the device
// goes away; it also resyncs on a timer, which is what repairs a deleted
// nftables guard. [Dataplane.Close] either leaves everything forwarding
// for a restart (cleanup=false) or removes everything the dataplane
// created (cleanup=true). A zero [Desired] also tears down. A second
// Dataplane adopts a running device by name (never a second one). One
// Dataplane manages one namespace: its teardown removes every route and
// rule carrying [RouteProtocol] there.
//
// The files follow the steps of a Set: plan.go validates a Desired and
// resolves it into a plan; apply.go applies it (device, peers, guard,
// routes); handoff.go the policy rules and their tables; watch.go and
// routewatch.go repair drift; status.go reads what is there.
//
// # Homes: plain WireGuard, every path
//
// WireGuard chooses the peer of an outgoing packet by the packet's
// destination against the peers' AllowedIPs, and it drops a received
// packet whose inner source is not in the sending peer's AllowedIPs
// (cryptokey routing). A prefix can be in one peer's AllowedIPs only. So
// every CEN prefix has one home gateway, in whose AllowedIPs it sits on
// every other gateway (the agent computes the homes, the same on every
// gateway: see its docs): packets to the prefix go to its home, and
// packets from it are accepted only from its home. A region with two
// gateways splits each VPC CIDR into pieces homed at one twin or the
// other, so both carry traffic, each for its own addresses; when a twin
// is down its pieces move to the other (Peer.AllowedIPs changes on every
// gateway).
//
// A packet from a local prefix homed at a twin can reach this gateway
// anyway: a VPC host hands its flows to either gateway of its region, an
// on-premises router to whichever of its gateways it prefers. Sent into
// the tunnel from here it would be dropped by every receiver. It is handed
// to its home instead, over a LAN both gateways share ([Handoff]), and
// enters the tunnel there, plain: every path of a region with several
// gateways is one WireGuard hop at full speed. The handoff is policy
// routing, in both families:
//
//	7900: iif WG lookup main                  from the tunnel: never handed off
//	7901: lookup main suppress_ifgroup 79     a route not into the tunnel wins
//	79xx: from SOURCE lookup TWIN-TABLE       one rule per handed-off source
//	TWIN-TABLE: default via TWIN-LAN-ADDRESS
//
// The WireGuard device is in interface group [DeviceGroup], so rule 7901
// lets the main table decide every destination it does not send into the
// tunnel: a LAN, a VBR's on-premises prefixes, an operator's route. What
// the main table would send into the tunnel falls through to the handoff
// rules; a source with none takes the main table's route into the tunnel
// at rule 32766. The rules of longer sources come first (79xx is 7902 plus
// the source's host bits), as WireGuard's longest match would. The twin's
// LAN address comes from the twin (the agent learns it over BGP); of the
// addresses given, the first on a subnet connected to this gateway is
// used, per family, and a handoff with none is an error naming the twin.
// No handoff, no rules: a region's only gateway has none.
//
// Set turns ICMP redirects off (net.ipv4.conf.*.send_redirects: "all",
// "default" and each link a handoff leaves through, since the kernel
// sends them while either "all" or the link's own value is on): a
// handed-off packet leaves through the LAN it came in on, and the kernel
// would otherwise tell the host to use the twin directly. The receiving
// side sees a local prefix homed at a twin arrive from the tunnel (the
// twin, as its home, sends it plain to this gateway's VBR), while its
// route back is the LAN, so Set puts rp_filter=2 (loose) on the device:
// the kernel applies the larger of the "all" and the device values, so
// this also wins over all=1.
//
// One device per peer instead would need a UDP port per peer; the config
// contract gives each gateway one endpoint that all peers dial. An
// encapsulation inside WireGuard (VXLAN, GRE) would let any gateway send
// any source, but on a userspace device the kernel hands the TUN one
// encapsulated segment at a time instead of a whole TCP burst, a fraction
// of the plain path's throughput.
//
// # The guard
//
// Set keeps an nftables table of its own, "opencen_DEVICE" (family inet),
// whose rules drop (and count):
//
//   - at prerouting, priority raw (-300), ahead of routing and conntrack:
//     a packet whose source is a gateway's tunnel address arriving on any
//     interface but the WireGuard device and lo (traffic between gateways
//     is exempt from shaping, so a tenant forging one would escape its
//     region pair's bucket); BGP (TCP 179) and BFD (UDP 3784, 4784) toward
//     this gateway's tunnel address arriving on any interface but the
//     device and lo; BGP and BFD from a VBR's router arriving on any link
//     but the one it is connected on;
//   - at forward, priority filter: anything arriving on the underlay (the
//     links toward the peers' endpoints), and anything toward the device,
//     a LAN or a VBR link that arrived on none of them. The LANs are the
//     links holding an address in Desired.LANPrefixes (the region's VPC
//     CIDRs), the VBR links those of Desired.VBRNeighbors; a link that is
//     both a LAN and the underlay counts as a LAN.
//
// Every Set and every repair resolves the links again and checks the
// table, chains, rules (tagged in their user data with everything they
// match) and sets, and rewrites the table in one atomic batch if anything
// differs; a guard whose links cannot be read leaves the one in place.
// Close(true) and a zero Desired delete it, Close(false) leaves it.
//
// # Kernel or userspace WireGuard
//
// The kernel module is detected by trying to create a wireguard link in the
// target namespace. Where it is missing, the device is wireguard-go on a
// TUN, served by a helper process (cend's hidden "wireguard-device"
// command, [ServeUserspaceDevice]) that the dataplane starts detached (own
// session and process group, stdio to StateDir/DEVICE.log), so the device
// outlives the agent: stopping the agent without cleanup keeps forwarding,
// and the next [Dataplane] for the same device adopts the running helper
// (found by link name and a live UAPI socket /var/run/wireguard/DEVICE.sock)
// instead of starting another. The helper exits when its TUN link is
// deleted, when its UAPI socket is removed, or on SIGTERM/SIGINT. If it
// dies anyway, the link goes with it; the watcher sees the link vanish,
// removes the stale socket and starts a new helper, then configures it
// again. cend wraps the helper's TUN in the userspace shaper
// (HelperOptions.Wrap), whose buckets live as long as the helper.
//
// UAPI sockets live in /var/run/wireguard, one folder for every namespace
// of the host, so device names must be unique per host, not per namespace:
// [DeviceName] derives a 15-character name from a caller-supplied id (use
// instance name + gateway name). A socket that exists but refuses
// connections has no owner any more and is removed.
//
// # Routes
//
// Every route and rule the package installs carries protocol
// [RouteProtocol] (79, "opencen"; free in iproute2's rt_protos) and every
// route a metric ([RouteMetric4], [RouteMetric6]) above what the kernel
// gives connected routes and iproute2 gives an operator's, so a connected
// or operator route for the same prefix keeps winning and is never
// replaced or deleted as ours. Only routes with that protocol are ever
// deleted. Changes add first, then delete, errors are collected
// with errors.Join and the rest of the plan still runs; deleting a route
// that is already gone is success; dumps interrupted by concurrent
// changes (netlink.ErrDumpInterrupted) are retried. Routes are written many
// to a netlink message: only the last request of a message asks for an
// acknowledgement, so the kernel answers the routes it refuses and that
// one. Large route sets are written by several netlink sockets in parallel
// (Options.RouteWorkers).
//
// A Set diffs each table against what the last one installed (a
// fingerprint per prefix), not against a dump: the agent calls Set for
// every batch of learned routes. The kernel stays the truth: the watchers'
// events that may mean drift (one of our routes or rules deleted, any link
// going down or address removed, which take routes with them without a
// notification each, a lost notification), a failed write and the
// periodic resync each make the next reconcile dump and repair. The route
// watcher's socket carries a BPF filter that lets only deletions through:
// the kernel echoes every route installed.
//
// # Sysctls
//
// A gateway forwards between its tunnel and its VPC/VBR interfaces, so Set
// turns on net.ipv4.ip_forward and net.ipv6.conf.all.forwarding in the
// target namespace (the latter also stops the namespace from accepting
// router advertisements, which a gateway should not rely on), turns ICMP
// redirects off and sets rp_filter=2 on the device (see Homes).
//
// # MTU
//
// Desired.MTU, or if zero the MTU of the underlay interface that reaches
// the first peer's endpoint minus 80 (WireGuard over IPv6: 40 IP + 8 UDP +
// 32 WireGuard; the IPv4 overhead is 60, 80 is safe for both), or 1420
// when no peer is known yet.
package dataplane
