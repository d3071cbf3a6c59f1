#!/usr/bin/env bash
# Makes sure the system tools natwall's tests, demo and BPF build need are
# present. As root on Debian or Ubuntu it installs what is missing with
# apt-get; anywhere else it names what is missing and fails.
set -euo pipefail

# command -> Debian package
declare -A tools=(
	[clang]=clang
	[llvm-strip]=llvm
	[ip]=iproute2
	[iptables]=iptables
	[nft]=nftables
	[ipset]=ipset
	[ethtool]=ethtool
	[tcpdump]=tcpdump
	[ping]=iputils-ping
	[traceroute]=traceroute
	[nsenter]=util-linux
	[curl]=curl
	[systemd-analyze]=systemd
	[promtool]=prometheus
)
# headers -> Debian package
declare -A headers=(
	[/usr/include/bpf/bpf_helpers.h]=libbpf-dev
	[/usr/include/linux/bpf.h]=linux-libc-dev
)

missing=()
for cmd in "${!tools[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
for h in "${!headers[@]}"; do
	[[ -e $h ]] || missing+=("${headers[$h]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v go >/dev/null 2>&1; then
	echo "natwall needs Go (see go.mod for the version); install it first." >&2
	exit 1
fi

. /etc/os-release 2>/dev/null || true
if [[ $(id -u) -eq 0 && ( ${ID:-} == debian || ${ID:-} == ubuntu || ${ID_LIKE:-} == *debian* ) ]]; then
	echo "installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	exit 0
fi

echo "natwall's tests need these packages (Debian/Ubuntu names): ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
	echo "run as root (sudo) and they are installed automatically on Debian or Ubuntu" >&2
fi
exit 1
