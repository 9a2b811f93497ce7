#!/bin/sh
# Per-packet userspace cost of forwarding between two AF_XDP pods on one
# polling thread, for two switchd binaries interleaved (A B A B ...): the
# AF_XDP zero-copy measurement of docs/perf.md.
#
#   perf/afxdp_zc.sh SWITCHD_A SWITCHD_B FLOWCTL [ROUNDS] [SECONDS] [LEN]
#
# Each round: two pods (namespaces with a veth each, tx checksum offload off),
# a fresh switchd with its polling thread on CPU 1 (`--pmd-cpus 1`), both host
# veth ends as `type=afxdp` ports, in_port forwarding flows, then `iperf3 -u`
# (LEN-byte datagrams, unlimited rate, SECONDS long, client and server on
# CPU 0) from pod a to pod b. Prints, from `pmd-perf-show --json` read before
# and after the traffic: packets, busy cycles per packet (rx + datapath + tx,
# so the copies are in it) and datapath cycles per packet.
#
# Root only. Everything it creates is named fs-h2zc-PID-* and removed on exit.
set -eu
A=$1 B=$2 FC=$3 ROUNDS=${4:-3} SECS=${5:-5} LEN=${6:-1400}
P=fs-h2zc-$$
DIR=$(mktemp -d /tmp/$P.XXXX)
SDPID=

cleanup() {
    [ -n "$SDPID" ] && kill "$SDPID" 2>/dev/null && wait "$SDPID" 2>/dev/null || true
    for n in a b; do ip netns del "$P-$n" 2>/dev/null || true; done
    ip link del "h2zc$$a" 2>/dev/null || true
    ip link del "h2zc$$b" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

pods() {
    i=2
    for n in a b; do
        ip netns add "$P-$n"
        ip link add "h2zc$$$n" type veth peer name eth0 netns "$P-$n"
        echo 1 > "/proc/sys/net/ipv6/conf/h2zc$$$n/disable_ipv6"
        ip link set "h2zc$$$n" up
        ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip netns exec "$P-$n" ip addr add "10.233.0.$i/24" dev eth0
        ip netns exec "$P-$n" ip link set eth0 up
        ip netns exec "$P-$n" ethtool -K eth0 tx off >/dev/null
        i=$((i + 1))
    done
}

unpods() {
    for n in a b; do ip netns del "$P-$n" 2>/dev/null || true; done
    sleep 0.3
}

perfjson() {
    "$FC" --socket "$DIR/sd.sock" --json pmd-perf-show br0
}

# field NAME JSON: the number after "NAME": in JSON
field() {
    python3 -c 'import json,sys; d=json.loads(sys.argv[2])["ok"]["pmds"][0]; print(d.get(sys.argv[1],0))' "$1" "$2"
}

one() {
    bin=$1
    pods
    rm -rf "$DIR/state"
    "$bin" --socket "$DIR/sd.sock" --state-dir "$DIR/state" --pmd-cpus 1 2>"$DIR/sd.log" &
    SDPID=$!
    for _ in $(seq 50); do [ -S "$DIR/sd.sock" ] && break; sleep 0.1; done
    "$FC" --socket "$DIR/sd.sock" add-port br0 pa type=afxdp "ifname=h2zc$$a" ofport=1 >/dev/null
    "$FC" --socket "$DIR/sd.sock" add-port br0 pb type=afxdp "ifname=h2zc$$b" ofport=2 >/dev/null
    "$FC" --socket "$DIR/sd.sock" add-flow br0 in_port=1,actions=output:2 >/dev/null
    "$FC" --socket "$DIR/sd.sock" add-flow br0 in_port=2,actions=output:1 >/dev/null
    ip netns exec "$P-a" ping -c 3 -i 0.2 -W 1 10.233.0.3 >/dev/null
    ip netns exec "$P-b" taskset -c 0 iperf3 -s -1 -D -B 10.233.0.3 >/dev/null
    sleep 0.3
    j0=$(perfjson)
    ip netns exec "$P-a" taskset -c 0 iperf3 -u -b 0 -l "$LEN" -t "$SECS" -c 10.233.0.3 >/dev/null
    j1=$(perfjson)
    z=$("$FC" --socket "$DIR/sd.sock" --json dump-ports br0 pb | python3 -c 'import json,sys; s=json.load(sys.stdin)["ok"]["ports"][0]["stats"]; print(s.get("tx_zerocopy","-"), s.get("tx_copied","-"))')
    kill "$SDPID"; wait "$SDPID" 2>/dev/null || true; SDPID=
    unpods
    python3 - "$j0" "$j1" "$bin" "$z" <<'EOF'
import json, sys
a = json.loads(sys.argv[1])["ok"]["pmds"][0]
b = json.loads(sys.argv[2])["ok"]["pmds"][0]
n = b["rx_packets"] - a["rx_packets"]
busy = b.get("busy_cycles", 0) - a.get("busy_cycles", 0)
# datapath cycles: cycles_per_packet * rx_packets is the cumulative dp cycles
dp = b["cycles_per_packet"] * b["rx_packets"] - a["cycles_per_packet"] * a["rx_packets"]
print(f"{sys.argv[3]}: packets {n} busy_cycles/pkt {busy / max(n, 1):.0f} dp_cycles/pkt {dp / max(n, 1):.0f} pb tx zerocopy/copied {sys.argv[4]}")
EOF
}

date -u
lscpu | grep -E "Model name|^CPU\(s\)"
for r in $(seq "$ROUNDS"); do
    one "$A"
    one "$B"
done
