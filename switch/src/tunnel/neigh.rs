//! An IPv4 neighbour cache (ARP, RFC 826) owned by one polling thread:
//! IP → MAC with aging, request retries, and a small bounded queue of
//! packets waiting for resolution. Used by the VXLAN port for its underlay
//! next hops; written to be reused by routed mode (any owner that can send
//! an ARP request and transmit released packets).
//!
//! Data enters through [`NeighCache::resolve`] (a packet that needs a MAC),
//! [`NeighCache::learn`] (an ARP reply or request seen on the wire) and
//! [`NeighCache::tick`] (time passing); it leaves as MACs, packets released
//! for transmission, and a list of addresses to send ARP requests for. The
//! cache never sends anything itself and never blocks; a lookup of a known
//! neighbour does not allocate. Creating an entry (first packet to a new
//! neighbour) allocates its queue once, like a slow-path upcall.
//!
//! States follow the Linux neighbour table in miniature: `incomplete`
//! (requests sent, packets queued), `reachable` (MAC known, confirmed less
//! than `reachable` ago), `stale` (older: still used, a fresh request is sent
//! on use, and the entry is removed when no reply comes after `retries`
//! requests) and `failed` (no answer: packets to it are dropped for
//! `failed_hold`, then resolution starts over).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::packet::ethernet::Mac;
use crate::packet::Packet;

/// Timers and limits of a [`NeighCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighConfig {
    /// How long a confirmed entry is used without re-checking (aging).
    pub reachable: Duration,
    /// Time between ARP requests for an unresolved or re-checked entry.
    pub retry_interval: Duration,
    /// Requests sent before giving up.
    pub retries: u32,
    /// How long a failed entry drops packets before resolution is retried.
    pub failed_hold: Duration,
    /// Packets queued per unresolved neighbour (more are dropped, counted).
    pub queue_len: usize,
    /// Most entries (new neighbours beyond it are refused, counted).
    pub capacity: usize,
}

impl Default for NeighConfig {
    /// Re-check a neighbour after 300 s (the project's default aging time),
    /// retry every second, three times (Linux `mcast_solicit` is 3), hold a
    /// failed entry 3 s, queue 16 packets per neighbour.
    fn default() -> NeighConfig {
        NeighConfig {
            reachable: Duration::from_secs(300),
            retry_interval: Duration::from_secs(1),
            retries: 3,
            failed_hold: Duration::from_secs(3),
            queue_len: 16,
            capacity: 1024,
        }
    }
}

/// The state of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighState {
    /// Requests sent, no answer yet.
    Incomplete,
    /// MAC known and recently confirmed.
    Reachable,
    /// MAC known but older than `reachable`: used while being re-checked.
    Stale,
    /// No answer to any request.
    Failed,
}

#[derive(Debug)]
struct Entry {
    mac: Mac,
    state: NeighState,
    /// Last confirmation (reachable/stale) or state change.
    updated: Instant,
    /// When the last request went out (None: none outstanding).
    last_request: Option<Instant>,
    /// Requests sent since the last confirmation.
    requests: u32,
    queue: VecDeque<Packet>,
}

/// What [`NeighCache::resolve`] did with a packet.
#[derive(Debug)]
pub enum Resolve {
    /// The MAC is known: send the packet now.
    Ready(Mac, Packet),
    /// Queued until the neighbour answers; `request` says whether the
    /// caller must send an ARP request now.
    Queued {
        /// Send an ARP request for the address now.
        request: bool,
    },
    /// Not queued: the queue is full, the neighbour failed to answer, or the
    /// cache is full. The packet comes back to be counted and recycled.
    Dropped(NeighDrop, Packet),
}

/// Why a packet waiting for a MAC was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighDrop {
    /// The per-neighbour queue was full.
    QueueFull,
    /// The neighbour did not answer ARP.
    Failed,
    /// No room for a new entry.
    CacheFull,
}

/// What [`NeighCache::tick`] asks the owner to do.
#[derive(Debug, Default)]
pub struct TickOutcome {
    /// Send an ARP request to each of these addresses.
    pub requests: Vec<u32>,
    /// Packets that waited for a neighbour that never answered: recycle and count.
    pub dropped: Vec<Packet>,
}

/// One row of `tnl-neigh-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighView {
    /// IPv4 address (dotted quad).
    pub ip: String,
    /// MAC (`00:00:00:00:00:00` while incomplete).
    pub mac: String,
    /// State.
    pub state: NeighState,
    /// Seconds since the entry was last confirmed or changed state.
    pub age_s: u64,
    /// Packets waiting for resolution.
    pub queued: usize,
}

/// The cache. One owner (a polling thread); see the module documentation.
#[derive(Debug)]
pub struct NeighCache {
    cfg: NeighConfig,
    entries: HashMap<u32, Entry>,
    /// Bumped on every change a `tnl-neigh-show` would see.
    version: u64,
}

impl NeighCache {
    /// An empty cache.
    pub fn new(cfg: NeighConfig) -> NeighCache {
        NeighCache {
            cfg,
            entries: HashMap::new(),
            version: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NeighConfig {
        &self.cfg
    }

    /// Changes so far (compare to decide whether to republish a view).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The MAC of `ip` if known (reachable or stale), without side effects.
    pub fn peek(&self, ip: u32) -> Option<Mac> {
        self.entries
            .get(&ip)
            .filter(|e| matches!(e.state, NeighState::Reachable | NeighState::Stale))
            .map(|e| e.mac)
    }

    /// Find the MAC for `ip` for `pkt`: known → `Ready`; unknown → queued
    /// (and a request due); a stale entry is used and re-checked.
    pub fn resolve(&mut self, ip: u32, pkt: Packet, now: Instant) -> Resolve {
        let cfg = self.cfg;
        if !self.entries.contains_key(&ip) {
            if self.entries.len() >= cfg.capacity {
                return Resolve::Dropped(NeighDrop::CacheFull, pkt);
            }
            let mut queue = VecDeque::with_capacity(cfg.queue_len);
            queue.push_back(pkt);
            self.entries.insert(
                ip,
                Entry {
                    mac: [0; 6],
                    state: NeighState::Incomplete,
                    updated: now,
                    last_request: Some(now),
                    requests: 1,
                    queue,
                },
            );
            self.version += 1;
            return Resolve::Queued { request: true };
        }
        let Some(e) = self.entries.get_mut(&ip) else {
            return Resolve::Dropped(NeighDrop::Failed, pkt);
        };
        match e.state {
            NeighState::Reachable => {
                if now.saturating_duration_since(e.updated) < cfg.reachable {
                    return Resolve::Ready(e.mac, pkt);
                }
                // Aged: keep using it, re-check it (Linux STALE → PROBE).
                e.state = NeighState::Stale;
                e.last_request = Some(now);
                e.requests = 1;
                self.version += 1;
                // The packet still goes out with the known MAC; the owner
                // learns through `take_probe` that a request is due.
                Resolve::Ready(e.mac, pkt)
            }
            NeighState::Stale => Resolve::Ready(e.mac, pkt),
            NeighState::Incomplete => {
                if e.queue.len() >= cfg.queue_len {
                    Resolve::Dropped(NeighDrop::QueueFull, pkt)
                } else {
                    e.queue.push_back(pkt);
                    Resolve::Queued { request: false }
                }
            }
            NeighState::Failed => {
                if now.saturating_duration_since(e.updated) < cfg.failed_hold {
                    return Resolve::Dropped(NeighDrop::Failed, pkt);
                }
                e.state = NeighState::Incomplete;
                e.updated = now;
                e.last_request = Some(now);
                e.requests = 1;
                e.queue.push_back(pkt);
                self.version += 1;
                Resolve::Queued { request: true }
            }
        }
    }

    /// True when the entry for `ip` was just turned stale by `resolve` and
    /// its first re-check request has not been handed out yet. The owner
    /// calls this after a `Ready` to decide whether to send a request.
    pub fn take_probe(&mut self, ip: u32) -> bool {
        match self.entries.get_mut(&ip) {
            Some(e) if e.state == NeighState::Stale && e.requests == 1 => {
                e.requests = 2;
                true
            }
            _ => false,
        }
    }

    /// Record that `ip` is at `mac` (an ARP reply, or a request from it).
    /// With `create` false only an existing entry is updated (RFC 826's
    /// merge rule for frames not addressed to us). Returns the packets that
    /// were waiting for it, in order: the owner writes `mac` into them and
    /// sends them.
    pub fn learn(
        &mut self,
        ip: u32,
        mac: Mac,
        create: bool,
        now: Instant,
        released: &mut Vec<Packet>,
    ) {
        if ip == 0 || mac == [0; 6] || mac[0] & 1 != 0 {
            return;
        }
        let room = self.entries.len() < self.cfg.capacity;
        match self.entries.get_mut(&ip) {
            Some(e) => {
                if e.mac != mac || e.state != NeighState::Reachable {
                    self.version += 1;
                }
                e.mac = mac;
                e.state = NeighState::Reachable;
                e.updated = now;
                e.last_request = None;
                e.requests = 0;
                released.extend(e.queue.drain(..));
            }
            None if create && room => {
                self.entries.insert(
                    ip,
                    Entry {
                        mac,
                        state: NeighState::Reachable,
                        updated: now,
                        last_request: None,
                        requests: 0,
                        queue: VecDeque::new(),
                    },
                );
                self.version += 1;
            }
            None => {}
        }
    }

    /// Advance time: resend due requests, fail entries that used up their
    /// retries (their queued packets are handed back), drop stale entries
    /// that did not answer, and forget failed entries after `failed_hold`.
    pub fn tick(&mut self, now: Instant, out: &mut TickOutcome) {
        let cfg = self.cfg;
        let mut changed = false;
        self.entries.retain(|ip, e| {
            let due = e
                .last_request
                .is_some_and(|t| now.saturating_duration_since(t) >= cfg.retry_interval);
            match e.state {
                NeighState::Incomplete if due => {
                    if e.requests >= cfg.retries {
                        e.state = NeighState::Failed;
                        e.updated = now;
                        e.last_request = None;
                        out.dropped.extend(e.queue.drain(..));
                        changed = true;
                    } else {
                        e.requests += 1;
                        e.last_request = Some(now);
                        out.requests.push(*ip);
                    }
                    true
                }
                NeighState::Stale if due => {
                    if e.requests >= cfg.retries {
                        changed = true;
                        false
                    } else {
                        e.requests += 1;
                        e.last_request = Some(now);
                        out.requests.push(*ip);
                        true
                    }
                }
                NeighState::Failed
                    if now.saturating_duration_since(e.updated) >= cfg.failed_hold * 4 =>
                {
                    changed = true;
                    false
                }
                _ => true,
            }
        });
        if changed {
            self.version += 1;
        }
    }

    /// Remove every entry, handing queued packets back.
    pub fn clear(&mut self, dropped: &mut Vec<Packet>) {
        for (_, mut e) in self.entries.drain() {
            dropped.extend(e.queue.drain(..));
        }
        self.version += 1;
    }

    /// The rows of `tnl-neigh-show`, sorted by address.
    pub fn view(&self, now: Instant) -> Vec<NeighView> {
        let mut ips: Vec<&u32> = self.entries.keys().collect();
        ips.sort_unstable();
        ips.into_iter()
            .filter_map(|ip| {
                let e = self.entries.get(ip)?;
                Some(NeighView {
                    ip: std::net::Ipv4Addr::from(*ip).to_string(),
                    mac: format_mac(&e.mac),
                    state: e.state,
                    age_s: now.saturating_duration_since(e.updated).as_secs(),
                    queued: e.queue.len(),
                })
            })
            .collect()
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The ARP request (RFC 826, Ethernet/IPv4, broadcast) that `mac`/`ip` sends
/// to resolve `target`, padded to the 60-byte Ethernet minimum. Shared by
/// every owner of a [`NeighCache`] (the VXLAN port's underlay, routed uplinks).
pub(crate) fn arp_request_frame(mac: Mac, ip: u32, target: u32) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4, op 1 (request).
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.to_be_bytes());
    f[38..42].copy_from_slice(&target.to_be_bytes());
    f
}

/// Turn the ARP request in `d` (its ARP header at `l3`, checked by the
/// caller to be Ethernet/IPv4 and at least 28 bytes) from `sha`/`spa` into
/// our reply in place: `mac` is at `ip` (RFC 826 "swap the fields, set the
/// opcode to reply").
pub(crate) fn arp_reply_in_place(d: &mut [u8], l3: usize, sha: Mac, spa: u32, mac: Mac, ip: u32) {
    d[0..6].copy_from_slice(&sha);
    d[6..12].copy_from_slice(&mac);
    d[l3 + 6..l3 + 8].copy_from_slice(&2u16.to_be_bytes());
    d[l3 + 8..l3 + 14].copy_from_slice(&mac);
    d[l3 + 14..l3 + 18].copy_from_slice(&ip.to_be_bytes());
    d[l3 + 18..l3 + 24].copy_from_slice(&sha);
    d[l3 + 24..l3 + 28].copy_from_slice(&spa.to_be_bytes());
}

/// The neighbour table a polling thread last published (`(when, views)`),
/// with every entry's age brought up to now; empty if the publisher
/// panicked. For the control thread's `dump-neigh`/`dump-tunnels`.
pub(crate) fn aged_views(
    published: &std::sync::Mutex<(Instant, Vec<NeighView>)>,
) -> Vec<NeighView> {
    let now = Instant::now();
    match published.lock() {
        Ok(g) => {
            let extra = now.saturating_duration_since(g.0).as_secs();
            g.1.iter()
                .cloned()
                .map(|mut v| {
                    v.age_s += extra;
                    v
                })
                .collect()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u32 = 0xc0a8_0a02;
    const MAC: Mac = [2, 0, 0, 0, 0x10, 2];

    fn pkt(tag: u8) -> Packet {
        Packet::from_slice(&[tag; 60]).unwrap()
    }

    fn cfg() -> NeighConfig {
        NeighConfig {
            queue_len: 2,
            ..NeighConfig::default()
        }
    }

    #[test]
    fn unknown_neighbour_queues_then_releases_in_order_on_reply() {
        let t0 = Instant::now();
        let mut c = NeighCache::new(cfg());
        assert!(matches!(
            c.resolve(IP, pkt(1), t0),
            Resolve::Queued { request: true }
        ));
        assert!(matches!(
            c.resolve(IP, pkt(2), t0),
            Resolve::Queued { request: false }
        ));
        match c.resolve(IP, pkt(3), t0) {
            Resolve::Dropped(NeighDrop::QueueFull, p) => assert_eq!(p.data()[0], 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.view(t0)[0].state, NeighState::Incomplete);
        let mut rel = Vec::new();
        c.learn(IP, MAC, false, t0, &mut rel);
        assert_eq!(
            rel.iter().map(|p| p.data()[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
        match c.resolve(IP, pkt(4), t0) {
            Resolve::Ready(m, p) => assert_eq!((m, p.data()[0]), (MAC, 4)),
            other => panic!("{other:?}"),
        }
        let v = c.view(t0);
        assert_eq!(
            (v[0].ip.as_str(), v[0].mac.as_str(), v[0].state),
            ("192.168.10.2", "02:00:00:00:10:02", NeighState::Reachable)
        );
    }

    #[test]
    fn retries_then_fails_and_hands_queued_packets_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = NeighCache::new(cfg());
        assert!(matches!(
            c.resolve(IP, pkt(1), t0),
            Resolve::Queued { request: true }
        ));
        let mut out = TickOutcome::default();
        c.tick(t0 + s / 2, &mut out);
        assert!(out.requests.is_empty(), "not due yet");
        c.tick(t0 + s, &mut out);
        c.tick(t0 + 2 * s, &mut out);
        assert_eq!(out.requests, vec![IP, IP], "requests 2 and 3");
        c.tick(t0 + 3 * s, &mut out);
        assert_eq!(out.dropped.len(), 1);
        assert_eq!(c.view(t0 + 3 * s)[0].state, NeighState::Failed);
        // While failed, packets are dropped without new requests.
        assert!(matches!(
            c.resolve(IP, pkt(2), t0 + 4 * s),
            Resolve::Dropped(NeighDrop::Failed, _)
        ));
        // After the hold time, resolution starts over.
        assert!(matches!(
            c.resolve(IP, pkt(3), t0 + 7 * s),
            Resolve::Queued { request: true }
        ));
    }

    #[test]
    fn aged_entry_is_used_rechecked_and_removed_without_answer() {
        let t0 = Instant::now();
        let cfg = NeighConfig {
            reachable: Duration::from_secs(10),
            ..cfg()
        };
        let mut c = NeighCache::new(cfg);
        let mut rel = Vec::new();
        c.learn(IP, MAC, true, t0, &mut rel);
        assert_eq!(c.peek(IP), Some(MAC));
        let t1 = t0 + Duration::from_secs(11);
        assert!(matches!(c.resolve(IP, pkt(1), t1), Resolve::Ready(MAC, _)));
        assert!(c.take_probe(IP), "aged entry asks for one re-check");
        assert!(!c.take_probe(IP));
        let mut out = TickOutcome::default();
        for i in 1..=3 {
            c.tick(t1 + Duration::from_secs(i), &mut out);
        }
        assert!(c.is_empty(), "no answer to the re-checks: forgotten");
        // An answer in time keeps it.
        c.learn(IP, MAC, true, t0, &mut rel);
        assert!(matches!(c.resolve(IP, pkt(1), t1), Resolve::Ready(MAC, _)));
        c.learn(IP, MAC, false, t1, &mut rel);
        assert_eq!(c.view(t1)[0].state, NeighState::Reachable);
    }

    #[test]
    fn learn_without_create_only_updates_and_rejects_bad_macs() {
        let t0 = Instant::now();
        let mut c = NeighCache::new(cfg());
        let mut rel = Vec::new();
        c.learn(IP, MAC, false, t0, &mut rel);
        assert!(c.is_empty());
        c.learn(IP, [0xff; 6], true, t0, &mut rel);
        c.learn(IP, [0; 6], true, t0, &mut rel);
        c.learn(0, MAC, true, t0, &mut rel);
        assert!(c.is_empty());
        let mut c = NeighCache::new(NeighConfig {
            capacity: 1,
            ..cfg()
        });
        c.learn(IP, MAC, true, t0, &mut rel);
        assert!(matches!(
            c.resolve(IP + 1, pkt(1), t0),
            Resolve::Dropped(NeighDrop::CacheFull, _)
        ));
    }
}
