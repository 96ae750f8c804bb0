#!/bin/sh
# vm-iface.sh MAC NAME [ADDRESS/LEN...]
#
# VM lab: finds the NIC with MAC (the Vagrantfile gives every lab NIC a
# fixed one), renames it NAME so it matches the namespace lab's interface
# names (ocl-ul, ocl-lan, ocl-vbr0), adds the addresses and brings it up.
# Idempotent: a second run finds NAME already there.
set -eu
if [ $# -lt 2 ]; then
	echo "usage: vm-iface.sh MAC NAME [ADDRESS/LEN...]" >&2
	exit 2
fi
mac=$(printf '%s' "$1" | tr 'A-F' 'a-f')
name=$2
shift 2
if ! ip link show dev "$name" >/dev/null 2>&1; then
	dev=$(ip -o link show | awk -v m="$mac" '$0 ~ "link/ether " m " " { sub(":$", "", $2); sub("@.*", "", $2); print $2; exit }')
	if [ -z "$dev" ]; then
		echo "vm-iface.sh: no interface with MAC $mac" >&2
		exit 1
	fi
	ip link set dev "$dev" down
	ip link set dev "$dev" name "$name"
fi
for a in "$@"; do
	case $a in *:*) nodad=nodad ;; *) nodad= ;; esac
	ip addr replace "$a" dev "$name" $nodad
done
ip link set dev "$name" up
