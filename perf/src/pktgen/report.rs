//! What a generator run reports, and the harness's summary of many runs.
//!
//! [`Report`] is printed as one `key=value` line (for people and `awk`) or as
//! JSON (`--json`); [`Report::parse_text`] reads the line back, so scripts
//! and tests can use either. [`summarize`] turns the harness's samples file
//! (`dp<TAB>metric<TAB>rep<TAB>value` lines) into medians with min-max per
//! data plane and metric, and ratios of medians against a reference data
//! plane (BENCH.md: only ratios measured in the same run mean much).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of one generator run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Frame length without FCS.
    pub size: usize,
    /// Distinct flows (UDP source ports).
    pub flows: u32,
    /// Requested rate in frames/s (0 = as fast as possible).
    pub rate: u64,
    /// Length of the measurement window in seconds (after the warm-up).
    pub window_s: f64,
    /// Frames the transmit program sent in the window.
    pub sent: u64,
    /// Generator frames counted by the receiver in the window (0 without a receiver).
    pub received: u64,
    /// Other frames the receiver saw in the window (not the generator's).
    pub other: u64,
    /// `sent / window_s / 1e6`.
    pub tx_mpps: f64,
    /// `received / window_s / 1e6`.
    pub rx_mpps: f64,
    /// Frames sent over the whole run, warm-up and drain included.
    pub total_sent: u64,
    /// Generator frames received over the whole run.
    pub total_received: u64,
}

impl Report {
    /// Fill in the rates from counts and the window.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: usize,
        flows: u32,
        rate: u64,
        window_s: f64,
        sent: u64,
        received: u64,
        other: u64,
        total_sent: u64,
        total_received: u64,
    ) -> Report {
        let mpps = |n: u64| {
            if window_s > 0.0 {
                n as f64 / window_s / 1e6
            } else {
                0.0
            }
        };
        Report {
            size,
            flows,
            rate,
            window_s,
            sent,
            received,
            other,
            tx_mpps: mpps(sent),
            rx_mpps: mpps(received),
            total_sent,
            total_received,
        }
    }

    /// Share of the window's sent frames that did not arrive, in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        }
    }

    /// Parse the line [`fmt::Display`] prints (a leading `fs-pktgen:` is optional;
    /// unknown keys, such as `loss_pct`, are ignored).
    pub fn parse_text(line: &str) -> Result<Report, String> {
        let line = line.trim();
        let line = line.strip_prefix("fs-pktgen:").unwrap_or(line);
        let mut kv = BTreeMap::new();
        for tok in line.split_whitespace() {
            let (k, v) = tok
                .split_once('=')
                .ok_or_else(|| format!("{tok:?} is not key=value"))?;
            kv.insert(k, v);
        }
        fn get<T: std::str::FromStr>(kv: &BTreeMap<&str, &str>, k: &str) -> Result<T, String> {
            let v = kv.get(k).ok_or_else(|| format!("missing {k}="))?;
            v.parse().map_err(|_| format!("{k}={v} is not a number"))
        }
        Ok(Report {
            size: get(&kv, "size")?,
            flows: get(&kv, "flows")?,
            rate: get(&kv, "rate")?,
            window_s: get(&kv, "window_s")?,
            sent: get(&kv, "sent")?,
            received: get(&kv, "received")?,
            other: get(&kv, "other")?,
            tx_mpps: get(&kv, "tx_mpps")?,
            rx_mpps: get(&kv, "rx_mpps")?,
            total_sent: get(&kv, "total_sent")?,
            total_received: get(&kv, "total_received")?,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fs-pktgen: size={} flows={} rate={} window_s={:.3} sent={} received={} other={} \
             tx_mpps={:.4} rx_mpps={:.4} loss_pct={:.2} total_sent={} total_received={}",
            self.size,
            self.flows,
            self.rate,
            self.window_s,
            self.sent,
            self.received,
            self.other,
            self.tx_mpps,
            self.rx_mpps,
            self.loss_pct(),
            self.total_sent,
            self.total_received
        )
    }
}

/// Median, min and max of one (data plane, metric).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// Data plane.
    pub dp: String,
    /// Metric name.
    pub metric: String,
    /// Median of the samples (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// The samples, in the order measured.
    pub samples: Vec<f64>,
}

/// The median of `v` (sorted copy), None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Group `dp\tmetric\trep\tvalue` lines into [`Stat`]s, in first-seen order.
/// Blank lines and `#` comments are skipped; a malformed line is an error
/// naming its line number.
pub fn summarize(samples: &str) -> Result<Vec<Stat>, String> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut vals: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (i, line) in samples.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            return Err(format!(
                "line {}: expected dp<TAB>metric<TAB>rep<TAB>value",
                i + 1
            ));
        }
        let v: f64 = f[3]
            .parse()
            .map_err(|_| format!("line {}: value {:?} is not a number", i + 1, f[3]))?;
        let k = (f[0].to_string(), f[1].to_string());
        if !vals.contains_key(&k) {
            order.push(k.clone());
        }
        vals.entry(k).or_default().push(v);
    }
    Ok(order
        .into_iter()
        .filter_map(|k| {
            let s = vals.remove(&k)?;
            let fin: Vec<f64> = s.iter().copied().filter(|x| x.is_finite()).collect();
            Some(Stat {
                median: median(&fin)?,
                min: fin.iter().copied().fold(f64::INFINITY, f64::min),
                max: fin.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                dp: k.0,
                metric: k.1,
                samples: s,
            })
        })
        .collect())
}

/// `median(dp) / median(reference)` for every metric both have, per other dp.
pub fn ratios(stats: &[Stat], dp: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for a in stats.iter().filter(|s| s.dp == dp) {
        for b in stats.iter().filter(|s| s.dp != dp && s.metric == a.metric) {
            if b.median != 0.0 {
                out.push((b.dp.clone(), a.metric.clone(), a.median / b.median));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_round_trips() {
        let r = Report::new(
            64, 100, 0, 5.0, 5_000_000, 4_000_000, 3, 6_000_000, 4_800_000,
        );
        assert!((r.tx_mpps - 1.0).abs() < 1e-9);
        assert!((r.rx_mpps - 0.8).abs() < 1e-9);
        assert!((r.loss_pct() - 20.0).abs() < 1e-9);
        let line = r.to_string();
        assert!(line.contains("loss_pct=20.00"));
        let back = Report::parse_text(&line).unwrap();
        assert_eq!(back.sent, r.sent);
        assert_eq!(back.received, r.received);
        assert_eq!(back.flows, 100);
        assert!((back.rx_mpps - 0.8).abs() < 1e-4);
        let json = serde_json::to_string(&r).unwrap();
        let j: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(j, r);
    }

    #[test]
    fn bad_lines_are_errors_not_zeros() {
        assert!(Report::parse_text("fs-pktgen: size=64")
            .unwrap_err()
            .contains("missing"));
        assert!(Report::parse_text("size=x").is_err());
        assert!(Report::parse_text("garbage").is_err());
    }

    #[test]
    fn summary_gives_median_min_max_in_order() {
        let s = "# comment\nswitchd\tudp64\t1\t1.0\nbridge\tudp64\t1\t0.5\n\
                 switchd\tudp64\t2\t3.0\nbridge\tudp64\t2\t0.7\nswitchd\tudp64\t3\t2.0\n\
                 bridge\tudp64\t3\t0.6\nbridge\ttcp\t1\t2.0\nswitchd\ttcp\t1\tNaN\n";
        let st = summarize(s).unwrap();
        assert_eq!(st[0].dp, "switchd");
        assert_eq!((st[0].median, st[0].min, st[0].max), (2.0, 1.0, 3.0));
        assert_eq!(st[1].dp, "bridge");
        assert!((st[1].median - 0.6).abs() < 1e-12);
        // A metric whose samples are all NaN has no median and is left out.
        assert_eq!(st.len(), 3);
        let r = ratios(&st, "switchd");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.as_str(), r[0].1.as_str()), ("bridge", "udp64"));
        assert!((r[0].2 - 2.0 / 0.6).abs() < 1e-9);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert!(summarize("a\tb\tc").unwrap_err().contains("line 1"));
        assert!(summarize("a\tb\t1\tx")
            .unwrap_err()
            .contains("not a number"));
    }
}
