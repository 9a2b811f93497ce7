#!/usr/bin/env bash
# pvp.sh -- PVP benchmark: switchd vs OVS-DPDK between two vhost-user ports, same traffic,
# alternately in one run (BENCH.md: a ratio measured in the same run is what counts).
#
#   perf/pvp/pvp.sh [--cases LIST] [--switches "switchd ovs"] [--reps N] [--duration S]
#                   [--warmup S] [--routes N] [--flows N] [--nice N] [--out DIR] [--keep]
#   perf/pvp/pvp.sh --help
#
# Topology (both switches alike): testpmd owns the two vhost-user sockets (virtio-user
# `server=1`) and the switch connects as client (OVS `dpdkvhostuserclient`, switchd
# `type=vhost_user mode=client`), so either switch can restart without the "VM"; testpmd's two
# ports are the traffic source and sink. CPU 1: the switch's polling thread, alone. CPU 0:
# testpmd (main and forwarding lcore), the switch's control threads, this script.
#
# Cases (--cases, comma separated; default: all of them, in this order):
#   loop-64, loop-1518       closed loop, testpmd io forwarding port0<->port1 through the switch
#                            in both directions (`start tx_first`, ~2 x 1024 packets in flight);
#                            1 flow, table 0 forwards by in_port.
#   oneway-64, oneway-1518   closed loop, switch forwards port 1 -> 2 only (port 2 -> drop),
#                            testpmd io-forwards what arrives back into port 1.
#   route-64, route-1518     open loop: testpmd flowgen on both ports, --flows (10000) distinct
#                            destinations 10.253.0.0+i, through a 3-table pipeline: in_port ->
#                            1000 non-overlapping prefixes covering 10.253.0.0/16 (MAC rewrite,
#                            dec_ttl) -> output by in_port. Open loop because a closed loop holds
#                            at most ~2 x queue_size flows (BENCH.md pitfall 4), and dec_ttl would
#                            expire looping packets. Not comparable with the loop-* figures.
# Sizes are Ethernet frames with FCS (RFC 2544): testpmd --txpkts is 4 bytes less.
#
# --switches may also name switchd-alt: switchd again from the binary SWITCHD_ALT (an A/B of a
# change in the same run, e.g. SWITCHD_ALT=/tmp/switchd-before --switches "switchd switchd-alt
# ovs"); report.md then gets a second table, switchd / switchd-alt.
# TESTPMD_EXTRA="--record-burst-stats" adds testpmd options for a diagnostic run (every switch
# alike); testpmd's own busy cycles/packet is always in OUT/fwdstats-*.log (--record-core-cycles).
#
# Per case and repetition the script runs switchd then OVS (OVS first on even repetitions),
# each freshly started, programmed from the same flow file (generated once by pvp-tool, loaded
# by `ovs-ofctl add-flows` and `flowctl add-flows`), with a fresh testpmd. Per window it records
# Mpps = packets testpmd received on both ports / window, and the switch's busy cycles per
# packet (OVS: pmd-stats-clear + pmd-perf-show; switchd: two `flowctl --json pmd-perf-show`).
# Output: OUT/results.tsv (one line per window), OUT/report.md (medians, min-max, ratio),
# logs in OUT. Takes the machine-wide measurement lock (/work/wt/bench.lock) around each
# window's whole switch+testpmd lifetime, never around builds.
#
# Safety: every DPDK process gets --no-pci --in-memory --single-file-segments and only
# net_virtio_user vdevs, file prefix h5pvp<PID>-*; OVS runs with a private db/rundir under
# OUT/ovs; only PIDs this script started are stopped; an EXIT trap cleans up on any failure.
set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CASES=${CASES:-loop-64,loop-1518,oneway-64,oneway-1518,route-64,route-1518}
SWITCHES=${SWITCHES:-switchd ovs}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
ROUTES=${ROUTES:-1000}
FLOWS=${FLOWS:-10000}
QUEUE_SIZE=${QUEUE_SIZE:-1024}
TESTPMD_EXTRA=${TESTPMD_EXTRA:-}   # more testpmd app options (diagnostics), every switch alike
NICE=${NICE:--19}               # nice of testpmd and the switch: this box is shared with builds
GEN_CPU=${GEN_CPU:-0}
SUT_CPU=${SUT_CPU:-1}
OUT=${OUT:-}
KEEP=${KEEP:-0}
LOCK=${LOCK:-/work/wt/bench.lock}
TESTPMD=${TESTPMD:-dpdk-testpmd}
SWITCHD=${SWITCHD:-$ROOT/target/release/switchd}
FLOWCTL=${FLOWCTL:-$ROOT/target/release/flowctl}
PVP_TOOL=${PVP_TOOL:-$ROOT/target/release/pvp-tool}
OVS_VSWITCHD=${OVS_VSWITCHD:-/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}
OVS_SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
HUGEPAGES_NEEDED=${HUGEPAGES_NEEDED:-600}   # 2 MiB pages: OVS limit 768 MiB + testpmd ~300 MiB

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --cases) CASES=$2; shift;; --switches) SWITCHES=$2; shift;; --reps) REPS=$2; shift;;
    --duration) DURATION=$2; shift;; --warmup) WARMUP=$2; shift;; --routes) ROUTES=$2; shift;;
    --flows) FLOWS=$2; shift;; --out) OUT=$2; shift;; --keep) KEEP=1;; --nice) NICE=$2; shift;;
    -h|--help) usage; exit 0;;
    *) echo "pvp.sh: unknown option $1 (see --help)" >&2; exit 2;;
  esac
  shift
done

SWITCHES=${SWITCHES//,/ }   # "switchd,ovs" or "switchd ovs"

log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
isleep() { sleep "$1" & wait $!; }
now() { date +%s.%N; }

[ "$(id -u)" = 0 ] || die "must run as root (hugepages, DPDK)"
for b in "$TESTPMD" "$PVP_TOOL"; do command -v "$b" >/dev/null || die "$b not found (cargo build --release -p perf --bin pvp-tool)"; done
case " $SWITCHES " in *" switchd "*) [ -x "$SWITCHD" ] && [ -x "$FLOWCTL" ] || die "$SWITCHD / $FLOWCTL missing: cargo build --release -p switch --bin switchd -p flowctl";; esac
case " $SWITCHES " in *" switchd-alt "*) [ -x "${SWITCHD_ALT:-}" ] || die "switchd-alt needs SWITCHD_ALT=/path/to/another/switchd";; esac
case " $SWITCHES " in *" ovs "*) [ -x "$OVS_VSWITCHD" ] || die "$OVS_VSWITCHD missing (apt install openvswitch-switch-dpdk)";; esac

mkdir -p /tmp/h5-ovs
if [ -z "$OUT" ]; then OUT=$(mktemp -d /tmp/h5-ovs/pvp.XXXXXX) || die mktemp; else mkdir -p "$OUT"; fi
PREFIX=h5pvp$$
RESULTS=$OUT/results.tsv
[ -f "$RESULTS" ] || echo "# switch case rep mpps cycles_per_pkt   ($(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs)" > "$RESULTS"
log "output in $OUT"

# this shell and what it forks stay off the polling CPU
taskset -pc "$GEN_CPU" $$ >/dev/null || die "taskset"

# ------------------------------------------------------------------ cleanup (EXIT trap)
TP_PID=""; TP_FD=""; OVS_DB_PID=""; OVS_VS_PID=""; SWD_PID=""; LOCKFD=""
stop_pid() {   # PID NAME: TERM, wait up to 10 s, KILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$2 ($pid) ignored TERM: KILL"; kill -KILL "$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  tp_stop; switchd_stop; ovs_stop
  rm -rf /var/run/dpdk/"$PREFIX"-* 2>/dev/null
  if [ "$rc" != 0 ]; then log "failed (rc $rc); logs in $OUT"; fi
  if [ "$KEEP" != 1 ] && [ "$rc" = 0 ]; then rm -rf "$OUT"/ovs "$OUT"/swd "$OUT"/tp-*.in; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ hugepages
hp_free() { awk '/HugePages_Free/ {print $2}' /proc/meminfo; }
if ! mountpoint -q /dev/hugepages; then
  mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages || die "cannot mount hugetlbfs"
fi
if [ "$(hp_free)" -lt "$HUGEPAGES_NEEDED" ]; then
  want=$(( $(cat /proc/sys/vm/nr_hugepages) + HUGEPAGES_NEEDED - $(hp_free) ))
  log "raising vm.nr_hugepages to $want (need $HUGEPAGES_NEEDED free 2 MiB pages)"
  echo "$want" > /proc/sys/vm/nr_hugepages
  [ "$(hp_free)" -ge "$HUGEPAGES_NEEDED" ] || die "only $(hp_free) free hugepages"
fi

# ------------------------------------------------------------------ CPU share
# With autogroup scheduling (kernel.sched_autogroup_enabled=1) a process's nice value only
# weighs against its own session: every other helper's build is a session of its own, so a
# nice -10 polling thread still got ~14 % of its CPU here. So testpmd and the switch run in a
# session of their own (setsid) and that session's autogroup gets NICE (/proc/PID/autogroup).
boost() {  # PID, called once PID is up: before its setsid, the write would hit OUR autogroup
  [ "$(ps -o sid= -p "$1" | tr -d ' ')" = "$1" ] || { log "WARNING: $1 is not a session leader; not boosted"; return 0; }
  echo "$NICE" > "/proc/$1/autogroup" 2>/dev/null || log "WARNING: cannot set the autogroup nice of $1"
  return 0
}

# ------------------------------------------------------------------ testpmd (FIFO-driven)
SOCK0=$OUT/vhu0.sock; SOCK1=$OUT/vhu1.sock
tp_start() {   # ENGINE TXPKTS
  local engine=$1 txpkts=$2 fifo=$OUT/tp-$CUR.in
  TP_LOG=$OUT/tp-$CUR.log
  rm -f "$fifo" "$SOCK0" "$SOCK1"; mkfifo "$fifo"
  local eal=(--lcores "0@$GEN_CPU,1@$GEN_CPU" --no-pci --in-memory --single-file-segments
             --iova-mode=va --file-prefix "$PREFIX-tp"
             --vdev "net_virtio_user0,path=$SOCK0,server=1,queues=1,queue_size=$QUEUE_SIZE"
             --vdev "net_virtio_user1,path=$SOCK1,server=1,queues=1,queue_size=$QUEUE_SIZE")
  local app=(-i --nb-cores=1 --forward-mode="$engine" --burst=32 --txpkts="$txpkts"
             --rxd="$QUEUE_SIZE" --txd="$QUEUE_SIZE" --total-num-mbufs=32768 --no-flush-rx
             --tx-ip=10.254.0.1,10.253.0.0 --flowgen-flows="$FLOWS" --record-core-cycles)
  # TESTPMD_EXTRA: more testpmd application options for a diagnostic run, e.g.
  # --record-burst-stats (burst size spread in fwdstats-*.log), the same for every switch
  # shellcheck disable=SC2206
  app+=(${TESTPMD_EXTRA:-})
  echo "$TESTPMD ${eal[*]} -- ${app[*]}" >> "$OUT/commands.log"
  ( exec setsid nice -n "$NICE" taskset -c "$GEN_CPU" stdbuf -oL -eL "$TESTPMD" "${eal[@]}" -- "${app[@]}" <"$fifo" >"$TP_LOG" 2>&1 ) &
  TP_PID=$!
  exec {TP_FD}>"$fifo"
  # testpmd's virtio-user in server mode waits in probe until the switch connects.
  local t=0
  until grep -q 'testpmd> ' "$TP_LOG" 2>/dev/null; do
    kill -0 "$TP_PID" 2>/dev/null || { tail -15 "$TP_LOG" >&2; die "testpmd died at start"; }
    sleep 0.2; t=$((t + 1)); [ $t -gt 300 ] && die "testpmd: no prompt after 60 s (switch did not connect?)"
  done
  boost "$TP_PID"
}
tp_cmd() {     # "COMMAND" [TIMEOUT_S] -> prints the command's output once the prompt returns
  local off t=0 to=${2:-30}
  off=$(stat -c %s "$TP_LOG")
  ( printf '%s\n' "$1" >&"$TP_FD" ) 2>/dev/null || die "testpmd: cannot send '$1'"
  until tail -c +$((off + 1)) "$TP_LOG" | grep -q 'testpmd> '; do
    kill -0 "$TP_PID" 2>/dev/null || die "testpmd died during '$1'"
    sleep 0.05; t=$((t + 1)); [ $t -gt $((to * 20)) ] && die "testpmd: '$1' timed out"
  done
  tail -c +$((off + 1)) "$TP_LOG"
}
tp_links_up() {
  local i t
  for i in 0 1; do
    for t in $(seq 1 100); do
      tp_cmd "show port info $i" | grep -q 'Link status: up' && break
      [ "$t" = 100 ] && return 1; sleep 0.2
    done
  done
}
tp_stop() {
  [ -n "$TP_PID" ] || return 0
  if [ -n "$TP_FD" ]; then ( printf 'stop\nquit\n' >&"$TP_FD" ) 2>/dev/null; exec {TP_FD}>&-; TP_FD=""; fi
  local i; for i in $(seq 1 50); do kill -0 "$TP_PID" 2>/dev/null || break; sleep 0.2; done
  stop_pid "$TP_PID" testpmd; TP_PID=""
}

# ------------------------------------------------------------------ OVS-DPDK
OVSD=$OUT/ovs
ovs_env()    { env OVS_RUNDIR="$OVSD" OVS_LOGDIR="$OVSD" OVS_DBDIR="$OVSD" OVS_SYSCONFDIR="$OVSD" OVS_PKGDATADIR=/usr/share/openvswitch "$@"; }
# `( ovs_exec CMD ) &`: the subshell execs CMD, so $! is CMD's own PID (stopped by PID later)
ovs_exec()   { exec env OVS_RUNDIR="$OVSD" OVS_LOGDIR="$OVSD" OVS_DBDIR="$OVSD" OVS_SYSCONFDIR="$OVSD" OVS_PKGDATADIR=/usr/share/openvswitch "$@"; }
ovs_vsctl()  { ovs_env ovs-vsctl --timeout=60 --db="unix:$OVSD/db.sock" "$@"; }
ovs_appctl() { ovs_env ovs-appctl --timeout=60 -t "$OVSD/ovs-vswitchd.ctl" "$@"; }
ovs_ofctl()  { ovs_env ovs-ofctl -O OpenFlow13 "$@"; }
ovs_start() {  # FLOWFILE
  rm -rf "$OVSD"; mkdir -p "$OVSD"
  ovsdb-tool create "$OVSD/conf.db" "$OVS_SCHEMA" || die "ovsdb-tool create"
  ( ovs_exec taskset -c "$GEN_CPU" ovsdb-server "$OVSD/conf.db" --remote="punix:$OVSD/db.sock" \
      --pidfile="$OVSD/ovsdb-server.pid" --log-file="$OVSD/ovsdb-server.log" \
      --unixctl="$OVSD/ovsdb-server.ctl" --no-chdir >/dev/null 2>&1 ) &
  OVS_DB_PID=$!
  local t=0; until [ -S "$OVSD/db.sock" ]; do sleep 0.1; t=$((t + 1)); [ $t -gt 100 ] && die "ovsdb-server did not start"; done
  ovs_vsctl --no-wait init
  ovs_vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
      other_config:dpdk-lcore-mask=$(printf 0x%x $((1 << GEN_CPU))) \
      other_config:pmd-cpu-mask=$(printf 0x%x $((1 << SUT_CPU))) \
      other_config:dpdk-socket-mem=512 other_config:dpdk-socket-limit=768 \
      other_config:dpdk-extra="--no-pci --in-memory --iova-mode=va --file-prefix=$PREFIX-ovs" || die "ovs other_config"
  # not --detach: our child, stopped by PID
  ( ovs_exec setsid nice -n "$NICE" taskset -c "$GEN_CPU" "$OVS_VSWITCHD" "unix:$OVSD/db.sock" --pidfile="$OVSD/ovs-vswitchd.pid" \
      --log-file="$OVSD/ovs-vswitchd.log" --unixctl="$OVSD/ovs-vswitchd.ctl" --no-chdir \
      >"$OVSD/ovs-vswitchd.stdout" 2>&1 ) &
  OVS_VS_PID=$!
  t=0
  until grep -q 'DPDK Enabled - initialized' "$OVSD/ovs-vswitchd.log" 2>/dev/null; do
    kill -0 "$OVS_VS_PID" 2>/dev/null || { tail -20 "$OVSD/ovs-vswitchd.log" >&2; die "ovs-vswitchd died"; }
    sleep 0.2; t=$((t + 1)); [ $t -gt 300 ] && die "ovs-vswitchd: DPDK init timeout"
  done
  boost "$OVS_VS_PID"
  ovs_vsctl add-br br0 -- set bridge br0 datapath_type=netdev protocols=OpenFlow13 fail_mode=secure || die "ovs add-br"
  ovs_vsctl add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuserclient options:vhost-server-path="$SOCK0" ofport_request=1 || die "ovs add-port vhu0"
  ovs_vsctl add-port br0 vhu1 -- set Interface vhu1 type=dpdkvhostuserclient options:vhost-server-path="$SOCK1" ofport_request=2 || die "ovs add-port vhu1"
  ovs_ofctl del-flows br0 || die "ovs del-flows"   # the default NORMAL flow
  ovs_ofctl add-flows br0 "$1" || die "ovs-ofctl add-flows $1"
  SUT_PID=$OVS_VS_PID
}
ovs_ready() {  # both vhost devices connected and no disabled rx queue
  local t st
  for t in $(seq 1 150); do
    st=$(ovs_vsctl get Interface vhu0 status:status -- get Interface vhu1 status:status 2>/dev/null | tr -d '"' | tr '\n' ' ')
    if [ "$st" = "connected connected " ] && ! ovs_appctl dpif-netdev/pmd-rxq-show | grep -q '(disabled)'; then return 0; fi
    sleep 0.2
  done
  ovs_appctl dpif-netdev/pmd-rxq-show >&2; return 1
}
ovs_clear() { ovs_appctl dpif-netdev/pmd-stats-clear >/dev/null; }
ovs_collect() {  # -> "rx cpp"
  ovs_appctl dpif-netdev/pmd-perf-show > "$OUT/perf-$CUR.txt"
  { echo "== $CUR"; cat "$OUT/perf-$CUR.txt"; ovs_appctl dpif-netdev/pmd-rxq-show; ovs_appctl dpctl/dump-flows | head -3;
    echo "datapath flows: $(ovs_appctl dpctl/dump-flows | grep -c actions:)"; } >> "$OUT/ovs-stats.log" 2>&1
  "$PVP_TOOL" ovs-perf "$OUT/perf-$CUR.txt"
}
ovs_stop() {
  if [ -n "$OVS_VS_PID" ] && kill -0 "$OVS_VS_PID" 2>/dev/null; then
    ovs_appctl exit --cleanup >/dev/null 2>&1
    local i; for i in $(seq 1 50); do kill -0 "$OVS_VS_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  [ -f "$OVSD/ovs-vswitchd.log" ] && cp "$OVSD/ovs-vswitchd.log" "$OUT/ovs-vswitchd-$CUR.log" 2>/dev/null
  stop_pid "$OVS_VS_PID" ovs-vswitchd; OVS_VS_PID=""
  stop_pid "$OVS_DB_PID" ovsdb-server; OVS_DB_PID=""
  local pf p   # belt and braces: a daemon of OUR run dir that outlived its PID (pidfile + cmdline)
  for pf in "$OVSD"/ovs-vswitchd.pid "$OVSD"/ovsdb-server.pid; do
    p=$(cat "$pf" 2>/dev/null) || continue
    grep -qF "$OVSD" "/proc/$p/cmdline" 2>/dev/null && { log "stray $(basename "$pf" .pid) $p: stopping"; stop_pid "$p" stray; }
  done
  return 0
}

# ------------------------------------------------------------------ switchd
SWD=$OUT/swd
fctl() { FLOWCTL_SOCKET=$SWD/switchd.sock "$FLOWCTL" "$@"; }
switchd_start() {  # FLOWFILE
  rm -rf "$SWD"; mkdir -p "$SWD/state"
  # CPUs 0 and 1 allowed: switchd pins its polling thread to SUT_CPU and its control thread
  # to the other CPUs itself (switchd --pmd-cpus).
  setsid nice -n "$NICE" taskset -c "$GEN_CPU,$SUT_CPU" "$SWITCHD" --socket "$SWD/switchd.sock" --state-dir "$SWD/state" \
      --pmd-cpus "$SUT_CPU" >"$SWD/switchd.log" 2>&1 &
  SWD_PID=$!
  local t=0
  until [ -S "$SWD/switchd.sock" ]; do
    kill -0 "$SWD_PID" 2>/dev/null || { cat "$SWD/switchd.log" >&2; die "switchd died at start"; }
    sleep 0.1; t=$((t + 1)); [ $t -gt 100 ] && die "switchd: no control socket after 10 s"
  done
  boost "$SWD_PID"
  fctl add-port br0 vhu0 type=vhost_user socket="$SOCK0" mode=client ofport=1 >/dev/null ||
    die "flowctl add-port vhu0 type=vhost_user failed (is the vhost_user port merged?)"
  fctl add-port br0 vhu1 type=vhost_user socket="$SOCK1" mode=client ofport=2 >/dev/null ||
    die "flowctl add-port vhu1 type=vhost_user failed"
  fctl add-flows br0 "$1" || die "flowctl add-flows $1"
  SUT_PID=$SWD_PID
}
switchd_ready() { sleep 1; }   # testpmd's link-up check already proves the connection
switchd_clear() { fctl --json pmd-perf-show br0 > "$OUT/perf0-$CUR.json" || die "flowctl pmd-perf-show"; }
switchd_collect() {
  fctl --json pmd-perf-show br0 > "$OUT/perf1-$CUR.json" || die "flowctl pmd-perf-show"
  { echo "== $CUR"; fctl pmd-perf-show br0; fctl dump-ports br0; } >> "$OUT/switchd-stats.log" 2>&1
  "$PVP_TOOL" flowctl-perf "$OUT/perf0-$CUR.json" "$OUT/perf1-$CUR.json"
}
# switchd-alt: the same with the binary SWITCHD_ALT (bash dynamic scope: switchd_start sees it)
switchd_alt_start() { local SWITCHD=$SWITCHD_ALT; switchd_start "$@"; }
switchd_alt_ready() { switchd_ready; }
switchd_alt_clear() { switchd_clear; }
switchd_alt_collect() { switchd_collect; }
switchd_alt_stop() { switchd_stop; }
switchd_stop() {
  [ -n "$SWD_PID" ] || return 0
  [ -f "$SWD/switchd.log" ] && cp "$SWD/switchd.log" "$OUT/switchd-$CUR.log" 2>/dev/null
  stop_pid "$SWD_PID" switchd; SWD_PID=""
}

# ------------------------------------------------------------------ one window
rq_wait_ns() {  # PID -> run-queue wait (ns) of its polling thread (comm pmd*; else the busiest)
  local best=-1 tid="" t r
  for t in /proc/"$1"/task/*; do
    case $(cat "$t/comm" 2>/dev/null) in pmd*) tid=${t##*/}; break;; esac
    r=$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) || continue
    [ "${r:-0}" -gt "$best" ] && { best=$r; tid=${t##*/}; }
  done
  cut -d' ' -f2 "/proc/$1/task/$tid/schedstat" 2>/dev/null || echo 0
}
run_one() {   # SWITCH CASE REP
  local sw=${1//-/_} case=$2 rep=$3 kind size flowfile engine
  kind=${case%-*}; size=${case##*-}
  CUR=$1-$case-r$rep
  case $kind in
    loop)   flowfile=$OUT/flows-inport-both.txt; engine=io ;;
    oneway) flowfile=$OUT/flows-inport-oneway.txt; engine=io ;;
    route)  flowfile=$OUT/flows-route-both.txt; engine=flowgen ;;
    *) die "unknown case $case" ;;
  esac
  [ "$size" -ge 64 ] 2>/dev/null && [ "$size" -le 1518 ] || die "case $case: frame size must be 64-1518"
  ${sw}_start "$flowfile"
  tp_start "$engine" $((size - 4))
  tp_links_up || die "$CUR: testpmd links not up"
  ${sw}_ready || die "$CUR: $sw did not bring both vhost ports up"
  if [ "$engine" = io ]; then tp_cmd "start tx_first 32" >/dev/null; else tp_cmd start >/dev/null; fi
  isleep "$WARMUP"
  local w0 w1 t0 t1 tw0 tw1 mpps perf load
  w0=$(rq_wait_ns "$SUT_PID"); tw0=$(now)
  ${sw}_clear
  tp_cmd "show port stats all" > "$OUT/st0-$CUR.txt"; t0=$(now)
  isleep "$DURATION"
  tp_cmd "show port stats all" > "$OUT/st1-$CUR.txt"; t1=$(now)
  perf=$(${sw}_collect) || die "$CUR: reading $sw counters"
  w1=$(rq_wait_ns "$SUT_PID"); tw1=$(now)
  load=$(cut -d' ' -f1 /proc/loadavg)
  mpps=$("$PVP_TOOL" rate "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$OUT/st0-$CUR.txt" "$OUT/st1-$CUR.txt") || die "$CUR: testpmd stats"
  tp_cmd stop >> "$OUT/fwdstats-$CUR.log"
  tp_stop; ${sw}_stop
  local prx pcpp pbasis
  read -r prx pcpp pbasis <<<"$perf"
  echo "$1 $case $rep $mpps $pcpp" >> "$RESULTS"
  log "$CUR: $mpps Mpps, $pcpp $pbasis cycles/pkt (switch rx $prx pkts), polling thread waited $(awk -v a="$w0" -v b="$w1" -v t0="$tw0" -v t1="$tw1" 'BEGIN {printf "%.0f", (b - a) / 1e7 / (t1 - t0)}')% of the window on the run queue; load average $load"
}

# ------------------------------------------------------------------ main
"$PVP_TOOL" flows inport both > "$OUT/flows-inport-both.txt" || die "pvp-tool flows"
"$PVP_TOOL" flows inport oneway > "$OUT/flows-inport-oneway.txt" || die "pvp-tool flows"
"$PVP_TOOL" flows route both --routes "$ROUTES" > "$OUT/flows-route-both.txt" || die "pvp-tool flows"
log "cases $CASES; switches $SWITCHES; $REPS reps x ${DURATION}s windows after ${WARMUP}s warm-up; $ROUTES routes, $FLOWS flows"
IFS=, read -ra CASE_LIST <<<"$CASES"
read -ra SW_LIST <<<"$SWITCHES"
for ((rep = 1; rep <= REPS; rep++)); do
  for case in "${CASE_LIST[@]}"; do
    order=("${SW_LIST[@]}")
    if [ $((rep % 2)) = 0 ]; then order=(); for ((i = ${#SW_LIST[@]} - 1; i >= 0; i--)); do order+=("${SW_LIST[$i]}"); done; fi
    for sw in "${order[@]}"; do
      case $sw in switchd|switchd-alt|ovs) ;; *) die "unknown switch $sw (switchd, switchd-alt, ovs)";; esac
      # the lock covers one switch lifetime: no other helper measures meanwhile
      exec {LOCKFD}>"$LOCK"
      if ! flock -n "$LOCKFD"; then
        log "waiting for $LOCK (another measurement runs)"
        flock "$LOCKFD" & wait $! || die "flock $LOCK"   # interruptible: INT/TERM still clean up
      fi
      run_one "$sw" "$case" "$rep"
      flock -u "$LOCKFD"; exec {LOCKFD}>&-
    done
  done
done
"$PVP_TOOL" report "$RESULTS" | tee "$OUT/report.md"
log "done: $OUT/report.md"
