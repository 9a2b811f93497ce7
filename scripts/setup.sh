#!/usr/bin/env bash
# Install what building and testing ferroswitch needs on Debian 12 (as root).
# Idempotent: installs only what is missing. Later capabilities (AF_XDP,
# vhost-user, topology tests) add their packages to PACKAGES here, so a fresh
# machine and CI get them from the project's own files.
set -euo pipefail

# AF_XDP (xsk-rs builds libxdp and libbpf from source): clang llvm libelf-dev
# zlib1g-dev libpcap-dev m4 pkg-config. Topology tests: iproute2 (ip netns,
# veth), iputils-ping, iperf3, ethtool, tcpdump.
PACKAGES=(build-essential pkg-config clang llvm libelf-dev zlib1g-dev libpcap-dev m4
          iproute2 iputils-ping iperf3 ethtool tcpdump)
# perf/veth/veth_bench.sh compares switchd with OVS's userspace datapath (afxdp ports).
PACKAGES+=(openvswitch-switch)

need=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# libxdp pins its XDP programs in bpffs; without it, attaching AF_XDP ports
# fails or falls back. Mount it once (root only; harmless when already there).
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/bpf ]; then
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust >= 1.85) not found on PATH" >&2; exit 1; }
