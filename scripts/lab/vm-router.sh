#!/bin/sh
# vm-router.sh ROUTER_ID LOCAL_AS NEIGHBOR NEIGHBOR_AS on|off NEXTHOP4 NEXTHOP6 PREFIX...
#
# VM lab, on the on-premises router VM: installs BIRD 2, writes its config
# with bird-conf.sh (the same rendering, and the same arguments, as the
# namespace lab's), forwards
# like a gateway (gateway-sysctls.sh), and (re)starts BIRD.
set -eu
here=$(dirname "$0")
if ! command -v bird >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q bird2
fi
sh "$here/gateway-sysctls.sh"
sh "$here/bird-conf.sh" "$@" > /etc/bird/bird.conf.new
bird -p -c /etc/bird/bird.conf.new
mv /etc/bird/bird.conf.new /etc/bird/bird.conf
systemctl enable bird
systemctl restart bird
