//! L3 routing state: route tables (longest-prefix match, ECMP next hops),
//! the neighbour table (next-hop IP to MAC) and the router MACs, as the
//! `route` action of the pipeline consults them.
//!
//! Data enters from the control thread: `flowctl add-route`/`del-route`,
//! `add-neigh`/`del-neigh` and `set-router-mac` requests, and the state file
//! at start. Each change builds a new [`RouteSet`] (the touched table's
//! [`lpm::Lpm`] is rebuilt whole) that travels inside the published
//! pipeline snapshot, so the polling threads read it without a lock. Data
//! leaves through [`RouteSet::lookup`], [`RouteSet::neighbour`] and
//! [`RouteSet::router_mac`], which slow-path translation calls once per
//! megaflow miss (`pipeline/xlate.rs`, the `route` action).
//!
//! The neighbour table is deliberately static: entries come from
//! `flowctl add-neigh` (or a route's own `mac=`). Dynamic resolution (ARP on
//! an underlay, as the VXLAN work does) can fill it through the same
//! [`RouteSet::add_neighbour`] / [`RouteSet::del_neighbour`] calls.
//!
//! Never: panic on any request text, or change a published set in place.

pub mod lpm;
pub mod uplink;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::flow::key::{ethertype, ipproto, FlowKey, FRAG_LATER};
use crate::flow::PortNo;
use lpm::{Lpm, Prefix, NO_ROUTE};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Most next hops one route may have (ECMP fan-out).
pub const MAX_NEXTHOPS: usize = 16;
/// Largest ECMP weight.
pub const MAX_WEIGHT: u32 = 256;

/// A route request or stored route that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    /// What is wrong, naming the token.
    pub message: String,
    /// The offending token.
    pub token: String,
}

fn err(message: impl Into<String>, token: &str) -> RouteError {
    RouteError {
        message: message.into(),
        token: token.to_string(),
    }
}

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The gateway; `None` for a directly connected route (the packet's own
    /// destination is the next hop).
    pub via: Option<IpAddr>,
    /// The egress OpenFlow port.
    pub port: PortNo,
    /// The next hop's MAC, if given on the route (else the neighbour table).
    pub mac: Option<Mac>,
    /// ECMP weight, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
}

/// A route: a prefix in a table and its next hops (several: ECMP).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Route table (0 to 255).
    pub table: u8,
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Next hops, at least one.
    pub nexthops: Vec<NextHop>,
}

/// A neighbour: an IP address and the MAC it answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: String,
    /// The port it sits behind (informational; routes say where to send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNo>,
}

/// Persisted routing state (inside the bridge's state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    /// Routes in `add-route` syntax (`table=N PREFIX via IP port=N ...`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Static neighbours.
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
    /// Router MACs: port number (None: the bridge default) to MAC text.
    #[serde(default)]
    pub router_macs: Vec<(Option<PortNo>, String)>,
}

impl RouteState {
    /// True when nothing is configured (the state file then omits it).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty() && self.router_macs.is_empty()
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn addr_bits(a: IpAddr) -> (u32, u128) {
    match a {
        IpAddr::V4(v) => (32, u128::from(u32::from(v))),
        IpAddr::V6(v) => (128, u128::from(v)),
    }
}

/// Parse `ADDR[/LEN]` (or `default`: 0.0.0.0/0); host bits must be zero,
/// as `ip route` requires.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), RouteError> {
    if s == "default" {
        return Ok((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    }
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| err(format!("{s:?} is not an IPv4 or IPv6 prefix"), s))?;
    let (width, bits) = addr_bits(addr);
    let len = match l {
        None => width,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= width)
            .ok_or_else(|| err(format!("prefix length {l:?} must be 0 to {width}"), s))?,
    };
    let len8 = u8::try_from(len).unwrap_or(u8::MAX);
    if lpm::normalise(bits, width, len8) != bits {
        return Err(err(
            format!("{s:?} has host bits set after /{len} (invalid prefix for the given length)"),
            s,
        ));
    }
    Ok((addr, len8))
}

impl Route {
    /// Parse the `add-route` syntax: `[table=N] PREFIX` followed by next
    /// hops, each `via IP` or `port=N` first, then its `port=N`, `mac=MAC`,
    /// `weight=W` (a route without `via` is directly connected).
    pub fn parse(text: &str) -> Result<Route, RouteError> {
        let mut table = 0u8;
        let mut prefix: Option<(IpAddr, u8)> = None;
        let mut hops: Vec<NextHop> = Vec::new();
        let mut toks = text.split_whitespace().peekable();
        let new_hop = |via| NextHop {
            via,
            port: u32::MAX,
            mac: None,
            weight: 1,
        };
        while let Some(t) = toks.next() {
            if let Some(v) = t.strip_prefix("table=") {
                if prefix.is_some() {
                    return Err(err("table=N must come before the prefix", t));
                }
                table = v
                    .parse()
                    .map_err(|_| err(format!("table {v:?} must be 0 to 255"), t))?;
            } else if prefix.is_none() {
                prefix = Some(parse_prefix(t)?);
            } else if t == "via" {
                let Some(ip) = toks.next() else {
                    return Err(err("via needs a next-hop address", t));
                };
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| err(format!("via {ip:?}: not an IP address"), ip))?;
                hops.push(new_hop(Some(ip)));
            } else if let Some((k, v)) = t.split_once('=') {
                if hops.is_empty() {
                    hops.push(new_hop(None));
                }
                let h = hops.last_mut().ok_or_else(|| err("no next hop", t))?;
                match k {
                    "port" => {
                        h.port = v
                            .parse::<PortNo>()
                            .ok()
                            .filter(|p| (1..=crate::flow::ofport::MAX).contains(p))
                            .ok_or_else(|| err(format!("port {v:?} is not a port number"), t))?;
                    }
                    "mac" => {
                        h.mac = Some(
                            parse_mac(v)
                                .ok_or_else(|| err(format!("mac {v:?} is not a MAC"), t))?,
                        );
                    }
                    "weight" => {
                        h.weight = v
                            .parse::<u32>()
                            .ok()
                            .filter(|w| (1..=MAX_WEIGHT).contains(w))
                            .ok_or_else(|| {
                                err(format!("weight {v:?} must be 1 to {MAX_WEIGHT}"), t)
                            })?;
                    }
                    _ => return Err(err(format!("unknown route option {k:?}"), t)),
                }
            } else {
                return Err(err(
                    format!("unexpected {t:?} (expected via, port=, mac= or weight=)"),
                    t,
                ));
            }
        }
        let (addr, len) =
            prefix.ok_or_else(|| err("missing the prefix (e.g. 10.244.2.0/24)", text))?;
        if hops.is_empty() {
            return Err(err(
                "a route needs a next hop: via IP port=N, or port=N",
                text,
            ));
        }
        if hops.len() > MAX_NEXTHOPS {
            return Err(err(format!("at most {MAX_NEXTHOPS} next hops"), text));
        }
        for h in &hops {
            if h.port == u32::MAX {
                return Err(err("every next hop needs port=N (the egress port)", text));
            }
            if let Some(v) = h.via {
                if v.is_ipv4() != addr.is_ipv4() {
                    return Err(err(
                        format!("next hop {v} is not of the prefix's family"),
                        &v.to_string(),
                    ));
                }
            }
        }
        if hops.len() > 1 && hops.iter().any(|h| h.via.is_none()) {
            return Err(err("ECMP next hops each need via IP", text));
        }
        Ok(Route {
            table,
            addr,
            len,
            nexthops: hops,
        })
    }

    /// The prefix as `ADDR/LEN`.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.addr, self.len)
    }

    /// Like `ip route show`: one line for one next hop, else the prefix and
    /// one indented `nexthop` line per next hop.
    pub fn ip_route_text(&self) -> String {
        let mut s = self.prefix();
        if self.table != 0 {
            s.push_str(&format!(" table {}", self.table));
        }
        let hop = |h: &NextHop| {
            let mut t = String::new();
            if let Some(v) = h.via {
                t.push_str(&format!("via {v} "));
            }
            t.push_str(&format!("port {}", h.port));
            if let Some(m) = h.mac {
                t.push_str(&format!(" lladdr {}", format_mac(&m)));
            }
            if h.via.is_none() {
                t.push_str(" scope link");
            }
            t
        };
        match self.nexthops.as_slice() {
            [h] => {
                s.push(' ');
                s.push_str(&hop(h));
            }
            hs => {
                for h in hs {
                    s.push_str(&format!("\n\tnexthop {} weight {}", hop(h), h.weight));
                }
            }
        }
        s
    }

    /// The next hop for a flow hash (weighted, stable for a given hash).
    pub fn select(&self, hash: u32) -> Option<&NextHop> {
        if self.nexthops.len() <= 1 {
            return self.nexthops.first();
        }
        let total: u32 = self.nexthops.iter().map(|h| h.weight).sum();
        let mut x = hash % total.max(1);
        for h in &self.nexthops {
            if x < h.weight {
                return Some(h);
            }
            x -= h.weight;
        }
        self.nexthops.last()
    }
}

/// The `add-route` text of a route; [`Route::parse`] reads it back.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table={} {}", self.table, self.prefix())?;
        for h in &self.nexthops {
            if let Some(v) = h.via {
                write!(f, " via {v}")?;
            }
            write!(f, " port={}", h.port)?;
            if let Some(m) = h.mac {
                write!(f, " mac={}", format_mac(&m))?;
            }
            if h.weight != 1 {
                write!(f, " weight={}", h.weight)?;
            }
        }
        Ok(())
    }
}

/// One route table's lookup structures.
#[derive(Clone, Debug)]
struct Fib {
    v4: Lpm,
    v6: Lpm,
    /// Routes by the value the LPMs return.
    routes: Vec<Route>,
}

/// Key of a configured route: (table, prefix address, length).
type RouteId = (u8, IpAddr, u8);

/// Every route table, the neighbour table and the router MACs of a bridge.
#[derive(Clone, Debug, Default)]
pub struct RouteSet {
    routes: BTreeMap<RouteId, Route>,
    fibs: BTreeMap<u8, Fib>,
    neighbours: BTreeMap<IpAddr, Neighbour>,
    neighbour_macs: BTreeMap<IpAddr, Mac>,
    router_macs: BTreeMap<Option<PortNo>, Mac>,
    /// Ports that resolve a next hop's MAC themselves (a routed uplink: an
    /// `afxdp` port with `ip=`, or a `routed=true` vxlan port). Runtime
    /// state derived from the ports, never persisted.
    resolvers: BTreeSet<PortNo>,
}

/// What a route lookup found.
#[derive(Clone, Copy, Debug)]
pub struct RouteHit<'a> {
    /// The longest matching route, if any.
    pub route: Option<&'a Route>,
    /// Leading destination bits that decided the answer (un-wildcard them).
    pub bits: u32,
}

impl RouteSet {
    /// An empty set.
    pub fn new() -> RouteSet {
        RouteSet::default()
    }

    /// True when no route, neighbour or router MAC is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty() && self.router_macs.is_empty()
    }

    /// Restore from persisted state (each table built once).
    pub fn from_state(st: &RouteState) -> Result<RouteSet, RouteError> {
        let mut rs = RouteSet::new();
        for t in &st.routes {
            let r = Route::parse(t)?;
            rs.routes.insert((r.table, r.addr, r.len), r);
        }
        let tables: Vec<u8> = rs.routes.keys().map(|k| k.0).collect();
        for t in tables {
            rs.rebuild(t)?;
        }
        for n in &st.neighbours {
            let mac = parse_mac(&n.mac).ok_or_else(|| err("bad neighbour MAC", &n.mac))?;
            rs.add_neighbour(n.ip, mac, n.port);
        }
        for (p, m) in &st.router_macs {
            let mac = parse_mac(m).ok_or_else(|| err("bad router MAC", m))?;
            rs.router_macs.insert(*p, mac);
        }
        Ok(rs)
    }

    /// The state to persist.
    pub fn to_state(&self) -> RouteState {
        RouteState {
            routes: self.routes.values().map(|r| r.to_string()).collect(),
            neighbours: self.neighbours.values().cloned().collect(),
            router_macs: self
                .router_macs
                .iter()
                .map(|(p, m)| (*p, format_mac(m)))
                .collect(),
        }
    }

    fn rebuild(&mut self, table: u8) -> Result<(), RouteError> {
        let routes: Vec<Route> = self
            .routes
            .range((table, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)..)
            .take_while(|(k, _)| k.0 == table)
            .map(|(_, r)| r.clone())
            .collect();
        if routes.is_empty() {
            self.fibs.remove(&table);
            return Ok(());
        }
        let (mut p4, mut p6) = (Vec::new(), Vec::new());
        for (i, r) in routes.iter().enumerate() {
            let value = u32::try_from(i)
                .ok()
                .filter(|v| *v <= lpm::MAX_VALUE)
                .ok_or_else(|| err("route table full", &r.prefix()))?;
            let (_, addr) = addr_bits(r.addr);
            let p = Prefix {
                addr,
                len: r.len,
                value,
            };
            if r.addr.is_ipv4() {
                p4.push(p);
            } else {
                p6.push(p);
            }
        }
        let v4 = Lpm::build(32, &p4).map_err(|e| err(e.to_string(), ""))?;
        let v6 = Lpm::build(128, &p6).map_err(|e| err(e.to_string(), ""))?;
        self.fibs.insert(table, Fib { v4, v6, routes });
        Ok(())
    }

    /// Add a route (replacing one with the same table and prefix). Returns
    /// true when it replaced one.
    pub fn add_route(&mut self, r: Route) -> Result<bool, RouteError> {
        let table = r.table;
        let old = self.routes.insert((r.table, r.addr, r.len), r);
        self.rebuild(table)?;
        Ok(old.is_some())
    }

    /// Delete the route `table`, `addr/len`; false when there was none.
    pub fn del_route(&mut self, table: u8, addr: IpAddr, len: u8) -> Result<bool, RouteError> {
        let gone = self.routes.remove(&(table, addr, len)).is_some();
        if gone {
            self.rebuild(table)?;
        }
        Ok(gone)
    }

    /// Every route, by table then prefix.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Add or replace a neighbour.
    pub fn add_neighbour(&mut self, ip: IpAddr, mac: Mac, port: Option<PortNo>) {
        self.neighbours.insert(
            ip,
            Neighbour {
                ip,
                mac: format_mac(&mac),
                port,
            },
        );
        self.neighbour_macs.insert(ip, mac);
    }

    /// Remove a neighbour; false when there was none.
    pub fn del_neighbour(&mut self, ip: IpAddr) -> bool {
        self.neighbour_macs.remove(&ip);
        self.neighbours.remove(&ip).is_some()
    }

    /// Every neighbour, by address.
    pub fn neighbours(&self) -> impl Iterator<Item = &Neighbour> {
        self.neighbours.values()
    }

    /// The MAC of neighbour `ip`.
    pub fn neighbour(&self, ip: IpAddr) -> Option<Mac> {
        self.neighbour_macs.get(&ip).copied()
    }

    /// Set (or with `None`, clear) the router MAC for `port` (None: the
    /// bridge default, used for ports without their own).
    pub fn set_router_mac(&mut self, port: Option<PortNo>, mac: Option<Mac>) {
        match mac {
            Some(m) => {
                self.router_macs.insert(port, m);
            }
            None => {
                self.router_macs.remove(&port);
            }
        }
    }

    /// The source MAC routed packets leave `port` with.
    pub fn router_mac(&self, port: PortNo) -> Option<Mac> {
        self.router_macs
            .get(&Some(port))
            .or_else(|| self.router_macs.get(&None))
            .copied()
    }

    /// Mark `port` as resolving next hops itself (or, with `on` false, not).
    /// The `route` action then hands such a port an IPv4 next hop without a
    /// static MAC (`SetNextHop`) instead of dropping it as `no_neighbour`.
    pub fn set_resolver(&mut self, port: PortNo, on: bool) {
        if on {
            self.resolvers.insert(port);
        } else {
            self.resolvers.remove(&port);
        }
    }

    /// Every port marked with [`RouteSet::set_resolver`].
    pub fn resolver_ports(&self) -> impl Iterator<Item = PortNo> + '_ {
        self.resolvers.iter().copied()
    }

    /// True when `port` resolves next hops itself (see [`RouteSet::set_resolver`]).
    pub fn resolves(&self, port: PortNo) -> bool {
        self.resolvers.contains(&port)
    }

    /// Router MACs as configured (None: the default).
    pub fn router_macs(&self) -> impl Iterator<Item = (Option<PortNo>, Mac)> + '_ {
        self.router_macs.iter().map(|(p, m)| (*p, *m))
    }

    /// Longest-prefix match of an IPv4 destination in `table`.
    pub fn lookup_v4(&self, table: u8, dst: u32) -> RouteHit<'_> {
        match self.fibs.get(&table) {
            None => RouteHit {
                route: None,
                bits: 0,
            },
            Some(f) => {
                let (v, bits) = f.v4.lookup_with_bits(u128::from(dst));
                RouteHit {
                    route: (v != NO_ROUTE).then(|| f.routes.get(v as usize)).flatten(),
                    bits,
                }
            }
        }
    }

    /// Longest-prefix match of an IPv6 destination in `table`.
    pub fn lookup_v6(&self, table: u8, dst: [u8; 16]) -> RouteHit<'_> {
        match self.fibs.get(&table) {
            None => RouteHit {
                route: None,
                bits: 0,
            },
            Some(f) => {
                let (v, bits) = f.v6.lookup_with_bits(u128::from_be_bytes(dst));
                RouteHit {
                    route: (v != NO_ROUTE).then(|| f.routes.get(v as usize)).flatten(),
                    bits,
                }
            }
        }
    }
}

/// The ECMP hash of a flow: its addresses, protocol and (for TCP/UDP, not
/// for later fragments) ports, so every packet of a flow takes the same next
/// hop. Deterministic across threads and restarts. [`ecmp_hash_mask`] names
/// the bits it reads.
pub fn ecmp_hash(k: &FlowKey) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
    };
    if k.dl_type == ethertype::IPV6 {
        for a in [k.ipv6_src, k.ipv6_dst] {
            let x = u128::from_be_bytes(a);
            mix(x as u64);
            mix((x >> 64) as u64);
        }
    } else {
        mix(u64::from(k.nw_src) << 32 | u64::from(k.nw_dst));
    }
    mix(u64::from(k.nw_proto));
    if has_ports(k) {
        mix(u64::from(k.tp_src) << 16 | u64::from(k.tp_dst));
    }
    (h ^ (h >> 29)) as u32
}

fn has_ports(k: &FlowKey) -> bool {
    (k.nw_proto == ipproto::TCP || k.nw_proto == ipproto::UDP) && k.nw_frag & FRAG_LATER == 0
}

/// Set in `wc` every bit [`ecmp_hash`] reads of `k`.
pub fn ecmp_hash_mask(k: &FlowKey, wc: &mut FlowKey) {
    if k.dl_type == ethertype::IPV6 {
        wc.ipv6_src = [0xff; 16];
        wc.ipv6_dst = [0xff; 16];
    } else {
        wc.nw_src = u32::MAX;
        wc.nw_dst = u32::MAX;
    }
    wc.nw_proto = u8::MAX;
    if has_ports(k) {
        wc.tp_src = u16::MAX;
        wc.tp_dst = u16::MAX;
    }
}

/// `IpAddr` of a flow's IPv4 destination.
pub fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// `IpAddr` of a flow's IPv6 destination.
pub fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for t in [
            "table=0 10.244.2.0/24 via 192.168.1.2 port=2 mac=02:00:00:00:00:02",
            "table=5 10.0.0.0/8 via 10.1.0.1 port=2 via 10.1.0.2 port=3 weight=3",
            "table=0 10.244.1.0/24 port=1",
            "table=0 fd00:2::/64 via fd00::2 port=4",
            "table=0 0.0.0.0/0 via 10.0.0.1 port=1",
        ] {
            let r = Route::parse(t).unwrap();
            assert_eq!(r.to_string(), t);
            assert_eq!(Route::parse(&r.to_string()).unwrap(), r);
        }
        let r =
            Route::parse("10.0.0.0/8 via 10.1.0.1 port=2 weight=2 via 10.1.0.2 port=3").unwrap();
        assert_eq!(
            r.ip_route_text(),
            "10.0.0.0/8\n\tnexthop via 10.1.0.1 port 2 weight 2\n\tnexthop via 10.1.0.2 port 3 weight 1"
        );
        let r = Route::parse("10.244.1.0/24 port=1").unwrap();
        assert_eq!(r.ip_route_text(), "10.244.1.0/24 port 1 scope link");
    }

    #[test]
    fn bad_routes_are_errors() {
        for (t, what) in [
            ("10.0.0.1/8 via 1.1.1.1 port=1", "host bits"),
            ("10.0.0.0/33 port=1", "prefix length"),
            ("10.0.0.0/8", "needs a next hop"),
            ("10.0.0.0/8 via 1.1.1.1", "port=N"),
            ("10.0.0.0/8 via fd00::1 port=1", "family"),
            ("10.0.0.0/8 via 1.1.1.1 port=1 weight=0", "weight"),
            ("10.0.0.0/8 via 1.1.1.1 port=x", "port"),
            ("10.0.0.0/8 via 1.1.1.1 port=1 mac=zz", "mac"),
            (
                "10.0.0.0/8 via 1.1.1.1 port=1 colour=red",
                "unknown route option",
            ),
            ("table=300 10.0.0.0/8 port=1", "table"),
            ("nonsense port=1", "not an IPv4 or IPv6"),
            ("10.0.0.0/8 port=1 via 1.1.1.1 port=2", "ECMP"),
        ] {
            let e = Route::parse(t).unwrap_err();
            assert!(e.message.contains(what), "{t}: {}", e.message);
        }
    }

    #[test]
    fn lookup_and_ecmp_selection() {
        let mut rs = RouteSet::new();
        rs.add_route(Route::parse("10.0.0.0/8 via 10.1.0.1 port=2 via 10.1.0.2 port=3").unwrap())
            .unwrap();
        rs.add_route(Route::parse("10.2.0.0/16 via 10.1.0.9 port=4").unwrap())
            .unwrap();
        rs.add_route(Route::parse("fd00::/16 via fd00::1 port=5").unwrap())
            .unwrap();
        let hit = rs.lookup_v4(0, u32::from(Ipv4Addr::new(10, 2, 3, 4)));
        assert_eq!(hit.route.unwrap().len, 16);
        assert_eq!(hit.bits, 16);
        let hit = rs.lookup_v4(0, u32::from(Ipv4Addr::new(10, 3, 3, 4)));
        assert_eq!(hit.route.unwrap().len, 8);
        assert!(rs
            .lookup_v4(0, u32::from(Ipv4Addr::new(11, 0, 0, 1)))
            .route
            .is_none());
        assert!(rs.lookup_v4(1, 0).route.is_none());
        let hit = rs.lookup_v6(0, "fd00::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(hit.route.unwrap().nexthops[0].port, 5);
        let r = hit.route.unwrap();
        assert_eq!(r.select(12345), r.select(12345));
        let ecmp = rs
            .lookup_v4(0, u32::from(Ipv4Addr::new(10, 3, 3, 4)))
            .route
            .unwrap();
        let ports: std::collections::BTreeSet<u32> =
            (0..64).map(|h| ecmp.select(h).unwrap().port).collect();
        assert_eq!(ports.len(), 2);
        assert!(rs.del_route(0, "10.2.0.0".parse().unwrap(), 16).unwrap());
        assert!(!rs.del_route(0, "10.2.0.0".parse().unwrap(), 16).unwrap());
        let hit = rs.lookup_v4(0, u32::from(Ipv4Addr::new(10, 2, 3, 4)));
        assert_eq!(hit.route.unwrap().len, 8);
    }

    #[test]
    fn state_round_trip() {
        let mut rs = RouteSet::new();
        rs.add_route(
            Route::parse("table=3 10.0.0.0/8 via 10.1.0.1 port=2 mac=02:00:00:00:00:09").unwrap(),
        )
        .unwrap();
        rs.add_neighbour("10.1.0.1".parse().unwrap(), [2, 0, 0, 0, 0, 1], Some(2));
        rs.set_router_mac(None, Some([2, 0, 0, 0, 0, 0xfe]));
        rs.set_router_mac(Some(2), Some([2, 0, 0, 0, 0, 0xfd]));
        let st = rs.to_state();
        let back = RouteSet::from_state(&st).unwrap();
        assert_eq!(back.to_state(), st);
        assert_eq!(back.router_mac(2), Some([2, 0, 0, 0, 0, 0xfd]));
        assert_eq!(back.router_mac(7), Some([2, 0, 0, 0, 0, 0xfe]));
        assert_eq!(
            back.neighbour("10.1.0.1".parse().unwrap()),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert!(back.lookup_v4(3, 0x0a05_0505).route.is_some());
    }
}
