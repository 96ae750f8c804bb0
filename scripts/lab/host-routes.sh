#!/bin/sh
# host-routes.sh IFACE NEXTHOPS PREFIX...
#
# Points a lab host's routes for the CEN's prefixes at its gateway(s):
# NEXTHOPS is one address, or several separated by commas for a region with
# several gateways. With several, each PREFIX gets one multipath route, and
# the kernel skips a next hop whose neighbour entry has failed
# (fib_multipath_use_neigh). That is the host's half of a failover: the
# gateways' half (BFD, then the dead gateway's routes withdrawn) takes
# about 0.35 s, and the host's must not take longer. An entry stays
# REACHABLE for a random 0.5-1.5 x base_reachable_time after its last ARP
# reply, then (with traffic) is probed ucast_solicit times retrans_time
# apart before it fails, so a dead gateway is given up 0.35-0.45 s after
# it stops answering (base 100 ms, 3 x 100 ms; it was 0.55-1.05 s with a
# 500 ms base, the cause of failovers over one second). The price is one
# unicast ARP exchange per gateway every 50-150 ms while traffic flows.
# Three probes 100 ms apart keep a gateway that is merely slow to answer
# (a loaded machine) from being given up. The failed entry then stays
# until the gateway talks to the host again (ReviveGateway pings the
# hosts). Only the given prefixes are routed: a lab host never gets a
# default route.
#
# Run on a VPC host (a VM's namespace, or the namespace lab's host
# namespace) and on an on-premises host (one next hop: its router).
set -eu
if [ $# -lt 3 ]; then
	echo "usage: host-routes.sh IFACE NEXTHOP[,NEXTHOP...] PREFIX..." >&2
	exit 2
fi
dev=$1 hops=$2
shift 2
w() { printf '%s\n' "$2" > "/proc/sys/$(printf '%s' "$1" | tr . /)"; }
w net.ipv4.fib_multipath_use_neigh 1
w net.ipv4.fib_multipath_hash_policy 1
w net.ipv4.conf.all.rp_filter 0
w "net.ipv4.conf.$dev.rp_filter" 0
w "net.ipv4.neigh.$dev.base_reachable_time_ms" 100
w "net.ipv4.neigh.$dev.delay_first_probe_time" 0
w "net.ipv4.neigh.$dev.retrans_time_ms" 100
w "net.ipv4.neigh.$dev.ucast_solicit" 3
w "net.ipv4.neigh.$dev.mcast_solicit" 2
nh=""
for h in $(printf '%s' "$hops" | tr , ' '); do
	nh="$nh nexthop via $h dev $dev"
done
for p in "$@"; do
	case $hops in
	*,*) ip route replace "$p" $nh ;;
	*) ip route replace "$p" via "$hops" dev "$dev" ;;
	esac
done
