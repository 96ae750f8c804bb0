#!/bin/sh
# vm-onprem.sh NAMESPACE ROUTER_ADDRESSES HOST_ADDRESSES EXTRA_ADDRESSES PREFIX...
#
# VM lab, on the on-premises router VM: the data centre's host is a
# namespace joined to the router by a veth (ocl-lan on both sides, as in the
# namespace lab). ROUTER_ADDRESSES and HOST_ADDRESSES are ADDRESS/LEN
# lists, comma-separated, one per family the data centre has; the
# EXTRA_ADDRESSES ("-" for none) go on the router's loopback, as host
# prefixes, for the second announced prefix of each family. The host
# routes the CEN's PREFIXes via the router's address of their family.
set -eu
if [ $# -lt 5 ]; then
	echo "usage: vm-onprem.sh NAMESPACE ROUTER_ADDRESS/LEN[,...] HOST_ADDRESS/LEN[,...] EXTRA_ADDRESS[,...]|- PREFIX..." >&2
	exit 2
fi
here=$(dirname "$0")
ns=$1 raddrs=$2 haddrs=$3 extras=$4
shift 4
[ -e "/run/netns/$ns" ] || ip netns add "$ns"
ip -n "$ns" link set lo up
if ! ip link show dev ocl-lan >/dev/null 2>&1; then
	ip link add ocl-lan type veth peer name ocl-lan netns "$ns"
fi
hops=""
for a in $(printf '%s' "$raddrs" | tr , ' '); do
	case $a in *:*) nodad=nodad ;; *) nodad= ;; esac
	ip addr replace "$a" dev ocl-lan $nodad
	hops="$hops${hops:+,}${a%/*}"
done
ip link set ocl-lan up
for a in $(printf '%s' "$haddrs" | tr , ' '); do
	case $a in *:*) nodad=nodad ;; *) nodad= ;; esac
	ip -n "$ns" addr replace "$a" dev ocl-lan $nodad
done
ip -n "$ns" link set ocl-lan up
if [ "$extras" != - ]; then
	for a in $(printf '%s' "$extras" | tr , ' '); do
		case $a in *:*) len=128 ;; *) len=32 ;; esac
		ip addr replace "$a/$len" dev lo
	done
fi
ip netns exec "$ns" sh "$here/host-routes.sh" ocl-lan "$hops" "$@"
