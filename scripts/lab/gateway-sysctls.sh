#!/bin/sh
# gateway-sysctls.sh: the kernel settings of an opencen gateway (or of the
# lab's on-premises router): forward IPv4/IPv6, and no reverse-path filter,
# since with two gateways in a region a reply may come back through the
# other one. Run on a gateway VM, or by the namespace lab inside a gateway's
# namespace (ip netns exec NS sh gateway-sysctls.sh), where net.* is the
# namespace's own.
set -eu
w() { printf '%s\n' "$2" > "/proc/sys/$(printf '%s' "$1" | tr . /)"; }
w net.ipv4.ip_forward 1
w net.ipv4.conf.all.rp_filter 0
w net.ipv4.conf.default.rp_filter 0
for d in /proc/sys/net/ipv4/conf/*/rp_filter; do printf '0\n' > "$d"; done
if [ -d /proc/sys/net/ipv6 ]; then
	w net.ipv6.conf.all.forwarding 1
fi
