#!/bin/sh
# vm-onprem.sh NAMESPACE ROUTER_ADDRESS/LEN HOST_ADDRESS/LEN [EXTRA_ADDRESS] PREFIX...
#
# VM lab, on the on-premises router VM: the data centre's host is a
# namespace joined to the router by a veth (ocl-lan on both sides, as in the
# namespace lab); EXTRA_ADDRESS ("-" for none) goes on the router's
# loopback for the second announced prefix. The host routes the CEN's
# PREFIXes via the router.
set -eu
if [ $# -lt 5 ]; then
	echo "usage: vm-onprem.sh NAMESPACE ROUTER_ADDRESS/LEN HOST_ADDRESS/LEN EXTRA_ADDRESS|- PREFIX..." >&2
	exit 2
fi
here=$(dirname "$0")
ns=$1 raddr=$2 haddr=$3 extra=$4
shift 4
[ -e "/run/netns/$ns" ] || ip netns add "$ns"
ip -n "$ns" link set lo up
if ! ip link show dev ocl-lan >/dev/null 2>&1; then
	ip link add ocl-lan type veth peer name ocl-lan netns "$ns"
fi
ip addr replace "$raddr" dev ocl-lan
ip link set ocl-lan up
ip -n "$ns" addr replace "$haddr" dev ocl-lan
ip -n "$ns" link set ocl-lan up
[ "$extra" = - ] || ip addr replace "$extra/32" dev lo
ip netns exec "$ns" sh "$here/host-routes.sh" ocl-lan "${raddr%/*}" "$@"
