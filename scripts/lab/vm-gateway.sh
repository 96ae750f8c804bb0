#!/bin/sh
# vm-gateway.sh NAME LABDIR
#
# VM lab, on a gateway VM: the gateway's sysctls (shared with the namespace
# lab), the lab's config and this gateway's key copied from LABDIR (written
# on the host by the Vagrantfile: lab.yaml and keys/NAME.key) to
# /var/lib/opencen-lab, and, when LABDIR holds a cend binary (the host's
# bin/cend, from make build), a systemd unit running it with the default
# socket /run/opencen/cend.sock.
set -eu
if [ $# -ne 2 ]; then
	echo "usage: vm-gateway.sh NAME LABDIR" >&2
	exit 2
fi
here=$(dirname "$0")
name=$1 labdir=$2
sh "$here/gateway-sysctls.sh"
cat > /etc/sysctl.d/60-opencen-gateway.conf <<CONF
net.ipv4.ip_forward = 1
net.ipv4.conf.all.rp_filter = 0
net.ipv4.conf.default.rp_filter = 0
net.ipv6.conf.all.forwarding = 1
CONF
state=/var/lib/opencen-lab
install -d -m 0755 "$state" "$state/$name"
install -d -m 0700 "$state/keys"
install -m 0644 "$labdir/lab.yaml" "$state/lab.yaml"
install -m 0600 "$labdir/keys/$name.key" "$state/keys/$name.key"
rm -rf "$labdir/keys"
if [ ! -f "$labdir/cend" ]; then
	echo "vm-gateway.sh: no cend uploaded (run make build on the host, then vagrant provision); cend not started"
	exit 0
fi
cend=/usr/local/bin/cend
install -m 0755 "$labdir/cend" "$cend"
[ ! -f "$labdir/cenctl" ] || install -m 0755 "$labdir/cenctl" /usr/local/bin/cenctl
cat > /etc/systemd/system/opencen-cend.service <<UNIT
[Unit]
Description=opencen gateway agent ($name)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$cend --config $state/lab.yaml --gateway $name --socket /run/opencen/cend.sock --state-dir $state/$name --log-format json
ExecReload=/bin/kill -HUP \$MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable opencen-cend.service
systemctl restart opencen-cend.service
