//! Test-only: a small OpenFlow evaluator over flow text, so the compiler's
//! tests check what the flows *do* (which packets reach which port, which
//! cookie dropped them) rather than how they are spelled.
//!
//! It implements the subset of OVS semantics the node's flows use: highest
//! priority first (equal priorities in list order), table miss = drop,
//! `goto_table`, `resubmit(,N)` (returns), `output` (never to in_port),
//! `drop`, `mod_dl_src/dst`, `dec_ttl`, and conntrack as ovs-actions(7)
//! describes it: `ct(zone=Z,table=T)` looks the packet up in zone Z and
//! continues in T with ct_state/ct_zone set (+trk and +new, or +est, +rpl
//! for the reply direction); `commit` stores the connection; `nat(src=IP)`
//! on commit rewrites the source and `nat` un-NATs replies. A flow whose
//! match has a field it does not know makes the test panic: nothing is
//! silently ignored. ARP flows are skipped (the packets are IPv4).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::net::Cidr;

pub const NEW: u8 = 0x01;
pub const EST: u8 = 0x02;
pub const REL: u8 = 0x04;
pub const RPL: u8 = 0x08;
pub const INV: u8 = 0x10;
pub const TRK: u8 = 0x20;

#[derive(Clone, Debug)]
enum Cond {
    InPort(u32),
    DlDst(String),
    DlSrc(String),
    Proto(u8),
    NwSrc(Cidr),
    NwDst(Cidr),
    TpDst(u16, u16),
    CtState { set: u8, clear: u8 },
    CtZone(u16),
}

#[derive(Clone, Debug)]
enum Act {
    Goto(u8),
    Resubmit(u8),
    Output(u32),
    Drop,
    Ct {
        commit: bool,
        zone: u16,
        table: Option<u8>,
        nat_src: Option<Ipv4Addr>,
        nat: bool,
    },
    ModDlSrc(String),
    ModDlDst(String),
    DecTtl,
}

#[derive(Clone, Debug)]
struct Rule {
    table: u8,
    priority: u16,
    cookie: u64,
    conds: Vec<Cond>,
    acts: Vec<Act>,
    text: String,
}

/// A packet: the header fields the flows look at, plus conntrack metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub in_port: u32,
    pub dl_src: String,
    pub dl_dst: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ct_state: u8,
    pub ct_zone: u16,
}

type Tuple = (Ipv4Addr, Ipv4Addr, u8, u16, u16);

#[derive(Clone, Debug)]
struct Conn {
    orig: Tuple,
    /// The reply's tuple (after source NAT of the original).
    reply: Tuple,
}

/// What happened to one packet.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// (port, packet as sent).
    pub outputs: Vec<(u32, Pkt)>,
    /// Cookies of the flows whose `drop` action ran.
    pub dropped_by: Vec<u64>,
    /// Flows that matched, in order.
    pub path: Vec<String>,
}

/// Flow tables plus a conntrack.
#[derive(Debug, Default)]
pub struct Switch {
    rules: Vec<Rule>,
    conns: HashMap<u16, Vec<Conn>>,
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn num<T: TryFrom<u64>>(s: &str) -> T {
    let v = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad number {s}"))
    } else {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("bad number {s}"))
    };
    T::try_from(v).unwrap_or_else(|_| panic!("{s} out of range"))
}

fn ct_flags(s: &str) -> (u8, u8) {
    let (mut set, mut clear) = (0, 0);
    let mut rest = s;
    while !rest.is_empty() {
        let sign = &rest[..1];
        let end = rest[1..].find(['+', '-']).map_or(rest.len(), |p| p + 1);
        let bit = match &rest[1..end] {
            "new" => NEW,
            "est" => EST,
            "rel" => REL,
            "rpl" => RPL,
            "inv" => INV,
            "trk" => TRK,
            other => panic!("ct_state flag {other}"),
        };
        if sign == "+" {
            set |= bit
        } else {
            clear |= bit
        }
        rest = &rest[end..];
    }
    (set, clear)
}

fn parse_rule(text: &str) -> Option<Rule> {
    let (m, a) = text.split_once("actions=").expect("actions");
    let (mut table, mut priority, mut cookie) = (0, 32768, 0);
    let mut conds = Vec::new();
    for tok in m.split(',').filter(|t| !t.is_empty()) {
        let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
        match k {
            "table" => table = num(v),
            "priority" => priority = num(v),
            "cookie" => cookie = num(v),
            "ip" => {}
            "tcp" => conds.push(Cond::Proto(6)),
            "udp" => conds.push(Cond::Proto(17)),
            "sctp" => conds.push(Cond::Proto(132)),
            "arp" => return None,
            "in_port" => conds.push(Cond::InPort(num(v))),
            "dl_dst" => conds.push(Cond::DlDst(v.into())),
            "dl_src" => conds.push(Cond::DlSrc(v.into())),
            "nw_src" => conds.push(Cond::NwSrc(Cidr::parse(v).unwrap().unwrap())),
            "nw_dst" => conds.push(Cond::NwDst(Cidr::parse(v).unwrap().unwrap())),
            "tp_dst" => {
                let (v, m) = v.split_once('/').unwrap_or((v, "0xffff"));
                conds.push(Cond::TpDst(num(v), num(m)))
            }
            "ct_state" => {
                let (set, clear) = ct_flags(v);
                conds.push(Cond::CtState { set, clear })
            }
            "ct_zone" => conds.push(Cond::CtZone(num(v))),
            other => panic!("evaluator does not know match field {other:?} in {text}"),
        }
    }
    let mut acts = Vec::new();
    for act in split_top(a) {
        let (k, v) = act.split_once([':', '(']).unwrap_or((act, ""));
        acts.push(match k {
            "goto_table" => Act::Goto(num(v)),
            "resubmit" => Act::Resubmit(num(v.trim_start_matches(',').trim_end_matches(')'))),
            "output" => Act::Output(num(v)),
            "drop" => Act::Drop,
            "mod_dl_src" => Act::ModDlSrc(v.into()),
            "mod_dl_dst" => Act::ModDlDst(v.into()),
            "dec_ttl" => Act::DecTtl,
            "ct" => {
                let inner = v.strip_suffix(')').expect("ct(...)");
                let (mut commit, mut zone, mut table, mut nat_src, mut nat) =
                    (false, 0, None, None, false);
                for p in split_top(inner) {
                    if p == "commit" {
                        commit = true
                    } else if let Some(z) = p.strip_prefix("zone=") {
                        zone = num(z)
                    } else if let Some(t) = p.strip_prefix("table=") {
                        table = Some(num(t))
                    } else if p == "nat" {
                        nat = true
                    } else if let Some(n) = p.strip_prefix("nat(src=") {
                        nat = true;
                        nat_src = Some(n.trim_end_matches(')').parse().expect("nat ip"))
                    } else {
                        panic!("ct argument {p} in {text}")
                    }
                }
                Act::Ct {
                    commit,
                    zone,
                    table,
                    nat_src,
                    nat,
                }
            }
            // ARP responder moves/loads never run on IPv4 packets.
            "move" | "load" | "IN_PORT" => return None,
            other => panic!("evaluator does not know action {other:?} in {text}"),
        });
    }
    Some(Rule {
        table,
        priority,
        cookie,
        conds,
        acts,
        text: text.to_string(),
    })
}

impl Pkt {
    fn tuple(&self) -> Tuple {
        (self.src, self.dst, self.proto, self.sport, self.dport)
    }
}

fn matches(c: &Cond, p: &Pkt) -> bool {
    match c {
        Cond::InPort(n) => p.in_port == *n,
        Cond::DlDst(m) => &p.dl_dst == m,
        Cond::DlSrc(m) => &p.dl_src == m,
        Cond::Proto(n) => p.proto == *n,
        Cond::NwSrc(c) => c.contains_ip(p.src),
        Cond::NwDst(c) => c.contains_ip(p.dst),
        Cond::TpDst(v, m) => matches!(p.proto, 6 | 17 | 132) && p.dport & m == *v,
        Cond::CtState { set, clear } => p.ct_state & set == *set && p.ct_state & clear == 0,
        Cond::CtZone(z) => p.ct_state & TRK != 0 && p.ct_zone == *z,
    }
}

impl Switch {
    /// Tables from flow texts (ovs-ofctl add-flow syntax).
    pub fn new<S: AsRef<str>>(flows: &[S]) -> Switch {
        let mut rules: Vec<Rule> = flows
            .iter()
            .filter_map(|f| parse_rule(f.as_ref()))
            .collect();
        rules.sort_by_key(|r| (r.table, std::cmp::Reverse(r.priority)));
        Switch {
            rules,
            conns: HashMap::new(),
        }
    }

    /// Run a packet from table 0.
    pub fn send(&mut self, mut p: Pkt) -> Outcome {
        p.ct_state = 0;
        p.ct_zone = 0;
        let mut out = Outcome::default();
        self.run(0, p, &mut out, 0);
        out
    }

    fn run(&mut self, table: u8, mut p: Pkt, out: &mut Outcome, depth: u32) -> Pkt {
        assert!(depth < 64, "resubmit loop: {:?}", out.path);
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.table == table && r.conds.iter().all(|c| matches(c, &p)))
            .cloned()
        else {
            out.path.push(format!("table {table}: miss"));
            return p;
        };
        out.path.push(rule.text.clone());
        for a in &rule.acts {
            match a {
                Act::Goto(t) => {
                    assert!(*t > table, "goto_table backwards: {}", rule.text);
                    return self.run(*t, p, out, depth + 1);
                }
                Act::Resubmit(t) => p = self.run(*t, p, out, depth + 1),
                Act::Output(n) => {
                    if *n != p.in_port {
                        out.outputs.push((*n, p.clone()))
                    }
                }
                Act::Drop => out.dropped_by.push(rule.cookie),
                Act::ModDlSrc(m) => p.dl_src = m.clone(),
                Act::ModDlDst(m) => p.dl_dst = m.clone(),
                Act::DecTtl => {}
                Act::Ct {
                    commit,
                    zone,
                    table: t,
                    nat_src,
                    nat,
                } => {
                    let mut q = p.clone();
                    self.ct(&mut q, *zone, *commit, *nat, *nat_src);
                    match t {
                        // Fork: the tracked copy continues in T; the
                        // original goes on with the rest of this list.
                        Some(t) => {
                            self.run(*t, q, out, depth + 1);
                        }
                        // No recirculation: ct_state is not updated in this
                        // pass, but NAT applies to the packet.
                        None => {
                            p.src = q.src;
                            p.dst = q.dst;
                            p.sport = q.sport;
                            p.dport = q.dport;
                        }
                    }
                }
            }
        }
        p
    }

    fn ct(&mut self, p: &mut Pkt, zone: u16, commit: bool, nat: bool, nat_src: Option<Ipv4Addr>) {
        let t = p.tuple();
        let conns = self.conns.entry(zone).or_default();
        p.ct_zone = zone;
        if let Some(c) = conns.iter().find(|c| c.orig == t) {
            p.ct_state = TRK | EST;
            if nat {
                p.src = c.reply.1;
                p.sport = c.reply.4;
            }
        } else if let Some(c) = conns.iter().find(|c| c.reply == t) {
            p.ct_state = TRK | EST | RPL;
            if nat {
                p.dst = c.orig.0;
                p.dport = c.orig.3;
            }
        } else {
            p.ct_state = TRK | NEW;
            if commit {
                let src = nat_src.unwrap_or(p.src);
                // Source NAT keeps the port unless another connection's
                // reply already uses it (then the next free one), as
                // conntrack's port allocation must.
                let mut sport = p.sport;
                while nat_src.is_some()
                    && conns
                        .iter()
                        .any(|c| c.reply == (p.dst, src, p.proto, p.dport, sport))
                {
                    sport = sport.wrapping_add(1);
                }
                conns.push(Conn {
                    orig: t,
                    reply: (p.dst, src, p.proto, p.dport, sport),
                });
                if nat_src.is_some() {
                    p.src = src;
                    p.sport = sport;
                }
            }
        }
    }

    /// Forget every connection (a conntrack flush).
    pub fn flush(&mut self) {
        self.conns.clear();
    }
}
