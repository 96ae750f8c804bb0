// Package dataplane owns a gateway's forwarding state: its WireGuard device
// and peers, the tunnel addresses on that device, the kernel routes behind
// it and the sysctls a router needs. It keeps them equal to a plain-data
// [Desired] value and repairs drift.
//
// # Shape
//
// [New] opens a [Dataplane] for one device in one network namespace.
// [Dataplane.Set] stores the desired state and reconciles the kernel and
// the WireGuard device against it; it is idempotent and minimal: calling it
// twice with the same value writes nothing, and a peer whose settings did
// not change is never reconfigured (its handshake and session survive). A
// background loop watches netlink (link, address, neighbour and route
// events in the target namespace) and re-applies the last desired state
// when someone deletes a route, an address or an overlay FDB or neighbour
// entry, sets the WireGuard or overlay link down, or either device goes
// away; it also resyncs on a timer, which is what repairs a deleted
// nftables guard. [Dataplane.Close] either leaves
// everything forwarding for a restart (cleanup=false) or removes everything
// the dataplane created (cleanup=true): routes, both devices, the helper,
// the guard table. A zero [Desired] also tears down. A second Dataplane
// adopts a running device and overlay by name (never a second one).
//
// # One WireGuard device per gateway, a VXLAN overlay inside it
//
// WireGuard chooses the peer of an outgoing packet by the packet's
// destination against the peers' AllowedIPs, and it drops a received
// packet whose inner source is not in the sending peer's AllowedIPs
// (cryptokey routing). A prefix can be in one peer's AllowedIPs only. So
// when two gateways of one region (gw-beijing-1, gw-beijing-2) both carry
// the region's VPC 10.1.0.0/16, a remote gateway has that prefix under one
// of them, and everything the VPC's hosts send through the other one is
// dropped on arrival: a region with two gateways loses half its traffic
// and multipath is impossible.
//
// IPv4 CEN traffic therefore travels in a VXLAN overlay inside WireGuard.
// Beside the WireGuard device each gateway has an overlay device
// ([Dataplane.Overlay], named [OverlayName] of the device): type vxlan,
// VNI [OverlayVNI], UDP port [OverlayPort], no learning, a MAC derived from
// the gateway's IPv4 tunnel address (02:4f:a:b:c:d), and as local (outer)
// address a VTEP address derived from it too, fd4f:6365:6e00::a.b.c.d. For
// every peer tunnel address the overlay has a permanent FDB entry (peer
// MAC → its VTEP address) and a permanent neighbour entry (tunnel address
// → peer MAC), all computed without any exchange. An IPv4 route is
// `PREFIX via GW dev OVERLAY onlink src OWN-TUNNEL-ADDRESS proto 79`; with
// several gateways (Route.Via) it is one multipath route with a nexthop
// per gateway, and net.ipv4.fib_multipath_hash_policy=1 spreads flows (by
// their ports) across them: true per-flow ECMP, and failover is a route
// change (the routing layer drops a dead gateway from Via). Of overlay
// traffic WireGuard only sees VTEP-to-VTEP packets, whose addresses are in
// AllowedIPs: each peer is allowed its own tunnel addresses and VTEP
// address, plus the prefixes it is the home of (the fast path, below).
//
// The VTEP addresses are IPv6 and not the tunnel addresses themselves
// because the peers' tunnel addresses must be reached through the overlay
// too: a VPC host answering a gateway's ping (source: its tunnel address)
// sends from a VPC address, which WireGuard would drop if the answer went
// to the tunnel address over WireGuard directly. With distinct VTEP
// addresses the tunnel addresses are ordinary overlay destinations and the
// only packets WireGuard routes by itself are the overlay's outer ones. A
// gateway namespace must have IPv6 enabled.
//
// # The fast path: plain WireGuard where the receiver accepts it
//
// The overlay costs throughput on a TUN (see Numbers), so traffic that
// WireGuard's source check would accept anyway skips it. Every IPv4 route
// may name a home (Route.Home): one gateway of those that may announce the
// prefix, chosen from the config alone so that every gateway agrees (the
// agent uses [PickGateway] over the region's gateways for a VPC CIDR, over
// the gateways holding a VBR that accepts it for an on-premises prefix).
// The prefix goes into its home's AllowedIPs, so packets from the prefix
// are accepted when the home sends them plain. A gateway is told which of
// its local prefixes it is the home of (Desired.Sources), and sends their
// packets plain when the destination's home is up:
//
//	7900:  from SOURCE lookup 79          (one rule per source, proto 79)
//	table 79:  PREFIX dev WG              (the prefix's home is in Via)
//	           throw PREFIX               (home down: back to the overlay)
//
// A `throw` ends the lookup in table 79 without a match and the main
// table's overlay route decides, so the longest match is the same in both
// tables. Traffic from any other source (a prefix homed on a twin, the
// gateway's own tunnel address) matches no rule and takes the overlay,
// ECMP and all. With one gateway per region every VPC-to-VPC packet takes
// the fast path; in a region with two, traffic entering the CEN at a
// prefix's home does. Failover is the same route change as before: a dead
// home leaves Via, its table 79 route becomes a throw.
//
// A gateway that is the home of everything it sends into the CEN (the
// only gateway of its region, unless another gateway's VBRs may announce
// what its own VBRs do: Desired.SourcesComplete) needs no rules at all:
// the main table itself routes a prefix whose home is up plain on the
// WireGuard device, and the rest through the overlay. That is one kernel
// route per prefix instead of two, and no table 79.
// TestFastPathInMainTableForwards checks it by packet counters, as above.
//
// The receiving side sees one remote prefix arrive plain on the WireGuard
// device (from its home) and in the overlay (from the home's twins), so
// strict reverse-path filtering would drop one of the two: Set sets
// rp_filter=2 (loose) on both devices (the kernel applies the larger of
// the "all" and the device values, so this also wins over all=1), and puts
// the tunnel address on the overlay too, because loose mode refuses every
// packet arriving on a device without an IPv4 address. TestFastPath runs
// with all.rp_filter=1 and checks, by the devices' packet counters, that
// echoes through the home go plain and those through the twin go in the
// overlay, both answered, and that a dead home turns the route into a
// throw. The rules and table 79 are removed by Close(true); a rule or
// route deleted by hand is repaired (rule events are watched too).
//
// IPv6 routes still use cryptokey routing: one gateway per prefix, chosen
// by a stable hash of the prefix ([Route] with several Via), the prefix in
// that peer's AllowedIPs, the route on the WireGuard device. So an IPv6
// prefix carried by two gateways of one region has the limitation above
// (traffic entering through the non-chosen gateway is dropped). Carrying
// IPv6 in the overlay needs IPv6 routes with IPv4 nexthops (RTA_VIA); the
// routing layer carries IPv4 only today.
//
// One device per peer instead would need a UDP port per peer; the config
// contract gives each gateway one endpoint that all peers dial, and each
// userspace device costs a helper process, a TUN and a socket per peer
// (one helper measured 145-170 MB resident after a TCP stress run, 29 MB
// after the overlay benchmark).
//
// # The overlay guard
//
// The kernel's VXLAN socket listens on port 4789 on every address, so
// without more anyone who reaches a gateway's underlay address could send
// VXLAN frames to the overlay's MAC and inject packets into the VPCs. Set
// installs, before it creates the overlay, an nftables table of its own,
// "opencen_DEVICE" (family inet, so IPv4 and IPv6), with one chain on the
// input hook at priority raw (-300) and one rule: UDP destination port
// 4789 arriving on any interface but the WireGuard device is dropped (and
// counted). Every Set and every repair checks the table, chain and rule
// (the rule carries a tag in its user data) and rewrites the table in one
// atomic batch if anything differs; Close(true) and a zero Desired delete
// it, Close(false) leaves it. TestUnderlayVXLANInjectionDropped sends such
// frames from another namespace on the underlay: none arrives with the
// guard, they do once the table is deleted by hand, and the next repair
// closes the hole again.
//
// # Kernel or userspace WireGuard
//
// The kernel module is detected by trying to create a wireguard link in the
// target namespace. Where it is missing, the device is wireguard-go on a
// TUN, served by a helper process ([ServeUserspaceDevice])
// that the dataplane starts detached (own session and process group, stdio
// to StateDir/DEVICE.log), so the device outlives the agent: stopping the
// agent without cleanup keeps forwarding, and the next [Dataplane] for the
// same device adopts the running helper (found by link name and a live
// UAPI socket /var/run/wireguard/DEVICE.sock) instead of starting another.
// The helper exits when its TUN link is deleted, when its UAPI socket is
// removed, or on SIGTERM/SIGINT. If it dies anyway, the link goes with it;
// the watcher sees the link vanish, removes the stale socket and starts a
// new helper, then configures it again.
//
// Helper argv contract: the dataplane runs Options.HelperCommand (default
// [/proc/self/exe wireguard-device]) followed by "--device NAME --mtu N";
// cend's hidden "wireguard-device" subcommand parses them and serves the
// device with [ServeUserspaceDevice], its TUN wrapped by the userspace
// shaper (HelperOptions.Wrap).
//
// UAPI sockets live in /var/run/wireguard, one folder for every namespace
// of the host, so device names must be unique per host, not per namespace:
// [DeviceName] derives a 15-character name from a caller-supplied id (use
// instance name + gateway name). A socket that exists but refuses
// connections has no owner any more and is removed.
//
// # Routes
//
// Every route the package installs carries route protocol [RouteProtocol]
// (79, "opencen"; free in iproute2's rt_protos). Only routes with that
// protocol, in the configured table, are ever deleted. Changes are applied
// add-before-delete, errors are collected with errors.Join and the rest of
// the plan still runs; deleting a route that is already gone is success;
// dumps interrupted by concurrent changes (netlink.ErrDumpInterrupted) are
// retried. Routes are written many to a netlink message (up to 32 KB of
// requests): only the last request of a message asks for an
// acknowledgement, so the kernel answers the routes it refuses and that
// one, and a message costs one send and one receive where a route each
// cost both. Large route sets are written by several netlink sockets in
// parallel (Options.RouteWorkers).
//
// A Set diffs the main and fast tables against what the last one installed
// (a fingerprint per prefix), not against a dump: the agent calls Set for
// every batch of learned routes, and dumping 100,000 routes per batch cost
// more than the writes. The kernel stays the truth: the watchers' events
// that may mean drift (one of our routes or fast-path rules deleted, any
// link going down or address removed, which take routes with them without
// a notification each, a lost notification), a failed write and the
// periodic resync each make the next reconcile dump and repair. The
// caches hold a fingerprint of what each route is built from, so a Set
// builds only the kernel routes it writes. The route watcher's socket
// carries a BPF filter that lets only deletions through: the kernel
// echoes every route installed, and reading 100,000 echoes to ignore
// them cost a sixth of the agent's CPU in the routing pipeline.
//
// Peer.HomeRanges are ranges every address of which is homed at the peer
// (the agent passes a VBR accept range only that peer's VBRs may announce
// into): one AllowedIPs entry for the range, no route of its own, and the
// home routes inside it add no AllowedIPs entries. Without them every
// learned on-premises prefix was an AllowedIPs entry, rewritten through the
// UAPI on each batch.
//
// # Sysctls
//
// A gateway forwards between its tunnel and its VPC/VBR interfaces, so Set
// turns on net.ipv4.ip_forward and net.ipv6.conf.all.forwarding in the
// target namespace (the latter also stops the namespace from accepting
// router advertisements, which a gateway should not rely on), and
// rp_filter=2 on the WireGuard and overlay devices (see the fast path
// above for why loose, not strict). Set also turns on
// net.ipv4.fib_multipath_hash_policy=1 (layer-4 hash) so that multipath
// routes spread flows, not only address pairs.
//
// # MTU
//
// Desired.MTU, or if zero the MTU of the underlay interface that reaches
// the first peer's endpoint minus 80 (WireGuard over IPv6: 40 IP + 8 UDP +
// 32 WireGuard; the IPv4 overhead is 60, 80 is safe for both), or 1420
// when no peer is known yet. The overlay's MTU is the device's minus 70
// (outer IPv6 40 + UDP 8 + VXLAN 8 + Ethernet 14): underlay - 80 - 70,
// 1350 on a 1500-byte underlay.
//
// # Numbers
//
// Measured with `make bench-dataplane` on a shared 2-core machine,
// userspace WireGuard (no kernel module), interleaved iperf3 runs:
//
//   - TCP throughput VPC to VPC on the fast path, against a plain
//     wireguard-go device set up by hand between the same namespaces
//     (target 0.95, judged on the median of 9 paired 3 s runs, since one
//     lucky run decides a best-against-best ratio on a shared machine;
//     with 5 pairs of 2 s runs the median moved between 0.92 and 1.05):
//     two runs, medians 0.987 and 1.059; best against best 2841/2750
//     Mbit/s (1.033) and 2751/2631 Mbit/s (1.045).
//   - The same through the overlay (traffic entering at a home's twin):
//     339 and 382 Mbit/s, 0.123 and 0.145 of plain wireguard-go. The
//     cost is the overlay on a TUN: the kernel cannot hand a
//     VXLAN-encapsulated TCP super-packet (UDP-tunnel GSO) to a TUN, so
//     it segments it and wireguard-go reads, encrypts and sends every
//     1350-byte segment on its own, where a plain device gets 64 KB TCP
//     super-packets. (Kernel WireGuard, which takes GSO packets inside
//     the kernel, could not be measured here: no module.)
//   - Installing 100,000 IPv4 routes `via GW dev OVERLAY onlink`: 0.46 s
//     against 1.19 s for `ip -batch` of the same routes (speed ratio
//     2.59; target 0.8); with one request and acknowledgement per route
//     it was 0.84 s against 1.22 s (1.45).
//   - A whole Set of 100,000 prefixes homed on one peer (overlay routes,
//     fast-table routes and 100,000 AllowedIPs through the userspace
//     device's UAPI): 1.27 s (2.19 s before batched writes); the same Set
//     again (diffs against the route caches, reads the device, writes
//     nothing): 0.16 s, where a dump of both tables per Set took 0.69 to
//     0.99 s.
package dataplane
