//! Connection tracking: the table behind OVS's `ct` action and the
//! `ct_state`, `ct_zone`, `ct_mark`, `ct_label` matches.
//!
//! Data enters from the datapath's `ct` action ([`Conntrack::execute`]): a
//! frame, its extraction [`Layout`] and [`FlowKey`] (re-extracted after the
//! header changes committed before the `ct`), the zone, and whether to
//! commit and which mark/label bits to write. It leaves as a [`CtVerdict`]:
//! the `ct_state` bits (`+trk` with `+new`, `+est`, `+rel`, `+rpl` or
//! `+inv`) and the connection's mark and label, which the datapath puts in
//! the key of the recirculated packet. The control thread reads the table
//! for `ct-show`, empties it for `ct-flush`, changes limits and timeouts,
//! and sweeps expired connections ([`Conntrack::sweep`]).
//!
//! Design (see docs/architecture.md "Connection tracking"): one table per
//! bridge, shared by its polling threads, split into [`N_SHARDS`] shards,
//! each a `Mutex` around a hash table. Both directions of a connection use
//! one *canonical* key (the two endpoints in sorted order), so one probe of
//! one shard finds a connection whatever the direction (a NATed connection
//! also has an alias slot under its translated reply tuple: see NAT below). A packet takes its shard's lock for the
//! duration of one probe and state update (an uncontended lock is one
//! atomic compare-exchange; two threads contend only when they hit the same
//! shard of 256 at the same instant). There is no lock, allocation or
//! syscall that covers the whole table per packet; only a commit of a new
//! connection may allocate (when its shard's hash table grows).
//!
//! Semantics follow OVS's userspace tracker (lib/conntrack.c and
//! conntrack-{tcp,other,icmp}.c) and Linux nf_conntrack's defaults:
//! - a connection exists only once a `ct(commit)` created it; before that
//!   every valid packet is `+trk+new` and nothing is remembered;
//! - original direction: `+new` until a reply has been seen, then `+est`;
//!   reply direction: `+est+rpl`;
//! - TCP follows [`tcp`]'s state machine; UDP and other IP protocols are
//!   tracked by addresses (and ports); ICMP echo requests and replies by
//!   identifier; ICMP errors (destination unreachable, source quench,
//!   redirect, time exceeded, parameter problem; ICMPv6 1-4) whose quoted
//!   header belongs to a tracked connection are `+rel` (plus `+rpl` when
//!   the quoted packet travelled in the original direction);
//! - `+inv`: not IP, truncated or malformed headers, fragments (not
//!   reassembled: a departure from OVS, which reassembles), TCP segments
//!   the state machine rejects, ICMP messages other than echo and errors,
//!   and an ICMP error about no tracked connection;
//! - a connection expires after its protocol's and state's timeout of
//!   inactivity ([`Timeouts`], Linux's defaults); an expired connection is
//!   treated as absent at once and removed by the next sweep;
//! - the table holds at most `limit` connections: a commit beyond it
//!   fails and the datapath drops the packet as `ct_full`.
//!
//! NAT ([`nat`], docs/architecture.md "NAT"): a connection committed with
//! `nat(src=...)` or `nat(dst=...)` gets a translated reply tuple, chosen
//! so that no two connections share one (port allocation below). The
//! connection lives under its original tuple's canonical key; a second,
//! small *alias* entry under the reply tuple's canonical key points to it,
//! so a reply finds it with two probes (two shards, locked one after the
//! other, never together). `ct(nat)` then rewrites each packet to the
//! other direction's view (original: the translated tuple; reply: back to
//! the original endpoints), and ICMP errors about the connection get their
//! quoted header translated back.
//!
//! The established-connection fast path ([`slots`], [`CtToken`],
//! [`Conntrack::fast_refresh`]; docs/architecture.md "The
//! established-connection fast path"): every connection also owns a
//! stable slot whose atomic word holds a generation and a coarse expiry.
//! The generation moves whenever the connection is removed or a packet
//! changes something a verdict depends on (reply seen, TCP state, mark,
//! label). A TCP/UDP packet of a connection without NAT that changed
//! nothing but the expiry gets a token (slot, generation) in its verdict;
//! the datapath keeps it with that verdict in the packet's EMC entry, and
//! while the generation is unchanged and the connection unexpired, the next
//! such packet takes the verdict without the lookup (a departure from OVS,
//! which looks every packet up; the verdicts are the same by construction).
//!
//! Never: panic on any frame, allocate on the lookup path, hold a lock
//! across more than one shard.

pub mod nat;
pub mod slots;
pub mod tcp;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use hashbrown::HashTable;
use serde::Serialize;

use crate::flow::key::{ct_state as cs, ethertype, ipproto, FlowKey, FRAG_ANY};
use crate::packet::{be16, be32, Layout, ParseStatus};
use nat::{Ends, NatKind, NatSpec};
use slots::{exp_s_of, gen_of, Slots};
use tcp::{TcpConn, TcpVerdict};

/// `Conn::slot` of a connection without a slot ([`slots::NONE`]).
const NO_SLOT: u32 = slots::NONE;

/// Number of shards (a power of two).
pub const N_SHARDS: usize = 256;

/// Default connection limit (the most connections the table holds).
pub const DEFAULT_LIMIT: usize = 1_000_000;

/// One per-protocol / per-state timeout, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TimeoutKind {
    /// TCP: SYN seen (Linux nf_conntrack_tcp_timeout_syn_sent).
    TcpSynSent,
    /// TCP: SYN+ACK seen.
    TcpSynRecv,
    /// TCP: established.
    TcpEstablished,
    /// TCP: one FIN seen.
    TcpFinWait,
    /// TCP: first FIN acknowledged.
    TcpCloseWait,
    /// TCP: both FINs seen.
    TcpLastAck,
    /// TCP: both FINs acknowledged.
    TcpTimeWait,
    /// TCP: reset.
    TcpClose,
    /// UDP: no reply seen yet (nf_conntrack_udp_timeout).
    UdpFirst,
    /// UDP: replies seen (nf_conntrack_udp_timeout_stream).
    UdpStream,
    /// ICMP echo (nf_conntrack_icmp_timeout).
    Icmp,
    /// Other IP protocols (nf_conntrack_generic_timeout).
    Other,
}

/// Timeout names (as `set-ct` accepts them and `ct-stats` prints them) and
/// Linux's defaults in seconds, in [`TimeoutKind`] order.
pub const TIMEOUTS: [(&str, u32); 12] = [
    ("tcp_syn_sent", 120),
    ("tcp_syn_recv", 60),
    ("tcp_established", 432_000),
    ("tcp_fin_wait", 120),
    ("tcp_close_wait", 60),
    ("tcp_last_ack", 30),
    ("tcp_time_wait", 120),
    ("tcp_close", 10),
    ("udp_first", 30),
    ("udp_stream", 120),
    ("icmp", 30),
    ("other", 600),
];

/// The timeouts in force, changeable at run time without a lock.
#[derive(Debug)]
pub struct Timeouts([AtomicU32; 12]);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts(TIMEOUTS.map(|(_, s)| AtomicU32::new(s)))
    }
}

impl Timeouts {
    /// Seconds for `k`.
    pub fn get(&self, k: TimeoutKind) -> u32 {
        self.0[k as usize].load(Relaxed)
    }

    /// Set the timeout called `name` (see [`TIMEOUTS`]) to `secs` (at least 1).
    pub fn set(&self, name: &str, secs: u32) -> Result<(), String> {
        if secs == 0 {
            return Err(format!("timeout {name} must be at least 1 second"));
        }
        let i = TIMEOUTS
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| {
                let known: Vec<&str> = TIMEOUTS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown conntrack timeout {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
        self.0[i].store(secs, Relaxed);
        Ok(())
    }

    /// Every timeout by name.
    pub fn all(&self) -> Vec<(&'static str, u32)> {
        TIMEOUTS
            .iter()
            .zip(self.0.iter())
            .map(|((n, _), v)| (*n, v.load(Relaxed)))
            .collect()
    }

    fn ms(&self, k: TimeoutKind) -> u64 {
        u64::from(self.get(k)) * 1000
    }

    /// Milliseconds for the kind numbered `i` (`TimeoutKind as u32`).
    #[inline(always)]
    fn ms_at(&self, i: u32) -> Option<u64> {
        self.0
            .get(i as usize)
            .map(|s| u64::from(s.load(Relaxed)) * 1000)
    }
}

/// A connection token (docs/architecture.md "Connection tracking", the
/// established-connection fast path): which connection slot, and the
/// generation of its verdict-relevant state, as a `ct` found them for a
/// packet that changed nothing but the connection's expiry. While the
/// slot's generation is still `gen`, a packet with the same exact key
/// through the same `ct` action gets the same verdict
/// ([`Conntrack::fast_refresh`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtToken {
    /// The connection's slot.
    pub slot: u32,
    /// The slot's generation when the token was issued.
    pub gen: u32,
}

impl CtToken {
    /// No token (no slot has this number).
    pub const NONE: CtToken = CtToken {
        slot: u32::MAX,
        gen: 0,
    };
}

/// What a `ct` action asks of the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtExec {
    /// Zone (connections in different zones never match each other).
    pub zone: u16,
    /// Create the connection if it is new (`ct(commit)`).
    pub commit: bool,
    /// `exec(set_field:V/M->ct_mark)`: value and mask (mask 0: no change).
    pub mark: (u32, u32),
    /// `exec(set_field:V/M->ct_label)`: value and mask (mask 0: no change).
    pub label: (u128, u128),
    /// `nat`, `nat(src=...)`, `nat(dst=...)`: apply the connection's
    /// translation, and with `commit` bind a new connection to one.
    pub nat: Option<NatSpec>,
}

/// What the tracker says about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtVerdict {
    /// `ct_state` bits (always with [`cs::TRK`]).
    pub state: u32,
    /// The connection's mark (0 when untracked).
    pub mark: u32,
    /// The connection's label (0 when untracked).
    pub label: u128,
    /// The commit failed because the table is full: drop as `ct_full`.
    pub full: bool,
    /// The commit failed because `nat(...)`'s address and port range has
    /// no free reply tuple left: drop as `nat_no_port`.
    pub nat_exhausted: bool,
    /// Set when the packet belongs to a tracked TCP or UDP connection
    /// without NAT and changed nothing but its expiry: the token that lets
    /// the next packet with the same key and `ct` skip the lookup.
    pub token: Option<CtToken>,
}

impl CtVerdict {
    fn with_state(state: u32) -> CtVerdict {
        CtVerdict {
            state: cs::TRK | state,
            mark: 0,
            label: 0,
            full: false,
            nat_exhausted: false,
            token: None,
        }
    }

    /// The verdict for a packet of connection `c`: `state` as given (with
    /// [`cs::TRK`]), the connection's mark and label.
    fn of_conn(state: u32, c: &Conn) -> CtVerdict {
        CtVerdict {
            state,
            mark: c.mark,
            label: c.label,
            full: false,
            nat_exhausted: false,
            token: None,
        }
    }
}

/// A connection's key in canonical form: the endpoint `(a, pa)` sorts
/// before `(b, pb)`, so both directions give the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CanonKey {
    a: u128,
    b: u128,
    pa: u16,
    pb: u16,
    zone: u16,
    proto: u8,
    v6: bool,
}

/// 64x64 -> 128-bit multiply, high and low halves folded (the mixing step
/// of wyhash/foldhash).
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl CanonKey {
    /// The key's hash (its top byte picks the shard, the rest the bucket):
    /// each address folded through its own 128-bit multiply, the two
    /// independent (the CPU overlaps them), then one multiply mixing them
    /// with ports, zone and protocol: three multiplies deep instead of a
    /// chain of five, on every tracked packet.
    #[inline]
    fn hash(&self) -> u64 {
        const K: [u64; 6] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
            0x4528_21e6_38d0_1377,
            0xbe54_66cf_34e9_0c6c,
        ];
        let rest = u64::from(self.pa)
            | u64::from(self.pb) << 16
            | u64::from(self.zone) << 32
            | u64::from(self.proto) << 48
            | u64::from(self.v6) << 56;
        let x = fold_mul(self.a as u64 ^ K[0], (self.a >> 64) as u64 ^ K[1]);
        let y = fold_mul(self.b as u64 ^ K[2], (self.b >> 64) as u64 ^ K[3]);
        let h = fold_mul(x ^ rest.rotate_left(29) ^ K[4], y ^ rest ^ K[5]);
        h ^ (h >> 29)
    }
}

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    v6: bool,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    proto: u8,
}

impl Tuple {
    /// Canonical key and whether this tuple is the swapped form of it.
    fn canon(&self, zone: u16) -> (CanonKey, bool) {
        let swapped = (self.src, self.sport) > (self.dst, self.dport);
        let (a, pa, b, pb) = if swapped {
            (self.dst, self.dport, self.src, self.sport)
        } else {
            (self.src, self.sport, self.dst, self.dport)
        };
        (
            CanonKey {
                a,
                b,
                pa,
                pb,
                zone,
                proto: self.proto,
                v6: self.v6,
            },
            swapped,
        )
    }

    /// The same connection seen from the other end.
    fn mirror(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    fn ends(&self) -> Ends {
        Ends {
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// A connection's NAT binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NatBinding {
    /// `nat(src=...)` or `nat(dst=...)`.
    kind: NatKind,
    /// The reply tuple as reply packets arrive (before un-NAT).
    reply: Tuple,
    /// The alias entry under `reply`'s canonical key (None when the
    /// translation left the tuple unchanged: the primary key finds both).
    alias: Option<(CanonKey, u64)>,
}

/// Per-protocol tracking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtoState {
    Tcp(TcpConn),
    Udp,
    Icmp,
    Other,
}

/// One tracked connection. It lives by value in its shard's hash table,
/// so its size is the table's stride: 224 bytes (a test holds it there).
/// It keeps no copy of its key's hash (recomputed when the table grows:
/// [`Slot::hash`]), which paid for the slot, generation and publication
/// fields of the fast path (docs/perf.md "The tracker's slow path").
#[derive(Clone, Debug)]
struct Conn {
    key: CanonKey,
    /// The original direction is the swapped form of `key`.
    orig_swapped: bool,
    proto: ProtoState,
    seen_reply: bool,
    mark: u32,
    label: u128,
    /// Expiry as the slow path last set it, exactly; the fast path may
    /// have moved it later in the slot's `life` word ([`Conntrack::expires`]).
    expires_ms: u64,
    nat: Option<NatBinding>,
    /// The connection's stable slot ([`slots`]), [`NO_SLOT`] until its
    /// first token: taken by the first packet that gets one
    /// ([`Conntrack::update`]), so a connection that never does (a single
    /// packet, a SYN flood, NAT, ICMP) never takes or touches one.
    slot: u32,
    /// The slot's generation (the connection's copy: publishing never
    /// reads the slot).
    gen: u32,
    /// The fast expiry (s) and timeout (s) last published in the slot: an
    /// update that moves neither (nor the generation) writes nothing.
    published: (u32, u32),
}

/// A table slot: a connection, or the alias that finds a NATed
/// connection from its reply tuple.
#[derive(Clone, Debug)]
enum Slot {
    Conn(Conn),
    Alias {
        hash: u64,
        key: CanonKey,
        /// The connection's key and hash.
        primary: CanonKey,
        primary_hash: u64,
    },
}

impl Slot {
    fn key(&self) -> &CanonKey {
        match self {
            Slot::Conn(c) => &c.key,
            Slot::Alias { key, .. } => key,
        }
    }

    /// The hash the table files this slot under (a connection's is
    /// recomputed from its key: only a growing table asks).
    fn hash(&self) -> u64 {
        match self {
            Slot::Conn(c) => c.key.hash(),
            Slot::Alias { hash, .. } => *hash,
        }
    }
}

/// The frame change a verdict asks for, applied after the shard lock is
/// released.
#[derive(Clone, Copy, Debug)]
enum Xlate {
    /// A packet of the connection: addresses and ports from `from` to `to`.
    Packet {
        v6: bool,
        proto: u8,
        from: Ends,
        to: Ends,
    },
    /// An ICMP error: the quoted header from `from` to `to`, outer
    /// addresses replaced where given.
    Related {
        v6: bool,
        proto: u8,
        from: Ends,
        to: Ends,
        outer_src: Option<u128>,
        outer_dst: Option<u128>,
    },
}

/// The outcome of one lookup attempt. Returned by value on the stack:
/// boxing the large variant would allocate per packet.
#[allow(clippy::large_enum_variant)]
enum Step {
    Done(CtVerdict, Option<Xlate>),
    /// The table changed under us (an expired NATed connection removed, a
    /// racing commit): look again.
    Retry,
}

impl Step {
    /// `+trk+inv`, nothing to translate.
    #[inline]
    fn invalid() -> Step {
        Step::Done(CtVerdict::with_state(cs::INV), None)
    }
}

/// What a NAT port allocation found.
enum Alloc {
    /// The reply tuple and its alias (reserved in the table).
    Bound(NatBinding),
    /// Nothing to translate (the range's address family is not the packet's).
    None,
    /// Every tuple of the range is taken.
    Exhausted,
}

/// What became of a connection when a packet found it ([`Conn::fate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Continues,
    Expired,
    Reopened,
}

impl Conn {
    /// What a packet (`reply` direction, TCP `flags`) found at `now_ms`:
    /// this connection, or one that has expired, or a closed TCP
    /// connection that the packet opens again (a new connection).
    fn fate(&self, expires_ms: u64, reply: bool, flags: u16, now_ms: u64) -> Fate {
        if expires_ms <= now_ms {
            Fate::Expired
        } else if matches!(self.proto, ProtoState::Tcp(tc)
            if tcp::update(tc, reply, flags) == TcpVerdict::Reopen)
        {
            Fate::Reopened
        } else {
            Fate::Continues
        }
    }

    fn orig(&self) -> Tuple {
        let k = &self.key;
        let (src, sport, dst, dport) = if self.orig_swapped {
            (k.b, k.pb, k.a, k.pa)
        } else {
            (k.a, k.pa, k.b, k.pb)
        };
        Tuple {
            v6: k.v6,
            src,
            dst,
            sport,
            dport,
            proto: k.proto,
        }
    }

    /// Whether a packet with tuple `t` (`swapped` against the key) is a
    /// reply; None when it is not this connection's (a NATed connection's
    /// original tuple seen backwards).
    fn direction(&self, t: &Tuple, swapped: bool, echo_reply: bool) -> Option<bool> {
        match self.nat {
            // Both endpoints equal (a host talking to itself on one port,
            // or an echo to itself): the ICMP type tells the direction.
            None if self.key.a == self.key.b && self.key.pa == self.key.pb => Some(echo_reply),
            None => Some(swapped != self.orig_swapped),
            Some(_) if *t == self.orig() => Some(false),
            Some(n) if *t == n.reply => Some(true),
            Some(_) => None,
        }
    }

    /// The reply tuple (translated for a NATed connection).
    fn reply(&self) -> Tuple {
        match self.nat {
            Some(n) => n.reply,
            None => self.orig().mirror(),
        }
    }

    /// `ct_state` NAT bits for a packet translated in this direction (OVS
    /// `nat_packet` / `reverse_nat_packet`: the reply of a SNAT connection
    /// is destination-translated, and the other way round).
    fn nat_bits(&self, reply: bool) -> u32 {
        match (self.nat.map(|n| n.kind), reply) {
            (Some(NatKind::Src), false) | (Some(NatKind::Dst), true) => cs::SNAT,
            (Some(NatKind::Dst), false) | (Some(NatKind::Src), true) => cs::DNAT,
            _ => 0,
        }
    }

    fn timeout(&self) -> TimeoutKind {
        use tcp::TcpState::*;
        match self.proto {
            ProtoState::Tcp(c) => match c.state {
                SynSent => TimeoutKind::TcpSynSent,
                SynRecv => TimeoutKind::TcpSynRecv,
                Established => TimeoutKind::TcpEstablished,
                FinWait => TimeoutKind::TcpFinWait,
                CloseWait => TimeoutKind::TcpCloseWait,
                LastAck => TimeoutKind::TcpLastAck,
                TimeWait => TimeoutKind::TcpTimeWait,
                Close => TimeoutKind::TcpClose,
            },
            ProtoState::Udp if self.seen_reply => TimeoutKind::UdpStream,
            ProtoState::Udp => TimeoutKind::UdpFirst,
            ProtoState::Icmp => TimeoutKind::Icmp,
            ProtoState::Other => TimeoutKind::Other,
        }
    }

    fn apply_marks(&mut self, x: &CtExec) {
        self.mark = (self.mark & !x.mark.1) | (x.mark.0 & x.mark.1);
        self.label = (self.label & !x.label.1) | (x.label.0 & x.label.1);
    }
}

/// What one packet is, to the tracker.
#[derive(Clone, Copy, Debug)]
enum Pkt {
    /// A packet of a connection (TCP, UDP, ICMP echo, other IP).
    Conn {
        t: Tuple,
        tcp_flags: u16,
        /// ICMP echo: true for a reply (type 0 / 129).
        echo_reply: bool,
    },
    /// An ICMP error quoting a packet with this tuple.
    Related(Tuple),
    /// Cannot be tracked: `+inv`.
    Invalid,
}

/// Tracker counters (updated only on commits, expiry and flushes, never
/// per looked-up packet).
#[derive(Debug, Default)]
pub struct CtCounters {
    /// Connections created.
    pub commits: AtomicU64,
    /// Commits refused because the table was full (packets dropped `ct_full`).
    pub full_drops: AtomicU64,
    /// Connections removed because they expired.
    pub expired: AtomicU64,
    /// Connections removed by `ct-flush`.
    pub flushed: AtomicU64,
    /// Commits refused because no NAT tuple was free (packets dropped `nat_no_port`).
    pub nat_exhausted: AtomicU64,
}

/// A snapshot of the tracker's counters and settings (`ct-stats`).
#[derive(Clone, Debug, Serialize)]
pub struct CtStats {
    /// Connections in the table (expired ones not yet swept included).
    pub entries: usize,
    /// The connection limit.
    pub limit: usize,
    /// Connections created.
    pub commits: u64,
    /// Packets dropped because a commit found the table full.
    pub ct_full: u64,
    /// Connections removed on expiry.
    pub expired: u64,
    /// Connections removed by `ct-flush`.
    pub flushed: u64,
    /// Packets dropped because a NAT commit found no free tuple.
    pub nat_no_port: u64,
    /// Timeouts in seconds, by name.
    pub timeouts: Vec<(String, u32)>,
}

/// One direction of a connection, for `ct-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TupleView {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP) or ICMP id.
    pub sport: u16,
    /// Destination port (TCP/UDP) or ICMP id.
    pub dport: u16,
}

/// One connection, for `ct-show` (`ovs-appctl dpctl/dump-conntrack`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnView {
    /// IP protocol number.
    pub proto: u8,
    /// True for IPv6.
    pub ipv6: bool,
    /// The original direction.
    pub orig: TupleView,
    /// The reply direction.
    pub reply: TupleView,
    /// Zone.
    pub zone: u16,
    /// Mark.
    pub mark: u32,
    /// Label (hex, 128 bits).
    pub label: String,
    /// TCP state name (None for other protocols).
    pub state: Option<&'static str>,
    /// Seconds until expiry.
    pub timeout: u64,
}

fn ip_of(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(a))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(a as u32))
    }
}

impl ConnView {
    /// The `ovs-appctl dpctl/dump-conntrack` line:
    /// `tcp,orig=(src=..,dst=..,sport=..,dport=..),reply=(..),zone=N,mark=M,protoinfo=(state=S)`.
    pub fn to_line(&self) -> String {
        let (name, icmp) = match (self.proto, self.ipv6) {
            (ipproto::TCP, false) => ("tcp".to_string(), false),
            (ipproto::TCP, true) => ("tcp6".to_string(), false),
            (ipproto::UDP, false) => ("udp".to_string(), false),
            (ipproto::UDP, true) => ("udp6".to_string(), false),
            (ipproto::ICMP, false) => ("icmp".to_string(), true),
            (ipproto::ICMPV6, true) => ("icmpv6".to_string(), true),
            (p, _) => (p.to_string(), false),
        };
        let dir = |t: &TupleView, reply: bool| {
            if icmp {
                let (ty, ty6) = if reply { (0, 129) } else { (8, 128) };
                format!(
                    "src={},dst={},id={},type={},code=0",
                    t.src,
                    t.dst,
                    t.sport,
                    if self.ipv6 { ty6 } else { ty }
                )
            } else {
                format!(
                    "src={},dst={},sport={},dport={}",
                    t.src, t.dst, t.sport, t.dport
                )
            }
        };
        let mut s = format!(
            "{name},orig=({}),reply=({})",
            dir(&self.orig, false),
            dir(&self.reply, true)
        );
        if self.zone != 0 {
            s.push_str(&format!(",zone={}", self.zone));
        }
        if self.mark != 0 {
            s.push_str(&format!(",mark={}", self.mark));
        }
        if !self
            .label
            .trim_start_matches("0x")
            .trim_start_matches('0')
            .is_empty()
        {
            s.push_str(&format!(",labels={}", self.label));
        }
        if let Some(st) = self.state {
            s.push_str(&format!(",protoinfo=(state={st})"));
        }
        s
    }
}

/// A bridge's connection tracker (see the module documentation).
#[derive(Debug)]
pub struct Conntrack {
    shards: Box<[Mutex<HashTable<Slot>>]>,
    n_conns: AtomicUsize,
    limit: AtomicUsize,
    /// Timeouts in force.
    pub timeouts: Timeouts,
    /// Event counters.
    pub counters: CtCounters,
    epoch: Instant,
    last_sweep_ms: AtomicU64,
    /// The connections' stable slots (the fast path's state).
    slots: Slots,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(DEFAULT_LIMIT)
    }
}

impl Conntrack {
    /// An empty tracker holding at most `limit` connections.
    pub fn new(limit: usize) -> Conntrack {
        Conntrack {
            shards: (0..N_SHARDS)
                .map(|_| Mutex::new(HashTable::new()))
                .collect(),
            n_conns: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            timeouts: Timeouts::default(),
            counters: CtCounters::default(),
            epoch: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            slots: Slots::default(),
        }
    }

    /// Milliseconds since the tracker was created (its clock for expiry).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Change the connection limit (existing connections stay).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Relaxed);
    }

    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.n_conns.load(Relaxed)
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashTable<Slot>> {
        let i = (hash >> 56) as usize & (N_SHARDS - 1);
        // A thread that panicked while holding a shard cannot have left a
        // connection half-written in a way that matters more than losing
        // the table: keep using it.
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Track one packet (the datapath's `ct` action) without changing it.
    /// `frame` is the whole Ethernet frame, `layout` and `key` its
    /// extraction; `now_ms` is [`Conntrack::now_ms`] (read at most once per
    /// batch by the caller). A commit with `nat(src=...)`/`nat(dst=...)`
    /// still binds the connection to a translation; applying it to the
    /// frame needs [`Conntrack::execute_mut`].
    pub fn execute(
        &self,
        frame: &[u8],
        layout: &Layout,
        key: &FlowKey,
        x: &CtExec,
        now_ms: u64,
    ) -> CtVerdict {
        self.decide(frame, layout, key, x, now_ms).0
    }

    /// [`Conntrack::execute`], and when `x.nat` is set and the packet's
    /// connection is NATed, translate the frame in place (addresses, ports
    /// or ICMP id, checksums; the quoted header of a related ICMP error).
    /// Returns the verdict and whether the frame changed (its key must then
    /// be extracted again). The rewrite runs after the shard lock is
    /// released.
    pub fn execute_mut(
        &self,
        frame: &mut [u8],
        layout: &Layout,
        key: &FlowKey,
        x: &CtExec,
        now_ms: u64,
    ) -> (CtVerdict, bool) {
        let (v, xl) = self.decide(frame, layout, key, x, now_ms);
        let changed = match xl {
            None => false,
            Some(Xlate::Packet {
                v6,
                proto,
                from,
                to,
            }) => nat::rewrite(frame, layout, v6, proto, &from, &to),
            Some(Xlate::Related {
                v6,
                proto,
                from,
                to,
                outer_src,
                outer_dst,
            }) => nat::rewrite_related(frame, layout, v6, proto, &from, &to, outer_src, outer_dst),
        };
        (v, changed)
    }

    fn decide(
        &self,
        frame: &[u8],
        layout: &Layout,
        key: &FlowKey,
        x: &CtExec,
        now_ms: u64,
    ) -> (CtVerdict, Option<Xlate>) {
        let pkt = classify(frame, layout, key);
        // A retry follows a removal or a lost race, so the next attempt
        // finds a different table; the bound only guards against a bug.
        for _ in 0..4 {
            let step = match pkt {
                Pkt::Invalid => return (CtVerdict::with_state(cs::INV), None),
                Pkt::Related(inner) => self.related(&inner, x, now_ms),
                Pkt::Conn {
                    t,
                    tcp_flags,
                    echo_reply,
                } => self.track(&t, tcp_flags, echo_reply, x, now_ms),
            };
            if let Step::Done(v, xl) = step {
                return (v, xl);
            }
        }
        (CtVerdict::with_state(cs::INV), None)
    }

    /// An ICMP error quoting `inner`: `+rel` (and `+rpl` when it travels in
    /// the reply direction) if `inner` belongs to a live connection, with
    /// the quoted header translated back for a NATed one.
    fn related(&self, inner: &Tuple, x: &CtExec, now_ms: u64) -> Step {
        let (k, swapped) = inner.canon(x.zone);
        let h = k.hash();
        let sh = self.shard(h);
        let primary = match sh.find(h, |s| s.key() == &k) {
            None => return Step::Done(CtVerdict::with_state(cs::INV), None),
            Some(Slot::Conn(c)) => {
                return related_verdict(c, self.expires_at(c, now_ms), inner, swapped, x, now_ms)
            }
            Some(Slot::Alias {
                primary,
                primary_hash,
                ..
            }) => (*primary, *primary_hash),
        };
        drop(sh);
        let sh = self.shard(primary.1);
        match sh.find(primary.1, |s| s.key() == &primary.0) {
            Some(Slot::Conn(c)) => {
                related_verdict(c, self.expires_at(c, now_ms), inner, swapped, x, now_ms)
            }
            _ => Step::Done(CtVerdict::with_state(cs::INV), None),
        }
    }

    fn track(&self, t: &Tuple, flags: u16, echo_reply: bool, x: &CtExec, now_ms: u64) -> Step {
        let (k, swapped) = t.canon(x.zone);
        let h = k.hash();
        let mut sh = self.shard(h);
        if let Ok(mut entry) = sh.find_entry(h, |s| s.key() == &k) {
            let alias = match entry.get() {
                Slot::Alias {
                    primary,
                    primary_hash,
                    ..
                } => Some((*primary, *primary_hash)),
                Slot::Conn(_) => None,
            };
            if let Some((pk, ph)) = alias {
                drop(sh);
                return self.track_reply(t, (k, h), (pk, ph), flags, echo_reply, x, now_ms);
            }
            let Slot::Conn(c) = entry.get_mut() else {
                return Step::Done(CtVerdict::with_state(cs::INV), None);
            };
            // A NATed connection is found under its original tuple only in
            // the original direction; the mirror image is another flow.
            let Some(reply) = c.direction(t, swapped, echo_reply) else {
                return Step::Done(CtVerdict::with_state(cs::INV), None);
            };
            let fate = c.fate(self.expires_at(c, now_ms), reply, flags, now_ms);
            if fate == Fate::Continues {
                return self.update(c, reply, flags, echo_reply, x, now_ms);
            }
            // Expired, or a closed TCP connection started over: forget it.
            let (old, _) = entry.remove();
            if let Slot::Conn(c) = &old {
                self.slots.free(c.slot);
            }
            self.n_conns.fetch_sub(1, Relaxed);
            if fate == Fate::Expired {
                self.counters.expired.fetch_add(1, Relaxed);
            }
            if let Slot::Conn(Conn {
                nat:
                    Some(NatBinding {
                        alias: Some((ak, ah)),
                        ..
                    }),
                ..
            }) = old
            {
                drop(sh);
                self.remove_alias(ak, ah, k);
                return Step::Retry;
            }
        }
        self.create(sh, t, (k, h), swapped, flags, echo_reply, x, now_ms)
    }

    /// A packet found through a NATed connection's alias: it must be the
    /// connection's reply tuple.
    #[allow(clippy::too_many_arguments)]
    fn track_reply(
        &self,
        t: &Tuple,
        (ak, ah): (CanonKey, u64),
        (pk, ph): (CanonKey, u64),
        flags: u16,
        echo_reply: bool,
        x: &CtExec,
        now_ms: u64,
    ) -> Step {
        let mut sh = self.shard(ph);
        let Ok(mut entry) = sh.find_entry(ph, |s| s.key() == &pk) else {
            // The connection is being removed (its alias goes next).
            return Step::Done(CtVerdict::with_state(cs::INV), None);
        };
        let Slot::Conn(c) = entry.get_mut() else {
            return Step::Done(CtVerdict::with_state(cs::INV), None);
        };
        if c.nat.map(|n| n.reply) != Some(*t) {
            return Step::Done(CtVerdict::with_state(cs::INV), None);
        }
        let fate = c.fate(self.expires_at(c, now_ms), true, flags, now_ms);
        if fate == Fate::Continues {
            return self.update(c, true, flags, echo_reply, x, now_ms);
        }
        if let (Slot::Conn(c), _) = entry.remove() {
            self.slots.free(c.slot);
        }
        drop(sh);
        self.n_conns.fetch_sub(1, Relaxed);
        if fate == Fate::Expired {
            self.counters.expired.fetch_add(1, Relaxed);
        }
        self.remove_alias(ak, ah, pk);
        Step::Retry
    }

    /// Remove the alias `ak` of the connection `pk` (if it is still there).
    fn remove_alias(&self, ak: CanonKey, ah: u64, pk: CanonKey) {
        let mut sh = self.shard(ah);
        if let Ok(e) = sh.find_entry(
            ah,
            |s| matches!(s, Slot::Alias { key, primary, .. } if *key == ak && *primary == pk),
        ) {
            e.remove();
        }
    }

    /// No connection has this tuple: a valid first packet is `+new`; with
    /// `commit` the connection is created (and with `nat(src|dst=...)`
    /// bound to a free translated tuple first).
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        sh: std::sync::MutexGuard<'_, HashTable<Slot>>,
        t: &Tuple,
        (k, h): (CanonKey, u64),
        swapped: bool,
        flags: u16,
        echo_reply: bool,
        x: &CtExec,
        now_ms: u64,
    ) -> Step {
        let proto = match t.proto {
            ipproto::TCP if !tcp::valid_new(flags) => return Step::invalid(),
            ipproto::TCP => ProtoState::Tcp(tcp::initial()),
            ipproto::UDP => ProtoState::Udp,
            ipproto::ICMP | ipproto::ICMPV6 if echo_reply => return Step::invalid(),
            ipproto::ICMP | ipproto::ICMPV6 => ProtoState::Icmp,
            _ => ProtoState::Other,
        };
        let mut c = Conn {
            key: k,
            orig_swapped: swapped,
            proto,
            seen_reply: false,
            mark: 0,
            label: 0,
            expires_ms: 0,
            nat: None,
            slot: NO_SLOT,
            gen: 0,
            published: (0, 0),
        };
        c.apply_marks(x);
        let mut v = CtVerdict::of_conn(cs::TRK | cs::NEW, &c);
        if !x.commit {
            // Not committed: nothing is remembered, and exec() applies only
            // to a committed connection (OVS), so the packet has no mark.
            return Step::Done(CtVerdict::with_state(cs::NEW), None);
        }
        if self.n_conns.fetch_add(1, Relaxed) >= self.limit() {
            self.n_conns.fetch_sub(1, Relaxed);
            self.counters.full_drops.fetch_add(1, Relaxed);
            return Step::Done(CtVerdict { full: true, ..v }, None);
        }
        let mut sh = sh;
        if let Some(spec) = x.nat.filter(NatSpec::binds) {
            // Allocation probes other shards: never with this one held.
            drop(sh);
            match self.allocate(t, x.zone, &spec, (k, h), now_ms) {
                Alloc::Exhausted => {
                    self.n_conns.fetch_sub(1, Relaxed);
                    self.counters.nat_exhausted.fetch_add(1, Relaxed);
                    v.nat_exhausted = true;
                    return Step::Done(v, None);
                }
                Alloc::None => {}
                Alloc::Bound(b) => c.nat = Some(b),
            }
            sh = self.shard(h);
            if sh.find(h, |s| s.key() == &k).is_some() {
                // Another thread committed this connection meanwhile.
                drop(sh);
                self.n_conns.fetch_sub(1, Relaxed);
                if let Some((ak, ah)) = c.nat.and_then(|n| n.alias) {
                    self.remove_alias(ak, ah, k);
                }
                return Step::Retry;
            }
        }
        // No slot yet: a new connection gets no token (its commit changed
        // the table), and its first packet that does takes one.
        c.expires_ms = now_ms.saturating_add(self.timeouts.ms(c.timeout()));
        let xl = match (x.nat, c.nat) {
            (Some(_), Some(n)) => {
                v.state |= c.nat_bits(false);
                xlate_packet(t, &n.reply.mirror())
            }
            _ => None,
        };
        sh.insert_unique(h, Slot::Conn(c), Slot::hash);
        self.counters.commits.fetch_add(1, Relaxed);
        Step::Done(v, xl)
    }

    /// Choose the translated tuple of a new connection `t` (OVS
    /// lib/conntrack.c `nat_get_unique_tuple`): an address of the range
    /// from a hash of the connection (or at random), then the ports: for
    /// SNAT without a port range, the packet's own source port if free,
    /// else a probe over 1-511, 600-1023 or 1024-65535 (the class of the
    /// original port); with a range, a probe over it starting at a hash.
    /// DNAT keeps the client's source port unless that collides (then the
    /// same probe). A candidate is free when no slot of the table has its
    /// reply tuple's key; it is reserved by inserting the alias at once
    /// (one shard locked at a time). At most [`MAX_NAT_PROBES`] candidates
    /// are tried.
    fn allocate(
        &self,
        t: &Tuple,
        zone: u16,
        spec: &NatSpec,
        primary: (CanonKey, u64),
        now_ms: u64,
    ) -> Alloc {
        let Some(r) = spec.addrs else {
            return Alloc::None;
        };
        if r.v6 != t.v6 {
            return Alloc::None;
        }
        let hash = if spec.flags & nat::flags::RANDOM != 0 {
            mix(primary.1 ^ now_ms.rotate_left(17) ^ self.counters.commits.load(Relaxed))
        } else if spec.flags & nat::flags::PERSISTENT != 0 {
            mix((t.src as u64)
                ^ ((t.src >> 64) as u64).rotate_left(7)
                ^ (t.dst as u64).rotate_left(31))
        } else {
            primary.1
        };
        let span = r.max - r.min;
        let n_addr = span.saturating_add(1);
        let a_start = u128::from(hash) % n_addr;
        let icmp = matches!(t.proto, ipproto::ICMP | ipproto::ICMPV6);
        let pat = icmp || matches!(t.proto, ipproto::TCP | ipproto::UDP);
        let in_range = |lo: u16, hi: u16| lo + (hash % (u64::from(hi - lo) + 1)) as u16;
        let ((s_cur, s_lo, s_hi), (d_cur, d_lo, d_hi)) = match (pat, spec.kind) {
            (false, _) | (_, NatKind::Apply) => {
                ((t.sport, t.sport, t.sport), (t.dport, t.dport, t.dport))
            }
            (true, NatKind::Src) => {
                let s = match spec.ports {
                    Some((lo, hi)) => (in_range(lo, hi), lo, hi),
                    None => {
                        let (lo, hi) = default_port_class(t.sport);
                        (t.sport, lo, hi)
                    }
                };
                (s, (t.dport, t.dport, t.dport))
            }
            (true, NatKind::Dst) => {
                let d = match spec.ports {
                    Some((lo, hi)) if !icmp => (in_range(lo, hi), lo, hi),
                    _ => (t.dport, t.dport, t.dport),
                };
                let (lo, hi) = default_port_class(t.sport);
                ((t.sport, lo, hi), d)
            }
        };
        let mut probes = 0u32;
        let mut i: u128 = 0;
        while i < n_addr {
            let addr = r.min + (a_start + i) % n_addr;
            i += 1;
            for dp in port_probe(d_cur, d_lo, d_hi) {
                for sp in port_probe(s_cur, s_lo, s_hi) {
                    probes += 1;
                    if probes > MAX_NAT_PROBES {
                        return Alloc::Exhausted;
                    }
                    let mut tr = *t;
                    match spec.kind {
                        NatKind::Src => tr.src = addr,
                        NatKind::Dst => tr.dst = addr,
                        NatKind::Apply => {}
                    }
                    tr.sport = sp;
                    // The ICMP echo identifier is the same in both fields.
                    tr.dport = if icmp { sp } else { dp };
                    let reply = tr.mirror();
                    if let Some(alias) = self.reserve(&reply, zone, primary) {
                        return Alloc::Bound(NatBinding {
                            kind: spec.kind,
                            reply,
                            alias,
                        });
                    }
                }
            }
        }
        Alloc::Exhausted
    }

    /// Reserve `reply` for the connection `primary`: None when taken;
    /// otherwise the alias inserted (None when `reply` is the untranslated
    /// reply, which the connection's own key finds).
    fn reserve(
        &self,
        reply: &Tuple,
        zone: u16,
        primary: (CanonKey, u64),
    ) -> Option<Option<(CanonKey, u64)>> {
        let (rk, _) = reply.canon(zone);
        if rk == primary.0 {
            return Some(None);
        }
        let rh = rk.hash();
        let mut sh = self.shard(rh);
        if sh.find(rh, |s| s.key() == &rk).is_some() {
            return None;
        }
        sh.insert_unique(
            rh,
            Slot::Alias {
                hash: rh,
                key: rk,
                primary: primary.0,
                primary_hash: primary.1,
            },
            Slot::hash,
        );
        Some(Some((rk, rh)))
    }

    /// A packet of the live connection `c` (`reply`: its direction): run
    /// the state machine, write `commit`'s mark and label, move the expiry,
    /// and give the verdict (with a token when the packet changed nothing
    /// but the expiry; docs/architecture.md "The established-connection
    /// fast path"). Under `c`'s shard lock.
    ///
    /// Written for the slow path's cost (docs/perf.md "The tracker's slow
    /// path"): whether anything a verdict depends on changed is tracked
    /// field by field as it is written (no copy of the old state to compare
    /// whole), the timeout class is computed once, and the verdict is built
    /// in one place.
    fn update(
        &self,
        c: &mut Conn,
        reply: bool,
        flags: u16,
        echo_reply: bool,
        x: &CtExec,
        now_ms: u64,
    ) -> Step {
        // Anything a verdict depends on (TCP state, reply seen, mark,
        // label) that this packet changes kills the tokens issued before:
        // the generation moves on.
        let mut changed = reply && !c.seen_reply;
        match c.proto {
            ProtoState::Tcp(tc) => match tcp::update(tc, reply, flags) {
                TcpVerdict::Next(n) => {
                    changed |= n != tc;
                    c.proto = ProtoState::Tcp(n);
                }
                TcpVerdict::Invalid | TcpVerdict::Reopen => return Step::invalid(),
            },
            ProtoState::Icmp if echo_reply != reply => return Step::invalid(),
            _ => {}
        }
        c.seen_reply |= reply;
        if x.commit {
            let mark = (c.mark & !x.mark.1) | (x.mark.0 & x.mark.1);
            changed |= mark != c.mark;
            c.mark = mark;
            if x.label.1 != 0 {
                let label = (c.label & !x.label.1) | (x.label.0 & x.label.1);
                changed |= label != c.label;
                c.label = label;
            }
        }
        let kind = c.timeout();
        c.expires_ms = now_ms.saturating_add(self.timeouts.ms(kind));
        // The token: only when this packet changed nothing but the expiry
        // (so the same packet again gets this same verdict), for TCP and
        // UDP (whose tracked fields are all in the datapath's exact key;
        // ICMP's echo id is not), never for NAT (the frame is rewritten).
        let tokened = !changed
            && c.nat.is_none()
            && x.nat.is_none()
            && matches!(c.proto, ProtoState::Tcp(_) | ProtoState::Udp);
        let first = tokened && c.slot == NO_SLOT && self.take_slot(c);
        let token = if c.slot == NO_SLOT {
            None
        } else {
            let gen = self.publish(c, kind, changed, first);
            tokened.then_some(CtToken { slot: c.slot, gen })
        };
        let state = cs::TRK
            | match (reply, c.seen_reply) {
                (true, _) => cs::EST | cs::RPL,
                (false, true) => cs::EST,
                (false, false) => cs::NEW,
            };
        let v = CtVerdict {
            state,
            mark: c.mark,
            label: c.label,
            full: false,
            nat_exhausted: false,
            token,
        };
        if x.nat.is_some() && c.nat.is_some() {
            return nat_step(c, reply, v);
        }
        // Without NAT only the `None` tag is written, not a whole `Xlate`.
        Step::Done(v, None)
    }

    /// Give `c` a slot (its first token; under its shard lock): a freed
    /// one (whose generation moved when it was freed, so no token of its
    /// former connection applies) or a fresh one; true when it got one
    /// (the caller then publishes with `force`). Every slot number in use
    /// (a limit near 2^32): `c` stays without one, tracked as before, only
    /// never fast-pathed.
    #[cold]
    #[inline(never)]
    fn take_slot(&self, c: &mut Conn) -> bool {
        let Some(slot) = self.slots.alloc() else {
            return false;
        };
        c.slot = slot;
        c.gen = self.slots.get(slot).map_or(0, |cell| gen_of(cell.life()));
        true
    }

    /// Publish `c`'s timeout class `kind` and exact expiry (rounded down to
    /// a second: the fast path never outlives the slow path's expiry) in
    /// its slot, bumping the generation when `bump`. Under `c`'s shard
    /// lock; `c` has a slot.
    ///
    /// Unless `force` (a slot just taken) or `bump`, nothing is written when neither the
    /// whole-second expiry nor the timeout in force moved since the last
    /// publication: the slot's line is then not dirtied (at 1M
    /// connections that store is a cache miss the shard's unlock waits for).
    /// A fast-path refresh since then set at most `now + timeout`, rounded
    /// up to a second, with the same timeout: within the expiry's one-second
    /// granularity of what this update sets.
    #[inline]
    fn publish(&self, c: &mut Conn, kind: TimeoutKind, bump: bool, force: bool) -> u32 {
        c.gen = c.gen.wrapping_add(u32::from(bump));
        let exp_s = u32::try_from(c.expires_ms / 1000).unwrap_or(u32::MAX);
        let now = (exp_s, self.timeouts.get(kind));
        if bump || force || now != c.published {
            c.published = now;
            if let Some(cell) = self.slots.get(c.slot) {
                cell.publish(c.gen, kind as u32, exp_s);
            }
        }
        c.gen
    }

    /// `c`'s expiry: the later of the slow path's exact one and the fast
    /// path's refresh (whole seconds). Under `c`'s shard lock.
    fn expires(&self, c: &Conn) -> u64 {
        if c.slot == NO_SLOT {
            return c.expires_ms;
        }
        let fast = self
            .slots
            .get(c.slot)
            .map_or(0, |cell| u64::from(exp_s_of(cell.life())) * 1000);
        c.expires_ms.max(fast)
    }

    /// [`Conntrack::expires`] when it matters for expiry at `now_ms`: the
    /// slot is read only when the exact expiry has passed (so a slow-path
    /// look-up of a live connection never touches its slot).
    #[inline]
    fn expires_at(&self, c: &Conn, now_ms: u64) -> u64 {
        if c.expires_ms > now_ms {
            c.expires_ms
        } else {
            self.expires(c)
        }
    }

    /// The established-connection fast path (docs/architecture.md
    /// "Connection tracking"): the connection `tok` names is still the one
    /// the token was issued for, with the same verdict-relevant state, and
    /// not expired at `now_ms`. If so, refresh its expiry as a packet's
    /// update would (to `now_ms` plus its class's current timeout, in
    /// whole seconds, written only when it moves by a second or more: the
    /// steady state only reads) and return true: the packet's verdict is
    /// the one recorded with the token. False: take the slow path
    /// ([`Conntrack::execute`]), which also handles a timeout shortened
    /// by `set-ct` and the last second before the slow path's expiry.
    /// No lock, no allocation; one atomic load, a compare-exchange at most
    /// once a second per connection.
    #[inline]
    pub fn fast_refresh(&self, tok: CtToken, now_ms: u64) -> bool {
        let Some(cell) = self.slots.get(tok.slot) else {
            return false;
        };
        let w = cell.life();
        let exp_ms = u64::from(exp_s_of(w)) * 1000;
        if gen_of(w) != tok.gen || now_ms >= exp_ms {
            return false;
        }
        let Some(t) = self.timeouts.ms_at(cell.kind()) else {
            return false;
        };
        let want = now_ms.saturating_add(t);
        if want <= exp_ms {
            // More than two seconds beyond what the timeout gives now
            // (it was shortened): the slow path sets it exactly.
            return exp_ms - want <= 2000;
        }
        let s = u32::try_from(want.div_ceil(1000)).unwrap_or(u32::MAX);
        cell.refresh(w, s)
    }

    /// [`Conntrack::sweep`] at the current time, at most once a second
    /// (the control thread calls this on every tick).
    pub fn maybe_sweep(&self) -> usize {
        let now = self.now_ms();
        let last = self.last_sweep_ms.load(Relaxed);
        if now < last.saturating_add(1000) {
            return 0;
        }
        self.last_sweep_ms.store(now, Relaxed);
        self.sweep(now)
    }

    /// Remove every connection expired at `now_ms`; returns how many.
    /// Runs on the control thread (one shard locked at a time).
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut n = 0;
        let mut aliases = Vec::new();
        for s in self.shards.iter() {
            let mut sh = match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            sh.retain(|slot| match slot {
                // Removed with its connection, below.
                Slot::Alias { .. } => true,
                Slot::Conn(c) => {
                    let keep = self.expires_at(c, now_ms) > now_ms;
                    if !keep {
                        n += 1;
                        self.slots.free(c.slot);
                        if let Some((ak, ah)) = c.nat.and_then(|b| b.alias) {
                            aliases.push((ak, ah, c.key));
                        }
                    }
                    keep
                }
            });
        }
        // The NAT tuples of the removed connections are free again.
        for (ak, ah, pk) in aliases {
            self.remove_alias(ak, ah, pk);
        }
        self.n_conns.fetch_sub(n, Relaxed);
        self.counters.expired.fetch_add(n as u64, Relaxed);
        n
    }

    /// Remove every connection (of `zone` only, when given); returns how many.
    pub fn flush(&self, zone: Option<u16>) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut sh = match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            // A connection's alias is in its zone: both go.
            sh.retain(|slot| {
                let keep = zone.is_some_and(|z| z != slot.key().zone);
                if let (false, Slot::Conn(c)) = (keep, slot) {
                    n += 1;
                    self.slots.free(c.slot);
                }
                keep
            });
        }
        self.n_conns.fetch_sub(n, Relaxed);
        self.counters.flushed.fetch_add(n as u64, Relaxed);
        n
    }

    /// The live connections (of `zone`, and with `addr` as an endpoint,
    /// when given), sorted by zone, protocol and original tuple.
    pub fn dump(&self, zone: Option<u16>, addr: Option<IpAddr>) -> Vec<ConnView> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let sh = match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for slot in sh.iter() {
                let Slot::Conn(c) = slot else { continue };
                let expires_ms = self.expires(c);
                if expires_ms <= now || zone.is_some_and(|z| z != c.key.zone) {
                    continue;
                }
                let o = c.orig();
                let r = c.reply();
                let (src, dst) = (ip_of(o.v6, o.src), ip_of(o.v6, o.dst));
                let (rsrc, rdst) = (ip_of(r.v6, r.src), ip_of(r.v6, r.dst));
                // Either tuple's endpoints match the filter (a NATed
                // connection is found by its translated address too).
                if addr.is_some_and(|a| a != src && a != dst && a != rsrc && a != rdst) {
                    continue;
                }
                out.push(ConnView {
                    proto: o.proto,
                    ipv6: o.v6,
                    orig: TupleView {
                        src,
                        dst,
                        sport: o.sport,
                        dport: o.dport,
                    },
                    reply: TupleView {
                        src: rsrc,
                        dst: rdst,
                        sport: r.sport,
                        dport: r.dport,
                    },
                    zone: c.key.zone,
                    mark: c.mark,
                    label: format!("{:#x}", c.label),
                    state: match c.proto {
                        ProtoState::Tcp(t) => Some(t.state.name()),
                        _ => None,
                    },
                    timeout: (expires_ms - now).div_ceil(1000),
                });
            }
        }
        out.sort_by(|a, b| {
            (
                a.zone,
                a.proto,
                a.orig.src,
                a.orig.dst,
                a.orig.sport,
                a.orig.dport,
            )
                .cmp(&(
                    b.zone,
                    b.proto,
                    b.orig.src,
                    b.orig.dst,
                    b.orig.sport,
                    b.orig.dport,
                ))
        });
        out
    }

    /// Counters and settings.
    pub fn stats(&self) -> CtStats {
        CtStats {
            entries: self.len(),
            limit: self.limit(),
            commits: self.counters.commits.load(Relaxed),
            ct_full: self.counters.full_drops.load(Relaxed),
            expired: self.counters.expired.load(Relaxed),
            flushed: self.counters.flushed.load(Relaxed),
            nat_no_port: self.counters.nat_exhausted.load(Relaxed),
            timeouts: self
                .timeouts
                .all()
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        }
    }
}

/// The most candidate tuples one NAT allocation tries before it reports
/// the range exhausted (a bound on the work one new connection can cause).
pub const MAX_NAT_PROBES: u32 = 1 << 18;

/// The verdict on an ICMP error quoting `inner` of connection `c` (found
/// under `inner`'s canonical key, `swapped` relative to it).
fn related_verdict(
    c: &Conn,
    expires_ms: u64,
    inner: &Tuple,
    swapped: bool,
    x: &CtExec,
    now_ms: u64,
) -> Step {
    let inv = Step::Done(CtVerdict::with_state(cs::INV), None);
    if expires_ms <= now_ms {
        return inv;
    }
    // The error travels opposite to the packet it quotes: it is in the
    // direction of the quoted tuple's mirror image.
    let m = inner.mirror();
    let reply = match c.nat {
        // The quoted packet went in the original direction: the error
        // about it travels in the reply direction.
        None => swapped == c.orig_swapped,
        Some(n) if m == n.reply => true,
        Some(_) if m == c.orig() => false,
        Some(_) => return inv,
    };
    let mut state = cs::TRK | cs::REL | if reply { cs::RPL } else { 0 };
    let mut xl = None;
    if let (Some(_), Some(n)) = (x.nat, c.nat) {
        state |= c.nat_bits(reply);
        // What the error's direction translates to, and the outer address
        // OVS rewrites (`reverse_nat_packet`): for SNAT the destination of
        // a reply / the source of an original-direction error, for DNAT
        // the other way round.
        let target = if reply {
            c.orig().mirror()
        } else {
            n.reply.mirror()
        };
        let (outer_src, outer_dst) = match (n.kind, reply) {
            (NatKind::Src, true) | (NatKind::Dst, false) => (None, Some(target.dst)),
            _ => (Some(target.src), None),
        };
        let to = target.mirror();
        if to != *inner || outer_src.is_some() || outer_dst.is_some() {
            xl = Some(Xlate::Related {
                v6: inner.v6,
                proto: inner.proto,
                from: inner.ends(),
                to: to.ends(),
                outer_src,
                outer_dst,
            });
        }
    }
    Step::Done(CtVerdict::of_conn(state, c), xl)
}

/// A packet of NATed connection `c` through `ct(nat)`: verdict `v` with
/// the NAT bits, and the rewrite to the other direction's view. Out of
/// line: [`Conntrack::update`]'s common return then writes no `Xlate`.
#[inline(never)]
fn nat_step(c: &Conn, reply: bool, mut v: CtVerdict) -> Step {
    let Some(n) = c.nat else {
        return Step::Done(v, None);
    };
    v.state |= c.nat_bits(reply);
    let xl = if reply {
        xlate_packet(&n.reply, &c.orig().mirror())
    } else {
        xlate_packet(&c.orig(), &n.reply.mirror())
    };
    Step::Done(v, xl)
}

/// The rewrite of a packet from `from` to `to` (None when equal).
fn xlate_packet(from: &Tuple, to: &Tuple) -> Option<Xlate> {
    (from != to).then_some(Xlate::Packet {
        v6: from.v6,
        proto: from.proto,
        from: from.ends(),
        to: to.ends(),
    })
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The port class OVS keeps a translated source port in when no range is
/// given (lib/conntrack.c `set_sport_range`): 1-511, 600-1023 or 1024-65535.
fn default_port_class(p: u16) -> (u16, u16) {
    if p < 512 {
        (1, 511)
    } else if p < 1024 {
        (600, 1023)
    } else {
        (1024, 65535)
    }
}

/// `cur` first, then every other port of `lo..=hi` once, wrapping after
/// `cur` (OVS `FOR_EACH_PORT_IN_RANGE`). No allocation.
fn port_probe(cur: u16, lo: u16, hi: u16) -> impl Iterator<Item = u16> {
    let n = u32::from(hi) - u32::from(lo) + 1;
    let inside = (lo..=hi).contains(&cur);
    let (start, count) = if inside {
        (u32::from(cur - lo) + 1, n - 1)
    } else {
        (0, n)
    };
    std::iter::once(cur).chain((0..count).map(move |i| (u32::from(lo) + (start + i) % n) as u16))
}

/// ICMPv4 error types (RFC 792): destination unreachable, source quench,
/// redirect, time exceeded, parameter problem.
fn icmp4_error(t: u16) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// What `frame` is to the tracker (addresses and ports from `key`, the ICMP
/// identifier and quoted headers from the frame).
fn classify(frame: &[u8], layout: &Layout, key: &FlowKey) -> Pkt {
    if layout.status != ParseStatus::Ok || key.nw_frag & FRAG_ANY != 0 {
        return Pkt::Invalid;
    }
    let v6 = match key.dl_type {
        ethertype::IPV4 => false,
        ethertype::IPV6 => true,
        _ => return Pkt::Invalid,
    };
    let (src, dst) = if v6 {
        (
            u128::from_be_bytes(key.ipv6_src),
            u128::from_be_bytes(key.ipv6_dst),
        )
    } else {
        (u128::from(key.nw_src), u128::from(key.nw_dst))
    };
    let mut t = Tuple {
        v6,
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: key.nw_proto,
    };
    let l4 = usize::from(layout.l4);
    match (key.nw_proto, v6) {
        // SCTP (RFC 9260 §3.1) has ports like UDP: with them in the tuple an
        // association is its own connection (a policy allowing SCTP port 9
        // must not let a later association to port 10 pass as +est). Its
        // state is tracked as "other" (no chunk state machine).
        (ipproto::TCP, _) | (ipproto::UDP, _) | (ipproto::SCTP, _) => {
            t.sport = key.tp_src;
            t.dport = key.tp_dst;
            Pkt::Conn {
                t,
                tcp_flags: if key.nw_proto == ipproto::TCP {
                    key.tcp_flags
                } else {
                    0
                },
                echo_reply: false,
            }
        }
        (ipproto::ICMP, false) | (ipproto::ICMPV6, true) => {
            let ty = key.tp_src;
            let (req, rep) = if v6 { (128, 129) } else { (8, 0) };
            if ty == req || ty == rep {
                let Some(h) = frame.get(l4..l4 + 8) else {
                    return Pkt::Invalid;
                };
                let id = be16(h, 4);
                t.sport = id;
                t.dport = id;
                return Pkt::Conn {
                    t,
                    tcp_flags: 0,
                    echo_reply: ty == rep,
                };
            }
            let err = if v6 {
                (1..=4).contains(&ty)
            } else {
                icmp4_error(ty)
            };
            if !err {
                return Pkt::Invalid;
            }
            let Some(inner) = frame.get(l4 + 8..) else {
                return Pkt::Invalid;
            };
            match quoted(inner, v6) {
                Some(q) => Pkt::Related(q),
                None => Pkt::Invalid,
            }
        }
        (ipproto::ICMP, true) | (ipproto::ICMPV6, false) => Pkt::Invalid,
        _ => Pkt::Conn {
            t,
            tcp_flags: 0,
            echo_reply: false,
        },
    }
}

/// The tuple of the packet quoted in an ICMP error (RFC 792: the IP header
/// and at least 8 bytes of its payload; RFC 4443 §2.4(c) for ICMPv6).
fn quoted(b: &[u8], v6: bool) -> Option<Tuple> {
    let (src, dst, proto, l4) = if v6 {
        let h = b.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&h[8..24]);
        d.copy_from_slice(&h[24..40]);
        (u128::from_be_bytes(s), u128::from_be_bytes(d), h[6], 40)
    } else {
        let h = b.get(..20)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return None;
        }
        // A quoted later fragment has no transport header to match.
        if be16(h, 6) & 0x1fff != 0 {
            return None;
        }
        (u128::from(be32(h, 12)), u128::from(be32(h, 16)), h[9], ihl)
    };
    let p = b.get(l4..l4 + 8)?;
    let (sport, dport) = match proto {
        ipproto::TCP | ipproto::UDP => (be16(p, 0), be16(p, 2)),
        ipproto::ICMP | ipproto::ICMPV6 => {
            let id = be16(p, 4);
            (id, id)
        }
        _ => (0, 0),
    };
    Some(Tuple {
        v6,
        src,
        dst,
        sport,
        dport,
        proto,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod nat_tests;

#[cfg(test)]
mod token_tests;
