#!/bin/sh
# vm-host.sh NAMESPACE MAC ADDRESS/LEN[,ADDRESS/LEN...] NEXTHOPS PREFIX...
#
# VM lab: a VPC host is a network namespace inside its region's first
# gateway VM, owning a NIC of its own (found by MAC) on the region's LAN, so
# it reaches every gateway of the region over the LAN exactly as in the
# namespace lab. It takes every address given, of both families (in a
# region with several gateways, one homed at each). host-routes.sh then
# points the CEN's prefixes at NEXTHOPS, each at those of its family.
set -eu
if [ $# -lt 5 ]; then
	echo "usage: vm-host.sh NAMESPACE MAC ADDRESS/LEN[,ADDRESS/LEN...] NEXTHOP[,NEXTHOP...] PREFIX..." >&2
	exit 2
fi
here=$(dirname "$0")
ns=$1 mac=$2 addrs=$3
shift 3
[ -e "/run/netns/$ns" ] || ip netns add "$ns"
ip -n "$ns" link set lo up
if ! ip -n "$ns" link show dev ocl-lan >/dev/null 2>&1; then
	m=$(printf '%s' "$mac" | tr 'A-F' 'a-f')
	dev=$(ip -o link show | awk -v m="$m" '$0 ~ "link/ether " m " " { sub(":$", "", $2); sub("@.*", "", $2); print $2; exit }')
	if [ -z "$dev" ]; then
		echo "vm-host.sh: no interface with MAC $mac" >&2
		exit 1
	fi
	ip link set dev "$dev" down
	ip link set dev "$dev" netns "$ns" name ocl-lan
fi
for a in $(printf '%s' "$addrs" | tr , ' '); do
	case $a in *:*) nodad=nodad ;; *) nodad= ;; esac
	ip -n "$ns" addr replace "$a" dev ocl-lan $nodad
done
ip -n "$ns" link set ocl-lan up
ip netns exec "$ns" sh "$here/host-routes.sh" ocl-lan "$@"
