#!/bin/sh
# deps.sh SET...: make sure the commands a make target runs are installed.
# SET is demo (the namespace lab and its measurements), test (the whole
# suite) or generate (the eBPF objects). What is missing is installed with
# apt-get when this runs as root on Debian, said in one line; otherwise one
# line says what is missing and how to get it, and the script fails.
set -eu
# Debian keeps bird and ip in sbin, which a user's PATH may lack (root's
# and sudo's have it).
if [ "$(id -u)" != 0 ]; then
	PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
fi

# command:package pairs of each set (a command starting with / is a file
# to find, one starting with @ a package to find installed). The build
# fetches go.mod's modules over HTTPS: a minimal Debian lacks the CA
# certificates for that.
demo="ip:iproute2 ping:iputils-ping iperf3:iperf3 bird:bird2 birdc:bird2 nsenter:util-linux /etc/ssl/certs/ca-certificates.crt:ca-certificates"
test="$demo dot:graphviz vagrant:vagrant @vagrant-libvirt:vagrant-libvirt chromium:chromium systemd-analyze:systemd promtool:prometheus dpkg-deb:dpkg man:man-db debootstrap:debootstrap git:git nft:nftables"
generate="clang:clang llc:llvm /usr/include/bpf/bpf_helpers.h:libbpf-dev"

want=""
for set in "$@"; do
	case "$set" in
	demo) want="$want $demo" ;;
	test) want="$want $test" ;;
	generate) want="$want $generate" ;;
	*) echo "deps.sh: unknown set $set (demo, test, generate)" >&2; exit 2 ;;
	esac
done

missing="" cmds=""
for pair in $want; do
	cmd=${pair%%:*} pkg=${pair#*:}
	case "$cmd" in
	/*) [ -e "$cmd" ] && continue ;;
	@*) dpkg-query -W -f '${Status}' "${cmd#@}" 2>/dev/null | grep -q 'ok installed' && continue ;;
	*) command -v "$cmd" >/dev/null 2>&1 && continue ;;
	esac
	case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
	cmd=${cmd#@}
	cmds="$cmds ${cmd##*/}"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "make deps: installing$missing (for$cmds)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086 # one word per package
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
	echo "make deps: missing$missing (for$cmds): run as root (sudo make ...) to have them installed, or apt-get install$missing" >&2
else
	echo "make deps: missing$missing (for$cmds), and this is no Debian machine (no apt-get): install the commands$cmds by hand" >&2
fi
exit 1
