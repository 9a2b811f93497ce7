//! OpenFlow select groups as a service load balancer, through the real
//! bridge (control requests, polling thread, caches, memory ports), plus
//! the translation semantics of `group:N` checked on the pipeline itself.
//!
//! Topology (ofport: name, MAC, IP):
//! 1: client  02:00:00:00:00:01 10.0.0.1 (many source ports)
//! 2: be1     02:00:00:00:01:02 10.244.1.2
//! 3: be2     02:00:00:00:01:03 10.244.1.3
//! 4: be3     02:00:00:00:01:04 10.244.1.4
//! The service VIP 10.96.0.10:80 is `group:1`, whose buckets DNAT to a
//! backend (mod_dl_dst + mod_nw_dst + set_field tcp_dst) and output to it.

use std::collections::{BTreeMap, BTreeSet};

use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use serde_json::Value;
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{ErrorBody, ErrorCode, GroupEntry, GroupOp, Reply, Request};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::{DatapathConfig, DpAction};
use switch::flow::{parse_flow, ParseMode};
use switch::group::{parse_group_mod, GroupCommand};
use switch::packet::tcp::flags;
use switch::packet::FrameBuilder;
use switch::pipeline::table::{FlowMod, FlowModCommand};
use switch::pipeline::Pipeline;

const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GW: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
const VIP: [u8; 4] = [10, 96, 0, 10];
const BACKENDS: [(&str, [u8; 6], [u8; 4]); 3] = [
    ("be1", [2, 0, 0, 0, 1, 2], [10, 244, 1, 2]),
    ("be2", [2, 0, 0, 0, 1, 3], [10, 244, 1, 3]),
    ("be3", [2, 0, 0, 0, 1, 4], [10, 244, 1, 4]),
];

const GROUP: &str = "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),bucket=bucket_id:0,weight:100,actions=set_field:02:00:00:00:01:02->eth_dst,set_field:10.244.1.2->ip_dst,set_field:8080->tcp_dst,output:2,bucket=bucket_id:1,weight:100,actions=set_field:02:00:00:00:01:03->eth_dst,set_field:10.244.1.3->ip_dst,set_field:8080->tcp_dst,output:3,bucket=bucket_id:2,weight:100,actions=set_field:02:00:00:00:01:04->eth_dst,set_field:10.244.1.4->ip_dst,set_field:8080->tcp_dst,output:4";

const VIP_FLOW: &str = "table=0,priority=100,tcp,nw_dst=10.96.0.10,tp_dst=80,actions=group:1";

struct Sw {
    b: Bridge,
    dir: tempfile::TempDir,
}

impl Sw {
    fn start(dir: &tempfile::TempDir) -> Bridge {
        let cfg = DatapathConfig {
            emc_insert_inv_prob: 1,
            ..DatapathConfig::default()
        };
        Bridge::start("br0", StateStore::open(dir.path()).unwrap(), cfg).unwrap()
    }

    fn service() -> Sw {
        let dir = tempfile::tempdir().unwrap();
        let b = Sw::start(&dir);
        let mut s = Sw { b, dir };
        for (name, no) in [("client", 1), ("be1", 2), ("be2", 3), ("be3", 4)] {
            s.ok(Request::AddPort {
                bridge: "br0".into(),
                name: name.into(),
                port_type: "memory".into(),
                ofport: Some(no),
                options: BTreeMap::new(),
            });
        }
        s.group(GroupOp::Add, GROUP);
        s.ok(Request::AddFlow {
            bridge: "br0".into(),
            flow: VIP_FLOW.into(),
        });
        s
    }

    fn group(&mut self, op: GroupOp, text: &str) -> Value {
        self.ok(Request::GroupMod {
            bridge: "br0".into(),
            op,
            group: text.into(),
        })
    }

    fn ok(&mut self, req: Request) -> Value {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => v,
            Reply::Error(e) => panic!("{what} failed: {e}"),
        }
    }

    fn err(&mut self, req: Request) -> ErrorBody {
        let what = format!("{req:?}");
        match self.b.handle(req) {
            Reply::Ok(v) => panic!("{what} succeeded: {v}"),
            Reply::Error(e) => e,
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

    /// Send one SYN per source port to the VIP; returns source port → backend
    /// name, checking every frame was rewritten for the backend it reached.
    fn send(&mut self, sports: &[u16]) -> BTreeMap<u16, &'static str> {
        let frames: Vec<Vec<u8>> = sports.iter().map(|p| syn(*p)).collect();
        self.inject("client", &frames);
        let mut out = BTreeMap::new();
        for (name, mac, ip) in BACKENDS {
            for f in self.capture(name) {
                let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
                let eth = etherparse::Ethernet2Header::from_slice(&f).unwrap().0;
                assert_eq!(eth.destination, mac, "{name}: dl_dst rewritten");
                let Some(NetHeaders::Ipv4(ip4, _)) = h.net else {
                    panic!("ipv4")
                };
                assert_eq!(ip4.destination, ip, "{name}: nw_dst rewritten");
                assert_eq!(ip4.source, [10, 0, 0, 1]);
                assert_eq!(ip4.header_checksum, ip4.calc_header_checksum());
                let Some(TransportHeader::Tcp(t)) = h.transport else {
                    panic!("tcp")
                };
                assert_eq!(t.destination_port, 8080);
                assert!(
                    out.insert(t.source_port, name).is_none(),
                    "flow {} delivered twice",
                    t.source_port
                );
            }
        }
        out
    }

    fn groups(&mut self) -> Vec<GroupEntry> {
        let v = self.ok(Request::DumpGroups {
            bridge: "br0".into(),
            group: None,
        });
        serde_json::from_value(v["groups"].clone()).unwrap()
    }

    fn flows(&mut self) -> Vec<String> {
        let v = self.ok(Request::DumpFlows {
            bridge: "br0".into(),
            filter: None,
        });
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["line_no_stats"].as_str().unwrap().trim().to_string())
            .collect()
    }
}

fn syn(sport: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth(CLIENT, GW)
        .ipv4([10, 0, 0, 1], VIP)
        .ttl(64)
        .tcp(sport, 80, flags::SYN)
        .tcp_seq(1, 0)
        .build()
}

#[test]
fn vip_spreads_flows_over_three_backends_and_each_flow_sticks() {
    let mut s = Sw::service();
    let sports: Vec<u16> = (0..300).map(|i| 20000 + i * 7).collect();
    let first = s.send(&sports);
    assert_eq!(first.len(), 300, "every flow reached exactly one backend");
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for b in first.values() {
        *per.entry(b).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "all three backends used: {per:?}");
    for (b, n) in &per {
        // Expected 100 each; binomial sd ~8.2: 60..140 is ~5 sd.
        assert!((60..=140).contains(n), "{b} got {n} of 300: {per:?}");
    }
    // Again, from the caches: the same backend per flow.
    assert_eq!(s.send(&sports), first);

    // Group and bucket counters: every packet once in the group, once in
    // the bucket that carried it.
    let g = &s.groups()[0];
    assert_eq!(g.packet_count, 600);
    assert_eq!(g.ref_count, 1);
    let frame_len = syn(1).len() as u64;
    assert_eq!(g.byte_count, 600 * frame_len);
    for (i, (name, _, _)) in BACKENDS.iter().enumerate() {
        let want = 2 * per[name] as u64;
        assert_eq!(g.buckets[i], (i as u32, want, want * frame_len), "{name}");
    }
    assert!(
        g.stats_line.starts_with("group_id=1,duration="),
        "{}",
        g.stats_line
    );
    assert!(
        g.stats_line.contains(&format!(
            ",ref_count=1,packet_count=600,byte_count={},bucket0:packet_count={}",
            600 * frame_len,
            2 * per["be1"]
        )),
        "{}",
        g.stats_line
    );
}

#[test]
fn removing_a_backend_moves_only_its_flows_and_adding_one_only_takes_some() {
    let mut s = Sw::service();
    let sports: Vec<u16> = (0..300).map(|i| 30000 + i).collect();
    let before = s.send(&sports);
    s.group(GroupOp::RemoveBuckets, "group_id=1,command_bucket_id=1");
    let after = s.send(&sports);
    assert_eq!(after.len(), 300);
    for (p, b) in &before {
        if *b == "be2" {
            assert_ne!(after[p], "be2");
        } else {
            assert_eq!(after[p], *b, "flow {p} moved although its backend stayed");
        }
    }
    // be2 comes back under its old bucket id: exactly its old flows return.
    s.group(
        GroupOp::InsertBuckets,
        "group_id=1,command_bucket_id=0,bucket=bucket_id:1,weight:100,actions=set_field:02:00:00:00:01:03->eth_dst,set_field:10.244.1.3->ip_dst,set_field:8080->tcp_dst,output:3",
    );
    assert_eq!(s.send(&sports), before);
    assert_eq!(s.groups()[0].line, GROUP, "bucket order restored too");
}

#[test]
fn weights_shift_the_share() {
    let mut s = Sw::service();
    s.group(
        GroupOp::Modify,
        &GROUP.replacen("weight:100", "weight:400", 1),
    );
    let sports: Vec<u16> = (0..600).map(|i| 10000 + i).collect();
    let got = s.send(&sports);
    let be1 = got.values().filter(|b| **b == "be1").count();
    // Expected 400/600 = 400 of 600; a 1:1:1 split would give 200.
    assert!((340..=460).contains(&be1), "be1 got {be1} of 600");
}

#[test]
fn flows_need_existing_groups_and_die_with_them() {
    let mut s = Sw::service();
    let e = s.err(Request::AddFlow {
        bridge: "br0".into(),
        flow: "table=0,priority=5,ip,actions=group:7".into(),
    });
    assert_eq!(e.code, ErrorCode::BadFlowMod);
    assert!(e.message.contains("OFPBAC_BAD_OUT_GROUP"), "{}", e.message);
    assert!(e.message.contains("group:7"), "{}", e.message);
    // add-group of an existing id, mod-group of a missing one.
    let e = s.err(Request::GroupMod {
        bridge: "br0".into(),
        op: GroupOp::Add,
        group: "group_id=1,type=all,bucket=output:2".into(),
    });
    assert_eq!(e.code, ErrorCode::BadGroup);
    assert!(e.message.contains("OFPGMFC_GROUP_EXISTS"), "{}", e.message);
    let e = s.err(Request::GroupMod {
        bridge: "br0".into(),
        op: GroupOp::Modify,
        group: "group_id=3,type=all,bucket=output:2".into(),
    });
    assert!(e.message.contains("OFPGMFC_UNKNOWN_GROUP"), "{}", e.message);
    let e = s.err(Request::GroupMod {
        bridge: "br0".into(),
        op: GroupOp::Add,
        group: "group_id=3,type=select,bucket=actions=output:2,frob".into(),
    });
    assert_eq!(e.code, ErrorCode::BadGroup);
    assert!(e.message.contains("frob"), "{}", e.message);
    // Another flow on the group, and one that does not use it.
    s.ok(Request::AddFlow {
        bridge: "br0".into(),
        flow: "table=0,priority=90,udp,nw_dst=10.96.0.10,actions=group:1".into(),
    });
    s.ok(Request::AddFlow {
        bridge: "br0".into(),
        flow: "table=0,priority=1,actions=drop".into(),
    });
    let v = s.group(GroupOp::Delete, "group_id=1");
    assert_eq!(v["flows_deleted"], 2);
    assert_eq!(s.flows(), ["priority=1 actions=drop"]);
    assert!(s.groups().is_empty());
    // The VIP is no longer served.
    assert!(s.send(&[1, 2, 3]).is_empty());
}

#[test]
fn groups_survive_a_restart_and_dump_like_ovs_ofctl() {
    let mut s = Sw::service();
    s.group(
        GroupOp::Add,
        "group_id=2,type=all,bucket=output:2,bucket=output:3",
    );
    s.group(
        GroupOp::Add,
        "group_id=3,type=indirect,bucket=actions=group:2",
    );
    let lines: Vec<String> = s.groups().into_iter().map(|g| g.line).collect();
    assert_eq!(
        lines,
        [
            GROUP,
            "group_id=2,type=all,bucket=bucket_id:0,actions=output:2,bucket=bucket_id:1,actions=output:3",
            "group_id=3,type=indirect,bucket=bucket_id:0,actions=group:2",
        ]
    );
    // Group 2 is chained from group 3: it cannot go alone.
    let e = s.err(Request::GroupMod {
        bridge: "br0".into(),
        op: GroupOp::Delete,
        group: "group_id=2".into(),
    });
    assert!(e.message.contains("OFPGMFC_CHAINED_GROUP"), "{}", e.message);
    let before = s.send(&(0..50).collect::<Vec<u16>>());
    let flows = s.flows();
    let Sw { b, dir } = s;
    drop(b);
    let b = Sw::start(&dir);
    let mut s = Sw { b, dir };
    let again: Vec<String> = s.groups().into_iter().map(|g| g.line).collect();
    assert_eq!(again, lines);
    assert_eq!(s.flows(), flows);
    assert_eq!(s.send(&(0..50).collect::<Vec<u16>>()), before);
}

#[test]
fn trace_shows_the_group_and_the_chosen_bucket() {
    let mut s = Sw::service();
    let v = s.ok(Request::Trace {
        bridge: "br0".into(),
        packet: "in_port=1,tcp,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:ff:00,nw_src=10.0.0.1,nw_dst=10.96.0.10,nw_ttl=64,tcp_src=4242,tcp_dst=80".into(),
    });
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("group:1"), "{text}");
    assert!(
        text.contains("group 1 (select): bucket ")
            && text.contains(" of 3, chosen by hash of ip_src,ip_dst,tcp_src,tcp_dst"),
        "{text}"
    );
    assert!(text.contains("end of group 1 bucket"), "{text}");
    // The bucket the trace names is the backend the packet reaches.
    let bucket: usize = text
        .split("group 1 (select): bucket ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let got = s.send(&[4242]);
    assert_eq!(got[&4242], BACKENDS[bucket].0, "{text}");
    // The megaflow: exactly the hashed fields, not the ttl or the MACs.
    assert!(text.contains("Megaflow:"), "{text}");
    let mf = text
        .lines()
        .find(|l| l.starts_with("Megaflow:"))
        .unwrap_or_default();
    assert!(
        mf.contains("tp_src=4242") && mf.contains("nw_src=10.0.0.1"),
        "{mf}"
    );
    assert!(!mf.contains("nw_ttl"), "{mf}");
}

/// Translation semantics on the pipeline directly: each bucket works on a
/// clone of the packet, so actions after `group:N` see the headers as they
/// were before it; `all` runs every bucket; the megaflow holds exactly the
/// hashed fields.
#[test]
fn buckets_work_on_clones_and_all_runs_every_bucket() {
    let mut p = Pipeline::new();
    for g in [
        "group_id=1,type=select,selection_method=hash,fields(ip_src),bucket=set_field:10.244.1.2->ip_dst,output:2",
        "group_id=2,type=all,bucket=set_field:10.1.1.1->ip_dst,output:3,bucket=output:4",
    ] {
        p.apply_group_mod(&parse_group_mod(g, GroupCommand::Add).unwrap())
            .unwrap();
    }
    let flows = [
        "table=0,priority=10,tcp,nw_dst=10.96.0.10,actions=group:1,output:5",
        "table=0,priority=10,tcp,nw_dst=10.96.0.11,actions=group:2,output:5",
    ];
    let mods: Vec<FlowMod> = flows
        .iter()
        .map(|f| FlowMod {
            command: FlowModCommand::Add,
            spec: parse_flow(f, ParseMode::Add).unwrap(),
        })
        .collect();
    p.apply(&mods).unwrap();
    let key = |dst: [u8; 4]| {
        switch::flow::parse_packet(&format!(
            "in_port=1,tcp,nw_src=10.0.0.1,nw_dst={}.{}.{}.{},nw_ttl=64,tcp_src=5,tcp_dst=80",
            dst[0], dst[1], dst[2], dst[3]
        ))
        .unwrap()
    };
    let ports = [1, 2, 3, 4, 5];
    let x = switch::pipeline::xlate::translate(&p, &ports, &key(VIP));
    let ip = |a: [u8; 4]| u32::from_be_bytes(a);
    assert_eq!(
        x.actions,
        vec![
            DpAction::SetIpv4 {
                src: None,
                dst: Some(ip([10, 244, 1, 2])),
                tos: None,
                ttl: None
            },
            DpAction::Output(2),
            DpAction::SetIpv4 {
                src: None,
                dst: Some(ip(VIP)),
                tos: None,
                ttl: None
            },
            DpAction::Output(5),
        ]
    );
    assert_eq!(x.mask.nw_src, u32::MAX, "hashed");
    assert_eq!(x.mask.tp_src, 0, "not hashed, not matched");
    assert_eq!(x.group_counters.len(), 2, "group + one bucket");

    let x = switch::pipeline::xlate::translate(&p, &ports, &key([10, 96, 0, 11]));
    let outs: Vec<u32> = x.outputs.iter().map(|(p, _)| *p).collect();
    assert_eq!(outs, [3, 4, 5]);
    assert_eq!(x.outputs[0].1.nw_dst, ip([10, 1, 1, 1]));
    assert_eq!(
        x.outputs[1].1.nw_dst,
        ip([10, 96, 0, 11]),
        "bucket 1 sees the original"
    );
    assert_eq!(x.group_counters.len(), 3, "group + both buckets");
    let distinct: BTreeSet<*const switch::group::Counter> = x
        .group_counters
        .iter()
        .map(std::sync::Arc::as_ptr)
        .collect();
    assert_eq!(distinct.len(), 3);
}
