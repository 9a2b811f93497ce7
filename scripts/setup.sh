#!/usr/bin/env bash
# Install what building and testing ferroswitch needs on Debian 12 (as root).
# Idempotent: installs only what is missing. Later capabilities (AF_XDP,
# vhost-user, topology tests) add their packages to PACKAGES here, so a fresh
# machine and CI get them from the project's own files.
set -euo pipefail

# AF_XDP (xsk-rs builds libxdp and libbpf from source): clang llvm libelf-dev
# (switch/build.rs compiles switchd's XDP program with clang -target bpf
# against libbpf-dev's bpf_helpers.h and linux-libc-dev's linux/bpf.h),
# zlib1g-dev libpcap-dev m4 pkg-config. Topology tests: iproute2 (ip netns,
# veth), iputils-ping, iperf3, ethtool, tcpdump. vhost-user tests with a real
# peer (topology-tests/tests/vhost_user_testpmd.rs): dpdk-dev (dpdk-testpmd).
PACKAGES=(build-essential pkg-config clang llvm libelf-dev zlib1g-dev libpcap-dev m4
          libbpf-dev linux-libc-dev
          iproute2 iputils-ping iperf3 ethtool tcpdump dpdk-dev)
# cni-shim (the ferroswitch CNI plugin): nsenter (util-linux) and sysctl (procps)
# for the pod netns, host-local/tuning IPAM and chaining (containernetworking-plugins,
# also what the CNI end-to-end tests topology-tests/tests/cni*.rs run beside ours).
PACKAGES+=(util-linux procps containernetworking-plugins)
# Benchmarks only (`scripts/setup.sh --bench`, called by perf/veth/veth_bench.sh and
# perf/pvp): the data planes we measure against, OVS's userspace datapath
# (openvswitch-switch, afxdp ports) and OVS-DPDK (openvswitch-switch-dpdk).
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(openvswitch-switch openvswitch-switch-dpdk)
fi

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

# DPDK's testpmd (the vhost-user peer in tests and benchmarks) needs 2 MiB
# hugepages on a mounted hugetlbfs (../shared/BENCH.md pitfall 6). Mount
# /dev/hugepages and reserve 1024 pages if fewer are free (root only;
# idempotent: never lowers a larger reservation).
if [ "$(id -u)" -eq 0 ] && [ -e /proc/sys/vm/nr_hugepages ]; then
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
  free_hp=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
  total_hp=$(cat /proc/sys/vm/nr_hugepages)
  if [ "${free_hp:-0}" -lt 1024 ]; then
    echo $(( total_hp + 1024 - free_hp )) > /proc/sys/vm/nr_hugepages || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust >= 1.85) not found on PATH" >&2; exit 1; }
