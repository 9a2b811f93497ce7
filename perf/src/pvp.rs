//! The PVP benchmark's own logic, kept out of the shell harness so it can be tested.
//!
//! `perf/pvp/pvp.sh` starts and stops processes (OVS-DPDK, switchd, testpmd); everything it
//! computes goes through the `pvp-tool` binary, which is a thin CLI over this module:
//! - the flow files both switches load (ovs-ofctl syntax, generated once per run, loaded with
//!   `ovs-ofctl add-flows` and `flowctl add-flows`): in_port forwarding, and a 3-table routing
//!   pipeline whose table 1 is a table of N non-overlapping prefixes covering a /16 exactly
//!   (MAC rewrite and `dec_ttl` per route);
//! - parsing testpmd's `show port stats all`, OVS's `dpif-netdev/pmd-perf-show` and
//!   `flowctl --json pmd-perf-show` into packet counts and cycles per packet over a window;
//! - the report: medians with min-max per switch and case, and the switchd / OVS ratio.
//!
//! Input is text other programs printed; a line that does not parse is an error naming the
//! line, never a panic. Nothing here runs on a measured path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// An IPv4 prefix: network address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0-32.
    pub len: u8,
}

impl Prefix {
    /// First address of the prefix, as a number.
    pub fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    /// Number of addresses the prefix covers.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// True if `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u64::from(u32::from(ip));
        let first = u64::from(self.first());
        ip >= first && ip < first + self.size()
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Splits `base` into exactly `n` non-overlapping prefixes that together cover it, in address
/// order: the largest power of two `2^k <= n` equal prefixes of length `base.len + k`, of which
/// the first `n - 2^k` are halved once more. So a /16 in 1000 routes is 976 /26 and 24 /25,
/// a routing table of mixed lengths as real ones are.
pub fn cover(base: Prefix, n: usize) -> Result<Vec<Prefix>, String> {
    if base.len > 32 {
        return Err(format!("prefix length {} is over 32", base.len));
    }
    if base.first() & !mask(base.len) != 0 {
        return Err(format!("{base} has host bits set"));
    }
    if n == 0 || n as u64 > base.size() {
        return Err(format!(
            "cannot split {base} into {n} prefixes (1 to {} possible)",
            base.size()
        ));
    }
    let k = usize::BITS - 1 - n.leading_zeros(); // 2^k <= n < 2^(k+1)
    let split = n - (1usize << k);
    let len = base.len + k as u8;
    let step = 1u64 << (32 - u32::from(len));
    let mut out = Vec::with_capacity(n);
    for i in 0..(1u64 << k) {
        let first = u64::from(base.first()) + i * step;
        if (i as usize) < split {
            let half = step / 2;
            for j in 0..2 {
                out.push(Prefix {
                    addr: Ipv4Addr::from((first + j * half) as u32),
                    len: len + 1,
                });
            }
        } else {
            out.push(Prefix {
                addr: Ipv4Addr::from(first as u32),
                len,
            });
        }
    }
    Ok(out)
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Parses `A.B.C.D/LEN`.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/LENGTH"))?;
    let addr: Ipv4Addr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{s:?}: prefix length must be 0-32"))?;
    Ok(Prefix { addr, len })
}

/// The MAC addresses route `i` rewrites to: `(eth_src, eth_dst)`.
pub fn route_macs(i: usize) -> (String, String) {
    let (h, l) = ((i >> 8) & 0xff, i & 0xff);
    (
        format!("02:00:00:00:{h:02x}:{l:02x}"),
        format!("02:00:01:00:{h:02x}:{l:02x}"),
    )
}

/// Which forwarding the flow file programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// One table: `in_port=1 -> output:2`, `in_port=2 -> output:1` (or drop, one-way).
    InPort,
    /// Table 0 admits both ports to table 1; table 1 routes by longest prefix (priority =
    /// prefix length, as OVS LPM tables are written), rewriting both MACs and decrementing the
    /// TTL; a miss drops; table 2 outputs by input port.
    Route,
}

/// Which directions cross the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Port 1 to port 2 and port 2 to port 1.
    Both,
    /// Port 1 to port 2; what arrives on port 2 is dropped.
    OneWay,
}

/// The flow file, in ovs-ofctl `add-flows` syntax (which `flowctl add-flows` accepts too).
/// `routes` is only used by [`Pipeline::Route`].
pub fn flow_file(pipeline: Pipeline, dir: Direction, routes: &[Prefix]) -> String {
    let back = match dir {
        Direction::Both => "output:1",
        Direction::OneWay => "drop",
    };
    let mut s = String::new();
    match pipeline {
        Pipeline::InPort => {
            s.push_str("# in_port forwarding (perf/pvp, pvp-tool flows)\n");
            s.push_str("table=0,priority=10,in_port=1,actions=output:2\n");
            let _ = writeln!(s, "table=0,priority=10,in_port=2,actions={back}");
        }
        Pipeline::Route => {
            let _ = writeln!(
                s,
                "# routing pipeline, {} prefixes (perf/pvp, pvp-tool flows)",
                routes.len()
            );
            s.push_str("table=0,priority=10,in_port=1,actions=goto_table:1\n");
            s.push_str("table=0,priority=10,in_port=2,actions=goto_table:1\n");
            s.push_str("table=0,priority=0,actions=drop\n");
            for (i, p) in routes.iter().enumerate() {
                let (src, dst) = route_macs(i);
                let _ = writeln!(
                    s,
                    "table=1,priority={},ip,nw_dst={p},actions=mod_dl_src:{src},mod_dl_dst:{dst},dec_ttl,goto_table:2",
                    u32::from(p.len) + 1
                );
            }
            s.push_str("table=1,priority=0,actions=drop\n");
            s.push_str("table=2,priority=10,in_port=1,actions=output:2\n");
            let _ = writeln!(s, "table=2,priority=10,in_port=2,actions={back}");
        }
    }
    s
}

/// Index of the route an address takes (longest match; the routes do not overlap).
pub fn route_of(routes: &[Prefix], ip: Ipv4Addr) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.contains(ip))
        .max_by_key(|(_, p)| p.len)
        .map(|(i, _)| i)
}

/// One port's counters from testpmd's `show port stats all`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// testpmd port id.
    pub port: u16,
    /// RX-packets.
    pub rx: u64,
    /// TX-packets.
    pub tx: u64,
}

/// Parses testpmd's `show port stats all` (or `show port stats N`) output. Lines other than
/// the per-port counters (prompts, banners, throughput lines) are skipped; a port block
/// without both RX-packets and TX-packets is an error.
pub fn parse_testpmd_stats(text: &str) -> Result<Vec<PortStats>, String> {
    let mut out: Vec<PortStats> = Vec::new();
    let mut cur: Option<(u16, Option<u64>, Option<u64>)> = None;
    let finish = |cur: &mut Option<(u16, Option<u64>, Option<u64>)>,
                  out: &mut Vec<PortStats>|
     -> Result<(), String> {
        if let Some((port, rx, tx)) = cur.take() {
            match (rx, tx) {
                (Some(rx), Some(tx)) => out.push(PortStats { port, rx, tx }),
                _ => return Err(format!("port {port}: RX-packets or TX-packets missing")),
            }
        }
        Ok(())
    };
    for line in text.lines() {
        if let Some(rest) = line.split("NIC statistics for port").nth(1) {
            finish(&mut cur, &mut out)?;
            let id = rest
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u16>().ok())
                .ok_or_else(|| format!("bad port header: {line:?}"))?;
            cur = Some((id, None, None));
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        if let Some(v) = field(line, "RX-packets:")? {
            c.1 = Some(v);
        }
        if let Some(v) = field(line, "TX-packets:")? {
            c.2 = Some(v);
        }
    }
    finish(&mut cur, &mut out)?;
    if out.is_empty() {
        return Err("no \"NIC statistics for port\" block in testpmd output".into());
    }
    Ok(out)
}

/// The number after `key` on `line`, if `key` is there.
fn field(line: &str, key: &str) -> Result<Option<u64>, String> {
    let Some(rest) = line.split(key).nth(1) else {
        return Ok(None);
    };
    rest.split_whitespace()
        .next()
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| format!("no number after {key} in {line:?}"))
}

/// Received packets per second, in millions, summed over all ports, between two snapshots
/// `dt` seconds apart. Ports must be the same in both; counters must not go backwards.
pub fn rx_mpps(before: &[PortStats], after: &[PortStats], dt: f64) -> Result<f64, String> {
    if dt <= 0.0 || dt.is_nan() {
        return Err(format!("window of {dt} s"));
    }
    let mut total = 0u64;
    for a in after {
        let b = before
            .iter()
            .find(|b| b.port == a.port)
            .ok_or_else(|| format!("port {} missing from the first snapshot", a.port))?;
        total +=
            a.rx.checked_sub(b.rx)
                .ok_or_else(|| format!("port {}: RX-packets went backwards", a.port))?;
    }
    Ok(total as f64 / dt / 1e6)
}

/// Packets and cycles per packet of one polling thread over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PmdWindow {
    /// Packets the thread received.
    pub rx_packets: u64,
    /// Busy (datapath) cycles per received packet.
    pub cycles_per_packet: f64,
}

/// Parses OVS `ovs-appctl dpif-netdev/pmd-perf-show` (after `pmd-stats-clear`, so the counts
/// are the window's), summing polling threads: `Rx packets: N (X Kpps, Y cycles/pkt)`.
pub fn parse_ovs_perf(text: &str) -> Result<PmdWindow, String> {
    let mut rx = 0u64;
    let mut cycles = 0f64;
    let mut seen = false;
    for line in text.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("Rx packets:") else {
            continue;
        };
        let n: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| format!("bad Rx packets line {line:?}"))?;
        // "(5986 Kpps, 398 cycles/pkt)": the token before "cycles/pkt)"
        let toks: Vec<&str> = rest.split_whitespace().collect();
        let cpp = match toks.iter().position(|t| t.starts_with("cycles/pkt")) {
            Some(i) if i > 0 => toks[i - 1]
                .parse::<f64>()
                .map_err(|_| format!("bad cycles/pkt in {line:?}"))?,
            _ if n == 0 => 0.0,
            _ => return Err(format!("no cycles/pkt in {line:?}")),
        };
        rx += n;
        cycles += cpp * n as f64;
        seen = true;
    }
    if !seen {
        return Err("no \"Rx packets:\" line in pmd-perf-show output".into());
    }
    Ok(PmdWindow {
        rx_packets: rx,
        cycles_per_packet: if rx == 0 { 0.0 } else { cycles / rx as f64 },
    })
}

/// Totals of all polling threads from one `flowctl --json pmd-perf-show` (cumulative since
/// switchd started).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowctlPerf {
    /// Frames received.
    pub rx_packets: u64,
    /// Datapath cycles (`cycles_per_packet` x `rx_packets`): classification and actions only.
    pub dp_cycles: f64,
    /// Busy cycles (rx + datapath + tx), when switchd reports them (`busy_cycles`).
    pub busy_cycles: Option<u64>,
}

/// Parses one `flowctl --json pmd-perf-show` reply, summing the polling threads.
pub fn parse_flowctl_perf(json: &str) -> Result<FlowctlPerf, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("flowctl --json pmd-perf-show: {e}"))?;
    // The reply is {"ok": {"pmds": [...]}}; accept the bare body too.
    let body = v.get("ok").unwrap_or(&v);
    let pmds = body
        .get("pmds")
        .and_then(|p| p.as_array())
        .ok_or("flowctl pmd-perf-show: no \"pmds\" array in the reply")?;
    let mut out = FlowctlPerf {
        busy_cycles: Some(0),
        ..FlowctlPerf::default()
    };
    for p in pmds {
        let n = p
            .get("rx_packets")
            .and_then(|x| x.as_u64())
            .ok_or("flowctl pmd-perf-show: a thread without rx_packets")?;
        let cpp = p
            .get("cycles_per_packet")
            .and_then(|x| x.as_f64())
            .ok_or("flowctl pmd-perf-show: a thread without cycles_per_packet")?;
        out.rx_packets += n;
        out.dp_cycles += cpp * n as f64;
        out.busy_cycles = match (
            out.busy_cycles,
            p.get("busy_cycles").and_then(|x| x.as_u64()),
        ) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    Ok(out)
}

/// Which cycles a [`PmdWindow`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleBasis {
    /// Busy cycles: rx + processing + tx, what OVS's pmd-perf-show divides by packets.
    Busy,
    /// Datapath cycles only (a switchd without raw `busy_cycles`): not comparable with OVS.
    Datapath,
}

/// The window between two `flowctl --json pmd-perf-show` snapshots (switchd has no
/// stats-clear; the difference of cumulative counters is the window). Busy cycles per packet
/// when both snapshots carry them, else datapath cycles per packet.
pub fn flowctl_window(before: &str, after: &str) -> Result<(PmdWindow, CycleBasis), String> {
    let a = parse_flowctl_perf(before)?;
    let b = parse_flowctl_perf(after)?;
    let rx = b
        .rx_packets
        .checked_sub(a.rx_packets)
        .ok_or("flowctl pmd-perf-show: rx_packets went backwards (switchd restarted?)")?;
    let (cycles, basis) = match (a.busy_cycles, b.busy_cycles) {
        (Some(x), Some(y)) if y >= x && y > 0 => ((y - x) as f64, CycleBasis::Busy),
        _ => ((b.dp_cycles - a.dp_cycles).max(0.0), CycleBasis::Datapath),
    };
    Ok((
        PmdWindow {
            rx_packets: rx,
            cycles_per_packet: if rx == 0 { 0.0 } else { cycles / rx as f64 },
        },
        basis,
    ))
}

/// One measured window, as the harness appends it to `results.tsv`:
/// `switch case rep mpps cycles_per_packet`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `ovs`, `switchd` or `switchd-alt`.
    pub switch: String,
    /// Case name, e.g. `loop-inport-1flow-64B`.
    pub case: String,
    /// Mpps testpmd received (both directions summed).
    pub mpps: f64,
    /// The switch's busy cycles per packet in the window (NaN when not reported).
    pub cpp: f64,
}

/// Parses `results.tsv` (tab or space separated `switch case rep mpps cpp`; `#` comments).
pub fn parse_results(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "results line {}: expected 5 fields: {line:?}",
                n + 1
            ));
        }
        let num = |s: &str| -> Result<f64, String> {
            if s == "nan" || s == "-" {
                Ok(f64::NAN)
            } else {
                s.parse()
                    .map_err(|_| format!("results line {}: {s:?} is not a number", n + 1))
            }
        };
        out.push(Sample {
            switch: f[0].to_string(),
            case: f[1].to_string(),
            mpps: num(f[3])?,
            cpp: num(f[4])?,
        });
    }
    Ok(out)
}

/// Median, min and max of the finite values (None if there are none).
pub fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

/// One switch's windows in one case: (Mpps, cycles/packet) series.
type Series = (Vec<f64>, Vec<f64>);

/// The Markdown table of a run: per case, each switch's Mpps median (min-max) and cycles per
/// packet median, and the switchd / OVS ratio of the Mpps medians. Cases keep the order in
/// which they first appear.
pub fn report(samples: &[Sample]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut by: BTreeMap<(&str, &str), Series> = BTreeMap::new();
    for s in samples {
        if !order.contains(&s.case.as_str()) {
            order.push(&s.case);
        }
        let e = by.entry((&s.case, &s.switch)).or_default();
        e.0.push(s.mpps);
        e.1.push(s.cpp);
    }
    let cell = |case: &str, sw: &str| -> (String, String, Option<f64>) {
        match by.get(&(case, sw)) {
            None => ("not run".into(), "-".into(), None),
            Some((m, c)) => {
                let mpps = match stats(m) {
                    Some((med, lo, hi)) => (
                        format!("{med:.2} ({lo:.2}-{hi:.2}), n={}", m.len()),
                        Some(med),
                    ),
                    None => ("failed".into(), None),
                };
                let cpp = stats(c).map_or("-".into(), |(med, _, _)| format!("{med:.0}"));
                (mpps.0, cpp, mpps.1)
            }
        }
    };
    let mut s = String::from(
        "| case | switchd Mpps median (min-max) | switchd cycles/pkt | OVS-DPDK Mpps median (min-max) | OVS cycles/pkt | switchd / OVS |\n|---|---|---|---|---|---|\n",
    );
    for case in order {
        let (om, oc, ov) = cell(case, "ovs");
        let (sm, sc, sv) = cell(case, "switchd");
        let ratio = match (sv, ov) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(s, "| {case} | {sm} | {sc} | {om} | {oc} | {ratio} |");
    }
    // A/B of two switchd builds in the same run (pvp.sh `--switches "switchd switchd-alt ovs"`,
    // SWITCHD_ALT=the other binary): only when the run has switchd-alt windows.
    if samples.iter().any(|x| x.switch == "switchd-alt") {
        s.push_str(
            "\n| case | switchd Mpps median (min-max) | switchd cycles/pkt | switchd-alt Mpps median (min-max) | switchd-alt cycles/pkt | switchd / switchd-alt |\n|---|---|---|---|---|---|\n",
        );
        let mut cases: Vec<&str> = Vec::new();
        for x in samples {
            if !cases.contains(&x.case.as_str()) {
                cases.push(&x.case);
            }
        }
        for case in cases {
            let (am, ac, av) = cell(case, "switchd-alt");
            let (sm, sc, sv) = cell(case, "switchd");
            let ratio = match (sv, av) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let _ = writeln!(s, "| {case} | {sm} | {sc} | {am} | {ac} | {ratio} |");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn thousand_routes_tile_the_slash16_exactly() {
        let base = p("10.253.0.0/16");
        let r = cover(base, 1000).unwrap();
        assert_eq!(r.len(), 1000);
        // in address order, each starting where the previous ended: no gap, no overlap
        let mut next = u64::from(base.first());
        for q in &r {
            assert_eq!(u64::from(q.first()), next, "gap or overlap at {q}");
            assert_eq!(q.first() & !mask(q.len), 0, "{q} has host bits");
            next += q.size();
        }
        assert_eq!(next, u64::from(base.first()) + base.size());
        assert_eq!(r.iter().filter(|q| q.len == 25).count(), 24);
        assert_eq!(r.iter().filter(|q| q.len == 26).count(), 976);
        // every address of the /16 has exactly one route
        for host in (0..65536u32).step_by(7) {
            let ip = Ipv4Addr::from(base.first() + host);
            assert_eq!(r.iter().filter(|q| q.contains(ip)).count(), 1, "{ip}");
        }
    }

    #[test]
    fn cover_edges_and_errors() {
        assert_eq!(cover(p("10.0.0.0/8"), 1).unwrap(), vec![p("10.0.0.0/8")]);
        assert_eq!(
            cover(p("10.0.0.0/30"), 3).unwrap(),
            vec![p("10.0.0.0/32"), p("10.0.0.1/32"), p("10.0.0.2/31")]
        );
        assert_eq!(cover(p("10.0.0.0/30"), 4).unwrap().len(), 4);
        assert!(cover(p("10.0.0.0/30"), 5).is_err());
        assert!(cover(p("10.0.0.0/16"), 0).is_err());
        assert!(cover(p("10.0.0.1/16"), 4).is_err());
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("10.0.0.0").is_err());
    }

    #[test]
    fn route_flow_file_has_one_rule_per_prefix_and_both_directions() {
        let r = cover(p("10.253.0.0/16"), 1000).unwrap();
        let f = flow_file(Pipeline::Route, Direction::Both, &r);
        let t1: Vec<&str> = f.lines().filter(|l| l.starts_with("table=1,")).collect();
        assert_eq!(t1.len(), 1001); // 1000 routes + the miss rule
        assert!(t1[0].contains("nw_dst=10.253.0.0/26"), "{}", t1[0]);
        assert!(t1[0].contains(
            "mod_dl_src:02:00:00:00:00:00,mod_dl_dst:02:00:01:00:00:00,dec_ttl,goto_table:2"
        ));
        assert!(t1[999].contains("nw_dst=10.253.255.128/25"), "{}", t1[999]);
        assert!(
            t1[999].contains("mod_dl_dst:02:00:01:00:03:e7"),
            "{}",
            t1[999]
        );
        assert!(f.contains("table=2,priority=10,in_port=2,actions=output:1\n"));
        let one = flow_file(Pipeline::InPort, Direction::OneWay, &[]);
        assert!(one.contains("in_port=1,actions=output:2\n"));
        assert!(one.contains("in_port=2,actions=drop\n"));
        // routes map the flowgen range to distinct routes
        assert_eq!(route_of(&r, Ipv4Addr::new(10, 253, 0, 63)), Some(0));
        assert_eq!(route_of(&r, Ipv4Addr::new(10, 253, 0, 64)), Some(1));
        assert_eq!(route_of(&r, Ipv4Addr::new(10, 254, 0, 0)), None);
    }

    const TESTPMD: &str = "show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 123456789  RX-missed: 0          RX-bytes:  7901234496
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 123450000  TX-errors: 0          TX-bytes:  7900800000

  Throughput (since last show)
  Rx-pps:      5986123          Rx-bps:   3064894976
  Tx-pps:      5986000          Tx-bps:   3064832000
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 1000       RX-missed: 0          RX-bytes:  64000
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 2000       TX-errors: 0          TX-bytes:  128000

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
testpmd> ";

    #[test]
    fn testpmd_port_stats_parse() {
        let s = parse_testpmd_stats(TESTPMD).unwrap();
        assert_eq!(
            s,
            vec![
                PortStats {
                    port: 0,
                    rx: 123_456_789,
                    tx: 123_450_000
                },
                PortStats {
                    port: 1,
                    rx: 1000,
                    tx: 2000
                },
            ]
        );
        let later: Vec<PortStats> = s
            .iter()
            .map(|p| PortStats {
                rx: p.rx + 30_000_000,
                ..*p
            })
            .collect();
        let m = rx_mpps(&s, &later, 10.0).unwrap();
        assert!((m - 6.0).abs() < 1e-9, "{m}");
        assert!(rx_mpps(&later, &s, 10.0).is_err());
        assert!(rx_mpps(&s, &later, 0.0).is_err());
        assert!(parse_testpmd_stats("testpmd> ").is_err());
        assert!(parse_testpmd_stats("  NIC statistics for port 0\n  RX-packets: 5\n").is_err());
        assert!(parse_testpmd_stats(
            "  NIC statistics for port 0\n  RX-packets: x TX-packets: 1\n"
        )
        .is_err());
    }

    #[test]
    fn ovs_pmd_perf_show_parse() {
        let text = "Time: 15:29:03.541
Measurement duration: 10.002 s

pmd thread numa_id 0 core_id 1:

  Iterations:             53119808  (0.19 us/it)
  - Used TSC cycles:   24999861012  (100.0 % of total cycles)
  - idle iterations:      50117050  ( 33.4 % of used cycles)
  - busy iterations:       3002758  ( 66.6 % of used cycles)
  Rx packets:             59876336  (5986 Kpps, 398 cycles/pkt)
  Datapath passes:        59876336  (1.00 passes/pkt)
  - EMC hits:             59876336  (100.0 %)
";
        let w = parse_ovs_perf(text).unwrap();
        assert_eq!(w.rx_packets, 59_876_336);
        assert!((w.cycles_per_packet - 398.0).abs() < 1e-9);
        let idle = parse_ovs_perf("  Rx packets:                    0\n").unwrap();
        assert_eq!(idle.rx_packets, 0);
        assert!(parse_ovs_perf("nothing here").is_err());
        assert!(parse_ovs_perf("  Rx packets:  12 (1 Kpps, x cycles/pkt)").is_err());
    }

    #[test]
    fn flowctl_window_is_the_difference_of_cumulative_counters() {
        // an older switchd: datapath cycles only
        let a = r#"{"ok":{"pmds":[{"pmd":0,"rx_packets":1000,"cycles_per_packet":500.0}]}}"#;
        let b = r#"{"ok":{"pmds":[{"pmd":0,"rx_packets":3000,"cycles_per_packet":300.0}]}}"#;
        let (w, basis) = flowctl_window(a, b).unwrap();
        assert_eq!(w.rx_packets, 2000);
        assert_eq!(basis, CycleBasis::Datapath);
        // (3000*300 - 1000*500) / 2000 = 200
        assert!((w.cycles_per_packet - 200.0).abs() < 1e-9);
        // busy cycles, two threads: (900000 + 100000 - 400000 - 0) / (2500 + 500 - 1000 - 0)
        let a = r#"{"ok":{"pmds":[{"rx_packets":1000,"cycles_per_packet":1.0,"busy_cycles":400000},
                                  {"rx_packets":0,"cycles_per_packet":0.0,"busy_cycles":0}]}}"#;
        let b = r#"{"ok":{"pmds":[{"rx_packets":2500,"cycles_per_packet":1.0,"busy_cycles":900000},
                                  {"rx_packets":500,"cycles_per_packet":1.0,"busy_cycles":100000}]}}"#;
        let (w, basis) = flowctl_window(a, b).unwrap();
        assert_eq!((w.rx_packets, basis), (2000, CycleBasis::Busy));
        assert!(
            (w.cycles_per_packet - 300.0).abs() < 1e-9,
            "{}",
            w.cycles_per_packet
        );
        assert!(flowctl_window(b, a).is_err());
        assert!(flowctl_window("{}", b).is_err());
        assert!(flowctl_window("not json", b).is_err());
    }

    #[test]
    fn report_medians_and_ratio() {
        let tsv = "# switch case rep mpps cpp
ovs loop-64B 1 6.0 400
switchd loop-64B 1 9.0 250
ovs loop-64B 2 5.0 420
switchd loop-64B 2 7.0 260
ovs loop-64B 3 7.0 380
switchd loop-64B 3 8.0 nan
ovs flows-64B 1 3.0 800
";
        let s = parse_results(tsv).unwrap();
        let r = report(&s);
        assert!(
            r.contains(
                "| loop-64B | 8.00 (7.00-9.00), n=3 | 255 | 6.00 (5.00-7.00), n=3 | 400 | 1.33x |"
            ),
            "{r}"
        );
        assert!(
            r.contains("| flows-64B | not run | - | 3.00 (3.00-3.00), n=1 | 800 | - |"),
            "{r}"
        );
        assert!(
            !r.contains("switchd-alt"),
            "no A/B table without switchd-alt windows"
        );
        let ab = parse_results(&format!(
            "{tsv}switchd-alt loop-64B 1 6.0 300\nswitchd-alt loop-64B 2 4.0 320\n"
        ))
        .unwrap();
        let r = report(&ab);
        assert!(
            r.contains(
                "| loop-64B | 8.00 (7.00-9.00), n=3 | 255 | 5.00 (4.00-6.00), n=2 | 310 | 1.60x |"
            ),
            "{r}"
        );
        assert!(parse_results("ovs x 1 fast 3").is_err());
        assert!(parse_results("ovs x 1").is_err());
        assert_eq!(stats(&[f64::NAN]), None);
        assert_eq!(stats(&[2.0, 1.0]), Some((1.5, 1.0, 2.0)));
    }
}
