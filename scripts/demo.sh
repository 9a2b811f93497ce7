#!/usr/bin/env bash
# The ferroswitch demo: one Kubernetes node with three pods attached to
# switchd (in-process memory ports for now; AF_XDP veths come with the
# AF_XDP issue), flows programmed with flowctl from the embedded default
# demo/node-flows.txt, traffic flowing (ARP to the pod gateway, pod to pod on
# one subnet, routed between subnets, a spoofed frame dropped), then trace,
# dump-flows and dump-ports. Everything runs in a private temp directory and
# is cleaned up on exit.
#
# Usage (as root on Debian 12): ./scripts/demo.sh
#   DEMO_CHECK=1 ./scripts/demo.sh   also asserts the results (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

cargo build --quiet --bins
BIN=target/debug
RUN=$(mktemp -d /tmp/ferroswitch-demo.XXXXXX)
SOCK=$RUN/switchd.sock
SW_PID=""
cleanup() {
  [ -n "$SW_PID" ] && kill "$SW_PID" 2>/dev/null && wait "$SW_PID" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fc() { echo "\$ flowctl $*" >&2; "$BIN/flowctl" --socket "$SOCK" "$@"; }
fail() { echo "demo check failed: $*" >&2; exit 1; }

say "start switchd (bridge br0, control socket $SOCK)"
"$BIN/switchd" --socket "$SOCK" --state-dir "$RUN/state" 2>"$RUN/switchd.log" &
SW_PID=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$RUN/switchd.log" >&2; fail "switchd did not start"; }

say "attach three pods"
fc add-port br0 pod-a type=memory ofport=1
fc add-port br0 pod-b type=memory ofport=2
fc add-port br0 pod-c type=memory ofport=3

say "program the node pipeline (demo/node-flows.txt: port security, ARP responder, L2, L3)"
fc add-flows br0 demo/node-flows.txt
fc dump-flows br0 --no-stats

A_MAC=02:00:0a:f4:01:02; B_MAC=02:00:0a:f4:01:03; C_MAC=02:00:0a:f4:02:02; GW_MAC=0a:58:0a:f4:00:01

say "pod-a asks ARP for its gateway 10.244.1.1; the switch answers"
fc inject br0 pod-a "arp,dl_src=$A_MAC,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.244.1.2,arp_tpa=10.244.1.1,arp_sha=$A_MAC"
arp_reply=$(fc capture br0 pod-a)
echo "$arp_reply"

say "pod-a pings pod-b (same subnet, L2) and pod-c (routed: MACs rewritten, TTL 64 -> 63)"
fc inject br0 pod-a "icmp,dl_src=$A_MAC,dl_dst=$B_MAC,nw_src=10.244.1.2,nw_dst=10.244.1.3,nw_ttl=64,icmp_type=8"
fc inject br0 pod-a "icmp,dl_src=$A_MAC,dl_dst=$GW_MAC,nw_src=10.244.1.2,nw_dst=10.244.2.2,nw_ttl=64,icmp_type=8"
at_b=$(fc capture br0 pod-b); echo "$at_b"
at_c=$(fc capture br0 pod-c); echo "$at_c"

say "pod-c sends 1000 UDP datagrams to pod-b (routed)"
frames=()
for i in $(seq 1000); do
  frames+=("udp,dl_src=$C_MAC,dl_dst=$GW_MAC,nw_src=10.244.2.2,nw_dst=10.244.1.3,nw_ttl=64,udp_src=$((40000 + i % 50)),udp_dst=5201")
done
fc inject br0 pod-c "${frames[@]}" >/dev/null
n_b=$(fc capture br0 pod-b | grep -c '^frame' || true)
echo "pod-b received $n_b datagrams"

say "pod-a spoofs 10.244.1.99: dropped by port security, counted"
fc inject br0 pod-a "icmp,dl_src=$A_MAC,dl_dst=$B_MAC,nw_src=10.244.1.99,nw_dst=10.244.1.3,nw_ttl=64,icmp_type=8"

say "trace: why does pod-a reach pod-c?"
fc trace br0 "in_port=1,icmp,dl_src=$A_MAC,dl_dst=$GW_MAC,nw_src=10.244.1.2,nw_dst=10.244.2.2,nw_ttl=64,icmp_type=8"

say "dump-flows"
fc dump-flows br0
say "dump-ports"
ports=$(fc dump-ports br0); echo "$ports"
say "show"
fc show br0

if [ "${DEMO_CHECK:-0}" = 1 ]; then
  grep -q "arp,in_port=0,vlan_tci=0x0000,dl_src=$GW_MAC,dl_dst=$A_MAC,arp_spa=10.244.1.1,arp_tpa=10.244.1.2,arp_op=2,arp_sha=$GW_MAC,arp_tha=$A_MAC" <<<"$arp_reply" \
    || fail "no ARP reply from the gateway responder"
  grep -q "dl_src=$A_MAC,dl_dst=$B_MAC,nw_src=10.244.1.2,nw_dst=10.244.1.3,.*nw_ttl=64" <<<"$at_b" || fail "L2 ping not delivered unchanged to pod-b"
  grep -q "dl_src=$GW_MAC,dl_dst=$C_MAC,nw_src=10.244.1.2,nw_dst=10.244.2.2,.*nw_ttl=63" <<<"$at_c" || fail "routed ping not rewritten for pod-c"
  [ "$n_b" = 1000 ] || fail "pod-b received $n_b of 1000 datagrams"
  grep -q "rx drops: explicit_drop=1" <<<"$ports" || fail "spoofed frame not counted as explicit_drop on pod-a"
  fc dump-flows br0 'table=30,ip,nw_dst=10.244.1.3' | grep -q "n_packets=1000," || fail "route to pod-b did not count 1000 packets"
  echo "demo check: all good"
fi
