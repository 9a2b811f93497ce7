//! Masquerade rules like ip-masq-agent's: pod traffic leaving the cluster
//! for anything outside the non-masquerade CIDRs leaves with the node's
//! address (docs/policy.md "Masquerade").
//!
//! Input: a [`MasqConfig`] (YAML or JSON, ip-masq-agent's keys plus what a
//! switch needs: the node address, the uplink port, what to do after);
//! output: flows in tables 50-52 and one hook in table 0, all with
//! [`MASQ_COOKIE`]. The translation is conntrack's
//! (`ct(commit,zone=Z,nat(src=NODE_IP),table=52)`, ovs-actions(7)); replies
//! arriving on the uplink are un-NATed by `ct(zone=Z,nat,table=51)` and
//! routed to the pod through table 30.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::compile::Flow;
use super::model::documents;
use super::net::Cidr;
use super::{PolicyError, MASQ_COOKIE};
use crate::tables::*;

/// ip-masq-agent's default nonMasqueradeCIDRs (its README: RFC 1918,
/// RFC 6598, and the IETF/TEST-NET/benchmark/reserved ranges).
pub const DEFAULT_NON_MASQ: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
];

/// Link-local, not masqueraded unless `masqLinkLocal` (ip-masq-agent).
pub const LINK_LOCAL: &str = "169.254.0.0/16";

/// Priority of the table-0 hook for replies from the uplink: above the
/// node's own table-0 flows (tunnel classification uses 250).
pub const RETURN_HOOK_PRIORITY: u16 = 400;

/// The masquerade configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MasqConfig {
    /// The node's address: the source of masqueraded packets.
    #[serde(rename = "nodeIP")]
    pub node_ip: Ipv4Addr,
    /// The cluster's pod CIDR: only sources inside it are masqueraded, and
    /// destinations inside it never are.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// Destinations never masqueraded (default: ip-masq-agent's list).
    #[serde(default, rename = "nonMasqueradeCIDRs")]
    pub non_masquerade_cidrs: Option<Vec<String>>,
    /// Masquerade traffic to 169.254.0.0/16 too (default false).
    #[serde(default)]
    pub masq_link_local: bool,
    /// The uplink's OpenFlow port, where replies arrive.
    pub uplink_port: u32,
    /// Actions after the masquerade decision (table 52): the node's way out
    /// of the cluster. Default `route` (the node's route tables).
    #[serde(default = "default_output")]
    pub output: String,
    /// Conntrack zone (default 65280, above every pod's zone).
    #[serde(default = "default_zone")]
    pub zone: u16,
    /// ip-masq-agent's resync period: accepted and ignored (flows are
    /// recompiled when the node agent calls us).
    #[serde(default)]
    pub resync_interval: Option<String>,
}

fn default_output() -> String {
    "route".into()
}

fn default_zone() -> u16 {
    DEFAULT_MASQ_ZONE
}

impl MasqConfig {
    /// Read a configuration (one YAML or JSON document).
    pub fn load(text: &str, what: &str) -> Result<MasqConfig, PolicyError> {
        let mut docs = documents(text, what)?;
        if docs.len() != 1 {
            return Err(PolicyError::Input(format!(
                "{what}: expected one masquerade configuration document, found {}",
                docs.len()
            )));
        }
        serde_json::from_value(docs.remove(0))
            .map_err(|e| PolicyError::Input(format!("{what}: {e}")))
    }

    /// The flows.
    pub fn flows(&self) -> Result<Vec<Flow>, PolicyError> {
        let bad = |m: String| PolicyError::Input(format!("masquerade: {m}"));
        let cidr = |s: &str, key: &str| -> Result<Cidr, PolicyError> {
            Cidr::parse(s)
                .map_err(|e| bad(format!("{key}: {e}")))?
                .ok_or_else(|| bad(format!("{key}: {s} is IPv6; the masquerade rules are IPv4")))
        };
        let cluster = cidr(&self.cluster_cidr, "clusterCIDR")?;
        if self.uplink_port == 0 || self.uplink_port > 0xfeff {
            return Err(bad(format!(
                "uplinkPort {} is not a port number",
                self.uplink_port
            )));
        }
        if u32::from(self.zone) <= MAX_POD_OFPORT {
            return Err(bad(format!(
                "zone {} is a pod's zone (pods use their port number, up to {MAX_POD_OFPORT})",
                self.zone
            )));
        }
        if self.output.trim().is_empty() || self.output.contains("goto_table") {
            return Err(bad(format!(
                "output {:?}: give the actions that send a packet out of the node (route, output:N)",
                self.output
            )));
        }
        let mut keep: Vec<Cidr> = match &self.non_masquerade_cidrs {
            Some(v) => v
                .iter()
                .map(|s| cidr(s, "nonMasqueradeCIDRs"))
                .collect::<Result<_, _>>()?,
            None => DEFAULT_NON_MASQ
                .iter()
                .map(|s| cidr(s, "nonMasqueradeCIDRs"))
                .collect::<Result<_, _>>()?,
        };
        keep.push(cluster);
        if !self.masq_link_local {
            keep.push(cidr(LINK_LOCAL, "masqLinkLocal")?);
        }
        keep.sort();
        keep.dedup();
        let (z, n) = (self.zone, self.node_ip);
        let f = |table, priority, matches: String, actions: String| Flow {
            table,
            priority,
            cookie: MASQ_COOKIE,
            matches,
            actions,
        };
        let mut out = Vec::new();
        for c in &keep {
            out.push(f(
                T_MASQ,
                300,
                format!("ip,nw_dst={c}"),
                format!("goto_table:{T_MASQ_OUT}"),
            ));
        }
        out.push(f(
            T_MASQ,
            200,
            format!("ip,nw_src={cluster}"),
            format!("ct(commit,zone={z},nat(src={n}),table={T_MASQ_OUT})"),
        ));
        out.push(f(
            T_MASQ,
            0,
            String::new(),
            format!("goto_table:{T_MASQ_OUT}"),
        ));
        out.push(f(T_MASQ_OUT, 0, String::new(), self.output.clone()));
        // Replies: un-NAT in the masquerade zone. Only untracked packets, so
        // what table 51 sends back to table 0 passes this hook by.
        out.push(f(
            T_CLASSIFY,
            RETURN_HOOK_PRIORITY,
            format!("ip,in_port={},nw_dst={n},ct_state=-trk", self.uplink_port),
            format!("ct(zone={z},nat,table={T_MASQ_RETURN})"),
        ));
        // Translated back to a pod: deliver through the routing table (the
        // pod's own delivery flow, its ingress hook included).
        out.push(f(
            T_MASQ_RETURN,
            100,
            format!("ip,nw_dst={cluster}"),
            format!("resubmit(,{T_ROUTE})"),
        ));
        // Not a masqueraded connection (traffic for the node itself): back to
        // the node's own table-0 flows.
        out.push(f(
            T_MASQ_RETURN,
            0,
            String::new(),
            format!("resubmit(,{T_CLASSIFY})"),
        ));
        Ok(out)
    }
}
