#!/usr/bin/env bash
# check_flows.sh -- the PVP flow files mean the same thing to switchd and to OVS.
#
#   perf/pvp/check_flows.sh [--keep]
#
# Generates the flow files pvp.sh uses (pvp-tool flows), loads each into
#   - switchd (two memory ports, ofport 1 and 2) with `flowctl add-flows`, and
#   - OVS (ovs-vswitchd with the dummy datapath: no DPDK, no hugepages, no kernel datapath,
#     two dummy ports, ofport 1 and 2) with `ovs-ofctl add-flows`,
# then traces sample packets (the flowgen range's first and last flows, route boundaries, the
# /16's last address, an address no route covers, TTL 1, both input ports) with `flowctl trace`
# and `ovs-appctl ofproto/trace`, and compares their `Final flow:` and `Datapath actions:` lines
# (output port and rewrites). Megaflow lines are printed side by side when they differ (not a
# failure: OVS's prefix tries may un-wildcard other bits than our classifier). Exit status 0 only
# if every file loads on both and every compared line is equal.
# Runs as root (OVS's default paths are avoided: private db/rundir under /tmp/h5-ovs).
set -u -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SWITCHD=${SWITCHD:-$ROOT/target/release/switchd}
FLOWCTL=${FLOWCTL:-$ROOT/target/release/flowctl}
PVP_TOOL=${PVP_TOOL:-$ROOT/target/release/pvp-tool}
OVS_VSWITCHD=${OVS_VSWITCHD:-/usr/lib/openvswitch-switch/ovs-vswitchd}   # the non-DPDK build
[ -x "$OVS_VSWITCHD" ] || OVS_VSWITCHD=$(command -v ovs-vswitchd)
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1
log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for b in "$SWITCHD" "$FLOWCTL" "$PVP_TOOL"; do [ -x "$b" ] || die "$b missing (cargo build --release -p switch --bin switchd -p flowctl -p perf --bin pvp-tool)"; done

mkdir -p /tmp/h5-ovs
D=$(mktemp -d /tmp/h5-ovs/check.XXXXXX) || die mktemp
DB_PID=""; VS_PID=""; SWD_PID=""
stop_pid() { local i; [ -n "$1" ] || return 0; kill -TERM "$1" 2>/dev/null
  for i in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 0; }
cleanup() { local rc=$?; trap - EXIT INT TERM
  stop_pid "$SWD_PID"; stop_pid "$VS_PID"; stop_pid "$DB_PID"
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "files in $D"; else rm -rf "$D"; fi; exit "$rc"; }
trap cleanup EXIT; trap 'exit 130' INT TERM

ovs_env() { env OVS_RUNDIR="$D" OVS_LOGDIR="$D" OVS_DBDIR="$D" OVS_SYSCONFDIR="$D" OVS_PKGDATADIR=/usr/share/openvswitch "$@"; }
# `( ovs_exec CMD ) &`: the subshell execs CMD, so $! is CMD's own PID (stopped by PID later)
ovs_exec() { exec env OVS_RUNDIR="$D" OVS_LOGDIR="$D" OVS_DBDIR="$D" OVS_SYSCONFDIR="$D" OVS_PKGDATADIR=/usr/share/openvswitch "$@"; }
vsctl()  { ovs_env ovs-vsctl --timeout=30 --db="unix:$D/db.sock" "$@"; }
appctl() { ovs_env ovs-appctl --timeout=30 -t "$D/ovs-vswitchd.ctl" "$@"; }
ofctl()  { ovs_env ovs-ofctl -O OpenFlow13 "$@"; }
fctl()   { FLOWCTL_SOCKET=$D/switchd.sock "$FLOWCTL" "$@"; }

ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema || die ovsdb-tool
( ovs_exec ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --unixctl="$D/ovsdb-server.ctl" \
    --log-file="$D/ovsdb-server.log" --no-chdir >/dev/null 2>&1 ) & DB_PID=$!
t=0; until [ -S "$D/db.sock" ]; do sleep 0.1; t=$((t + 1)); [ $t -gt 100 ] && die "ovsdb-server"; done
vsctl --no-wait init
( ovs_exec "$OVS_VSWITCHD" --enable-dummy=override --disable-system "unix:$D/db.sock" \
    --unixctl="$D/ovs-vswitchd.ctl" --log-file="$D/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 ) & VS_PID=$!
vsctl add-br br0 -- set bridge br0 datapath_type=dummy fail_mode=secure protocols=OpenFlow13 \
    -- add-port br0 p1 -- set Interface p1 type=dummy ofport_request=1 \
    -- add-port br0 p2 -- set Interface p2 type=dummy ofport_request=2 || die "ovs bridge"

"$SWITCHD" --socket "$D/switchd.sock" --state-dir "$D/state" >"$D/switchd.log" 2>&1 & SWD_PID=$!
t=0; until [ -S "$D/switchd.sock" ]; do kill -0 "$SWD_PID" 2>/dev/null || die "switchd died: $(cat "$D/switchd.log")"
  sleep 0.1; t=$((t + 1)); [ $t -gt 100 ] && die switchd; done
fctl add-port br0 p1 type=memory ofport=1 >/dev/null || die "flowctl add-port p1"
fctl add-port br0 p2 type=memory ofport=2 >/dev/null || die "flowctl add-port p2"

pkt() {  # IN_PORT DST [TTL]
  echo "in_port=$1,udp,dl_src=02:aa:00:00:00:01,dl_dst=02:bb:00:00:00:02,nw_src=10.254.0.1,nw_dst=$2,nw_ttl=${3:-64},udp_src=1000,udp_dst=1001"
}
# OVS turns a dec_ttl exception into a packet-in for a controller that is not there
# (`userspace(...controller(...dont_send=1...))`); switchd has no controller and drops
# (docs/flowctl.md, drop reason invalid_ttl). Both send the packet nowhere: compare them as
# such. Header sets before an action that outputs nothing are moot, so that line is `drop`.
ovs_actions_norm() {
  local l=$1 rest
  case $l in *"controller("*"dont_send=1"*) ;; *) echo "$l"; return;; esac
  rest=$(sed -E 's/^Datapath actions: //; s/,?userspace\(pid=0,controller\([^)]*\)\)//; s/set\([a-z0-9_]+\([^)]*\)\)//g; s/,//g' <<<"$l")
  if [ -z "$rest" ]; then echo "Datapath actions: drop"; else echo "$l"; fi
}
FAIL=0; N=0
compare() {  # FILE-LABEL PACKET
  local o f what a b
  o=$(appctl ofproto/trace br0 "$2" 2>&1) || { log "ovs trace failed: $o"; FAIL=1; return; }
  f=$(fctl trace br0 "$2" 2>&1) || { log "flowctl trace failed: $f"; FAIL=1; return; }
  N=$((N + 1))
  for what in "Final flow:" "Datapath actions:"; do
    a=$(grep "^$what" <<<"$o"); b=$(grep "^$what" <<<"$f")
    [ "$what" = "Datapath actions:" ] && a=$(ovs_actions_norm "$a")
    if [ "$a" != "$b" ]; then
      FAIL=1; log "MISMATCH [$1] $2"; echo "  ovs:     $a" >&2; echo "  flowctl: $b" >&2
    fi
  done
  a=$(grep "^Megaflow:" <<<"$o"); b=$(grep "^Megaflow:" <<<"$f")
  [ "$a" = "$b" ] || { echo "  note [$1] $2" >&2; echo "    ovs megaflow:     $a" >&2; echo "    flowctl megaflow: $b" >&2; }
  echo "[$1] $2 -> $(grep '^Datapath actions:' <<<"$f")"
}

for spec in "inport both" "inport oneway" "route both"; do
  read -r pipe dir <<<"$spec"
  file=$D/flows-$pipe-$dir.txt
  "$PVP_TOOL" flows $pipe $dir > "$file" || die "pvp-tool flows $spec"
  ofctl del-flows br0 && ofctl add-flows br0 "$file" || { log "ovs-ofctl rejected $file"; FAIL=1; continue; }
  fctl del-flows br0 && fctl add-flows br0 "$file" || { log "flowctl add-flows rejected $file"; FAIL=1; continue; }
  no=$(ofctl dump-flows br0 | grep -c 'actions='); nf=$(fctl dump-flows br0 | grep -c 'actions=')
  [ "$no" = "$nf" ] || { log "[$pipe-$dir] OVS holds $no flows, switchd $nf"; FAIL=1; }
  log "[$pipe-$dir] $(grep -vc '^#' "$file") flows loaded into both ($no / $nf)"
  if [ "$pipe" = inport ]; then
    compare "$pipe-$dir" "$(pkt 1 10.253.0.0)"; compare "$pipe-$dir" "$(pkt 2 10.253.0.0)"
  else
    for dst in 10.253.0.0 10.253.0.63 10.253.0.64 10.253.39.15 10.253.1.200 10.253.255.127 10.253.255.128 10.253.255.255 10.254.0.1; do
      compare "$pipe-$dir" "$(pkt 1 $dst)"
    done
    compare "$pipe-$dir" "$(pkt 2 10.253.17.5)"
    compare "$pipe-$dir" "$(pkt 1 10.253.17.5 1)"
  fi
done
log "$N packets traced on both switches"
[ "$FAIL" = 0 ] && log "OK: switchd and OVS agree" || die "switchd and OVS disagree (see above)"
