#!/usr/bin/env bash
# =============================================================================
# overlay_bench.sh -- the VXLAN overlay pod-to-pod path (issue 5 "Performance"), switchd against
# the kernel doing the same job, interleaved reps in one run (modelled on perf/veth/veth_bench.sh).
#
#   ./perf/overlay/overlay_bench.sh                          # both dps, 3 reps
#   ./perf/overlay/overlay_bench.sh --reps 5 --seconds 5 --dps "switchd kernel"
#
# Topology (namespaces unique to this run: fs-h15o<PID>-{a,b,n1,n2}):
#   pod A: eth0 02:00:00:00:0a:01 198.18.0.1/24 MTU 1450 <-veth-> node 1: fh15a<PID>
#   pod B: eth0 02:00:00:00:0b:01 198.18.0.2/24 MTU 1450 <-veth-> node 2: fh15b<PID>
#   underlay: node 1 fh15u1<PID> <-veth-> node 2 fh15u2<PID>, VTEPs 192.168.10.1 and .2, VNI 1
# Both pods sit in one L2 segment stretched over VXLAN (RFC 7348), which is exactly what a kernel
# bridge plus a kernel VXLAN device per node does, so both dps do the same work per packet:
# pod veth rx -> forward -> VXLAN encap -> underlay veth -> VXLAN decap -> forward -> pod veth.
#   switchd  one switchd per node (release build, afxdp ports in native mode; its polling thread
#            on SW_CPU, node 2's on SW2_CPU, by default the same CPU), pod port ofport 1,
#            vx0 (type=vxlan local_ip=.. remote_ip=flow key=flow underlay=fh15uN) ofport 10:
#            in_port=1,actions=set_field:192.168.10.M->tun_dst,set_field:1->tun_id,output:10
#            in_port=10,tun_id=1,actions=output:1
#            switchd resolves the remote VTEP's MAC with its own ARP on the underlay.
#   kernel   per node: bridge br0 with the pod's host veth and a VXLAN device (id 1, dstport
#            4789, local/remote fixed, learning off, a static all-zero FDB entry to the remote
#            VTEP), the uplink with the VTEP address.
#
# Per dp and rep (dp order inside a rep is the interleaving: ours, theirs, ours, theirs):
#   udp64_1f_mpps         fs-pktgen (perf/src/bin/fs-pktgen.rs): 64-byte frames (no FCS), 1 flow,
#                         sent from pod A's eth0 by the in-kernel XDP live-frames transmitter
#                         (CPU GEN_CPU), counted on pod B's eth0 by an XDP program that checks the
#                         magic payload; Mpps received over a SECONDS window after WARMUP.
#   udp64_1f_offered_mpps what the generator pushed into pod A's eth0 in the same window.
#   tcp_gbps              iperf3 -t TCP_SECONDS A->B, pods' tx checksum offload off (as a CNI does).
# Output: INFO lines (stderr), then `fs-pktgen summarize` RESULT lines (median, min-max) and
# RATIO lines (switchd's median over the kernel's) on stdout.
#
# CPUs (2 vCPUs): generator, iperf3 and control threads on GEN_CPU=0; the switchd polling
# threads on SW_CPU=1. The kernel forwards, encapsulates and decapsulates in the sender's
# softirq, i.e. on GEN_CPU, sharing the generator's CPU (see docs/perf.md for what that means).
# Cleanup (trap): every process this script started (by PID) and the namespaces (which destroys
# the veths, the bridges, the VXLAN devices and any XDP program).
# =============================================================================
set -u -o pipefail
if [ -z "${FS_H15_SESSION:-}" ] && command -v setsid >/dev/null; then
  FS_H15_SESSION=1 exec setsid --wait "$0" "$@"
fi

DPS=${DPS:-"switchd kernel"}
REPS=${REPS:-3}
SECONDS_W=${SECONDS_W:-5}
WARMUP=${WARMUP:-1}
TCP_SECONDS=${TCP_SECONDS:-5}
GEN_CPU=${GEN_CPU:-0}
SW_CPU=${SW_CPU:-1}
SW2_CPU=${SW2_CPU:-$SW_CPU}       # node 2's polling thread (default: beside node 1's)
KEEP=${KEEP:-0}
NICE=${NICE:--15}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}

while [ $# -gt 0 ]; do
  case $1 in
    --dps) DPS=$2; shift;; --reps) REPS=$2; shift;; --seconds) SECONDS_W=$2; shift;;
    --warmup) WARMUP=$2; shift;; --tcp-seconds) TCP_SECONDS=$2; shift;;
    --bin) BIN=$2; shift;; --keep) KEEP=1;; --nice) NICE=$2; shift;;
    -h|--help) awk 'NR > 2 && /^# =====/ {exit} NR > 2 {sub(/^# ?/, ""); print}' "$0"; exit 0;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2;;
  esac
  shift
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [ -n "${1:-}" ] && [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
stop_pid() {   # TERM, wait up to 5 s, KILL -- by PID only
  local p=${1:-}; alive "$p" || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 1 50); do alive "$p" || return 0; sleep 0.1; done
  log "${2:-pid $p}: KILL"; kill -KILL "$p" 2>/dev/null; sleep 0.2
}

[ "$(id -u)" = 0 ] || die "must run as root"
for b in switchd flowctl fs-pktgen; do [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release -p switch --bin switchd -p flowctl -p perf"; done
"$(dirname "$0")/../../scripts/setup.sh" --bench >/dev/null || die "scripts/setup.sh --bench failed"
command -v iperf3 >/dev/null || die "iperf3 missing (scripts/setup.sh)"

P=fs-h15o$$; A_NS=$P-a; B_NS=$P-b; N1_NS=$P-n1; N2_NS=$P-n2
HOST_A=fh15a$$; HOST_B=fh15b$$; UP1=fh15u1$$; UP2=fh15u2$$
A_MAC=02:00:00:00:0a:01; B_MAC=02:00:00:00:0b:01; A_IP=198.18.0.1; B_IP=198.18.0.2
VTEP1=192.168.10.1; VTEP2=192.168.10.2
RUN=$(mktemp -d /tmp/h15-overlay.XXXXXX) || die mktemp
SAMPLES=$RUN/samples.tsv; : > "$SAMPLES"
in_n() { local n=$1; shift; ip netns exec "$P-n$n" "$@"; }
in_a() { ip netns exec "$A_NS" "$@"; }
in_b() { ip netns exec "$B_NS" "$@"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SAMPLES"; }
taskset -pc "$GEN_CPU" $$ >/dev/null
renice -n "$NICE" -p $$ >/dev/null
[ -w /proc/self/autogroup ] && echo "$NICE" > /proc/$$/autogroup 2>/dev/null

CUR_STOP=""; SRV_PID=""
cleanup() {
  local rc=$? n
  trap - EXIT INT TERM
  stop_pid "$SRV_PID" iperf3
  [ -n "$CUR_STOP" ] && $CUR_STOP
  for n in "$A_NS" "$B_NS" "$N1_NS" "$N2_NS"; do [ -e "/run/netns/$n" ] && ip netns del "$n"; done
  if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "run dir kept: $RUN"; else rm -rf "$RUN"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

topo_up() {
  local n
  for n in "$N1_NS" "$N2_NS" "$A_NS" "$B_NS"; do
    ip netns add "$n" || die "netns add $n"; ip -n "$n" link set lo up
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add "$HOST_A" netns "$N1_NS" type veth peer name eth0 netns "$A_NS" || die "veth A"
  ip link add "$HOST_B" netns "$N2_NS" type veth peer name eth0 netns "$B_NS" || die "veth B"
  ip link add "$UP1" netns "$N1_NS" type veth peer name "$UP2" netns "$N2_NS" || die "veth underlay"
  ip -n "$A_NS" link set eth0 address $A_MAC; ip -n "$B_NS" link set eth0 address $B_MAC
  for n in "$A_NS" "$B_NS"; do ip -n "$n" link set eth0 mtu 1450; done
  ip -n "$A_NS" addr add $A_IP/24 dev eth0; ip -n "$B_NS" addr add $B_IP/24 dev eth0
  ip -n "$A_NS" link set eth0 up; ip -n "$B_NS" link set eth0 up
  ip -n "$N1_NS" link set "$HOST_A" up; ip -n "$N2_NS" link set "$HOST_B" up
  ip -n "$N1_NS" link set "$UP1" up; ip -n "$N2_NS" link set "$UP2" up
  ip -n "$A_NS" neigh replace $B_IP lladdr $B_MAC dev eth0 nud permanent
  ip -n "$B_NS" neigh replace $A_IP lladdr $A_MAC dev eth0 nud permanent
  in_a ethtool -K eth0 tx off >/dev/null; in_b ethtool -K eth0 tx off >/dev/null   # as a CNI does
}
host_gro() { in_n 1 ethtool -K "$HOST_A" gro "$1" >/dev/null 2>&1; in_n 2 ethtool -K "$HOST_B" gro "$1" >/dev/null 2>&1; }
host_reset() {
  local n d
  for n in 1 2; do for d in "$HOST_A" "$HOST_B" "$UP1" "$UP2"; do
    [ -e "/run/netns/$P-n$n" ] || continue
    in_n "$n" ip link show "$d" >/dev/null 2>&1 || continue
    in_n "$n" ip link set dev "$d" xdpgeneric off 2>/dev/null; in_n "$n" ip link set dev "$d" xdpdrv off 2>/dev/null
  done; done
  host_gro off
}

# ----------------------------------------------------------------------------- data planes
# --- switchd (ours): one per node ---
SD1_PID=""; SD2_PID=""
fctl() { local n=$1; shift; "$BIN/flowctl" --socket "$DP_DIR/sd$n.sock" "$@"; }
sd_node_start() {   # sd_node_start N POD_IF UPLINK LOCAL REMOTE
  local n=$1 pod=$2 up=$3 local_ip=$4 remote=$5 sock=$DP_DIR/sd$1.sock pid t cpu=$SW_CPU
  [ "$1" = 2 ] && cpu=$SW2_CPU
  ip netns exec "$P-n$n" sh -c "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf;
    exec taskset -c $GEN_CPU,$cpu $BIN/switchd --pmd-cpus $cpu --socket $sock --state-dir $DP_DIR/state$n" \
    >"$DP_DIR/switchd$n.log" 2>&1 &
  pid=$!
  eval "SD${n}_PID=$pid"
  for t in $(seq 1 100); do [ -S "$sock" ] && break; alive "$pid" || break; sleep 0.1; done
  [ -S "$sock" ] || { cat "$DP_DIR/switchd$n.log" >&2; return 1; }
  { fctl "$n" add-port br0 pod type=afxdp ifname="$pod" xdp-mode=native ofport=1 &&
    fctl "$n" add-port br0 vx0 type=vxlan local_ip="$local_ip" remote_ip=flow key=flow underlay="$up" ofport=10 &&
    fctl "$n" add-flow br0 "in_port=1,actions=set_field:$remote->tun_dst,set_field:1->tun_id,output:10" &&
    fctl "$n" add-flow br0 "in_port=10,tun_id=1,actions=output:1"; } >>"$DP_DIR/setup.log" 2>&1
}
dp_switchd_start() {
  sd_node_start 1 "$HOST_A" "$UP1" $VTEP1 $VTEP2 && sd_node_start 2 "$HOST_B" "$UP2" $VTEP2 $VTEP1
}
dp_switchd_stop() {
  [ -n "$SD1_PID" ] && { fctl 1 dump-tunnels br0 > "$DP_DIR/tunnels1.txt" 2>&1; fctl 1 dump-ports br0 > "$DP_DIR/ports1.txt" 2>&1; }
  [ -n "$SD2_PID" ] && { fctl 2 dump-tunnels br0 > "$DP_DIR/tunnels2.txt" 2>&1; fctl 2 dump-ports br0 > "$DP_DIR/ports2.txt" 2>&1; }
  stop_pid "$SD1_PID" switchd1; stop_pid "$SD2_PID" switchd2; SD1_PID=""; SD2_PID=""
}

# --- kernel (theirs): bridge + VXLAN device per node ---
k_node_start() {   # k_node_start N POD_IF UPLINK LOCAL REMOTE
  local n=$1 pod=$2 up=$3 local_ip=$4 remote=$5
  in_n "$n" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
  in_n "$n" ip addr add "$local_ip/24" dev "$up" &&
  in_n "$n" ip link add vx1 type vxlan id 1 local "$local_ip" dstport 4789 dev "$up" nolearning &&
  in_n "$n" bridge fdb append 00:00:00:00:00:00 dev vx1 dst "$remote" &&
  in_n "$n" ip link add br0 type bridge && in_n "$n" ip link set br0 up &&
  in_n "$n" ip link set vx1 master br0 && in_n "$n" ip link set vx1 up &&
  in_n "$n" ip link set "$pod" master br0
}
dp_kernel_start() {
  k_node_start 1 "$HOST_A" "$UP1" $VTEP1 $VTEP2 && k_node_start 2 "$HOST_B" "$UP2" $VTEP2 $VTEP1
}
dp_kernel_stop() {
  local n up
  for n in 1 2; do
    [ "$n" = 1 ] && up=$UP1 || up=$UP2
    in_n "$n" ip -s link show vx1 > "$DP_DIR/vx1-n$n.txt" 2>&1
    in_n "$n" ip link del br0 2>/dev/null; in_n "$n" ip link del vx1 2>/dev/null
    in_n "$n" ip addr flush dev "$up" 2>/dev/null
  done
  return 0
}

# ----------------------------------------------------------------------------- measurements
cpu_snap() { awk -v a="cpu$GEN_CPU" -v b="cpu$SW_CPU" '$1==a || $1==b {printf "%s %d %d ", $1, $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
cpu_pct() { awk -v s0="$1" -v s1="$2" -v c="$3" 'BEGIN { n = split(s0, x, " "); split(s1, y, " ");
  for (i = 1; i <= n; i += 3) if (x[i] == c) { b = y[i+1] - x[i+1]; t = y[i+2] - x[i+2] }
  printf "%.0f", (t > 0) ? 100 * b / t : 0 }'; }

udp_test() {   # udp_test DP REP
  local dp=$1 rep=$2 out c0 c1 rx tx
  host_gro on
  c0=$(cpu_snap)
  out=$(taskset -c "$GEN_CPU" "$BIN/fs-pktgen" run --netns "$A_NS" --iface eth0 --dmac $B_MAC --smac $A_MAC \
        --sip $A_IP --dip $B_IP --size 64 --flows 1 --warmup "$WARMUP" --duration "$SECONDS_W" \
        --rx-netns "$B_NS" --rx-iface eth0 2>>"$RUN/pktgen.err")
  c1=$(cpu_snap)
  host_gro off
  rx=$(printf '%s' "$out" | tr ' ' '\n' | awk -F= '$1=="rx_mpps" {print $2}')
  tx=$(printf '%s' "$out" | tr ' ' '\n' | awk -F= '$1=="tx_mpps" {print $2}')
  [ -n "$rx" ] || { log "generator failed: $(tail -3 "$RUN/pktgen.err")"; rx=NaN; tx=NaN; }
  record "$dp" udp64_1f_mpps "$rep" "$rx"; record "$dp" udp64_1f_offered_mpps "$rep" "$tx"
  log "INFO dp=$dp rep=$rep size=64 delivered=${rx}Mpps offered=${tx}Mpps" \
      "cpu$GEN_CPU=$(cpu_pct "$c0" "$c1" "cpu$GEN_CPU")% cpu$SW_CPU=$(cpu_pct "$c0" "$c1" "cpu$SW_CPU")%"
}

tcp_test() {
  local dp=$1 rep=$2 out gbps t
  in_b taskset -c "$GEN_CPU" iperf3 -s -1 -B $B_IP -p 5201 >"$RUN/iperf3-srv.log" 2>&1 &
  SRV_PID=$!
  for t in $(seq 1 50); do in_b ss -ltn 2>/dev/null | grep -q "$B_IP:5201" && break; sleep 0.1; done
  out=$(in_a timeout $((TCP_SECONDS + 20)) taskset -c "$GEN_CPU" iperf3 -c $B_IP -p 5201 -t "$TCP_SECONDS" -J --connect-timeout 3000 2>&1)
  gbps=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: print("NaN")')
  stop_pid "$SRV_PID" iperf3; wait "$SRV_PID" 2>/dev/null; SRV_PID=""
  record "$dp" tcp_gbps "$rep" "$gbps"
  log "INFO dp=$dp rep=$rep tcp=${gbps}Gbit/s"
}

run_dp() {   # run_dp DP REP
  local dp=$1 t ok=0
  DP_DIR=$RUN/$dp-r$2; mkdir -p "$DP_DIR"
  host_reset
  CUR_STOP="dp_${dp}_stop"
  if ! "dp_${dp}_start"; then log "dp $dp failed to start (logs in $DP_DIR)"; $CUR_STOP; CUR_STOP=""; KEEP=1; return 1; fi
  # The first packets wait for the underlay ARP (switchd) / bridge setup: ping until it passes.
  for t in $(seq 1 20); do in_a ping -q -c 1 -W 1 $B_IP >/dev/null 2>&1 && { ok=1; break; }; done
  [ "$ok" = 1 ] || log "WARNING dp=$dp: ping A->B fails"
  udp_test "$dp" "$2"
  tcp_test "$dp" "$2"
  $CUR_STOP; CUR_STOP=""
}

log "run dir $RUN; dps: $DPS; reps $REPS; ${SECONDS_W}s windows; load: $(cut -d' ' -f1-3 /proc/loadavg)"
topo_up
for rep in $(seq 1 "$REPS"); do
  for dp in $DPS; do log "=== rep $rep/$REPS dp $dp"; run_dp "$dp" "$rep" || true; done
done
cp "$SAMPLES" "$RUN/samples-final.tsv"
"$BIN/fs-pktgen" summarize "$SAMPLES" --ratio-to switchd | tee "$RUN/results.txt"
log "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
