//! NetworkPolicy → ACL flows (docs/policy.md "What the flows do").
//!
//! Input: validated policies and the inventory; output: [`Flow`]s in the
//! ACL tables of `crate::tables`. Semantics follow the Kubernetes API
//! reference for NetworkPolicy (networking.k8s.io/v1):
//! - a pod is isolated for ingress (egress) when at least one policy of its
//!   namespace selects it with `Ingress` (`Egress`) in its effective
//!   policyTypes; then only the union of those policies' rules is allowed,
//!   plus replies and related traffic of allowed connections;
//! - a rule allows traffic matching any of its peers AND any of its ports;
//!   absent or empty `from`/`to`/`ports` mean "all".
//!
//! Only pods of this node (with an `ofport`) get flows, and only when some
//! policy selects them: a selected pod's packets, both ways, go through
//! conntrack in the pod's own zone (zone = its OpenFlow port); everything
//! else keeps cni-shim's conntrack-free path. One zone per pod (as OVN has
//! per logical port) means each side of a connection judges it once and
//! commits it in its own zone, so a reply always finds its connection
//! `+est` in the zone of the pod that allowed it, whichever side the other
//! pod is on and whether or not a policy selects it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use super::model::{IntOrString, Inventory, NetworkPolicy, Peer, PodInfo, PolicyPort};
use super::net::{port_masks, subtract, Cidr};
use super::{policy_cookie, PolicyError, BASE_COOKIE};
use crate::tables::*;

/// One flow, in ovs-ofctl add-flow syntax when printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie (the policy's, or [`BASE_COOKIE`] for shared plumbing).
    pub cookie: u64,
    /// Match fields, comma-separated, protocol first (may be empty).
    pub matches: String,
    /// Actions.
    pub actions: String,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "table={},priority={},cookie={:#x},",
            self.table, self.priority, self.cookie
        )?;
        if !self.matches.is_empty() {
            write!(f, "{},", self.matches)?;
        }
        write!(f, "actions={}", self.actions)
    }
}

/// Priorities inside an ACL table.
pub mod prio {
    /// Hooks (tables 1 and 40), above cni-shim's 10.
    pub const HOOK: u16 = 100;
    /// `+inv`: dropped.
    pub const INVALID: u16 = 1000;
    /// `+est`, `+rel`: allowed.
    pub const ESTABLISHED: u16 = 900;
    /// A rule's allow of a new connection.
    pub const ALLOW: u16 = 500;
    /// Default: deny (isolated) or commit (not isolated in that direction).
    pub const DEFAULT: u16 = 100;
}

/// The protocols a NetworkPolicyPort names.
fn protocol(p: &Option<String>) -> Result<(u8, &'static str), String> {
    match p.as_deref().unwrap_or("TCP") {
        "TCP" => Ok((6, "tcp")),
        "UDP" => Ok((17, "udp")),
        "SCTP" => Ok((132, "sctp")),
        other => Err(format!("protocol {other:?}: TCP, UDP or SCTP")),
    }
}

/// A NetworkPolicyPort, checked.
#[derive(Clone, Debug)]
enum PortSpec {
    /// Every port of the protocol (or a range).
    Range { proto: u8, lo: u16, hi: u16 },
    /// A named container port, resolved per pod.
    Named { proto: u8, name: String },
}

fn port_spec(p: &PolicyPort) -> Result<PortSpec, String> {
    let (proto, _) = protocol(&p.protocol)?;
    let num = |v: i64, what: &str| -> Result<u16, String> {
        u16::try_from(v)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{what} {v}: must be 1..65535"))
    };
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortSpec::Range {
            proto,
            lo: 0,
            hi: 65535,
        }),
        (None, Some(_)) => Err("endPort needs port".into()),
        (Some(IntOrString::Int(n)), end) => {
            let lo = num(*n, "port")?;
            let hi = match end {
                None => lo,
                Some(e) => {
                    let e = num(e, "endPort")?;
                    if e < lo {
                        return Err(format!("endPort {e} is below port {lo}"));
                    }
                    e
                }
            };
            Ok(PortSpec::Range { proto, lo, hi })
        }
        (Some(IntOrString::Str(s)), end) => {
            if end.is_some() {
                return Err(format!(
                    "endPort needs a numeric port, not the named port {s:?}"
                ));
            }
            // IANA_SVC_NAME: 1-15 of [a-z0-9-], at least one letter.
            let ok = !s.is_empty()
                && s.len() <= 15
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.bytes().any(|b| b.is_ascii_lowercase());
            if !ok {
                return Err(format!(
                    "port {s:?}: not a port number nor a valid port name (IANA_SVC_NAME)"
                ));
            }
            Ok(PortSpec::Named {
                proto,
                name: s.clone(),
            })
        }
    }
}

/// Pods and namespaces, indexed.
struct Cluster<'a> {
    pods: Vec<(&'a PodInfo, Vec<Ipv4Addr>)>,
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Cluster<'a> {
    fn new(inv: &'a Inventory) -> Result<Cluster<'a>, PolicyError> {
        let mut ns_labels = BTreeMap::new();
        for ns in &inv.namespaces {
            let mut l = ns.labels.clone();
            l.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
            ns_labels.insert(ns.name.clone(), l);
        }
        let mut pods = Vec::new();
        for p in &inv.pods {
            let ips = p
                .ipv4()
                .map_err(|e| PolicyError::Input(format!("pod {}: {e}", p.id())))?;
            ns_labels.entry(p.namespace.clone()).or_insert_with(|| {
                BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    p.namespace.clone(),
                )])
            });
            pods.push((p, ips));
        }
        Ok(Cluster { pods, ns_labels })
    }

    /// The pods a peer with selectors names, for a policy in `ns`.
    fn peer_pods(&self, peer: &Peer, ns: &str) -> Vec<&(&'a PodInfo, Vec<Ipv4Addr>)> {
        self.pods
            .iter()
            .filter(|(p, _)| {
                let ns_ok = match &peer.namespace_selector {
                    None => p.namespace == ns,
                    Some(sel) => self
                        .ns_labels
                        .get(&p.namespace)
                        .is_some_and(|l| sel.matches(l)),
                };
                let pod_ok = match &peer.pod_selector {
                    None => true,
                    Some(sel) => sel.matches(&p.labels),
                };
                ns_ok && pod_ok
            })
            .collect()
    }
}

/// What one rule allows, expanded: (peer prefix or any, protocol or any,
/// destination port range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Allow {
    peer: Option<Cidr>,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
}

/// Peers of a rule, resolved: prefixes, with the pod behind a /32 when the
/// peer is a pod (for named ports on egress).
enum PeerSet<'a> {
    Any,
    List(Vec<(Cidr, Option<&'a PodInfo>)>),
}

fn named_port(pod: &PodInfo, proto: u8, name: &str) -> Option<u16> {
    pod.ports.iter().find_map(|cp| {
        let (p, _) = protocol(&cp.protocol).ok()?;
        (cp.name.as_deref() == Some(name) && p == proto).then_some(cp.container_port)
    })
}

/// Expand one rule for the selected pod `me`.
fn expand_rule<'a>(
    cluster: &'a Cluster<'a>,
    policy: &NetworkPolicy,
    peers: &Option<Vec<Peer>>,
    ports: &Option<Vec<PolicyPort>>,
    me: &PodInfo,
    ingress: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Allow>, String> {
    let peer_set = match peers {
        None => PeerSet::Any,
        Some(v) if v.is_empty() => PeerSet::Any,
        Some(v) => {
            let mut list = Vec::new();
            for peer in v {
                if let Some(b) = &peer.ip_block {
                    let Some(base) = Cidr::parse(&b.cidr)? else {
                        warnings.push(format!(
                            "{}: ipBlock {} is IPv6: the switch's pod flows are IPv4, it allows nothing",
                            policy.id(),
                            b.cidr
                        ));
                        continue;
                    };
                    let mut ex = Vec::new();
                    for e in &b.except {
                        if let Some(e) = Cidr::parse(e)? {
                            if !base.contains(e) || e == base {
                                return Err(format!(
                                    "ipBlock {}: except {e} must lie strictly inside the cidr",
                                    b.cidr
                                ));
                            }
                            ex.push(e);
                        }
                    }
                    list.extend(subtract(base, &ex).into_iter().map(|c| (c, None)));
                } else {
                    for (p, ips) in cluster.peer_pods(peer, policy.namespace()) {
                        list.extend(ips.iter().map(|a| (Cidr::host(*a), Some(*p))));
                    }
                }
            }
            PeerSet::List(list)
        }
    };
    let specs: Vec<PortSpec> = match ports {
        None => vec![],
        Some(v) => v.iter().map(port_spec).collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    let peers_iter: Vec<(Option<Cidr>, Option<&PodInfo>)> = match &peer_set {
        PeerSet::Any => vec![(None, None)],
        PeerSet::List(l) => l.iter().map(|(c, p)| (Some(*c), *p)).collect(),
    };
    for (peer, peer_pod) in &peers_iter {
        if specs.is_empty() {
            out.push(Allow {
                peer: *peer,
                proto: None,
                ports: None,
            });
            continue;
        }
        for s in &specs {
            match s {
                PortSpec::Range { proto, lo, hi } => {
                    // SCTP ports match like TCP and UDP ones (`sctp,tp_dst=`,
                    // RFC 9260 §3.1 ports, extracted by switchd).
                    let ports = (!(*lo == 0 && *hi == 65535)).then_some((*lo, *hi));
                    out.push(Allow {
                        peer: *peer,
                        proto: Some(*proto),
                        ports,
                    })
                }
                PortSpec::Named { proto, name } => {
                    if ingress {
                        // The destination is the selected pod itself.
                        if let Some(n) = named_port(me, *proto, name) {
                            out.push(Allow {
                                peer: *peer,
                                proto: Some(*proto),
                                ports: Some((n, n)),
                            });
                        }
                    } else {
                        match (peer, peer_pod) {
                            (_, Some(pp)) => {
                                if let Some(n) = named_port(pp, *proto, name) {
                                    out.push(Allow {
                                        peer: *peer,
                                        proto: Some(*proto),
                                        ports: Some((n, n)),
                                    });
                                }
                            }
                            (None, None) => {
                                // Any destination: every pod with that port.
                                for (pp, ips) in &cluster.pods {
                                    if let Some(n) = named_port(pp, *proto, name) {
                                        out.extend(ips.iter().map(|a| Allow {
                                            peer: Some(Cidr::host(*a)),
                                            proto: Some(*proto),
                                            ports: Some((n, n)),
                                        }));
                                    }
                                }
                            }
                            (Some(_), None) => {
                                warnings.push(format!(
                                    "{}: named port {name:?} towards an ipBlock matches no pod port: it allows nothing there",
                                    policy.id()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Check what the API server would reject, so a bad object is an error
/// rather than a silently different policy.
pub fn validate(p: &NetworkPolicy) -> Result<(), String> {
    p.spec.pod_selector.validate()?;
    if let Some(t) = &p.spec.policy_types {
        for t in t {
            if t != "Ingress" && t != "Egress" {
                return Err(format!("policyTypes: {t:?} is not Ingress or Egress"));
            }
        }
    }
    let peers = p
        .spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten())
        .chain(
            p.spec
                .egress
                .iter()
                .flatten()
                .flat_map(|r| r.to.iter().flatten()),
        );
    for peer in peers {
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, selectors) {
            (Some(_), true) => {
                return Err(
                    "a peer has ipBlock together with a selector: give them as separate peers"
                        .into(),
                )
            }
            (None, false) => return Err("a peer with neither ipBlock nor a selector".into()),
            (Some(b), false) => {
                Cidr::parse(&b.cidr)?;
                for e in &b.except {
                    Cidr::parse(e)?;
                }
            }
            (None, true) => {
                for s in peer
                    .pod_selector
                    .iter()
                    .chain(peer.namespace_selector.iter())
                {
                    s.validate()?;
                }
            }
        }
    }
    let ports = p
        .spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten())
        .chain(
            p.spec
                .egress
                .iter()
                .flatten()
                .flat_map(|r| r.ports.iter().flatten()),
        );
    for port in ports {
        port_spec(port)?;
    }
    Ok(())
}

fn allow_match(a: &Allow, zone: u16, ingress: bool) -> Vec<String> {
    let proto = match a.proto {
        None => "ip",
        Some(6) => "tcp",
        Some(17) => "udp",
        _ => "sctp",
    };
    let mut base = format!("{proto},ct_state=+new+trk,ct_zone={zone}");
    if let Some(c) = a.peer {
        base.push_str(&format!(
            ",{}={c}",
            if ingress { "nw_src" } else { "nw_dst" }
        ));
    }
    match a.ports {
        None => vec![base],
        Some((lo, hi)) => port_masks(lo, hi)
            .into_iter()
            .map(|(v, m)| {
                if m == 0xffff {
                    format!("{base},tp_dst={v}")
                } else {
                    format!("{base},tp_dst={v:#x}/{m:#x}")
                }
            })
            .collect(),
    }
}

/// One rule's peers (`from`/`to`) and ports.
type RuleRef<'a> = (&'a Option<Vec<Peer>>, &'a Option<Vec<PolicyPort>>);

/// A local pod some policy selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedPod {
    /// `namespace/name`.
    pub pod: String,
    /// OpenFlow port = conntrack zone.
    pub ofport: u32,
    /// Policies isolating its ingress.
    pub ingress: Vec<String>,
    /// Policies isolating its egress.
    pub egress: Vec<String>,
}

/// The compiler's result.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// The flows, in table order.
    pub flows: Vec<Flow>,
    /// Each policy (`namespace/name`) and its cookie.
    pub cookies: Vec<(String, u64)>,
    /// Local pods with policy flows.
    pub selected: Vec<SelectedPod>,
    /// Things that compile but probably do not do what was meant.
    pub warnings: Vec<String>,
}

/// Compile `policies` for the local pods of `inv`.
pub fn compile(policies: &[NetworkPolicy], inv: &Inventory) -> Result<Compiled, PolicyError> {
    let mut seen = HashSet::new();
    for p in policies {
        validate(p).map_err(|e| PolicyError::Policy(p.id(), e))?;
        if !seen.insert(p.id()) {
            return Err(PolicyError::Policy(
                p.id(),
                "given twice (namespace/name must be unique)".into(),
            ));
        }
    }
    let mut sorted: Vec<&NetworkPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| p.id());
    let cluster = Cluster::new(inv)?;
    let mut out = Compiled {
        cookies: sorted
            .iter()
            .map(|p| (p.id(), policy_cookie(&p.id())))
            .collect(),
        ..Compiled::default()
    };
    let mut zones = BTreeMap::new();
    for (pod, ips) in &cluster.pods {
        let Some(ofport) = pod.ofport else {
            if pod.port.is_some() {
                return Err(PolicyError::Input(format!(
                    "pod {}: port {:?} has no ofport (apply resolves port names through switchd; compile needs ofport)",
                    pod.id(),
                    pod.port.as_deref().unwrap_or("")
                )));
            }
            continue;
        };
        let selecting: Vec<&&NetworkPolicy> = sorted
            .iter()
            .filter(|p| p.namespace() == pod.namespace && p.spec.pod_selector.matches(&pod.labels))
            .collect();
        let ing: Vec<&&NetworkPolicy> = selecting
            .iter()
            .copied()
            .filter(|p| p.affects().0)
            .collect();
        let eg: Vec<&&NetworkPolicy> = selecting
            .iter()
            .copied()
            .filter(|p| p.affects().1)
            .collect();
        if ing.is_empty() && eg.is_empty() {
            continue;
        }
        if ofport == 0 || ofport > MAX_POD_OFPORT {
            return Err(PolicyError::Input(format!(
                "pod {}: ofport {ofport} outside 1..={MAX_POD_OFPORT} (it is the pod's conntrack zone)",
                pod.id()
            )));
        }
        // In range: checked just above.
        let zone = ofport as u16;
        if let Some(other) = zones.insert(zone, pod.id()) {
            return Err(PolicyError::Input(format!(
                "pods {other} and {} both have ofport {ofport}",
                pod.id()
            )));
        }
        let mac = match (&pod.mac, ips.first()) {
            (Some(m), _) => m.clone(),
            (None, Some(a)) => pod_mac(*a),
            (None, None) => {
                return Err(PolicyError::Input(format!(
                    "pod {}: a selected pod of this node needs an IPv4 address or a mac",
                    pod.id()
                )))
            }
        };
        out.selected.push(SelectedPod {
            pod: pod.id(),
            ofport,
            ingress: ing.iter().map(|p| p.id()).collect(),
            egress: eg.iter().map(|p| p.id()).collect(),
        });
        let base = |table, priority, matches: String, actions: String| Flow {
            table,
            priority,
            cookie: BASE_COOKIE,
            matches,
            actions,
        };
        // Hooks: this pod's packets through conntrack in its zone.
        out.flows.push(base(
            T_EGRESS_HOOK,
            prio::HOOK,
            format!("ip,in_port={ofport}"),
            format!("ct(zone={zone},table={T_EGRESS_ACL})"),
        ));
        out.flows.push(base(
            T_INGRESS_HOOK,
            prio::HOOK,
            format!("ip,dl_dst={mac}"),
            format!("ct(zone={zone},table={T_INGRESS_ACL})"),
        ));
        for (ingress, table, next, isolating) in [
            (false, T_EGRESS_ACL, T_EGRESS_OUT, &eg),
            (true, T_INGRESS_ACL, T_INGRESS_OUT, &ing),
        ] {
            out.flows.push(base(
                table,
                prio::INVALID,
                format!("ip,ct_state=+inv+trk,ct_zone={zone}"),
                "drop".into(),
            ));
            for st in ["+est+trk", "+rel+trk"] {
                out.flows.push(base(
                    table,
                    prio::ESTABLISHED,
                    format!("ip,ct_state={st},ct_zone={zone}"),
                    format!("goto_table:{next}"),
                ));
            }
            let commit = format!("ct(commit,zone={zone}),goto_table:{next}");
            if isolating.is_empty() {
                out.flows.push(base(
                    table,
                    prio::DEFAULT,
                    format!("ip,ct_state=+new+trk,ct_zone={zone}"),
                    commit,
                ));
                continue;
            }
            let mut done = HashSet::new();
            for p in isolating.iter() {
                let cookie = policy_cookie(&p.id());
                let rules: Vec<RuleRef<'_>> = if ingress {
                    p.spec
                        .ingress
                        .iter()
                        .flatten()
                        .map(|r| (&r.from, &r.ports))
                        .collect()
                } else {
                    p.spec
                        .egress
                        .iter()
                        .flatten()
                        .map(|r| (&r.to, &r.ports))
                        .collect()
                };
                for (peers, ports) in rules {
                    let allows =
                        expand_rule(&cluster, p, peers, ports, pod, ingress, &mut out.warnings)
                            .map_err(|e| PolicyError::Policy(p.id(), e))?;
                    for a in allows {
                        for m in allow_match(&a, zone, ingress) {
                            // The same match from two rules or policies: the
                            // first (policy order) keeps it, as switchd would
                            // replace it anyway.
                            if done.insert(m.clone()) {
                                out.flows.push(Flow {
                                    table,
                                    priority: prio::ALLOW,
                                    cookie,
                                    matches: m,
                                    actions: commit.clone(),
                                });
                            }
                        }
                    }
                }
            }
            // Default deny, counted on the first isolating policy's cookie.
            out.flows.push(Flow {
                table,
                priority: prio::DEFAULT,
                cookie: policy_cookie(&isolating[0].id()),
                matches: format!("ip,ct_zone={zone}"),
                actions: "drop".into(),
            });
        }
    }
    out.flows
        .sort_by_key(|f| (f.table, std::cmp::Reverse(f.priority)));
    Ok(out)
}
