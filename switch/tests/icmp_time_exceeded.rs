//! ICMP time exceeded through the real bridge (polling thread, snapshots,
//! caches, memory ports), driven by control requests: a packet whose TTL
//! expires in `route` or `dec_ttl` is dropped (counted `ttl_exceeded` /
//! `invalid_ttl`) and, when the bridge has a router address
//! (`set-bridge router-ip=... router-ipv6=...`), an ICMP time exceeded
//! (RFC 792 type 11 / RFC 4443 type 3) goes back out of the ingress port from
//! the router MAC and address, quoting the expired datagram, rate-limited.
//!
//! Topology (ofport: name, MAC, IP): 1: pod-a 02:00:00:00:01:02 10.244.1.2 /
//! fd00:1::2; 2: pod-c 02:00:00:00:02:02 10.244.2.2 / fd00:2::2. Router MAC
//! 02:00:00:00:ff:00, router addresses 10.244.1.1 and fd00:1::1.

use std::collections::BTreeMap;

use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{ErrorCode, PortEntry, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::packet::checksum::checksum;
use switch::packet::ip::PseudoHeader;
use switch::packet::FrameBuilder;
use switch::pmd::PmdPerf;
use switch::port::PortStats;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 1, 2];
const ROUTER: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
const IP_A: [u8; 4] = [10, 244, 1, 2];
const IP_C: [u8; 4] = [10, 244, 2, 2];
const GW: [u8; 4] = [10, 244, 1, 1];
const A6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const C6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const GW6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

const FLOWS: &[&str] = &[
    "table=0,priority=100,ip,dl_dst=02:00:00:00:ff:00,actions=route",
    "table=0,priority=100,ipv6,dl_dst=02:00:00:00:ff:00,actions=route",
    // 10.244.9.0/24 is forwarded by a plain OpenFlow flow with dec_ttl.
    "table=0,priority=200,ip,dl_dst=02:00:00:00:ff:00,nw_dst=10.244.9.0/24,actions=mod_dl_src:02:00:00:00:ff:00,mod_dl_dst:02:00:00:00:02:02,dec_ttl,output:2",
];

struct Sw {
    b: Bridge,
    _dir: tempfile::TempDir,
}

impl Sw {
    fn new(router_ips: bool) -> Sw {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatapathConfig {
            emc_insert_inv_prob: 1,
            ..DatapathConfig::default()
        };
        let b = Bridge::start("br0", StateStore::open(dir.path()).unwrap(), cfg).unwrap();
        let mut s = Sw { b, _dir: dir };
        for (name, no) in [("pod-a", 1), ("pod-c", 2)] {
            s.ok(Request::AddPort {
                bridge: "br0".into(),
                name: name.into(),
                port_type: "memory".into(),
                ofport: Some(no),
                options: BTreeMap::new(),
            });
        }
        s.ok(Request::AddFlows {
            bridge: "br0".into(),
            flows: FLOWS.iter().map(|f| f.to_string()).collect(),
        });
        s.ok(Request::SetRouterMac {
            bridge: "br0".into(),
            mac: Some("02:00:00:00:ff:00".into()),
            port: None,
        });
        for r in [
            "10.244.1.0/24 port=1",
            "10.244.2.0/24 port=2",
            "fd00:1::/64 port=1",
            "fd00:2::/64 port=2",
        ] {
            s.ok(Request::AddRoute {
                bridge: "br0".into(),
                route: r.into(),
            });
        }
        for (ip, mac, port) in [
            ("10.244.1.2", "02:00:00:00:01:02", 1),
            ("10.244.2.2", "02:00:00:00:02:02", 2),
            ("fd00:1::2", "02:00:00:00:01:02", 1),
            ("fd00:2::2", "02:00:00:00:02:02", 2),
        ] {
            s.ok(Request::AddNeigh {
                bridge: "br0".into(),
                ip: ip.into(),
                mac: mac.into(),
                port: Some(port),
            });
        }
        if router_ips {
            s.set(&[("router-ip", "10.244.1.1"), ("router-ipv6", "fd00:1::1")]);
        }
        s
    }

    fn set(&mut self, kv: &[(&str, &str)]) -> Value {
        self.ok(Request::SetBridge {
            bridge: "br0".into(),
            settings: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn ok(&mut self, req: Request) -> Value {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => v,
            Reply::Error(e) => panic!("{what} failed: {e}"),
        }
    }

    fn inject(&mut self, port: &str, frames: &[Vec<u8>]) {
        let v = self.ok(Request::Inject {
            bridge: "br0".into(),
            port: port.into(),
            frames: frames.iter().map(|f| encode_hex(f)).collect(),
        });
        assert_eq!(v["injected"], frames.len());
    }

    fn capture(&mut self, port: &str) -> Vec<Vec<u8>> {
        let v = self.ok(Request::Capture {
            bridge: "br0".into(),
            port: port.into(),
            max: None,
        });
        let frames: Vec<String> = serde_json::from_value(v["frames"].clone()).unwrap();
        frames.iter().map(|h| decode_hex(h).unwrap()).collect()
    }

    fn drops(&mut self, name: &str) -> BTreeMap<String, u64> {
        let v = self.ok(Request::DumpPorts {
            bridge: "br0".into(),
            port: Some(name.into()),
        });
        let p: Vec<PortEntry> = serde_json::from_value(v["ports"].clone()).unwrap();
        let st: PortStats = p[0].stats.clone();
        st.rx_drop_reasons.into_iter().collect()
    }
}

fn udp4(dst: [u8; 4], ttl: u8, sport: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_A, ROUTER)
        .ipv4(IP_A, dst)
        .ttl(ttl)
        .udp(sport, 33434)
        .payload(b"traceroute probe")
        .build()
}

/// Check `e` is an ICMPv4 time exceeded to pod A from the gateway, with
/// valid checksums, quoting `orig`'s IP datagram; returns the quote.
fn check_icmp4(e: &[u8], orig: &[u8]) {
    assert_eq!(&e[..6], &MAC_A, "to the sender");
    assert_eq!(&e[6..12], &ROUTER, "from the router MAC");
    assert_eq!(&e[12..14], &[8, 0]);
    let ip = &e[14..34];
    assert_eq!(checksum(ip), 0, "IPv4 header checksum");
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &GW, "from the router address");
    assert_eq!(&ip[16..20], &IP_A);
    let icmp = &e[34..];
    assert_eq!((icmp[0], icmp[1]), (11, 0), "time exceeded, in transit");
    assert_eq!(checksum(icmp), 0, "ICMP checksum");
    let dgram_len = usize::from(u16::from_be_bytes([orig[16], orig[17]]));
    assert_eq!(
        &icmp[8..],
        &orig[14..14 + dgram_len],
        "quotes the datagram as received"
    );
}

#[test]
fn route_ttl_expiry_sends_icmp_time_exceeded_back_from_the_gateway() {
    let mut s = Sw::new(true);
    let probe = udp4(IP_C, 1, 40000);
    s.inject("pod-a", std::slice::from_ref(&probe));
    let back = s.capture("pod-a");
    assert_eq!(back.len(), 1, "one ICMP error back to pod-a");
    check_icmp4(&back[0], &probe);
    assert!(
        s.capture("pod-c").is_empty(),
        "the expired packet is not forwarded"
    );
    assert_eq!(s.drops("pod-a").get("ttl_exceeded"), Some(&1));
    // The megaflow answers the next one the same way; TTL 2 is forwarded.
    s.inject("pod-a", &[udp4(IP_C, 1, 40000), udp4(IP_C, 2, 40000)]);
    assert_eq!(s.capture("pod-a").len(), 1);
    assert_eq!(s.capture("pod-c").len(), 1);
    assert_eq!(s.drops("pod-a").get("ttl_exceeded"), Some(&2));
}

#[test]
fn dec_ttl_expiry_sends_icmp_too_and_stays_counted_invalid_ttl() {
    let mut s = Sw::new(true);
    let probe = udp4([10, 244, 9, 7], 1, 40001);
    s.inject("pod-a", std::slice::from_ref(&probe));
    let back = s.capture("pod-a");
    assert_eq!(back.len(), 1);
    check_icmp4(&back[0], &probe);
    assert!(s.capture("pod-c").is_empty());
    assert_eq!(s.drops("pod-a").get("invalid_ttl"), Some(&1));
    // Trace says so, and shows the datapath action.
    let v = s.ok(Request::Trace {
        bridge: "br0".into(),
        packet: "in_port=1,udp,dl_src=02:00:00:00:01:02,dl_dst=02:00:00:00:ff:00,nw_src=10.244.1.2,nw_dst=10.244.9.7,nw_ttl=1,udp_src=1,udp_dst=2".into(),
    });
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("ICMP time exceeded sent back to the source from 10.244.1.1"),
        "{text}"
    );
    assert!(
        text.contains("icmp_time_exceeded(src=10.244.1.1)"),
        "{text}"
    );
}

#[test]
fn ipv6_hop_limit_expiry_sends_icmpv6_time_exceeded() {
    let mut s = Sw::new(true);
    let probe = FrameBuilder::new()
        .eth(MAC_A, ROUTER)
        .ipv6(A6, C6)
        .ttl(1)
        .udp(5000, 33434)
        .payload(b"v6 probe")
        .build();
    s.inject("pod-a", std::slice::from_ref(&probe));
    let back = s.capture("pod-a");
    assert_eq!(back.len(), 1);
    let e = &back[0];
    assert_eq!(
        (&e[..6], &e[6..12], &e[12..14]),
        (&MAC_A[..], &ROUTER[..], &[0x86, 0xdd][..])
    );
    assert_eq!(e[20], 58, "ICMPv6");
    assert_eq!(&e[22..38], &GW6);
    assert_eq!(&e[38..54], &A6);
    let m = &e[54..];
    assert_eq!((m[0], m[1]), (3, 0), "ICMPv6 time exceeded, hop limit");
    assert!(
        PseudoHeader::V6 { src: GW6, dst: A6 }.verify(58, m),
        "ICMPv6 checksum"
    );
    assert_eq!(&m[8..], &probe[14..]);
    assert!(s.capture("pod-c").is_empty());
    assert_eq!(s.drops("pod-a").get("ttl_exceeded"), Some(&1));
}

#[test]
fn no_icmp_about_icmp_errors_multicast_or_without_a_router_address() {
    let mut s = Sw::new(true);
    let icmp_err = FrameBuilder::new()
        .eth(MAC_A, ROUTER)
        .ipv4(IP_A, IP_C)
        .ttl(1)
        .icmp(3, 3)
        .build();
    let mut bcast_l2 = udp4(IP_C, 1, 7);
    bcast_l2[..6].copy_from_slice(&[0xff; 6]);
    s.inject("pod-a", &[icmp_err, bcast_l2]);
    assert!(
        s.capture("pod-a").is_empty(),
        "no error about an ICMP error"
    );
    // An echo request is answered with an error (ping -t 1).
    let echo = FrameBuilder::new()
        .eth(MAC_A, ROUTER)
        .ipv4(IP_A, IP_C)
        .ttl(1)
        .icmp_echo(1, 1)
        .build();
    s.inject("pod-a", &[echo]);
    assert_eq!(s.capture("pod-a").len(), 1);
    // Without a router address (OVS's behaviour minus the controller): drop only.
    s.set(&[("router-ip", "none")]);
    s.inject("pod-a", &[udp4(IP_C, 1, 8)]);
    assert!(s.capture("pod-a").is_empty());
    let mut plain = Sw::new(false);
    plain.inject("pod-a", &[udp4(IP_C, 1, 9)]);
    assert!(plain.capture("pod-a").is_empty());
    assert_eq!(plain.drops("pod-a").get("ttl_exceeded"), Some(&1));
}

#[test]
fn icmp_errors_are_rate_limited_and_the_excess_counted() {
    let mut s = Sw::new(true);
    s.set(&[("icmp-rate", "1"), ("icmp-burst", "2")]);
    let probes: Vec<_> = (0..6).map(|i| udp4(IP_C, 1, 41000 + i)).collect();
    s.inject("pod-a", &probes);
    assert_eq!(
        s.capture("pod-a").len(),
        2,
        "the burst, then nothing at 1/s"
    );
    let d = s.drops("pod-a");
    assert_eq!(d.get("icmp_rate_limited"), Some(&4), "{d:?}");
    assert_eq!(d.get("ttl_exceeded"), Some(&6), "{d:?}");
}

#[test]
fn bad_icmp_settings_are_errors() {
    let mut s = Sw::new(false);
    for (k, v) in [
        ("router-ip", "10.244.1"),
        ("router-ipv6", "10.244.1.1"),
        ("icmp-rate", "-1"),
        ("icmp-burst", "0"),
    ] {
        let r = s.b.handle(Request::SetBridge {
            bridge: "br0".into(),
            settings: BTreeMap::from([(k.to_string(), v.to_string())]),
        });
        match r {
            Reply::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{k}={v}: {e}");
                assert!(e.message.contains(k), "{e}");
            }
            Reply::Ok(v2) => panic!("{k}={v} accepted: {v2}"),
        }
    }
}

/// A TTL that expires after `ct(table=T)` (a policy's ACL in front of the
/// forwarding tables) gets its error too, whether the second pass ran from
/// the recirculation stack (a new exact key: the tracker is asked) or
/// directly (an established connection whose first pass's EMC entry holds
/// a current token and the second pass's megaflow).
#[test]
fn ttl_expiry_after_a_conntrack_recirculation_sends_icmp_too() {
    let mut s = Sw::new(true);
    let rewrite = "mod_dl_src:02:00:00:00:ff:00,mod_dl_dst";
    s.ok(Request::AddFlows {
        bridge: "br0".into(),
        flows: vec![
            "table=0,priority=300,ip,in_port=1,nw_dst=10.244.8.0/24,actions=ct(table=1,zone=4)".into(),
            "table=0,priority=300,ip,in_port=2,nw_src=10.244.8.0/24,actions=ct(table=1,zone=4)".into(),
            format!("table=1,priority=10,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=4),{rewrite}:02:00:00:00:02:02,dec_ttl,output:2"),
            format!("table=1,priority=10,ip,in_port=1,ct_state=+trk+est,actions={rewrite}:02:00:00:00:02:02,dec_ttl,output:2"),
            format!("table=1,priority=10,ip,in_port=2,ct_state=+trk+est,actions={rewrite}:02:00:00:00:01:02,dec_ttl,output:1"),
        ],
    });
    let far = [10, 244, 8, 7];
    s.inject("pod-a", &[udp4(far, 64, 42000)]);
    assert_eq!(s.capture("pod-c").len(), 1, "the connection's first packet");
    let reply = FrameBuilder::new()
        .eth([2, 0, 0, 0, 2, 2], ROUTER)
        .ipv4(far, IP_A)
        .udp(33434, 42000)
        .payload(b"reply")
        .build();
    s.inject("pod-c", &[reply]);
    assert_eq!(s.capture("pod-a").len(), 1, "the reply: established");
    let probe = udp4(far, 1, 42000);
    for i in 0..4 {
        s.inject("pod-a", std::slice::from_ref(&probe));
        let back = s.capture("pod-a");
        assert_eq!(back.len(), 1, "probe {i}: one ICMP error");
        check_icmp4(&back[0], &probe);
        assert!(s.capture("pod-c").is_empty(), "probe {i} not forwarded");
    }
    assert_eq!(s.drops("pod-a").get("invalid_ttl"), Some(&4));
    // pmd-perf-show counts the passes: six packets, each recirculated once;
    // the last three probes ran their second pass directly, on the fast path.
    let v = s.ok(Request::PmdPerfShow {
        bridge: "br0".into(),
    });
    let pmds: Vec<PmdPerf> = serde_json::from_value(v["pmds"].clone()).unwrap();
    let sum = |f: fn(&PmdPerf) -> u64| pmds.iter().map(f).sum::<u64>();
    assert_eq!(sum(|t| t.rx_packets), 6, "{pmds:?}");
    assert_eq!(sum(|t| t.recirculations), 6, "{pmds:?}");
    assert_eq!(sum(|t| t.passes), 12, "{pmds:?}");
    assert_eq!(sum(|t| t.direct_passes), 3, "{pmds:?}");
    assert_eq!(sum(|t| t.ct_fast_hits), 3, "{pmds:?}");
    assert_eq!(
        sum(|t| t.emc_hits + t.megaflow_hits + t.misses),
        12,
        "every pass answered by one tier: {pmds:?}"
    );
}
