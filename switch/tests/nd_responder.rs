//! The IPv6 gateway neighbour-discovery responder, as plain OVS-style flows
//! (docs/flowctl.md "IPv6 gateway ND responder"), through the real bridge
//! (polling thread, snapshots, caches, memory ports): a pod's neighbour
//! solicitation (RFC 4861 §4.3) for the gateway address fd00:1::1, which
//! exists on no wire, comes back out of its port as a valid solicited
//! neighbour advertisement (§4.4, §7.2.4) from the router MAC, with the
//! router/solicited/override flags and a target link-layer address option;
//! the ICMPv6 checksum is right after the rewrite, megaflow hits included.
//!
//! Topology (ofport: name, MAC, IP): 1: pod-a 02:00:00:00:01:02 fd00:1::2;
//! 2: pod-c 02:00:00:00:02:02 fd00:2::2. Router MAC 02:00:00:00:ff:00.

use std::collections::BTreeMap;

use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::flow::key::nd;
use switch::packet::ip::PseudoHeader;
use switch::packet::FrameBuilder;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 1, 2];
const ROUTER: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
const A6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const GW6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Solicited-node multicast address of fd00:1::1 (RFC 4291 §2.7.1).
const SNMA: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
const SNMA_MAC: [u8; 6] = [0x33, 0x33, 0xff, 0, 0, 1];

/// The responder exactly as docs/flowctl.md gives it.
const FLOWS: &[&str] = &[
    // Duplicate address detection (source ::) is not answered.
    "table=0,priority=310,icmp6,ipv6_src=::,icmp_type=135,actions=drop",
    "table=0,priority=300,icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:1::1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:ff:00->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00:1::1->ipv6_src,set_field:255->nw_ttl,set_field:136->icmpv6_type,set_field:0xe0000000->nd_reserved,set_field:2->nd_options_type,resubmit(,40)",
    "table=40,icmp6,icmp_type=136,icmp_code=0,nd_target=fd00:1::1,actions=set_field:02:00:00:00:ff:00->nd_tll,IN_PORT",
    // Everything else goes to pod-c, so a wrong match would show there.
    "table=0,priority=0,actions=output:2",
];

struct Sw {
    b: Bridge,
    _dir: tempfile::TempDir,
}

impl Sw {
    fn new() -> Sw {
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
        s
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

    fn trace(&mut self, packet: &str) -> String {
        let v = self.ok(Request::Trace {
            bridge: "br0".into(),
            packet: packet.into(),
        });
        v["text"].as_str().unwrap().to_string()
    }
}

fn sll_option(mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![nd::OPT_SOURCE_LINKADDR, 1];
    o.extend_from_slice(&mac);
    o
}

/// The NS a Linux pod sends to resolve its gateway: to the solicited-node
/// multicast group, hop limit 255, with its MAC in an SLL option.
fn solicit(src: [u8; 16], dst: [u8; 16], dl_dst: [u8; 6], options: &[u8]) -> Vec<u8> {
    FrameBuilder::new()
        .eth(MAC_A, dl_dst)
        .ipv6(src, dst)
        .ttl(255)
        .nd(nd::NEIGHBOR_SOLICIT, 0, GW6, options)
        .build()
}

/// Check `e` is the solicited NA for the gateway, to pod A, from the router.
fn check_advert(e: &[u8]) {
    assert_eq!(&e[..6], &MAC_A, "to the soliciting pod");
    assert_eq!(&e[6..12], &ROUTER, "from the router MAC");
    assert_eq!(&e[12..14], &[0x86, 0xdd]);
    assert_eq!(e[20], 58, "ICMPv6");
    assert_eq!(e[21], 255, "hop limit 255 (RFC 4861 §7.1.2)");
    assert_eq!(&e[22..38], &GW6, "from the gateway address");
    assert_eq!(&e[38..54], &A6, "to the solicitation's source");
    let m = &e[54..];
    assert_eq!(m.len(), 32, "header, target and one option, no padding");
    assert_eq!((m[0], m[1]), (136, 0), "neighbour advertisement");
    assert_eq!(
        &m[4..8],
        &(nd::NA_ROUTER | nd::NA_SOLICITED | nd::NA_OVERRIDE).to_be_bytes(),
        "R, S and O set"
    );
    assert_eq!(&m[8..24], &GW6, "target");
    assert_eq!(
        (m[24], m[25], &m[26..32]),
        (nd::OPT_TARGET_LINKADDR, 1, &ROUTER[..]),
        "target link-layer address option with the router MAC"
    );
    assert!(
        PseudoHeader::V6 { src: GW6, dst: A6 }.verify(58, m),
        "ICMPv6 checksum over the pseudo-header"
    );
}

#[test]
fn pod_solicitation_for_the_gateway_gets_a_valid_advertisement() {
    let mut s = Sw::new();
    let ns = solicit(A6, SNMA, SNMA_MAC, &sll_option(MAC_A));
    // Three times: the slow path, then the megaflow/EMC path must agree.
    for round in 0..3 {
        s.inject("pod-a", std::slice::from_ref(&ns));
        let back = s.capture("pod-a");
        assert_eq!(back.len(), 1, "round {round}: one NA back to pod-a");
        check_advert(&back[0]);
        assert!(s.capture("pod-c").is_empty(), "round {round}");
    }
    // A unicast NUD probe (to the gateway address and router MAC) too.
    s.inject("pod-a", &[solicit(A6, GW6, ROUTER, &sll_option(MAC_A))]);
    let back = s.capture("pod-a");
    assert_eq!(back.len(), 1);
    check_advert(&back[0]);
}

#[test]
fn other_targets_dad_and_malformed_solicitations_are_not_answered() {
    let mut s = Sw::new();
    let mut other = solicit(A6, SNMA, SNMA_MAC, &sll_option(MAC_A));
    other[14 + 40 + 8 + 15] = 9; // target fd00:1::9 (checksum not fixed: the switch does not check it)
    let dad = solicit([0; 16], SNMA, SNMA_MAC, &[]);
    let mut zero_len = sll_option(MAC_A);
    zero_len[1] = 0;
    let bad = solicit(A6, SNMA, SNMA_MAC, &zero_len);
    s.inject("pod-a", &[other, dad, bad]);
    assert!(s.capture("pod-a").is_empty(), "nothing answered");
    // The other target and the malformed one (no nd_target extracted) fall
    // through to the default flow; DAD is dropped.
    assert_eq!(s.capture("pod-c").len(), 2);
}

#[test]
fn trace_shows_the_nd_rewrite_in_datapath_notation() {
    let mut s = Sw::new();
    let text = s.trace(
        "in_port=1,icmp6,dl_src=02:00:00:00:01:02,dl_dst=33:33:ff:00:00:01,ipv6_src=fd00:1::2,ipv6_dst=ff02::1:ff00:1,nw_ttl=255,icmp_type=135,icmp_code=0,nd_target=fd00:1::1,nd_sll=02:00:00:00:01:02,nd_options_type=1",
    );
    assert!(
        text.contains("set(nd_ext(nd_reserved=0xe0000000,nd_options_type=2))"),
        "{text}"
    );
    assert!(text.contains("set(nd(tll=02:00:00:00:ff:00))"), "{text}");
    assert!(text.contains("set(icmp(type=136))"), "{text}");
    assert!(
        text.contains("set(ipv6(src=fd00:1::1,dst=fd00:1::2))"),
        "{text}"
    );
}

#[test]
fn dump_flows_prints_nd_fields_back_in_ovs_syntax() {
    let mut s = Sw::new();
    let v = s.ok(Request::DumpFlows {
        bridge: "br0".into(),
        filter: None,
    });
    let text = v.to_string();
    for want in [
        "icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:1::1",
        "set_field:3758096384->nd_reserved",
        "set_field:2->nd_options_type",
        "set_field:136->icmpv6_type",
        "icmp6,icmp_type=136,icmp_code=0,nd_target=fd00:1::1",
        "set_field:02:00:00:00:ff:00->nd_tll",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
}

mod syntax {
    //! ND fields in flow syntax: parse, dump-flows text, prerequisites.
    use switch::flow::{format_flow, parse_flow, ParseMode};

    fn dump(text: &str) -> String {
        match parse_flow(text, ParseMode::Add) {
            Ok(s) => format_flow(&s.to_flow()),
            Err(e) => panic!("{text:?} failed:\n{e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse_flow(text, ParseMode::Add) {
            Ok(s) => panic!("{text:?} should fail, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn nd_matches_print_like_ovs_and_parse_back() {
        // OVS tests/ovs-ofctl.at "ovs-ofctl parse-flows" ND cases.
        for (input, want) in [
            (
                "icmp6,icmp_type=135,nd_target=FEC0::1234:F045:8FFF:1111:FE4E:0571,nd_sll=00:0A:E4:25:6B:B0,actions=drop",
                "icmp6,icmp_type=135,nd_target=fec0:0:1234:f045:8fff:1111:fe4e:571,nd_sll=00:0a:e4:25:6b:b0 actions=drop",
            ),
            (
                "icmp6,icmpv6_type=136,nd_target=fec0::1234:f045:8fff:1111:fe4e:571,nd_tll=00:0a:e4:25:6b:b1,actions=drop",
                "icmp6,icmp_type=136,nd_target=fec0:0:1234:f045:8fff:1111:fe4e:571,nd_tll=00:0a:e4:25:6b:b1 actions=drop",
            ),
            (
                "icmp6,icmp_type=135,nd_target=fd00:1::/64,actions=drop",
                "icmp6,icmp_type=135,nd_target=fd00:1::/64 actions=drop",
            ),
            (
                "icmp6,icmp_type=136,nd_reserved=0xe0000000,nd_options_type=2,actions=drop",
                "icmp6,icmp_type=136,nd_reserved=3758096384,nd_options_type=2 actions=drop",
            ),
            (
                "icmp6,icmp_type=136,actions=load:0x020000000001->NXM_NX_ND_TLL[],move:NXM_NX_ND_TARGET[]->NXM_NX_IPV6_SRC[],set_field:1->nd_options_type",
                "icmp6,icmp_type=136 actions=load:0x20000000001->NXM_NX_ND_TLL[],move:NXM_NX_ND_TARGET[]->NXM_NX_IPV6_SRC[],set_field:1->nd_options_type",
            ),
        ] {
            let got = dump(input);
            assert_eq!(got, want, "{input}");
            assert_eq!(dump(&got.replace(" actions", ",actions")), want, "round trip");
        }
    }

    #[test]
    fn nd_prerequisites_are_enforced_like_ovs() {
        // nd_target needs an NS/NA type; nd_sll an NS; nd_tll an NA.
        let e = err("icmp6,nd_target=fd00::1,actions=drop");
        assert!(e.contains("icmp_type=135"), "{e}");
        let e = err("icmp6,icmp_type=136,nd_sll=02:00:00:00:00:01,actions=drop");
        assert!(e.contains("nd_sll") && e.contains("icmp_type=135"), "{e}");
        let e = err("icmp6,icmp_type=135,nd_tll=02:00:00:00:00:01,actions=drop");
        assert!(e.contains("icmp_type=136"), "{e}");
        // set_field is checked against the match, as OVS's check_SET_FIELD:
        // a solicitation's flow cannot write nd_tll.
        let e = err("icmp6,icmp_type=135,actions=set_field:136->icmpv6_type,set_field:02:00:00:00:00:01->nd_tll");
        assert!(e.contains("nd_tll") && e.contains("icmp_type=136"), "{e}");
        // Not maskable, as in OVS.
        let e = err("icmp6,icmp_type=136,nd_reserved=0x80000000/0x80000000,actions=drop");
        assert!(e.contains("mask"), "{e}");
    }
}

mod execute {
    //! `SetNdExt` / `SetNd` on their own: checksums, options, bad packets.
    use super::*;
    use switch::datapath::{apply, DpAction, ExecCtx, ExecError};
    use switch::flow::FlowKey;
    use switch::packet::{extract, Packet};

    fn run(frame: &[u8], actions: &[DpAction]) -> (Vec<u8>, Result<(), ExecError>) {
        let mut key = FlowKey::ZERO;
        let lay = extract(frame, 1, &mut key);
        let mut ctx = ExecCtx::new(&key, lay);
        let mut pkt = Packet::from_slice(frame).unwrap();
        let mut res = Ok(());
        for a in actions {
            res = res.and(apply(&mut pkt, &mut ctx, a));
        }
        (pkt.data().to_vec(), res)
    }

    fn csum_ok(f: &[u8]) -> bool {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&f[22..38]);
        dst.copy_from_slice(&f[38..54]);
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        PseudoHeader::V6 { src, dst }.verify(58, &f[54..54 + plen])
    }

    #[test]
    fn option_rename_then_mac_write_keeps_the_checksum_right() {
        let ns = solicit(A6, SNMA, SNMA_MAC, &sll_option(MAC_A));
        assert!(csum_ok(&ns));
        let (f, r) = run(
            &ns,
            &[
                DpAction::SetNdExt {
                    reserved: Some(nd::NA_SOLICITED),
                    options_type: Some(nd::OPT_TARGET_LINKADDR),
                },
                DpAction::SetNd {
                    target: Some(A6),
                    sll: None,
                    tll: Some(ROUTER),
                },
            ],
        );
        assert_eq!(r, Ok(()));
        assert!(csum_ok(&f));
        let m = &f[54..];
        assert_eq!(&m[4..8], &nd::NA_SOLICITED.to_be_bytes());
        assert_eq!(&m[8..24], &A6);
        assert_eq!((m[24], m[25], &m[26..32]), (2, 1, &ROUTER[..]));
        // Without the rename, a tll write finds no TLL option: MAC unchanged.
        let (f, r) = run(
            &ns,
            &[DpAction::SetNd {
                target: None,
                sll: None,
                tll: Some(ROUTER),
            }],
        );
        assert_eq!((r, &f[..]), (Ok(()), &ns[..]));
    }

    #[test]
    fn messages_without_options_and_non_nd_packets() {
        // No option: the type change has nothing to rename, the rest applies.
        let bare = solicit(A6, SNMA, SNMA_MAC, &[]);
        let (f, r) = run(
            &bare,
            &[DpAction::SetNdExt {
                reserved: Some(nd::NA_ROUTER),
                options_type: Some(2),
            }],
        );
        assert_eq!(r, Ok(()));
        assert!(csum_ok(&f));
        assert_eq!(f.len(), bare.len());
        // An echo request is no ND message: refused, counted by the caller.
        let echo = FrameBuilder::new()
            .ipv6(A6, GW6)
            .icmp_echo(1, 1)
            .payload(&[0; 24])
            .build();
        let (_, r) = run(
            &echo,
            &[DpAction::SetNd {
                target: Some(GW6),
                sll: None,
                tll: None,
            }],
        );
        assert_eq!(r, Err(ExecError::NoHeader));
    }
}
