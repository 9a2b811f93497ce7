#!/usr/bin/env bash
# The ferroswitch demo: one Kubernetes node with two pods, each a network
# namespace whose eth0 is a veth; the host ends are attached to switchd as
# AF_XDP ports, as a CNI built on ferroswitch would (pod side: explicit MAC,
# address, default route via the pod gateway, transmit checksum offload off).
# Flows come from the embedded default demo/node-flows.txt (port security,
# ARP responder for the gateways, L2, routing with MAC rewrite and dec_ttl),
# programmed with flowctl. Then real traffic: ping both ways (TTL 63: one
# routed hop), a 3 s iperf3 TCP run with its throughput, a trace, and
# dump-flows / dump-ports / show. Everything (namespaces, veths, switchd,
# temp directory) carries this run's pid and is removed on exit, even on
# failure or Ctrl-C.
#
# Usage (as root on Debian 12): ./scripts/demo.sh
#   DEMO_CHECK=1 ./scripts/demo.sh   also asserts the results (used by scripts/test.sh):
#                                    non-zero exit on a lost ping or a failed iperf3
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (namespaces, veths, AF_XDP)" >&2; exit 1; }

cargo build --quiet --bins
BIN=target/debug
RUN=$(mktemp -d /tmp/ferroswitch-demo.XXXXXX)
SOCK=$RUN/switchd.sock
TAG=fsd$$                     # fs-demo-<pid>: namespaces; interface names stay <= 15 bytes
NS_A=fs-demo-$$-a; NS_B=fs-demo-$$-b
IF_A=${TAG}a; IF_B=${TAG}b
SW_PID=""
cleanup() {
  set +e
  [ -n "$SW_PID" ] && kill "$SW_PID" 2>/dev/null && wait "$SW_PID" 2>/dev/null
  ip link del "$IF_A" 2>/dev/null
  ip link del "$IF_B" 2>/dev/null
  ip netns del "$NS_A" 2>/dev/null
  ip netns del "$NS_B" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fc() { echo "\$ flowctl $*" >&2; "$BIN/flowctl" --socket "$SOCK" "$@"; }
in_ns() { local ns=$1; shift; echo "[$ns]\$ $*" >&2; ip netns exec "$ns" "$@"; }
fail() { echo "demo check failed: $*" >&2; exit 1; }
check() { [ "${DEMO_CHECK:-0}" = 1 ]; }

A_MAC=02:00:0a:f4:01:02; B_MAC=02:00:0a:f4:02:02
A_IP=10.244.1.2; B_IP=10.244.2.2

say "start switchd (bridge br0, control socket $SOCK)"
"$BIN/switchd" --socket "$SOCK" --state-dir "$RUN/state" 2>"$RUN/switchd.log" &
SW_PID=$!
# switchd opens its socket only once it is ready (state restored).
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$RUN/switchd.log" >&2; fail "switchd did not start"; }

say "create two pods: network namespaces with eth0 on a veth (what a CNI does)"
pod() { # pod NS HOST_IF MAC CIDR GATEWAY
  ip netns add "$1"
  ip link add "$2" type veth peer name eth0 netns "$1"
  echo 1 >"/proc/sys/net/ipv6/conf/$2/disable_ipv6"
  ip link set "$2" up
  ip -n "$1" link set lo up
  ip -n "$1" link set eth0 address "$3"
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$1" addr add "$4" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" route add default via "$5"
  # AF_XDP in copy mode hands frames over with partial checksums otherwise.
  ip netns exec "$1" ethtool -K eth0 tx off >/dev/null
  echo "pod $1: eth0 $3 $4 via $5; host end $2"
}
pod "$NS_A" "$IF_A" "$A_MAC" "$A_IP/24" 10.244.1.1
pod "$NS_B" "$IF_B" "$B_MAC" "$B_IP/24" 10.244.2.1

say "attach the pods' host ends as AF_XDP ports"
fc add-port br0 pod-a type=afxdp ifname="$IF_A" ofport=1
fc add-port br0 pod-b type=afxdp ifname="$IF_B" ofport=2

say "program the node pipeline (demo/node-flows.txt: port security, ARP responder, L2, L3)"
fc add-flows br0 demo/node-flows.txt
fc dump-flows br0 --no-stats

say "pod-a pings pod-b and pod-b pings pod-a (routed: one hop, TTL 64 -> 63)"
ping_ab=$(in_ns "$NS_A" ping -n -c 3 -i 0.2 -W 2 "$B_IP" || true); echo "$ping_ab"
ping_ba=$(in_ns "$NS_B" ping -n -c 3 -i 0.2 -W 2 "$A_IP" || true); echo "$ping_ba"
in_ns "$NS_A" ip neigh show dev eth0

say "iperf3: 3 s of TCP from pod-a to pod-b through switchd"
ip netns exec "$NS_B" iperf3 -s -1 -B "$B_IP" >/dev/null 2>&1 &
IPERF_SRV=$!
for _ in $(seq 50); do
  ip netns exec "$NS_B" ss -Hltn "sport = :5201" | grep -q . && break; sleep 0.1
done
iperf_ok=1
iperf_out=$(in_ns "$NS_A" iperf3 -c "$B_IP" -t 3 -f m 2>&1) || iperf_ok=0
kill "$IPERF_SRV" 2>/dev/null || true; wait "$IPERF_SRV" 2>/dev/null || true
echo "$iperf_out" | grep -E 'sender|receiver|error' || echo "$iperf_out"
rate=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1)}' <<<"$iperf_out")
echo "throughput pod-a -> pod-b: ${rate:-?} Mbit/s"

say "trace: why does pod-a reach pod-b?"
fc trace br0 "in_port=1,icmp,dl_src=$A_MAC,dl_dst=0a:58:0a:f4:00:01,nw_src=$A_IP,nw_dst=$B_IP,nw_ttl=64,icmp_type=8"

say "dump-flows"
flows=$(fc dump-flows br0); echo "$flows"
say "dump-ports"
ports=$(fc dump-ports br0); echo "$ports"
say "show"
fc show br0

if check; then
  for d in ab ba; do
    out=ping_$d
    grep -q " 3 received" <<<"${!out}" || fail "ping $d lost packets: ${!out}"
    grep -q "ttl=63" <<<"${!out}" || fail "ping $d not routed in one hop (ttl 63)"
  done
  [ "$iperf_ok" = 1 ] && [ -n "$rate" ] || fail "iperf3 failed: $iperf_out"
  awk -v r="$rate" 'BEGIN { exit !(r > 1) }' || fail "iperf3 carried only $rate Mbit/s"
  grep -q "table=30, n_packets=[1-9][0-9]*, .*nw_dst=$B_IP" <<<"$flows" || fail "the route to pod-b counted nothing"
  grep -q "state=down" < <(fc show br0) && fail "a port reads down"
  echo "demo check: all good"
fi
