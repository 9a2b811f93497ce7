//! `pvp-tool`: the computing half of the PVP harness (`perf/pvp/pvp.sh`).
//!
//! The shell script starts and stops OVS-DPDK, switchd and testpmd and captures their output
//! into files; this tool turns those files into numbers and generates the flow files, so that
//! logic is unit-tested (`perf::pvp`) instead of living in awk. It reads files and arguments,
//! writes one answer to stdout, and exits non-zero with a message on anything it cannot parse.
//!
//! ```text
//! pvp-tool flows inport|route both|oneway [--base 10.253.0.0/16] [--routes 1000]
//! pvp-tool rate SECONDS BEFORE AFTER        # testpmd `show port stats all` snapshots -> Mpps
//! pvp-tool ovs-perf FILE                    # ovs-appctl dpif-netdev/pmd-perf-show -> "rx cpp busy"
//! pvp-tool flowctl-perf BEFORE AFTER        # flowctl --json pmd-perf-show x2 -> "rx cpp busy|datapath-only"
//! pvp-tool report RESULTS.tsv               # Markdown table: medians, min-max, ratio
//! ```

use std::process::ExitCode;

use perf::pvp::{self, Direction, Pipeline};

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["flows", pipe, dir, rest @ ..] => {
            let pipeline = match *pipe {
                "inport" => Pipeline::InPort,
                "route" => Pipeline::Route,
                p => return Err(format!("unknown pipeline {p:?} (inport, route)")),
            };
            let dir = match *dir {
                "both" => Direction::Both,
                "oneway" => Direction::OneWay,
                d => return Err(format!("unknown direction {d:?} (both, oneway)")),
            };
            let mut base = "10.253.0.0/16";
            let mut routes = "1000";
            let mut it = rest.iter();
            while let Some(k) = it.next() {
                let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
                match *k {
                    "--base" => base = v,
                    "--routes" => routes = v,
                    _ => return Err(format!("unknown option {k}")),
                }
            }
            let n: usize = routes
                .parse()
                .map_err(|_| format!("--routes {routes:?} is not a number"))?;
            let r = match pipeline {
                Pipeline::Route => pvp::cover(pvp::parse_prefix(base)?, n)?,
                Pipeline::InPort => Vec::new(),
            };
            Ok(pvp::flow_file(pipeline, dir, &r))
        }
        ["rate", secs, before, after] => {
            let dt: f64 = secs
                .parse()
                .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
            let b = pvp::parse_testpmd_stats(&read(before)?)?;
            let a = pvp::parse_testpmd_stats(&read(after)?)?;
            Ok(format!("{:.3}\n", pvp::rx_mpps(&b, &a, dt)?))
        }
        ["ovs-perf", file] => {
            let w = pvp::parse_ovs_perf(&read(file)?)?;
            Ok(format!(
                "{} {:.0} busy\n",
                w.rx_packets, w.cycles_per_packet
            ))
        }
        ["flowctl-perf", before, after] => {
            let (w, basis) = pvp::flowctl_window(&read(before)?, &read(after)?)?;
            let basis = match basis {
                pvp::CycleBasis::Busy => "busy",
                pvp::CycleBasis::Datapath => "datapath-only",
            };
            Ok(format!(
                "{} {:.0} {basis}\n",
                w.rx_packets, w.cycles_per_packet
            ))
        }
        ["report", file] => Ok(pvp::report(&pvp::parse_results(&read(file)?)?)),
        _ => Err(
            "usage: pvp-tool flows|rate|ovs-perf|flowctl-perf|report ... (see perf/pvp/README.md)"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pvp-tool: {e}");
            ExitCode::FAILURE
        }
    }
}
