//! Request-level tests of the control plane: every request type through the
//! real [`Bridge`] and [`Handler`], the structured errors a user gets back
//! (code, message, quoted input, offset, batch index), the all-or-nothing
//! guarantee (a failed request changes neither the tables nor the state
//! file), flow-mod selection semantics (strict, non-strict, cookie masks),
//! and persistence across a restart on the same state directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use switch::control::bridge::{decode_hex, encode_hex, Bridge};
use switch::control::proto::{
    BundleMod, BundleOp, ErrorBody, ErrorCode, FlowEntry, PortEntry, Reply, Request, TableEntry,
};
use switch::control::server::Handler;
use switch::control::state::StateStore;
use switch::datapath::DatapathConfig;
use switch::packet::FrameBuilder;

const BR: &str = "br0";

fn start(dir: &Path) -> Result<Bridge, String> {
    Bridge::start(
        BR,
        StateStore::open(dir).unwrap(),
        DatapathConfig::default(),
    )
}

fn ok(b: &mut Bridge, req: Request) -> Value {
    let what = format!("{req:?}");
    match b.handle(req) {
        Reply::Ok(v) => v,
        Reply::Error(e) => panic!("{what} failed: {e}"),
    }
}

fn err(b: &mut Bridge, req: Request) -> ErrorBody {
    let what = format!("{req:?}");
    match b.handle(req) {
        Reply::Ok(v) => panic!("{what} succeeded: {v}"),
        Reply::Error(e) => e,
    }
}

fn add_port(name: &str, ofport: Option<u32>) -> Request {
    Request::AddPort {
        bridge: BR.into(),
        name: name.into(),
        port_type: "memory".into(),
        ofport,
        options: BTreeMap::new(),
    }
}

fn add_flow(flow: &str) -> Request {
    Request::AddFlow {
        bridge: BR.into(),
        flow: flow.into(),
    }
}

fn add_flows(flows: &[&str]) -> Request {
    Request::AddFlows {
        bridge: BR.into(),
        flows: flows.iter().map(|s| s.to_string()).collect(),
    }
}

fn del_flows(flow: Option<&str>, strict: bool) -> Request {
    Request::DelFlows {
        bridge: BR.into(),
        flow: flow.map(String::from),
        strict,
    }
}

fn mod_flows(flow: &str, strict: bool) -> Request {
    Request::ModFlows {
        bridge: BR.into(),
        flow: flow.into(),
        strict,
    }
}

fn dump(b: &mut Bridge, filter: Option<&str>) -> Vec<FlowEntry> {
    let v = ok(
        b,
        Request::DumpFlows {
            bridge: BR.into(),
            filter: filter.map(String::from),
        },
    );
    serde_json::from_value(v["flows"].clone()).unwrap()
}

/// The `--no-stats` lines, in dump order.
fn lines(b: &mut Bridge) -> Vec<String> {
    dump(b, None)
        .into_iter()
        .map(|f| f.line_no_stats.trim().to_string())
        .collect()
}

fn ports(b: &mut Bridge) -> Vec<PortEntry> {
    let v = ok(
        b,
        Request::DumpPorts {
            bridge: BR.into(),
            port: None,
        },
    );
    serde_json::from_value(v["ports"].clone()).unwrap()
}

fn inject(b: &mut Bridge, port: &str, frame: &[u8]) {
    ok(
        b,
        Request::Inject {
            bridge: BR.into(),
            port: port.into(),
            frames: vec![encode_hex(frame)],
        },
    );
}

fn capture(b: &mut Bridge, port: &str) -> Vec<Vec<u8>> {
    let v = ok(
        b,
        Request::Capture {
            bridge: BR.into(),
            port: port.into(),
            max: None,
        },
    );
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| decode_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

fn state_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("state.json")).unwrap()
}

fn frame() -> Vec<u8> {
    FrameBuilder::new()
        .eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .udp(1000, 2000)
        .payload(&[7; 30])
        .build()
}

#[test]
fn every_request_type_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    let v = ok(&mut b, Request::Hello);
    assert_eq!(v["bridges"], json!(["br0"]));
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()));

    assert_eq!(ok(&mut b, add_port("p1", None))["ofport"], 1, "lowest free");
    assert_eq!(ok(&mut b, add_port("p5", Some(5)))["ofport"], 5);
    assert_eq!(ok(&mut b, add_port("p2", None))["ofport"], 2);

    let v = ok(&mut b, add_flow("in_port=1,actions=output:5"));
    assert_eq!(v["added"], 1);
    let v = ok(
        &mut b,
        add_flows(&["table=1,priority=5,actions=drop", "table=2,actions=drop"]),
    );
    assert_eq!(v["added"], 2);
    assert_eq!(dump(&mut b, None).len(), 3);
    assert_eq!(dump(&mut b, Some("table=1")).len(), 1);

    let f = frame();
    inject(&mut b, "p1", &f);
    assert_eq!(capture(&mut b, "p5"), vec![f.clone()]);
    assert!(capture(&mut b, "p5").is_empty(), "capture consumes");
    // Capture with max, and ports addressed by number.
    inject(&mut b, "1", &f);
    inject(&mut b, "p1", &f);
    let v = ok(
        &mut b,
        Request::Capture {
            bridge: BR.into(),
            port: "5".into(),
            max: Some(1),
        },
    );
    assert_eq!(v["frames"].as_array().unwrap().len(), 1);
    assert_eq!(capture(&mut b, "p5").len(), 1);

    let v = ok(&mut b, mod_flows("in_port=1,actions=output:2", false));
    assert_eq!(v["modified"], 1);
    let v = ok(&mut b, del_flows(Some("table=2"), false));
    assert_eq!(v["deleted"], 1);

    let v = ok(
        &mut b,
        Request::Bundle {
            bridge: BR.into(),
            mods: vec![
                BundleMod {
                    op: BundleOp::Add,
                    flow: "table=3,priority=7,actions=drop".into(),
                },
                BundleMod {
                    op: BundleOp::DeleteStrict,
                    flow: "table=1,priority=5".into(),
                },
            ],
        },
    );
    assert_eq!(
        (v["added"].as_u64(), v["deleted"].as_u64()),
        (Some(1), Some(1))
    );

    let v = ok(
        &mut b,
        Request::ReplaceFlows {
            bridge: BR.into(),
            flows: vec![
                "in_port=1,actions=output:2".into(),
                "table=4,actions=drop".into(),
            ],
        },
    );
    assert_eq!(
        v,
        json!({"added": 1, "modified": 0, "removed": 1, "unchanged": 1})
    );

    let p = ports(&mut b);
    assert_eq!(
        p.iter()
            .map(|p| (p.ofport, p.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "p1"), (2, "p2"), (5, "p5")]
    );
    assert_eq!(p[0].stats.rx_packets, 3);
    assert_eq!(p[0].port_type, "memory");
    let v = ok(
        &mut b,
        Request::DumpPorts {
            bridge: BR.into(),
            port: Some("5".into()),
        },
    );
    assert_eq!(v["ports"][0]["name"], "p5");
    assert_eq!(v["ports"][0]["stats"]["tx_packets"], 3);

    let v = ok(&mut b, Request::DumpTables { bridge: BR.into() });
    let t: Vec<TableEntry> = serde_json::from_value(v["tables"].clone()).unwrap();
    let t0 = t.iter().find(|t| t.table == 0).unwrap();
    assert_eq!((t0.active, t0.lookups, t0.matched), (1, 3, 3));
    assert!(t.iter().any(|t| t.table == 4 && t.active == 1));

    let v = ok(&mut b, Request::Show { bridge: BR.into() });
    assert_eq!(v["bridge"], "br0");
    assert_eq!(v["n_flows"], 2);
    assert_eq!(v["ports"].as_array().unwrap().len(), 3);
    assert_eq!(v["pmd"]["rx_packets"], 3);

    let v = ok(
        &mut b,
        Request::Trace {
            bridge: BR.into(),
            packet: "in_port=1,udp,nw_dst=10.0.0.2,nw_ttl=64,udp_dst=53".into(),
        },
    );
    assert_eq!(v["report"]["outputs"][0]["port"], 2);
    assert!(v["text"].as_str().unwrap().contains("Datapath actions: 2"));

    assert_eq!(
        ok(
            &mut b,
            Request::DelPort {
                bridge: BR.into(),
                name: "p2".into()
            }
        )["ofport"],
        2
    );
    assert_eq!(ports(&mut b).len(), 2);
    let v = ok(&mut b, del_flows(None, false));
    assert_eq!(v["deleted"], 2);
    assert!(dump(&mut b, None).is_empty());
}

#[test]
fn errors_are_structured() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    ok(&mut b, add_port("p1", Some(1)));

    // Syntax: the offset points at the bad token.
    let text = "priority=100,ip,nw_dstt=10.1.1.1,actions=drop";
    let e = err(&mut b, add_flow(text));
    assert_eq!(e.code, ErrorCode::BadFlow);
    assert_eq!(e.input.as_deref(), Some(text));
    assert_eq!(e.offset, Some(16), "{e}");
    assert!(e.message.contains("nw_dstt"), "{e}");
    assert_eq!(e.index, None);
    assert!(
        e.to_string().ends_with(&format!("\n  {}^", " ".repeat(16))),
        "{e}"
    );

    // Prerequisites: a match field and an action without ip.
    let e = err(&mut b, add_flow("nw_dst=10.1.1.1,actions=drop"));
    assert_eq!((e.code, e.offset), (ErrorCode::BadFlow, Some(0)));
    assert!(e.message.contains("requires ip"), "{e}");
    let e = err(&mut b, add_flow("actions=dec_ttl"));
    assert_eq!((e.code, e.offset), (ErrorCode::BadFlow, Some(8)));
    assert!(e.message.contains("dec_ttl"), "{e}");
    let e = err(&mut b, add_flow("in_port=1,actions=strip_vlan"));
    assert_eq!(e.code, ErrorCode::BadFlow);

    // Tables: 255 is "all tables"; goto_table must go forward.
    let e = err(&mut b, add_flow("table=255,actions=drop"));
    assert!(
        matches!(e.code, ErrorCode::BadFlow | ErrorCode::BadFlowMod),
        "{e:?}"
    );
    assert!(e.message.contains("255"), "{e}");
    let e = err(&mut b, add_flow("table=256,actions=drop"));
    assert_eq!(e.code, ErrorCode::BadFlow);
    let e = err(&mut b, add_flow("table=2,actions=goto_table:1"));
    assert!(
        matches!(e.code, ErrorCode::BadFlow | ErrorCode::BadFlowMod),
        "{e:?}"
    );
    assert!(e.message.contains("goto_table"), "{e}");
    let e = err(&mut b, add_flow("table=2,actions=goto_table:2"));
    assert!(e.message.contains("goto_table"), "{e}");
    // ...even through mod-flows (the selected flow's table decides).
    ok(&mut b, add_flow("table=3,priority=9,actions=drop"));
    let e = err(&mut b, mod_flows("table=3,actions=goto_table:1", false));
    assert!(e.message.contains("goto_table"), "{e}");

    // Unknown bridge, unknown port.
    let e = err(
        &mut b,
        Request::AddFlow {
            bridge: "br1".into(),
            flow: "actions=drop".into(),
        },
    );
    assert_eq!(
        (e.code, e.input.as_deref()),
        (ErrorCode::UnknownBridge, Some("br1"))
    );
    assert!(
        e.message.contains("br0"),
        "names the bridge that exists: {e}"
    );
    let e = err(
        &mut b,
        Request::DumpPorts {
            bridge: BR.into(),
            port: Some("p9".into()),
        },
    );
    assert_eq!(
        (e.code, e.input.as_deref()),
        (ErrorCode::UnknownPort, Some("p9"))
    );
    for req in [
        Request::Inject {
            bridge: BR.into(),
            port: "7".into(),
            frames: vec![encode_hex(&frame())],
        },
        Request::Capture {
            bridge: BR.into(),
            port: "nope".into(),
            max: None,
        },
        Request::DelPort {
            bridge: BR.into(),
            name: "nope".into(),
        },
    ] {
        assert_eq!(err(&mut b, req).code, ErrorCode::UnknownPort);
    }

    // Port conflicts.
    let e = err(&mut b, add_port("p1", Some(2)));
    assert_eq!(e.code, ErrorCode::PortExists);
    let e = err(&mut b, add_port("p2", Some(1)));
    assert_eq!(e.code, ErrorCode::PortExists);
    assert!(e.message.contains("p1"), "names the holder: {e}");
    // Bad ofport, name, type, options.
    for (req, what) in [
        (add_port("p2", Some(0)), "ofport"),
        (add_port("p2", Some(0xffff_ff00)), "ofport"),
        (add_port("has space", None), "names"),
        (add_port("a,b", None), "names"),
        (add_port("", None), "names"),
        (
            Request::AddPort {
                bridge: BR.into(),
                name: "p2".into(),
                port_type: "vhost-net".into(),
                ofport: None,
                options: BTreeMap::new(),
            },
            "vhost-net",
        ),
        (
            Request::AddPort {
                bridge: BR.into(),
                name: "p2".into(),
                port_type: "memory".into(),
                ofport: None,
                options: BTreeMap::from([("depth".into(), "0".into())]),
            },
            "depth",
        ),
        (
            Request::AddPort {
                bridge: BR.into(),
                name: "p2".into(),
                port_type: "memory".into(),
                ofport: None,
                options: BTreeMap::from([("colour".into(), "red".into())]),
            },
            "colour",
        ),
    ] {
        let e = err(&mut b, req);
        assert_eq!(e.code, ErrorCode::BadPortConfig, "{e}");
        assert!(e.message.contains(what), "{what}: {e}");
    }
    assert_eq!(
        ports(&mut b).len(),
        1,
        "no failed add-port left a port behind"
    );

    // Bad packets.
    let e = err(
        &mut b,
        Request::Trace {
            bridge: BR.into(),
            packet: "in_port=1,tcp,nw_dst=10.0.0.300".into(),
        },
    );
    assert_eq!(e.code, ErrorCode::BadPacket);
    assert!(e.offset.is_some(), "{e:?}");
    let e = err(
        &mut b,
        Request::Inject {
            bridge: BR.into(),
            port: "p1".into(),
            frames: vec!["00".into(), "abc".into()],
        },
    );
    assert_eq!((e.code, e.index), (ErrorCode::BadPacket, Some(1)));
    assert_eq!(
        ports(&mut b)[0].stats.rx_packets,
        0,
        "a bad batch injects nothing"
    );

    // Bad dump-flows filter.
    let e = err(
        &mut b,
        Request::DumpFlows {
            bridge: BR.into(),
            filter: Some("tabel=1".into()),
        },
    );
    assert_eq!((e.code, e.offset), (ErrorCode::BadFlow, Some(0)));
}

#[test]
fn failed_batches_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    ok(&mut b, add_port("p1", Some(1)));
    ok(&mut b, add_port("p2", Some(2)));
    ok(
        &mut b,
        add_flows(&[
            "priority=10,in_port=1,actions=output:2",
            "table=1,priority=10,cookie=0x7,actions=drop",
        ]),
    );
    let before = lines(&mut b);
    let state = state_bytes(dir.path());

    // add-flows: a parse error in the 3rd flow.
    let e = err(
        &mut b,
        add_flows(&[
            "table=2,actions=drop",
            "table=3,actions=drop",
            "table=4,ip,nw_ttl=x,actions=drop",
        ]),
    );
    assert_eq!((e.code, e.index), (ErrorCode::BadFlow, Some(2)));
    assert_eq!(e.input.as_deref(), Some("table=4,ip,nw_ttl=x,actions=drop"));
    assert!(
        e.to_string().lines().next().unwrap().ends_with("(item 3)"),
        "{e}"
    );
    // add-flows: a flow-mod error (goto backward) in the 2nd.
    let e = err(
        &mut b,
        add_flows(&["table=2,actions=drop", "table=5,actions=goto_table:4"]),
    );
    assert_eq!(e.index, Some(1), "{e:?}");

    // bundle: valid adds and deletes, then a failing mod.
    let e = err(
        &mut b,
        Request::Bundle {
            bridge: BR.into(),
            mods: vec![
                BundleMod {
                    op: BundleOp::DeleteStrict,
                    flow: "priority=10,in_port=1".into(),
                },
                BundleMod {
                    op: BundleOp::Add,
                    flow: "table=9,actions=drop".into(),
                },
                BundleMod {
                    op: BundleOp::Modify,
                    flow: "table=1,actions=output:1".into(),
                },
                BundleMod {
                    op: BundleOp::Add,
                    flow: "table=9,actions=goto_table:8".into(),
                },
            ],
        },
    );
    assert_eq!(e.index, Some(3), "{e:?}");
    assert_eq!(e.input.as_deref(), Some("table=9,actions=goto_table:8"));

    // replace-flows with one bad flow.
    let e = err(
        &mut b,
        Request::ReplaceFlows {
            bridge: BR.into(),
            flows: vec!["table=7,actions=drop".into(), "actions=frobnicate".into()],
        },
    );
    assert_eq!((e.code, e.index), (ErrorCode::BadFlow, Some(1)));

    // mod-flows / del-flows with a bad flow.
    assert_eq!(
        err(&mut b, mod_flows("in_port=x,actions=drop", false)).code,
        ErrorCode::BadFlow
    );
    assert_eq!(
        err(&mut b, del_flows(Some("in_port=1,actions=drop"), true)).code,
        ErrorCode::BadFlow
    );

    assert_eq!(lines(&mut b), before, "tables unchanged");
    assert_eq!(state_bytes(dir.path()), state, "state file unchanged");
    // Forwarding unchanged too.
    inject(&mut b, "p1", &frame());
    assert_eq!(capture(&mut b, "p2"), vec![frame()]);
}

#[test]
fn del_flows_strict_non_strict_and_cookie_masks() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    let flows = [
        "priority=100,cookie=0x11,ip,nw_dst=10.0.0.1,actions=drop",
        "priority=200,cookie=0x12,ip,nw_dst=10.0.0.1,actions=drop",
        "priority=100,cookie=0x21,ip,nw_dst=10.0.0.0/24,actions=drop",
        "priority=100,cookie=0x22,tcp,nw_dst=10.0.0.1,actions=drop",
        "table=1,priority=100,cookie=0x11,ip,nw_dst=10.0.0.1,actions=drop",
    ];
    let reset = |b: &mut Bridge| {
        ok(b, del_flows(None, false));
        ok(b, add_flows(&flows));
        assert_eq!(dump(b, None).len(), 5);
    };
    let cookies = |b: &mut Bridge| -> Vec<(u8, u64)> {
        let mut v: Vec<_> = dump(b, None).iter().map(|f| (f.table, f.cookie)).collect();
        v.sort();
        v
    };

    // Non-strict: every flow (all tables) whose match is at least as specific.
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("ip,nw_dst=10.0.0.1"), false))["deleted"],
        4
    );
    assert_eq!(cookies(&mut b), [(0, 0x21)]);
    // Non-strict in one table.
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("table=0,ip,nw_dst=10.0.0.1"), false))["deleted"],
        3
    );
    assert_eq!(cookies(&mut b), [(0, 0x21), (1, 0x11)]);
    // A wider match covers the /24 too.
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("table=0,ip"), false))["deleted"],
        4
    );

    // Strict: exact match and priority (default priority 32768 matches none here).
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("table=0,ip,nw_dst=10.0.0.1"), true))["deleted"],
        0
    );
    assert_eq!(
        ok(
            &mut b,
            del_flows(Some("table=0,priority=100,ip,nw_dst=10.0.0.1"), true)
        )["deleted"],
        1
    );
    assert_eq!(
        cookies(&mut b),
        [(0, 0x12), (0, 0x21), (0, 0x22), (1, 0x11)]
    );

    // Cookie masks.
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("cookie=0x11/-1"), false))["deleted"],
        2
    );
    assert_eq!(cookies(&mut b), [(0, 0x12), (0, 0x21), (0, 0x22)]);
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("cookie=0x20/0xf0"), false))["deleted"],
        2
    );
    assert_eq!(cookies(&mut b), [(0, 0x11), (0, 0x12), (1, 0x11)]);
    reset(&mut b);
    assert_eq!(
        ok(&mut b, del_flows(Some("table=0,cookie=0x1/0xf,ip"), false))["deleted"],
        2,
        "0x11 and 0x21 in table 0"
    );
    assert_eq!(cookies(&mut b), [(0, 0x12), (0, 0x22), (1, 0x11)]);
    // dump-flows takes the same selection.
    reset(&mut b);
    assert_eq!(dump(&mut b, Some("cookie=0x10/0xf0")).len(), 3);
    assert_eq!(dump(&mut b, Some("table=1")).len(), 1);
    assert_eq!(dump(&mut b, Some("tcp")).len(), 1);
}

#[test]
fn mod_flows_keeps_counters_and_add_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    for (n, no) in [("p1", 1), ("p2", 2), ("p3", 3)] {
        ok(&mut b, add_port(n, Some(no)));
    }
    ok(
        &mut b,
        add_flows(&[
            "priority=10,cookie=0x5,in_port=1,actions=output:2",
            "priority=20,cookie=0x6,in_port=1,ip,actions=output:2",
        ]),
    );
    let f = frame();
    inject(&mut b, "p1", &f);
    inject(&mut b, "p1", &f);
    assert_eq!(capture(&mut b, "p2").len(), 2);
    let before = dump(&mut b, Some("in_port=1,ip"));
    assert_eq!(before[0].n_packets, 2);

    // Strict mod with the wrong priority selects nothing (and OpenFlow 1.3 does not add).
    assert_eq!(
        ok(
            &mut b,
            mod_flows("priority=30,in_port=1,ip,actions=output:3", true)
        )["modified"],
        0
    );
    assert_eq!(dump(&mut b, None).len(), 2);
    // Non-strict: both flows (both are covered by in_port=1).
    assert_eq!(
        ok(&mut b, mod_flows("in_port=1,actions=output:3", false))["modified"],
        2
    );
    let after = dump(&mut b, Some("in_port=1,ip"));
    assert_eq!(after[0].actions, "output:3");
    assert_eq!(
        (after[0].n_packets, after[0].n_bytes),
        (2, 2 * f.len() as u64)
    );
    assert_eq!(after[0].cookie, 0x6, "cookie kept");
    assert_eq!(after[0].priority, 20);
    assert!(
        after[0].duration >= before[0].duration,
        "duration not reset"
    );
    inject(&mut b, "p1", &f);
    assert_eq!(capture(&mut b, "p3"), vec![f.clone()]);
    assert!(capture(&mut b, "p2").is_empty());
    assert_eq!(dump(&mut b, Some("in_port=1,ip"))[0].n_packets, 3);

    // Strict on the exact flow.
    assert_eq!(
        ok(
            &mut b,
            mod_flows("priority=20,in_port=1,ip,actions=output:2", true)
        )["modified"],
        1
    );
    let fl = dump(&mut b, None);
    assert_eq!(
        fl.iter().map(|f| f.actions.as_str()).collect::<Vec<_>>(),
        ["output:2", "output:3"]
    );

    // Adding a flow with the same match and priority replaces it (one flow, new actions).
    let v = ok(
        &mut b,
        add_flow("priority=20,cookie=0x9,in_port=1,ip,actions=drop"),
    );
    assert_eq!(
        (v["added"].as_u64(), v["replaced"].as_u64()),
        (Some(1), Some(1))
    );
    let fl = dump(&mut b, None);
    assert_eq!(fl.len(), 2);
    assert_eq!(
        (fl[0].priority, fl[0].cookie, fl[0].actions.as_str()),
        (20, 0x9, "drop")
    );
}

#[test]
fn replace_flows_applies_only_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    ok(&mut b, add_port("p1", Some(1)));
    ok(&mut b, add_port("p2", Some(2)));
    ok(
        &mut b,
        add_flows(&[
            "priority=10,in_port=1,actions=output:2",
            "table=1,priority=5,actions=drop",
            "table=2,priority=5,actions=drop",
        ]),
    );
    inject(&mut b, "p1", &frame());
    let v = ok(
        &mut b,
        Request::ReplaceFlows {
            bridge: BR.into(),
            flows: vec![
                // unchanged (counters must survive)
                "priority=10,in_port=1,actions=output:2".into(),
                // modified actions
                "table=1,priority=5,actions=output:1".into(),
                // new
                "table=3,priority=1,actions=drop".into(),
                // table=2 removed
            ],
        },
    );
    assert_eq!(
        v,
        json!({"added": 1, "modified": 1, "removed": 1, "unchanged": 1})
    );
    assert_eq!(
        lines(&mut b),
        [
            "priority=10,in_port=1 actions=output:2",
            "table=1, priority=5 actions=output:1",
            "table=3, priority=1 actions=drop",
        ]
    );
    assert_eq!(
        dump(&mut b, Some("in_port=1"))[0].n_packets,
        1,
        "unchanged flow kept its counters"
    );
    // Replacing with the same set is a no-op.
    let same = lines(&mut b);
    let v = ok(
        &mut b,
        Request::ReplaceFlows {
            bridge: BR.into(),
            flows: same,
        },
    );
    assert_eq!(
        v,
        json!({"added": 0, "modified": 0, "removed": 0, "unchanged": 3})
    );
    // And with nothing, it empties the bridge.
    let v = ok(
        &mut b,
        Request::ReplaceFlows {
            bridge: BR.into(),
            flows: vec![],
        },
    );
    assert_eq!(v["removed"], 3);
    assert!(dump(&mut b, None).is_empty());
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flows = [
        "table=0,priority=100,cookie=0xabc,in_port=7,ip,nw_dst=10.0.0.2,actions=mod_dl_dst:02:00:00:00:00:99,dec_ttl,goto_table:1",
        "table=0,priority=50,cookie=0x1,in_port=3,actions=output:7",
        "table=1,priority=10,idle_timeout=300,hard_timeout=600,cookie=0xfeed,ip,actions=load:0x5->NXM_NX_REG0[],resubmit(,2)",
        "table=2,reg0=5,actions=output:3",
        "table=2,priority=1,dl_vlan=10,actions=strip_vlan,output:3",
    ];
    let (dump_before, ports_before) = {
        let mut b = start(dir.path()).unwrap();
        ok(&mut b, add_port("east", Some(7)));
        ok(&mut b, add_port("west", Some(3)));
        ok(
            &mut b,
            Request::AddPort {
                bridge: BR.into(),
                name: "small".into(),
                port_type: "memory".into(),
                ofport: None,
                options: BTreeMap::from([("depth".into(), "16".into())]),
            },
        );
        ok(&mut b, add_flows(&flows));
        ok(&mut b, add_port("gone", Some(9)));
        ok(
            &mut b,
            Request::DelPort {
                bridge: BR.into(),
                name: "gone".into(),
            },
        );
        let d: Vec<_> = dump(&mut b, None)
            .into_iter()
            .map(|f| (f.line_no_stats, f.cookie, f.idle_timeout, f.hard_timeout))
            .collect();
        let p: Vec<_> = ports(&mut b)
            .into_iter()
            .map(|p| (p.ofport, p.name, p.port_type, p.options))
            .collect();
        (d, p)
    };
    assert_eq!(ports_before.len(), 3);
    assert_eq!(dump_before.len(), 5);
    assert_eq!(dump_before[0].1, 0xabc);

    let mut b = start(dir.path()).unwrap();
    let d: Vec<_> = dump(&mut b, None)
        .into_iter()
        .map(|f| (f.line_no_stats, f.cookie, f.idle_timeout, f.hard_timeout))
        .collect();
    assert_eq!(d, dump_before);
    let p: Vec<_> = ports(&mut b)
        .into_iter()
        .map(|p| (p.ofport, p.name, p.port_type, p.options))
        .collect();
    assert_eq!(p, ports_before);
    assert_eq!(
        p[0],
        (
            1,
            "small".into(),
            "memory".into(),
            BTreeMap::from([("depth".into(), "16".into())])
        )
    );

    // Forwarding works without reprogramming: east(7) -> rewrite, ttl-1, table 1 -> reg0=5 -> table 2 -> west(3).
    let src = [2, 0, 0, 0, 0, 1];
    let f = FrameBuilder::new()
        .eth(src, [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .ttl(9)
        .udp(1, 2)
        .build();
    inject(&mut b, "east", &f);
    let want = FrameBuilder::new()
        .eth(src, [2, 0, 0, 0, 0, 0x99])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2])
        .ttl(8)
        .udp(1, 2)
        .build();
    assert_eq!(capture(&mut b, "west"), vec![want]);
    inject(&mut b, "west", &f);
    assert_eq!(capture(&mut b, "east"), vec![f.clone()]);
    // Counters start from zero after a restart; the new packets are counted.
    assert_eq!(dump(&mut b, Some("table=2,reg0=5"))[0].n_packets, 1);
    // A new port gets the lowest free number (2), not one of the restored ones.
    assert_eq!(ok(&mut b, add_port("new", None))["ofport"], 2);
}

#[test]
fn corrupt_state_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut b = start(dir.path()).unwrap();
        ok(&mut b, add_port("p1", Some(1)));
        ok(&mut b, add_flow("actions=drop"));
    }
    let path = dir.path().join("state.json");
    let good = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let e = start(dir.path()).unwrap_err();
    assert!(
        e.contains("loading state") && e.contains("state.json"),
        "{e}"
    );

    std::fs::write(&path, good.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let e = start(dir.path()).unwrap_err();
    assert!(e.contains("version 99"), "{e}");

    let bad_flow = good.replace("actions=drop", "actions=frob");
    assert_ne!(bad_flow, good);
    std::fs::write(&path, bad_flow).unwrap();
    let e = start(dir.path()).unwrap_err();
    assert!(e.contains("restoring flow 1") && e.contains("frob"), "{e}");

    let bad_port = good.replace("\"memory\"", "\"warp\"");
    std::fs::write(&path, bad_port).unwrap();
    let e = start(dir.path()).unwrap_err();
    assert!(e.contains("restoring port p1") && e.contains("warp"), "{e}");

    // The good file still starts.
    std::fs::write(&path, &good).unwrap();
    let mut b = start(dir.path()).unwrap();
    assert_eq!(dump(&mut b, None).len(), 1);
}

/// A port whose kernel interface disappeared while switchd was down (a pod
/// deleted, a node rebooted) is left out at restart instead of keeping the
/// switch down; the other ports and the flows come back.
#[cfg(feature = "afxdp")]
#[test]
fn restart_skips_a_port_whose_interface_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut b = start(dir.path()).unwrap();
        ok(&mut b, add_port("p1", Some(1)));
        ok(&mut b, add_flow("actions=drop"));
    }
    let path = dir.path().join("state.json");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut v: Value = serde_json::from_str(&good).unwrap();
    let ports = v["bridges"][BR]["ports"].as_array_mut().unwrap();
    ports.push(serde_json::json!({
        "name": "gone0", "type": "afxdp", "ofport": 7,
        "options": {"ifname": "fsnosuchif0"}
    }));
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let mut b = start(dir.path()).expect("a vanished interface must not stop the restart");
    let shown = ok(&mut b, Request::Show { bridge: BR.into() });
    let names: Vec<&str> = shown["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["p1"]);
    assert_eq!(dump(&mut b, None).len(), 1);
}

#[test]
fn timed_out_flows_expire_on_tick_and_leave_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    // Timeouts run from the flows' installation, somewhere inside this
    // request: the earliest legal expiry is 1 s after the request started.
    let t0 = std::time::Instant::now();
    ok(
        &mut b,
        add_flows(&[
            "table=0,priority=3,hard_timeout=1,actions=drop",
            "table=0,priority=2,idle_timeout=1,actions=drop",
            "table=0,priority=1,actions=drop",
        ]),
    );
    b.tick();
    if t0.elapsed() < std::time::Duration::from_millis(950) {
        assert_eq!(dump(&mut b, None).len(), 3, "nothing expires early");
    }
    while dump(&mut b, None).len() > 1 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "flows never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        b.tick();
    }
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(lines(&mut b), ["priority=1 actions=drop"]);
    let state = String::from_utf8(state_bytes(dir.path())).unwrap();
    assert!(
        !state.contains("timeout"),
        "expired flows are not restored: {state}"
    );
    drop(b);
    let mut b = start(dir.path()).unwrap();
    assert_eq!(lines(&mut b), ["priority=1 actions=drop"]);
}

#[test]
fn traffic_keeps_an_idle_timeout_flow_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    ok(&mut b, add_port("p1", Some(1)));
    ok(&mut b, add_port("p2", Some(2)));
    ok(
        &mut b,
        add_flows(&[
            "priority=10,idle_timeout=1,in_port=1,actions=output:2",
            "priority=5,idle_timeout=1,actions=drop",
        ]),
    );
    let t0 = std::time::Instant::now();
    let f = frame();
    // Hits at ~0.45 s and ~0.9 s; by 1.3 s the unused flow has expired and
    // the used one (idle for ~0.4 s) has not.
    for at in [450u64, 900] {
        std::thread::sleep(std::time::Duration::from_millis(at).saturating_sub(t0.elapsed()));
        inject(&mut b, "p1", &f);
        b.tick();
    }
    std::thread::sleep(std::time::Duration::from_millis(1300).saturating_sub(t0.elapsed()));
    b.tick();
    let elapsed = t0.elapsed();
    if elapsed < std::time::Duration::from_millis(1800) {
        assert_eq!(
            lines(&mut b),
            ["idle_timeout=1, priority=10,in_port=1 actions=output:2"],
            "after {elapsed:?}"
        );
    }
    assert_eq!(capture(&mut b, "p2").len(), 2);
}

#[test]
fn every_kind_of_flow_survives_a_restart_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let flows = [
        "in_port=1,actions=mod_vlan_vid:10,output:2",
        "in_port=2,dl_vlan=10,actions=mod_vlan_vid:20,mod_vlan_pcp:3,output:1",
        "in_port=3,dl_vlan=30,actions=strip_vlan,push_vlan:0x88a8,output:1",
        "table=1,priority=7,tcp,nw_src=10.0.0.0/8,tp_dst=443,tcp_flags=+syn-ack,actions=mod_nw_tos:16,mod_tp_dst:8443,mod_nw_ecn:1,dec_ttl,output:2",
        "table=1,priority=6,udp,udp_src=53,actions=mod_tp_src:5353,mod_nw_src:10.1.1.1,mod_nw_ttl:9,IN_PORT",
        "table=1,priority=5,ipv6,ipv6_dst=fd00::/64,actions=set_field:fd00::1->ipv6_src,dec_ttl,output:3",
        "table=1,priority=4,arp,arp_op=1,actions=move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],load:0x2->NXM_OF_ARP_OP[],set_field:02:00:00:00:00:01->arp_sha,IN_PORT",
        "table=2,priority=3,metadata=0x5/0xff,reg1=0x10/0xf0,actions=load:0xab->NXM_NX_REG2[8..15],move:NXM_NX_REG2[0..15]->NXM_NX_REG3[16..31],resubmit(1,3),resubmit(,4)",
        "table=2,priority=2,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=write_metadata:0x1/0xf,goto_table:5",
        "table=3,priority=1,icmp,icmp_type=8,nw_frag=no,actions=set_field:0->icmp_code,output:1,output:2,output:3",
        "table=4,cookie=0x123,idle_timeout=60,hard_timeout=120,ip,nw_dst=192.168.1.0/24,actions=drop",
    ];
    let before = {
        let mut b = start(dir.path()).unwrap();
        for (n, no) in [("p1", 1), ("p2", 2), ("p3", 3)] {
            ok(&mut b, add_port(n, Some(no)));
        }
        ok(&mut b, add_flows(&flows));
        lines(&mut b)
    };
    assert_eq!(before.len(), flows.len());
    let mut b = start(dir.path()).unwrap();
    assert_eq!(lines(&mut b), before);
    // The push (mod_vlan_vid without a dl_vlan match) still pushes after the restart.
    let f = frame();
    inject(&mut b, "p1", &f);
    let got = capture(&mut b, "p2");
    assert_eq!(got.len(), 1);
    assert_eq!(
        &got[0][12..16],
        &[0x81, 0x00, 0x00, 10],
        "802.1Q tag, vid 10"
    );
    assert_eq!(&got[0][16..], &f[12..]);
}

/// EMC hits, misses and megaflow hits of the bridge's polling threads.
fn tiers(b: &mut Bridge) -> (u64, u64, u64) {
    let v = ok(b, Request::PmdPerfShow { bridge: BR.into() });
    let pmds = v["pmds"].as_array().unwrap();
    let sum = |k: &str| pmds.iter().map(|t| t[k].as_u64().unwrap()).sum::<u64>();
    (sum("emc_hits"), sum("megaflow_hits"), sum("misses"))
}

/// `set-bridge emc-insert-inv-prob=N` (OVS's `other_config` key): 1 puts
/// every flow in the EMC at its first megaflow hit, 0 inserts nothing (the
/// EMC is off, every packet takes the megaflow cache), the value survives a
/// restart, and a bad value is refused without changing anything.
#[test]
fn emc_insert_inv_prob_is_set_persisted_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(dir.path()).unwrap();
    ok(&mut b, add_port("p1", Some(1)));
    ok(&mut b, add_port("p2", Some(2)));
    ok(&mut b, add_flow("in_port=1,actions=output:2"));
    let set = |b: &mut Bridge, v: &str| {
        b.handle(Request::SetBridge {
            bridge: BR.into(),
            settings: BTreeMap::from([("other_config:emc-insert-inv-prob".into(), v.into())]),
        })
    };
    let r = match set(&mut b, "1") {
        Reply::Ok(v) => v,
        Reply::Error(e) => panic!("{e}"),
    };
    assert_eq!(r["emc-insert-inv-prob"], 1);
    // A miss (its install goes into the EMC too), then EMC hits only.
    let f = frame();
    for _ in 0..5 {
        inject(&mut b, "p1", &f);
    }
    assert_eq!(capture(&mut b, "p2").len(), 5);
    assert_eq!(tiers(&mut b), (4, 0, 1));

    for bad in ["-1", "4294967296", "often", ""] {
        match set(&mut b, bad) {
            Reply::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{bad:?}: {e}");
                assert!(e.message.contains("emc-insert-inv-prob"), "{e}");
            }
            Reply::Ok(v) => panic!("{bad:?} accepted: {v}"),
        }
    }
    drop(b);

    // Restarted with 1 (the bad values changed nothing): the EMC takes the
    // flow again; then 0 turns the EMC off.
    let mut b = start(dir.path()).unwrap();
    for _ in 0..3 {
        inject(&mut b, "p1", &f);
    }
    assert_eq!(tiers(&mut b), (2, 0, 1), "restored: inserted at once");
    assert!(matches!(set(&mut b, "0"), Reply::Ok(_)));
    for _ in 0..4 {
        inject(&mut b, "p1", &f);
    }
    // The new snapshot flushed the caches: one miss, then megaflow hits only.
    assert_eq!(tiers(&mut b), (2, 3, 2), "0: no EMC insertions");
    assert_eq!(capture(&mut b, "p2").len(), 7);
}
