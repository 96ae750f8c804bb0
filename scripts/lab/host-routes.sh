#!/bin/sh
# host-routes.sh IFACE NEXTHOPS PREFIX...
#
# Points a lab host's routes for the CEN's prefixes at its gateway(s):
# NEXTHOPS is one address, or several separated by commas for a region with
# several gateways, of either family or both (a dual-stack host names its
# gateways' IPv4 and IPv6 addresses). Each PREFIX goes via the next hops
# of its own family, with several as one multipath route; a prefix of a
# family with no next hop is an error. With several, the kernel skips a
# next hop whose neighbour entry has failed (fib_multipath_use_neigh for
# IPv4; IPv6 does so on a host that does not forward). That is the host's half of a failover: the
# gateways' half (BFD, then the dead gateway's routes withdrawn) takes
# about 0.35 s, and the host's must not take longer. An entry stays
# REACHABLE for a random 0.5-1.5 x base_reachable_time after its last
# reply, then (with traffic) is probed ucast_solicit times retrans_time
# apart before it fails, so a dead gateway is given up 0.35-0.45 s after
# it stops answering (base 100 ms, 3 x 100 ms; a 500 ms base gives it up
# only after 0.55-1.05 s, a failover over one second). The price is one
# unicast ARP (or neighbour solicitation) exchange per gateway every
# 50-150 ms while traffic flows. Three probes 100 ms apart keep a gateway
# that is merely slow to answer (a loaded machine) from being given up.
# The failed entry then stays until the gateway talks to the host again
# (ReviveGateway pings the hosts). Only the given prefixes are routed: a
# lab host never gets a default route.
#
# The host's TCP runs without timestamps: the allocation counts whole
# packets and goodput only their payload, and the 12 bytes of timestamps
# in every segment would put IPv6 TCP's best (1,428 of 1,500 bytes, 0.952)
# within noise of the 0.95 of its allocation the lab holds a pair to.
#
# Run on a VPC host (a VM's namespace, or the namespace lab's host
# namespace) and on an on-premises host (its router's addresses).
set -eu
if [ $# -lt 3 ]; then
	echo "usage: host-routes.sh IFACE NEXTHOP[,NEXTHOP...] PREFIX..." >&2
	exit 2
fi
dev=$1 hops=$2
shift 2
w() { printf '%s\n' "$2" > "/proc/sys/$(printf '%s' "$1" | tr . /)"; }
w net.ipv4.fib_multipath_use_neigh 1
w net.ipv4.tcp_timestamps 0
w net.ipv4.fib_multipath_hash_policy 1
w net.ipv4.conf.all.rp_filter 0
w "net.ipv4.conf.$dev.rp_filter" 0
if [ -d /proc/sys/net/ipv6 ]; then
	w net.ipv6.fib_multipath_hash_policy 1
fi
for f in ipv4 ipv6; do
	[ -d "/proc/sys/net/$f/neigh/$dev" ] || continue
	w "net.$f.neigh.$dev.base_reachable_time_ms" 100
	w "net.$f.neigh.$dev.delay_first_probe_time" 0
	w "net.$f.neigh.$dev.retrans_time_ms" 100
	w "net.$f.neigh.$dev.ucast_solicit" 3
	w "net.$f.neigh.$dev.mcast_solicit" 2
done
# hops FAMILY: the next hops of one family (4 or 6), space-separated.
hops() {
	for h in $(printf '%s' "$hops" | tr , ' '); do
		case $h in *:*) f=6 ;; *) f=4 ;; esac
		[ "$f" != "$1" ] || printf '%s ' "$h"
	done
}
v4=$(hops 4) v6=$(hops 6)
for p in "$@"; do
	case $p in *:*) fh=$v6 ;; *) fh=$v4 ;; esac
	set -- $fh
	case $# in
	0)
		echo "host-routes.sh: no next hop of the family of $p in $hops" >&2
		exit 1
		;;
	1) ip route replace "$p" via "$1" dev "$dev" ;;
	*)
		nh=""
		for h in $fh; do
			nh="$nh nexthop via $h dev $dev"
		done
		ip route replace "$p" $nh
		;;
	esac
done
