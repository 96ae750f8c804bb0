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
// background loop watches netlink (link, address and route events in the
// target namespace) and re-applies the last desired state when someone
// deletes a route or an address, sets the link down, or the device goes
// away; it also resyncs on a timer. [Dataplane.Close] either leaves
// everything forwarding for a restart (cleanup=false) or removes everything
// the dataplane created (cleanup=true). A zero [Desired] also tears down.
//
// # One device per gateway, per-prefix multipath
//
// WireGuard chooses the peer of an outgoing packet by the packet's
// destination address against the peers' AllowedIPs (cryptokey routing),
// never by the kernel nexthop. With one device, a kernel multipath route
// whose nexthops are different peers' tunnel addresses therefore reaches
// one peer only: the nexthop is ignored on this layer-3 device. True
// per-flow ECMP across the gateways of one region would need one device per
// peer, and every device needs a UDP port of its own; the config contract
// gives each gateway exactly one endpoint (address:port) that all peers
// dial, so per-peer devices cannot be addressed by the other gateways
// without changing that contract, and each userspace device costs a helper
// process, a TUN and a socket per peer (N-1 per gateway, O(N²) in the
// instance). Measured here: one wireguard-go helper holds 145-170 MB of
// resident memory after a TCP stress run (BenchmarkThroughput prints it),
// so per-peer devices would cost that N-1 times on every gateway.
//
// The package therefore runs one device per gateway and spreads load per
// prefix: a [Route] with several Via gateways is given, in WireGuard, to
// exactly one of them, chosen by a stable hash of the prefix, so the
// prefixes of a region spread evenly across its gateways and a given
// prefix always leaves through the same gateway (no reordering). Failover
// is the caller's: when a gateway is detected down, the routing layer drops
// it from Via and calls Set again; only the peers whose AllowedIPs change
// are rewritten (an AllowedIPs change does not reset a WireGuard session).
// The kernel route for every prefix points at the device ("dev", scope
// link) with the gateway's own tunnel address as preferred source.
//
// # Kernel or userspace WireGuard
//
// The kernel module is detected by trying to create a wireguard link in the
// target namespace. Where it is missing, the device is wireguard-go on a
// TUN, served by a helper process ([RunHelper] / [ServeUserspaceDevice])
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
// the agent's hidden "wireguard-device" subcommand passes its arguments to
// [RunHelper] unparsed.
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
// retried. Large route sets are written by several netlink sockets in
// parallel (Options.RouteWorkers).
//
// # Sysctls
//
// A gateway forwards between its tunnel and its VPC/VBR interfaces, so Set
// turns on net.ipv4.ip_forward and net.ipv6.conf.all.forwarding in the
// target namespace (the latter also stops the namespace from accepting
// router advertisements, which a gateway should not rely on). Reverse-path
// filtering needs no change: every tunnel packet, whichever peer sent it,
// arrives on the one device the route back to its source points at.
//
// # MTU
//
// Desired.MTU, or if zero the MTU of the underlay interface that reaches
// the first peer's endpoint minus 80 (WireGuard over IPv6: 40 IP + 8 UDP +
// 32 WireGuard; the IPv4 overhead is 60, 80 is safe for both), or 1420
// when no peer is known yet.
package dataplane
