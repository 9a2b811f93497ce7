#!/usr/bin/env bash
# =============================================================================
# veth_bench.sh -- pod-to-pod forwarding over veth, measured interleaved for several data
# planes ("dps") in one run: switchd (ferroswitch, afxdp ports), the Linux bridge, and OVS's
# userspace datapath (netdev bridge, afxdp ports, native then generic).
#
#   ./perf/veth/veth_bench.sh                                  # all dps, 3 reps
#   ./perf/veth/veth_bench.sh --dps "switchd linux-bridge" --reps 5 --seconds 5
#
# Topology (namespaces unique to this run: fs-h1v<PID>-{a,b,sw}):
#   pod A: eth0 02:00:00:00:0a:01 198.18.0.1/24 <-veth-> sw ns: fsh1a<PID> (port 1)
#   pod B: eth0 02:00:00:00:0b:01 198.18.0.2/24 <-veth-> sw ns: fsh1b<PID> (port 2)
# Every dp forwards port 1 -> port 2 and back (switchd and OVS: in_port flows; bridge: FDB).
#
# Per dp and rep (dp order inside a rep is the interleaving: ours, theirs, ours, theirs):
#   udp<S>_<F>f_mpps   fs-pktgen (perf/src/bin/fs-pktgen.rs): frames of S bytes (no FCS) in
#                      F flows (UDP source ports) sent from pod A's eth0 at the generator's
#                      maximum by the in-kernel XDP live-frames transmitter (CPU GEN_CPU),
#                      counted on pod B's eth0 by an XDP program that checks the magic payload.
#                      Mpps received over a SECONDS window after WARMUP. Tests: SIZES x FLOWS.
#   udp<S>_<F>f_offered_mpps  what the generator pushed into pod A's eth0 in the same window.
#   tcp_gbps           iperf3 -t TCP_SECONDS A->B, pods' tx checksum offload off (as a CNI does).
#   sw_cpu_pct         switchd only: its process CPU % (utime+stime, /proc/PID/stat) while
#                      forwarding the first UDP test; sw_idle_cpu_pct: same, idle for IDLE_SECONDS
#                      with its ports attached and no traffic.
#   switchd-alt        optional dp: switchd again with the binary SWITCHD_ALT (A/B of a change).
#   switchd-offload    optional dp: switchd with xdp-offload=true on both ports, so the in_port
#                      flows' megaflows are forwarded by switchd's XDP program in the kernel
#                      (docs/architecture.md "XDP offload"); the pods' eth0 get GRO on while it
#                      runs (an XDP redirect into a veth needs NAPI on the peer). RATIO lines are
#                      then also printed relative to it.
#   window_*           the polling thread during the measured window only (after WARMUP): its
#                      CPU share, voluntary/involuntary context switches per second, and the CPU
#                      time of ksoftirqd on SW_CPU (softirq work the kernel deferred to a thread
#                      that competes with the polling thread). Recorded as win_poll_cpu_pct,
#                      win_vol_cs_per_s, win_ksoftirqd_pct.
#   pmd-perf-*.txt     switchd's `flowctl pmd-perf-show` / OVS's `dpif-netdev/pmd-perf-show` after the
#                      first UDP test (in the run dir); nic-*.txt: veth counter deltas per test;
#                      with --profile, perf-top.txt: where the polling thread's cycles went.
# Output: INFO lines (stderr), then `fs-pktgen summarize` RESULT lines (median, min-max) and
# RATIO lines (switchd's median over each other dp's) on stdout. Raw samples and logs stay in
# the run dir (printed) when --keep or on failure.
#
# CPUs (2 vCPUs): generator, iperf3, control threads on GEN_CPU=0; switchd's polling thread
# (--pmd-cpus) and OVS's PMD (pmd-cpu-mask) alone on SW_CPU=1. The Linux bridge forwards in the
# sender's softirq, i.e. on GEN_CPU: it shares the generator's CPU (see docs/perf.md).
# The host veths get GRO on during UDP windows: the XDP live-frames transmitter needs NAPI on
# the peer (an XDP program gives that too). Cleanup (trap): every process this script started
# (by PID), the namespaces (which destroys the veths and any XDP program on them), OVS's
# private dirs under /tmp/h1-ovs.
# =============================================================================
set -u -o pipefail
# a session (hence an autogroup) of our own, see NICE below
if [ -z "${FS_H1_SESSION:-}" ] && command -v setsid >/dev/null; then
  FS_H1_SESSION=1 exec setsid --wait "$0" "$@"
fi

DPS=${DPS:-"switchd linux-bridge ovs-afxdp-native ovs-afxdp-generic"}
REPS=${REPS:-3}
SECONDS_W=${SECONDS_W:-5}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"64 1514"}
FLOWS=${FLOWS:-"1 1000"}
TCP_SECONDS=${TCP_SECONDS:-5}
IDLE_SECONDS=${IDLE_SECONDS:-10}
GEN_CPU=${GEN_CPU:-0}
SW_CPU=${SW_CPU:-1}
KEEP=${KEEP:-0}
NICE=${NICE:--15}
PROFILE=${PROFILE:-0}             # 1: perf record the polling thread during each dp's first UDP test                 # niceness of everything measured (see below)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
OVS_VSWITCHD=${OVS_VSWITCHD:-/usr/lib/openvswitch-switch/ovs-vswitchd}
OVS_SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}

while [ $# -gt 0 ]; do
  case $1 in
    --dps) DPS=$2; shift;; --reps) REPS=$2; shift;; --seconds) SECONDS_W=$2; shift;;
    --warmup) WARMUP=$2; shift;; --sizes) SIZES=$2; shift;; --flows) FLOWS=$2; shift;;
    --tcp-seconds) TCP_SECONDS=$2; shift;; --idle-seconds) IDLE_SECONDS=$2; shift;;
    --bin) BIN=$2; shift;; --keep) KEEP=1;; --nice) NICE=$2; shift;; --profile) PROFILE=1;;
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
for b in switchd flowctl fs-pktgen; do [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release --bin switchd --bin flowctl --bin fs-pktgen"; done
# Packages (iperf3, OVS) from the project's own setup script, so a fresh machine can run this.
"$(dirname "$0")/../../scripts/setup.sh" --bench >/dev/null || die "scripts/setup.sh --bench failed"
command -v iperf3 >/dev/null || die "iperf3 missing (scripts/setup.sh)"

P=fs-h1v$$; A_NS=$P-a; B_NS=$P-b; SW_NS=$P-sw
HOST_A=fsh1a$$; HOST_B=fsh1b$$
A_MAC=02:00:00:00:0a:01; B_MAC=02:00:00:00:0b:01; A_IP=198.18.0.1; B_IP=198.18.0.2
RUN=$(mktemp -d /tmp/h1-veth.XXXXXX) || die mktemp
OVS_TOP=/tmp/h1-ovs/$$
SAMPLES=$RUN/samples.tsv; : > "$SAMPLES"
in_sw() { ip netns exec "$SW_NS" "$@"; }
in_a() { ip netns exec "$A_NS" "$@"; }
in_b() { ip netns exec "$B_NS" "$@"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SAMPLES"; }
taskset -pc "$GEN_CPU" $$ >/dev/null   # this script and its children stay off the switch CPU
# The machine is shared with compilers at normal priority (load average 15-18 on 2 vCPUs was
# seen): every data plane, the generator and iperf3 inherit this niceness, so they, and not the
# neighbours' builds, get the CPUs. All data planes are treated the same. With autogroup
# scheduling (/proc/sys/kernel/sched_autogroup_enabled) nice only ranks tasks inside one
# session, so the script runs in a session of its own and gives that session's autogroup the
# niceness too (it vanishes with the session).
renice -n "$NICE" -p $$ >/dev/null
[ -w /proc/self/autogroup ] && echo "$NICE" > /proc/$$/autogroup 2>/dev/null

CUR_STOP=""; SRV_PID=""
cleanup() {
  local rc=$? n
  trap - EXIT INT TERM
  stop_pid "$SRV_PID" iperf3
  [ -n "$CUR_STOP" ] && $CUR_STOP
  for n in "$A_NS" "$B_NS" "$SW_NS"; do [ -e "/run/netns/$n" ] && ip netns del "$n"; done
  rm -rf "$OVS_TOP"; rmdir /tmp/h1-ovs 2>/dev/null
  if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "run dir kept: $RUN"; else rm -rf "$RUN"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

topo_up() {
  local n
  for n in "$SW_NS" "$A_NS" "$B_NS"; do ip netns add "$n" || die "netns add $n"; ip -n "$n" link set lo up; done
  ip link add "$HOST_A" netns "$SW_NS" type veth peer name eth0 netns "$A_NS" || die "veth A"
  ip link add "$HOST_B" netns "$SW_NS" type veth peer name eth0 netns "$B_NS" || die "veth B"
  ip -n "$A_NS" link set eth0 address $A_MAC; ip -n "$B_NS" link set eth0 address $B_MAC
  ip -n "$A_NS" addr add $A_IP/24 dev eth0; ip -n "$B_NS" addr add $B_IP/24 dev eth0
  for n in "$A_NS" "$B_NS" "$SW_NS"; do ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
  ip -n "$A_NS" link set eth0 up; ip -n "$B_NS" link set eth0 up
  ip -n "$SW_NS" link set "$HOST_A" up; ip -n "$SW_NS" link set "$HOST_B" up
  ip -n "$A_NS" neigh replace $B_IP lladdr $B_MAC dev eth0 nud permanent
  ip -n "$B_NS" neigh replace $A_IP lladdr $A_MAC dev eth0 nud permanent
  in_a ethtool -K eth0 tx off >/dev/null; in_b ethtool -K eth0 tx off >/dev/null   # as a CNI does
}
host_gro() { in_sw ethtool -K "$HOST_A" gro "$1" >/dev/null 2>&1; in_sw ethtool -K "$HOST_B" gro "$1" >/dev/null 2>&1; }
host_reset() {
  local d
  for d in "$HOST_A" "$HOST_B"; do
    in_sw ip link set dev "$d" xdpgeneric off 2>/dev/null; in_sw ip link set dev "$d" xdpdrv off 2>/dev/null
    in_sw ip link set dev "$d" nomaster 2>/dev/null; in_sw ip link set dev "$d" promisc off 2>/dev/null
  done
  host_gro off
}
poll_tid() {   # poll_tid PID: the first thread whose name starts with pmd (switchd pmdN, OVS pmd-cNN)
  local t; for t in /proc/"$1"/task/*; do case $(cat "$t/comm" 2>/dev/null) in pmd*) basename "$t"; return;; esac; done
}
ctxsw() { awk '/^voluntary_ctxt_switches/ {v=$2} /^nonvoluntary_ctxt_switches/ {n=$2} END {print v+0, n+0}' "/proc/$1/task/$2/status" 2>/dev/null || echo 0 0; }
thread_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13, $12, $13}' "/proc/$1/task/$2/stat" 2>/dev/null || echo 0 0 0; }
proc_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }  # utime+stime
CLK_TCK=$(getconf CLK_TCK)
KSOFTIRQD=$(pgrep -x "ksoftirqd/$SW_CPU" | head -1)
window_probe() {   # window_probe PID TID OUT: thread ticks + ctxsw + ksoftirqd ticks, WARMUP..end
  local a b ka kb
  sleep "$WARMUP"; sleep 0.2
  a="$(date +%s.%N) $(thread_ticks "$1" "$2") $(ctxsw "$1" "$2")"
  ka=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$KSOFTIRQD/stat" 2>/dev/null || echo 0)
  sleep "$(awk -v d="$SECONDS_W" 'BEGIN {print (d > 1) ? d - 0.5 : d / 2}')"
  b="$(date +%s.%N) $(thread_ticks "$1" "$2") $(ctxsw "$1" "$2")"
  kb=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$KSOFTIRQD/stat" 2>/dev/null || echo 0)
  echo "$a $ka $b $kb" > "$3"
}

# ----------------------------------------------------------------------------- data planes
# --- switchd (ours): afxdp ports in native mode, one polling thread on SW_CPU ---
SD_PID=""; SD_SOCK=""
fctl() { "$BIN/flowctl" --socket "$SD_SOCK" "$@"; }
dp_switchd_start() {
  SD_SOCK=$DP_DIR/sd.sock
  # ip netns exec gives a private mount ns with the netns's /sys; libxdp wants a bpffs there.
  # Both CPUs allowed: switchd pins its polling thread to SW_CPU and its control thread to the rest.
  # A session (autogroup) of its own with our niceness, exactly as OVS gets (it --detach-es):
  # sharing the script's autogroup would split that group's weight between the generator on
  # GEN_CPU and the polling thread on SW_CPU, and give switchd's polling thread about half the
  # weight OVS's PMD has on SW_CPU against the neighbours' compilers (see docs/perf.md).
  ip netns exec "$SW_NS" sh -c "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf;
    exec setsid taskset -c $GEN_CPU,$SW_CPU ${SWITCHD_BIN:-$BIN/switchd} --pmd-cpus $SW_CPU --socket $SD_SOCK --state-dir $DP_DIR/state" \
    >"$DP_DIR/switchd.log" 2>&1 &
  SD_PID=$!
  local t; for t in $(seq 1 100); do [ -S "$SD_SOCK" ] && break; alive "$SD_PID" || break; sleep 0.1; done
  [ -S "$SD_SOCK" ] || { cat "$DP_DIR/switchd.log" >&2; return 1; }
  [ "$(cat /proc/$SD_PID/comm 2>/dev/null)" = switchd ] || log "WARNING: pid $SD_PID is not switchd"
  [ -w "/proc/$SD_PID/autogroup" ] && echo "$NICE" > "/proc/$SD_PID/autogroup" 2>/dev/null
  fctl add-port br0 pa type=afxdp ifname="$HOST_A" xdp-mode=native ofport=1 ${SD_PORT_OPTS:-} &&
  fctl add-port br0 pb type=afxdp ifname="$HOST_B" xdp-mode=native ofport=2 ${SD_PORT_OPTS:-} &&
  fctl add-flow br0 in_port=1,actions=output:2 && fctl add-flow br0 in_port=2,actions=output:1
}
dp_switchd_stop() { stop_pid "$SD_PID" switchd; SD_PID=""; }
# switchd-alt: another switchd binary (SWITCHD_ALT=path), e.g. before/after a change, same run
dp_switchd_alt_start() { [ -x "${SWITCHD_ALT:-}" ] || { log "switchd-alt needs SWITCHD_ALT=/path/to/switchd"; return 1; }
  SWITCHD_BIN=$SWITCHD_ALT dp_switchd_start; }
dp_switchd_alt_stop() { dp_switchd_stop; }
dp_switchd_alt_perf() { dp_switchd_perf "$@"; }
# switchd-offload: the same switchd, flows offloaded to its XDP program (needs NAPI on the pods' eth0)
dp_switchd_offload_start() {
  in_a ethtool -K eth0 gro on >/dev/null; in_b ethtool -K eth0 gro on >/dev/null
  SD_PORT_OPTS=xdp-offload=true dp_switchd_start
}
dp_switchd_offload_stop() {
  [ -n "$SD_PID" ] && fctl offload-show br0 > "$DP_DIR/offload-end.txt" 2>&1
  dp_switchd_stop; in_a ethtool -K eth0 gro off >/dev/null; in_b ethtool -K eth0 gro off >/dev/null
}
dp_switchd_offload_perf() { dp_switchd_perf "$@"; fctl offload-show br0 > "$DP_DIR/offload-$1.txt" 2>&1; }
dp_switchd_idle() {   # switchd's CPU use with ports attached and no traffic
  local t0 t1; t0=$(proc_ticks "$SD_PID"); sleep "$IDLE_SECONDS"; t1=$(proc_ticks "$SD_PID")
  awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$IDLE_SECONDS" 'BEGIN {printf "%.1f", 100 * d / hz / s}'
}
dp_switchd_perf() { fctl pmd-perf-show br0 > "$DP_DIR/pmd-perf-$1.txt" 2>&1; fctl dump-ports br0 > "$DP_DIR/ports-$1.txt" 2>&1; }

# --- Linux bridge (theirs: the kernel doing the same job) ---
dp_linux_bridge_start() {
  in_sw sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
  in_sw ip link add br0 type bridge && in_sw ip link set br0 up &&
  in_sw ip link set "$HOST_A" master br0 && in_sw ip link set "$HOST_B" master br0
}
dp_linux_bridge_stop() { in_sw ip link del br0 2>/dev/null; return 0; }

# --- OVS userspace datapath, afxdp ports, private db/run/log dirs under /tmp/h1-ovs ---
OVSDB_PID=""; VSW_PID=""; OVS_DIR=""
ovs_vsctl() { ovs-vsctl --db="unix:$OVS_DIR/db.sock" --timeout=30 "$@"; }
ovs_start() {   # ovs_start XDP_MODE
  OVS_DIR=$OVS_TOP/$DP_NAME-r$REP; mkdir -p "$OVS_DIR"
  export OVS_RUNDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR
  ovsdb-tool create "$OVS_DIR/conf.db" "$OVS_SCHEMA" || return 1
  taskset -c "$GEN_CPU" ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVS_DIR/db.sock" \
    --pidfile="$OVS_DIR/ovsdb-server.pid" --log-file="$OVS_DIR/ovsdb-server.log" \
    --unixctl="$OVS_DIR/ovsdb-server.ctl" --detach 2>>"$DP_DIR/ovs-console.log" || return 1
  OVSDB_PID=$(cat "$OVS_DIR/ovsdb-server.pid")
  ovs_vsctl --no-wait init
  ovs_vsctl --no-wait set Open_vSwitch . other_config:pmd-cpu-mask="$(printf '0x%x' $((1 << SW_CPU)))"
  ip netns exec "$SW_NS" sh -c "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf;
    exec taskset -c $GEN_CPU $OVS_VSWITCHD unix:$OVS_DIR/db.sock --pidfile=$OVS_DIR/ovs-vswitchd.pid \
      --log-file=$OVS_DIR/ovs-vswitchd.log --unixctl=$OVS_DIR/vswitchd.ctl --detach" 2>>"$DP_DIR/ovs-console.log" || return 1
  VSW_PID=$(cat "$OVS_DIR/ovs-vswitchd.pid")
  # --detach calls setsid(): OVS gets an autogroup of its own; give it our niceness like everyone
  renice -n "$NICE" -p "$VSW_PID" "$OVSDB_PID" >/dev/null
  [ -w "/proc/$VSW_PID/autogroup" ] && { echo "$NICE" > "/proc/$VSW_PID/autogroup"; echo "$NICE" > "/proc/$OVSDB_PID/autogroup"; } 2>/dev/null
  ovs_vsctl add-br h1br0 -- set bridge h1br0 datapath_type=netdev fail_mode=secure || return 1
  local p i=1
  for p in "$HOST_A" "$HOST_B"; do
    ovs_vsctl add-port h1br0 "$p" -- set Interface "$p" type=afxdp options:xdp-mode="$1" \
      options:use-need-wakeup=false ofport_request=$i || return 1
    i=$((i + 1))
  done
  ovs-ofctl add-flow "unix:$OVS_DIR/h1br0.mgmt" in_port=1,actions=output:2 &&
  ovs-ofctl add-flow "unix:$OVS_DIR/h1br0.mgmt" in_port=2,actions=output:1 || return 1
  for p in "$HOST_A" "$HOST_B"; do
    local err; err=$(ovs_vsctl get Interface "$p" error 2>/dev/null)
    [ -z "$err" ] || [ "$err" = '[]' ] || { log "OVS port $p: $err"; return 1; }
  done
}
ovs_stop() {
  [ -n "$OVS_DIR" ] || return 0
  if alive "$VSW_PID"; then
    ovs-appctl -t "$OVS_DIR/vswitchd.ctl" dpif-netdev/pmd-perf-show > "$OVS_DIR/pmd-perf-final.txt" 2>&1
    cp "$OVS_DIR/pmd-perf-final.txt" "$DP_DIR/" 2>/dev/null
    timeout 10 ovs-appctl -t "$OVS_DIR/vswitchd.ctl" exit --cleanup >/dev/null 2>&1
    stop_pid "$VSW_PID" ovs-vswitchd
  fi
  stop_pid "$OVSDB_PID" ovsdb-server
  cp "$OVS_DIR"/*.log "$DP_DIR/" 2>/dev/null
  host_reset   # OVS leaves its generic XDP program behind (BENCH.md)
  OVS_DIR=""; VSW_PID=""; OVSDB_PID=""; unset OVS_RUNDIR OVS_LOGDIR OVS_DBDIR
  return 0
}
ovs_perf() { ovs-appctl -t "$OVS_DIR/vswitchd.ctl" dpif-netdev/pmd-perf-show > "$DP_DIR/pmd-perf-$1.txt" 2>&1; ovs-appctl -t "$OVS_DIR/vswitchd.ctl" dpif-netdev/pmd-stats-clear >/dev/null 2>&1; }
dp_ovs_afxdp_native_start() { ovs_start native; }
dp_ovs_afxdp_generic_start() { ovs_start generic; }
dp_ovs_afxdp_native_stop() { ovs_stop; }
dp_ovs_afxdp_generic_stop() { ovs_stop; }
dp_ovs_afxdp_native_perf() { ovs_perf "$1"; }
dp_ovs_afxdp_generic_perf() { ovs_perf "$1"; }

# ----------------------------------------------------------------------------- measurements
cpu_snap() { awk -v a="cpu$GEN_CPU" -v b="cpu$SW_CPU" '$1==a || $1==b {printf "%s %d %d ", $1, $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
cpu_pct() { awk -v s0="$1" -v s1="$2" -v c="$3" 'BEGIN { n = split(s0, x, " "); split(s1, y, " ");
  for (i = 1; i <= n; i += 3) if (x[i] == c) { b = y[i+1] - x[i+1]; t = y[i+2] - x[i+2] }
  printf "%.0f", (t > 0) ? 100 * b / t : 0 }'; }

nic_snap() {   # every ethtool -S and ip -s counter of the four veth ends, one "dev.name value" a line
  { in_sw ethtool -S "$HOST_A" | sed "s/^ */A-host./"; in_sw ethtool -S "$HOST_B" | sed "s/^ */B-host./"
    in_a ethtool -S eth0 | sed "s/^ */A-pod./"; in_b ethtool -S eth0 | sed "s/^ */B-pod./"
    for d in "$HOST_A" "$HOST_B"; do for f in rx_packets rx_dropped tx_packets tx_dropped; do
      echo "$d.$f: $(in_sw cat /sys/class/net/$d/statistics/$f)"; done; done
  } 2>/dev/null | awk -F': *' 'NF == 2 && $2 ~ /^[0-9]+$/ {print $1, $2}'
}
nic_delta() { awk 'NR == FNR {a[$1] = $2; next} ($2 - a[$1]) != 0 {printf "%-40s %d\n", $1, $2 - a[$1]}' "$1" "$2"; }

udp_test() {   # udp_test DP REP SIZE FLOWS FIRST(0|1)
  local dp=$1 rep=$2 size=$3 flows=$4 first=$5 id=${1//-/_} out c0 c1 t0 t1 rx tx extra=""
  host_gro on
  local ppid=${SD_PID:-$VSW_PID} ptid="" p0=0 p1=0 u0=0 u1=0 k0=0 k1=0 w0 w1
  [ -n "$ppid" ] && ptid=$(poll_tid "$ppid")
  local v0=0 n0=0 v1=0 n1=0
  [ -n "$ptid" ] && read -r p0 u0 k0 <<<"$(thread_ticks "$ppid" "$ptid")" && read -r v0 n0 <<<"$(ctxsw "$ppid" "$ptid")"
  nic_snap > "$RUN/nic0"
  w0=$(date +%s.%N)
  c0=$(cpu_snap); [ -n "$SD_PID" ] && t0=$(proc_ticks "$SD_PID")
  local prof="" probe=""
  [ -n "$ptid" ] && { window_probe "$ppid" "$ptid" "$RUN/window" & probe=$!; }
  if [ "$PROFILE" = 1 ] && [ "$first" = 1 ] && [ -n "$ptid" ] && command -v perf >/dev/null; then
    ( sleep "$WARMUP"; exec perf record -q -g -t "$ptid" -o "$DP_DIR/perf.data" -- sleep "$SECONDS_W" ) >/dev/null 2>&1 &
    prof=$!
  fi
  out=$(taskset -c "$GEN_CPU" "$BIN/fs-pktgen" run --netns "$A_NS" --iface eth0 --dmac $B_MAC --smac $A_MAC \
        --sip $A_IP --dip $B_IP --size "$size" --flows "$flows" --warmup "$WARMUP" --duration "$SECONDS_W" \
        --rx-netns "$B_NS" --rx-iface eth0 2>>"$RUN/pktgen.err")
  c1=$(cpu_snap); [ -n "$SD_PID" ] && t1=$(proc_ticks "$SD_PID")
  [ -n "$ptid" ] && read -r p1 u1 k1 <<<"$(thread_ticks "$ppid" "$ptid")" && read -r v1 n1 <<<"$(ctxsw "$ppid" "$ptid")"
  w1=$(date +%s.%N)
  if [ -n "$prof" ]; then
    wait "$prof" 2>/dev/null
    perf report -i "$DP_DIR/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -40 > "$DP_DIR/perf-top.txt"
  fi
  nic_snap > "$RUN/nic1"; nic_delta "$RUN/nic0" "$RUN/nic1" > "$DP_DIR/nic-udp${size}_${flows}f.txt"
  host_gro off
  if [ -n "$probe" ]; then   # the measured window only (the generator's setup excluded)
    wait "$probe" 2>/dev/null
    local wv; wv=$(awk -v hz="$CLK_TCK" '{ t = $8 - $1; if (t <= 0) exit;
      printf "%.1f %.0f %.0f %.1f", 100 * ($9 - $2) / hz / t, ($12 - $5) / t, ($13 - $6) / t, 100 * ($14 - $7) / hz / t }' "$RUN/window" 2>/dev/null)
    if [ -n "$wv" ]; then
      read -r wc wvol winv wks <<<"$wv"
      record "$dp" "win_poll_cpu_pct_udp${size}_${flows}f" "$rep" "$wc"
      record "$dp" "win_vol_cs_per_s_udp${size}_${flows}f" "$rep" "$wvol"
      record "$dp" "win_ksoftirqd_pct_udp${size}_${flows}f" "$rep" "$wks"
      extra="window: poll_thread_cpu=${wc}% vol_cs=${wvol}/s invol_cs=${winv}/s ksoftirqd${SW_CPU}=${wks}%; "
    fi
  fi
  if [ -n "$ptid" ]; then   # the polling thread's own CPU share over the generator's run
    local pc; pc=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.1f", 100 * d / hz / (b - a)}')
    extra="${extra}poll_thread_cpu=${pc}% (user $((u1 - u0)) sys $((k1 - k0)) ticks, ctxsw vol $((v1 - v0)) invol $((n1 - n0))) "
    record "$dp" "poll_cpu_pct_udp${size}_${flows}f" "$rep" "$pc"
  fi
  rx=$(printf '%s' "$out" | tr ' ' '\n' | awk -F= '$1=="rx_mpps" {print $2}')
  tx=$(printf '%s' "$out" | tr ' ' '\n' | awk -F= '$1=="tx_mpps" {print $2}')
  [ -n "$rx" ] || { log "generator failed: $(tail -3 "$RUN/pktgen.err")"; rx=NaN; tx=NaN; }
  record "$dp" "udp${size}_${flows}f_mpps" "$rep" "$rx"; record "$dp" "udp${size}_${flows}f_offered_mpps" "$rep" "$tx"
  if [ -n "$SD_PID" ] && [ "$first" = 1 ]; then
    local pct; pct=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$(awk -v w="$WARMUP" -v d="$SECONDS_W" 'BEGIN {print w + d + 0.4}')" \
      'BEGIN {printf "%.1f", 100 * d / hz / s}')
    record "$dp" sw_cpu_pct "$rep" "$pct"; extra="${extra}switchd_cpu=${pct}%"
  fi
  if [ "$first" = 1 ] && declare -F "dp_${id}_perf" >/dev/null; then "dp_${id}_perf" "udp${size}_${flows}f"; fi
  log "INFO dp=$dp rep=$rep size=$size flows=$flows delivered=${rx}Mpps offered=${tx}Mpps" \
      "cpu$GEN_CPU=$(cpu_pct "$c0" "$c1" "cpu$GEN_CPU")% cpu$SW_CPU=$(cpu_pct "$c0" "$c1" "cpu$SW_CPU")% $extra"
}

tcp_test() {
  local dp=$1 rep=$2 out gbps
  in_b taskset -c "$GEN_CPU" iperf3 -s -1 -B $B_IP -p 5201 >"$RUN/iperf3-srv.log" 2>&1 &
  SRV_PID=$!
  local t; for t in $(seq 1 50); do in_b ss -ltn 2>/dev/null | grep -q "$B_IP:5201" && break; sleep 0.1; done
  out=$(in_a timeout $((TCP_SECONDS + 20)) taskset -c "$GEN_CPU" iperf3 -c $B_IP -p 5201 -t "$TCP_SECONDS" -J --connect-timeout 3000 2>&1)
  gbps=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: print("NaN")')
  stop_pid "$SRV_PID" iperf3; wait "$SRV_PID" 2>/dev/null; SRV_PID=""
  record "$dp" tcp_gbps "$rep" "$gbps"
  log "INFO dp=$dp rep=$rep tcp=${gbps}Gbit/s"
}

run_dp() {   # run_dp DP REP
  local dp=$1 id=${1//-/_} s f first=1
  DP_NAME=$dp; REP=$2; DP_DIR=$RUN/$dp-r$2; mkdir -p "$DP_DIR"
  host_reset
  CUR_STOP="dp_${id}_stop"
  if ! "dp_${id}_start"; then log "dp $dp failed to start (logs in $DP_DIR)"; $CUR_STOP; CUR_STOP=""; KEEP=1; return 1; fi
  in_a ping -q -c 3 -i 0.1 -W 1 $B_IP >/dev/null 2>&1 || log "WARNING dp=$dp: ping A->B fails"
  if [ "$dp" = switchd ] || [ "$dp" = switchd-alt ] || [ "$dp" = switchd-offload ]; then
    local idle; idle=$(dp_switchd_idle); record "$dp" sw_idle_cpu_pct "$2" "$idle"
    log "INFO dp=$dp rep=$2 idle ${IDLE_SECONDS}s: switchd_cpu=${idle}%"
  fi
  for s in $SIZES; do for f in $FLOWS; do
    [ "$s" != 64 ] && [ "$f" != 1 ] && continue   # big frames: 1 flow only
    udp_test "$dp" "$2" "$s" "$f" "$first"; first=0
  done; done
  tcp_test "$dp" "$2"
  [ -n "$SD_PID" ] && fctl dump-ports br0 > "$DP_DIR/ports-end.txt" 2>&1
  $CUR_STOP; CUR_STOP=""; SD_PID=""
}

log "run dir $RUN; dps: $DPS; reps $REPS; ${SECONDS_W}s windows; sizes $SIZES; flows $FLOWS"
topo_up
for rep in $(seq 1 "$REPS"); do
  for dp in $DPS; do log "=== rep $rep/$REPS dp $dp"; run_dp "$dp" "$rep" || true; done
done
cp "$SAMPLES" "$RUN/samples-final.tsv"
"$BIN/fs-pktgen" summarize "$SAMPLES" --ratio-to switchd | tee "$RUN/results.txt"
case " $DPS " in *" switchd-offload "*)
  "$BIN/fs-pktgen" summarize "$SAMPLES" --ratio-to switchd-offload | grep '^RATIO' | tee -a "$RUN/results.txt";;
esac
