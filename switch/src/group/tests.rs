//! Group syntax round trips, group-mod semantics, and the select
//! distribution and consistency properties the module promises.

use super::*;
use crate::flow::key::{ethertype, ipproto};

fn gm(text: &str, cmd: GroupCommand) -> GroupMod {
    match parse_group_mod(text, cmd) {
        Ok(g) => g,
        Err(e) => panic!("{text}: {e}"),
    }
}

fn table_with(text: &str) -> GroupTable {
    let mut t = GroupTable::default();
    t.apply(&gm(text, GroupCommand::Add)).expect("add");
    t
}

fn tcp_key(src: u32, sport: u16) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.dl_type = ethertype::IPV4;
    k.nw_proto = ipproto::TCP;
    k.nw_src = src;
    k.nw_dst = 0x0a60_000a; // 10.96.0.10
    k.tp_src = sport;
    k.tp_dst = 80;
    k
}

fn chosen(g: &Group, k: &FlowKey) -> Option<u32> {
    let mut wc = FlowKey::ZERO;
    match g.select(
        k,
        &mut wc,
        &[1, 2, 3, 4, 5, 6, 7, 8],
        &GroupTable::default(),
    ) {
        Choice::One(i) => Some(g.desc.buckets[i].id),
        _ => None,
    }
}

#[test]
fn parse_format_round_trip() {
    for text in [
        "group_id=1,type=select,selection_method=hash,fields(ip_src,ip_dst,tcp_src,tcp_dst),bucket=bucket_id:0,weight:100,actions=output:1,bucket=bucket_id:1,weight:50,actions=set_field:10.244.1.5->ip_dst,output:2",
        "group_id=2,type=all,bucket=bucket_id:0,actions=output:1,bucket=bucket_id:1,actions=output:2",
        "group_id=3,type=indirect,bucket=bucket_id:0,actions=set_field:02:00:00:00:00:05->eth_dst,output:5",
        "group_id=4,type=ff,bucket=bucket_id:0,watch_port:1,actions=output:1,bucket=bucket_id:1,watch_port:2,actions=output:2",
        "group_id=5,type=select,bucket=bucket_id:0,weight:1,actions=drop",
        "group_id=6,type=select,selection_method=hash,selection_method_param=7,fields(ip_src=255.255.255.0),bucket=bucket_id:3,weight:2,actions=resubmit(,4)",
        "group_id=7,type=select,selection_method=dp_hash,bucket=bucket_id:0,weight:10,actions=output:3",
    ] {
        let g = gm(text, GroupCommand::Add);
        let out = format_group(&g.desc);
        assert_eq!(out, text, "format of {text}");
        let again = gm(&out, GroupCommand::Add);
        assert_eq!(again, g);
    }
}

#[test]
fn ovs_spellings_normalise() {
    // Bucket fields with '=', actions without "actions=", implicit ids and
    // weights, fast_failover, fields=FIELD.
    let g = gm(
        "group_id=9, type=select, bucket=weight=3,mod_nw_dst:10.0.0.2,output:2, bucket=output:3",
        GroupCommand::Add,
    );
    assert_eq!(
        format_group(&g.desc),
        "group_id=9,type=select,bucket=bucket_id:0,weight:3,actions=set_field:10.0.0.2->ip_dst,output:2,bucket=bucket_id:1,weight:1,actions=output:3"
    );
    let g = gm(
        "group_id=1,type=fast_failover,bucket=watch_port=4,actions=output:4",
        GroupCommand::Add,
    );
    assert_eq!(g.desc.group_type, GroupType::FastFailover);
    let g = gm(
        "group_id=1,type=select,selection_method=hash,fields=ip_dst,bucket=output:1",
        GroupCommand::Add,
    );
    assert_eq!(g.desc.fields.len(), 1);
}

#[test]
fn bad_group_mods_are_refused_with_a_reason() {
    for (text, cmd, why) in [
        ("type=select,bucket=output:1", GroupCommand::Add, "group_id"),
        (
            "group_id=1,bucket=output:1",
            GroupCommand::Add,
            "group type",
        ),
        (
            "group_id=1,type=round_robin",
            GroupCommand::Add,
            "not a group type",
        ),
        (
            "group_id=1,type=select,selection_method=magic",
            GroupCommand::Add,
            "selection_method",
        ),
        (
            "group_id=1,type=select,selection_method=hash,bucket=output:1",
            GroupCommand::Add,
            "fields",
        ),
        (
            "group_id=1,type=select,fields(ip_src),bucket=output:1",
            GroupCommand::Add,
            "selection_method=hash",
        ),
        (
            "group_id=1,type=select,selection_method=hash,fields(nosuch),bucket=output:1",
            GroupCommand::Add,
            "unknown field",
        ),
        (
            "group_id=1,type=all,selection_method=hash,fields(ip_src)",
            GroupCommand::Add,
            "only valid for type=select",
        ),
        (
            "group_id=1,type=indirect,bucket=output:1,bucket=output:2",
            GroupCommand::Add,
            "exactly one bucket",
        ),
        (
            "group_id=1,type=all,bucket=weight:5,output:1",
            GroupCommand::Add,
            "weights",
        ),
        (
            "group_id=1,type=select,bucket=bucket_id:1,output:1,bucket=bucket_id:1,output:2",
            GroupCommand::Add,
            "duplicate bucket_id",
        ),
        (
            "group_id=1,type=select,bucket=weight:70000,output:1",
            GroupCommand::Add,
            "weight",
        ),
        (
            "group_id=1,type=select,bucket=actions=goto_table:3",
            GroupCommand::Add,
            "instruction",
        ),
        (
            "group_id=1,type=select,bucket=actions=mod_tp_dst:80",
            GroupCommand::Add,
            "tcp_dst",
        ),
        (
            "group_id=1,type=select,bucket=actions=frobnicate",
            GroupCommand::Add,
            "unknown action",
        ),
        (
            "group_id=all,type=select",
            GroupCommand::Add,
            "only valid for del-groups",
        ),
        (
            "group_id=4294967295,type=all",
            GroupCommand::Add,
            "group id",
        ),
        (
            "group_id=1,command_bucket_id=first",
            GroupCommand::InsertBuckets,
            "at least one bucket",
        ),
        (
            "group_id=1,bucket=output:1",
            GroupCommand::RemoveBuckets,
            "not allowed",
        ),
        (
            "group_id=1,type=select,bucket=output:1,color=blue",
            GroupCommand::Add,
            "unknown action",
        ),
        (
            "group_id=1,colour=blue,type=select",
            GroupCommand::Add,
            "unknown group field",
        ),
    ] {
        match parse_group_mod(text, cmd) {
            Ok(g) => panic!("{text} parsed: {g:?}"),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains(why), "{text}: {m:?} does not mention {why:?}");
            }
        }
    }
}

#[test]
fn group_mod_semantics() {
    let mut t = table_with("group_id=1,type=select,bucket=output:1,bucket=output:2");
    // add of an existing id: OFPGMFC_GROUP_EXISTS.
    assert_eq!(
        t.apply(&gm(
            "group_id=1,type=all,bucket=output:3",
            GroupCommand::Add
        )),
        Err(GroupModError::GroupExists(1))
    );
    // modify of a missing one: OFPGMFC_UNKNOWN_GROUP.
    assert_eq!(
        t.apply(&gm(
            "group_id=2,type=all,bucket=output:3",
            GroupCommand::Modify
        )),
        Err(GroupModError::UnknownGroup(2))
    );
    // insert after bucket 0, implicit id continues after the highest.
    t.apply(&gm(
        "group_id=1,command_bucket_id=0,bucket=output:9",
        GroupCommand::InsertBuckets,
    ))
    .expect("insert");
    let ids: Vec<u32> = t
        .get(1)
        .expect("g")
        .desc
        .buckets
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, [0, 2, 1]);
    t.apply(&gm(
        "group_id=1,command_bucket_id=first,bucket=bucket_id:7,actions=output:7",
        GroupCommand::InsertBuckets,
    ))
    .expect("insert first");
    assert_eq!(t.get(1).expect("g").desc.buckets[0].id, 7);
    assert_eq!(
        t.apply(&gm(
            "group_id=1,bucket=bucket_id:7,actions=output:7",
            GroupCommand::InsertBuckets
        )),
        Err(GroupModError::BucketExists(7))
    );
    assert_eq!(
        t.apply(&gm(
            "group_id=1,command_bucket_id=42,bucket=output:7",
            GroupCommand::InsertBuckets
        )),
        Err(GroupModError::UnknownBucket(42))
    );
    t.apply(&gm(
        "group_id=1,command_bucket_id=2",
        GroupCommand::RemoveBuckets,
    ))
    .expect("remove 2");
    let ids: Vec<u32> = t
        .get(1)
        .expect("g")
        .desc
        .buckets
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, [7, 0, 1]);
    t.apply(&gm(
        "group_id=1,command_bucket_id=last",
        GroupCommand::RemoveBuckets,
    ))
    .expect("remove last");
    t.apply(&gm("group_id=1", GroupCommand::RemoveBuckets))
        .expect("remove all");
    assert!(t.get(1).expect("g").desc.buckets.is_empty());
    // A bucket may chain only to an existing group, never to itself.
    assert_eq!(
        t.apply(&gm("group_id=5,type=all,bucket=group:6", GroupCommand::Add)),
        Err(GroupModError::UnknownOutGroup(6))
    );
    assert_eq!(
        t.apply(&gm(
            "group_id=1,type=all,bucket=group:1",
            GroupCommand::Modify
        )),
        Err(GroupModError::Loop(1))
    );
    // Delete: one, a missing one (no error), all.
    t.apply(&gm(
        "group_id=2,type=all,bucket=output:1",
        GroupCommand::Add,
    ))
    .expect("add 2");
    assert_eq!(t.apply(&gm("group_id=9", GroupCommand::Delete)), Ok(vec![]));
    assert_eq!(
        t.apply(&gm("group_id=2", GroupCommand::Delete)),
        Ok(vec![2])
    );
    assert_eq!(t.apply(&gm("", GroupCommand::Delete)), Ok(vec![1]));
    assert!(t.is_empty());
}

#[test]
fn modify_keeps_counters_of_surviving_buckets() {
    let mut t = table_with(
        "group_id=1,type=select,bucket=bucket_id:0,output:1,bucket=bucket_id:1,output:2",
    );
    let g = t.get(1).expect("g");
    g.stats.add(10, 1000);
    g.desc.buckets[1].stats.add(4, 400);
    t.apply(&gm(
        "group_id=1,type=select,bucket=bucket_id:1,weight:5,output:2,bucket=bucket_id:2,output:3",
        GroupCommand::Modify,
    ))
    .expect("modify");
    let g = t.get(1).expect("g");
    assert_eq!(g.stats.get(), (10, 1000));
    assert_eq!(g.desc.buckets[0].stats.get(), (4, 400));
    assert_eq!(g.desc.buckets[1].stats.get(), (0, 0));
    assert!(g
        .stats_line(2, g.created)
        .starts_with("group_id=1,duration=0.000s,ref_count=2,packet_count=10,byte_count=1000,bucket0:packet_count=4,byte_count=400,bucket1:packet_count=0,byte_count=0"));
}

/// Chi-square statistic of `counts` against expected shares `weights`.
fn chi2(counts: &[u64], weights: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let total: f64 = weights.iter().sum();
    counts
        .iter()
        .zip(weights)
        .map(|(&c, &w)| {
            let e = n as f64 * w / total;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

fn spread(g: &Group, n: u32) -> Vec<u64> {
    let mut counts = vec![0u64; g.desc.buckets.len()];
    for i in 0..n {
        let k = tcp_key(0x0a00_0000 + (i / 500), 1024 + (i % 500) as u16);
        let id = chosen(g, &k).expect("a bucket");
        let idx = g.desc.buckets.iter().position(|b| b.id == id).expect("idx");
        counts[idx] += 1;
    }
    counts
}

#[test]
fn select_spreads_flows_evenly_and_by_weight() {
    let t = table_with(
        "group_id=1,type=select,bucket=output:1,bucket=output:2,bucket=output:3,bucket=output:4",
    );
    let g = t.get(1).expect("g");
    let counts = spread(g, 20_000);
    // 3 degrees of freedom: p=0.001 is 16.27. A constant (or badly skewed)
    // choice gives a statistic in the tens of thousands.
    let x = chi2(&counts, &[1.0; 4]);
    assert!(x < 16.27, "uneven spread {counts:?} (chi2 {x})");

    let t = table_with(
        "group_id=1,type=select,bucket=weight:100,output:1,bucket=weight:50,output:2,bucket=weight:50,output:3",
    );
    let g = t.get(1).expect("g");
    let counts = spread(g, 20_000);
    let x = chi2(&counts, &[100.0, 50.0, 50.0]);
    assert!(
        x < 13.82,
        "spread {counts:?} does not follow weights 2:1:1 (chi2 {x})"
    );
    // And not the uniform split: that hypothesis is far off.
    assert!(chi2(&counts, &[1.0, 1.0, 1.0]) > 100.0);

    // Weight 0 is never chosen.
    let t = table_with("group_id=1,type=select,bucket=weight:0,output:1,bucket=output:2");
    let g = t.get(1).expect("g");
    assert_eq!(spread(g, 2000), [0, 2000]);
}

#[test]
fn removing_a_bucket_moves_only_its_flows_and_adding_one_only_takes() {
    let mut t = table_with(
        "group_id=1,type=select,bucket=output:1,bucket=output:2,bucket=output:3,bucket=output:4,bucket=output:5",
    );
    let keys: Vec<FlowKey> = (0..5000u32)
        .map(|i| tcp_key(0xc0a8_0000 + i, 40000 + (i % 7) as u16))
        .collect();
    let before: Vec<u32> = keys
        .iter()
        .map(|k| chosen(t.get(1).expect("g"), k).expect("b"))
        .collect();
    t.apply(&gm(
        "group_id=1,command_bucket_id=2",
        GroupCommand::RemoveBuckets,
    ))
    .expect("remove");
    let after: Vec<u32> = keys
        .iter()
        .map(|k| chosen(t.get(1).expect("g"), k).expect("b"))
        .collect();
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == 2 {
            assert_ne!(*a, 2);
            moved += 1;
        } else {
            assert_eq!(a, b, "a flow not on the removed bucket moved");
        }
    }
    assert!(moved > 700 && moved < 1300, "bucket 2 had {moved} of 5000");
    // Adding a bucket: flows either stay or move to the new one.
    t.apply(&gm(
        "group_id=1,bucket=bucket_id:9,output:9",
        GroupCommand::InsertBuckets,
    ))
    .expect("insert");
    let mut gained = 0;
    for (k, a) in keys.iter().zip(&after) {
        let now = chosen(t.get(1).expect("g"), k).expect("b");
        if now != *a {
            assert_eq!(now, 9);
            gained += 1;
        }
    }
    assert!(
        gained > 700 && gained < 1300,
        "new bucket took {gained} of 5000"
    );
}

#[test]
fn hash_fields_unwildcard_exactly_what_they_hash() {
    let t = table_with(
        "group_id=1,type=select,selection_method=hash,fields(ip_src,tcp_dst),bucket=output:1,bucket=output:2",
    );
    let g = t.get(1).expect("g");
    let mut wc = FlowKey::ZERO;
    let k = tcp_key(0x0a00_0001, 5555);
    let _ = g.select(&k, &mut wc, &[1, 2], &GroupTable::default());
    assert_eq!(wc.nw_src, u32::MAX);
    assert_eq!(wc.tp_dst, u16::MAX);
    assert_eq!(
        wc.nw_proto,
        u8::MAX,
        "tcp_dst's prerequisite reads nw_proto"
    );
    assert_eq!(wc.tp_src, 0);
    assert_eq!(wc.nw_dst, 0);
    // Source ports do not matter to this group: same bucket for every one.
    let first = chosen(g, &k);
    for p in 0..200 {
        assert_eq!(chosen(g, &tcp_key(0x0a00_0001, p)), first);
    }
    // Masked field: only the /24 is hashed.
    let t = table_with(
        "group_id=1,type=select,selection_method=hash,fields(ip_src=255.255.255.0),bucket=output:1,bucket=output:2",
    );
    let g = t.get(1).expect("g");
    let mut wc = FlowKey::ZERO;
    let _ = g.select(&k, &mut wc, &[1, 2], &GroupTable::default());
    assert_eq!(wc.nw_src, 0xffff_ff00);
    // Default method: the 5-tuple.
    let t = table_with("group_id=1,type=select,bucket=output:1,bucket=output:2");
    let g = t.get(1).expect("g");
    let mut wc = FlowKey::ZERO;
    let _ = g.select(&k, &mut wc, &[1, 2], &GroupTable::default());
    assert_eq!(
        (wc.nw_src, wc.nw_dst, wc.nw_proto, wc.tp_src, wc.tp_dst),
        (u32::MAX, u32::MAX, u8::MAX, u16::MAX, u16::MAX)
    );
    assert_eq!(wc.dl_src, [0; 6]);
}

#[test]
fn liveness_and_group_types() {
    let t = table_with(
        "group_id=1,type=ff,bucket=watch_port:4,actions=output:4,bucket=watch_port:2,actions=output:2",
    );
    let g = t.get(1).expect("g");
    let k = tcp_key(1, 1);
    let mut wc = FlowKey::ZERO;
    // Port 4 is not on the bridge: the second bucket.
    assert_eq!(g.select(&k, &mut wc, &[1, 2], &t), Choice::One(1));
    assert_eq!(g.select(&k, &mut wc, &[1, 2, 4], &t), Choice::One(0));
    assert_eq!(g.select(&k, &mut wc, &[1], &t), Choice::None);
    let t =
        table_with("group_id=1,type=select,bucket=watch_port:17,actions=output:17,bucket=output:2");
    let g = t.get(1).expect("g");
    for i in 0..100 {
        assert_eq!(chosen(g, &tcp_key(i, 1)), Some(1), "dead bucket chosen");
    }
    let t = table_with("group_id=1,type=all,bucket=output:1,bucket=output:2");
    let g = t.get(1).expect("g");
    assert_eq!(g.select(&k, &mut wc, &[1, 2], &t), Choice::All);
}
