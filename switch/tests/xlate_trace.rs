//! ofproto/trace: the walk an operator reads to answer "where did my packet
//! go", in OVS's layout, and the same facts as JSON for scripts.

use switch::datapath::DpAction;
use switch::flow::key::{ethertype, ipproto};
use switch::flow::{Action, Field, Flow, FlowKey, Match, PortNo};
use switch::pipeline::odp_format::format_dp_actions;
use switch::pipeline::trace::trace;
use switch::pipeline::xlate::{translate, ActionOutcome, XlateDrop};
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3, 4, 5];

fn pipeline(flows: Vec<Flow>) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        p.add_flow(f);
    }
    p
}

fn ip_match() -> Match {
    let mut m = Match::CATCHALL;
    m.set_exact(Field::EthType, 0x0800);
    m
}

fn tcp_key(ttl: u8) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.dl_src = [2, 0, 0, 0, 0, 1];
    k.dl_dst = [2, 0, 0, 0, 0, 2];
    k.dl_type = ethertype::IPV4;
    k.nw_src = 0x0a00_0001;
    k.nw_dst = 0x0a00_0002;
    k.nw_proto = ipproto::TCP;
    k.nw_ttl = ttl;
    k.tp_src = 1234;
    k.tp_dst = 80;
    k
}

fn resubmit(table: u8) -> Action {
    Action::Resubmit {
        in_port: None,
        table: Some(table),
    }
}

/// The text between the `bridge(...)` header and the blank line before `Final flow:`.
fn walk(text: &str) -> String {
    let start = text.find("bridge(").expect("bridge header");
    let end = text.find("\n\nFinal flow:").expect("final flow");
    text[start..end].to_string()
}

#[test]
fn goto_and_resubmit_walk_nests_like_ovs() {
    let p = pipeline(vec![
        Flow {
            cookie: 0x5,
            actions: vec![resubmit(1), Action::Output(5)],
            ..Flow::default()
        },
        Flow {
            table: 1,
            actions: vec![Action::Output(2), Action::GotoTable(2)],
            ..Flow::default()
        },
        Flow {
            table: 2,
            actions: vec![Action::Output(3)],
            ..Flow::default()
        },
    ]);
    let r = trace(&p, PORTS, &tcp_key(64), "br0");
    let text = r.to_string();
    let expect = "\
bridge(\"br0\")
-------------
 0. priority 32768, cookie 0x5
    resubmit(,1)
     1. priority 32768
            output:2
            goto_table:2
         2. priority 32768
            output:3
    output:5";
    assert_eq!(walk(&text), expect, "\n{text}");
    assert!(text.starts_with("Flow: tcp,in_port=1,"), "{text}");
    assert!(text.contains("\nFinal flow: unchanged\n"), "{text}");
    assert!(text.ends_with("\nDatapath actions: 2,3,5"), "{text}");
    assert_eq!(
        r.outputs.iter().map(|o| o.port).collect::<Vec<_>>(),
        vec![2, 3, 5]
    );
}

#[test]
fn dec_ttl_exception_and_misses_are_shown() {
    // As in OVS's oftrace printer, a table visit that is the last node of its
    // list is not indented one more level: a trailing resubmit reads flat.
    // table=0,ip,actions=output:2,resubmit(,1),output:3
    // table=1,ip,actions=dec_ttl,output:4
    let p = pipeline(vec![
        Flow {
            matches: ip_match(),
            actions: vec![
                Action::Output(2),
                resubmit(1),
                Action::Output(3),
                resubmit(9),
            ],
            ..Flow::default()
        },
        Flow {
            table: 1,
            matches: ip_match(),
            actions: vec![Action::DecTtl, Action::Output(4)],
            ..Flow::default()
        },
    ]);
    let r = trace(&p, PORTS, &tcp_key(1), "br0");
    let text = r.to_string();
    let expect = "\
bridge(\"br0\")
-------------
 0. ip, priority 32768
    output:2
    resubmit(,1)
     1. ip, priority 32768
            dec_ttl
             >> IPv4 decrement TTL exception
    output:3
    resubmit(,9)
 9. No match.
    drop";
    assert_eq!(walk(&text), expect, "\n{text}");
    assert!(text.ends_with("Datapath actions: 2,3"), "{text}");
    assert_eq!(r.drop, Some(XlateDrop::InvalidTtl));
    // The megaflow had to look at the TTL.
    assert!(
        r.megaflow.match_text.contains("nw_ttl=1"),
        "{}",
        r.megaflow.match_text
    );
    assert_eq!(r.megaflow.mask.nw_ttl, 0xff);
}

#[test]
fn changed_packet_shows_final_flow_sets_and_outputs() {
    let p = pipeline(vec![Flow {
        matches: ip_match(),
        actions: vec![
            Action::SetField {
                field: Field::EthDst,
                value: 0x0200_0000_0063,
                mask: 0xffff_ffff_ffff,
            },
            Action::DecTtl,
            Action::Output(2),
            Action::Output(1),
        ],
        ..Flow::default()
    }]);
    let r = trace(&p, PORTS, &tcp_key(64), "br0");
    let text = r.to_string();
    assert!(
        text.ends_with("Datapath actions: set(eth(dst=02:00:00:00:00:63)),set(ipv4(ttl=63)),2"),
        "{text}"
    );
    assert!(
        text.contains("    output:1\n     >> skipping output to input port\n"),
        "{text}"
    );
    assert!(!r.final_unchanged);
    assert!(text.contains("\nFinal flow: tcp,in_port=1,"), "{text}");
    assert!(r.final_flow.contains("dl_dst=02:00:00:00:00:63"));
    assert!(r.final_flow.contains("nw_ttl=63"));
    assert_eq!(r.outputs.len(), 1);
    assert!(r.outputs[0].packet.contains("nw_ttl=63"));
    assert_eq!(r.outputs[0].key.nw_ttl, 63);
    let mega = text
        .lines()
        .find(|l| l.starts_with("Megaflow: "))
        .expect("megaflow line");
    assert!(mega.starts_with("Megaflow: ip,in_port=1,"), "{mega}");
    assert!(mega.contains("dl_dst=02:00:00:00:00:02"), "{mega}");
    assert!(!mega.contains("nw_src"), "{mega}");
}

#[test]
fn resubmit_loop_reports_the_failure_and_drops() {
    let p = pipeline(vec![Flow {
        actions: vec![Action::Output(2), resubmit(0)],
        ..Flow::default()
    }]);
    let r = trace(&p, PORTS, &tcp_key(64), "br0");
    let text = r.to_string();
    assert!(
        text.contains(">>>> over max translation depth 64 <<<<"),
        "{text}"
    );
    assert!(text.contains("\nDatapath actions: drop\n"), "{text}");
    assert!(text.ends_with("Translation failed (Recursion too deep), packet is dropped."));
    assert_eq!(r.drop, Some(XlateDrop::ResubmitDepth));
    // 65 nested visits, each indented further.
    let mut depth = 0;
    let mut step = &r.steps[0];
    while let Some(n) = step.actions.iter().find_map(|a| a.nested.as_deref()) {
        step = n;
        depth += 1;
    }
    assert_eq!(depth, 64);
    assert_eq!(step.depth, 64);
}

#[test]
fn table_zero_miss_is_no_match_drop() {
    let r = trace(&Pipeline::new(), PORTS, &tcp_key(64), "br-int");
    let text = r.to_string();
    let expect = "\
bridge(\"br-int\")
----------------
 0. No match.
    drop";
    assert_eq!(walk(&text), expect, "\n{text}");
    assert!(text.ends_with("Datapath actions: drop"));
    assert_eq!(r.drop, Some(XlateDrop::NoMatch { table: 0 }));
}

#[test]
fn json_report_is_structured() {
    let p = pipeline(vec![
        Flow {
            priority: 100,
            cookie: 0x10,
            actions: vec![Action::Output(1), resubmit(1)],
            ..Flow::default()
        },
        Flow {
            table: 1,
            actions: vec![Action::PushVlan(0x8100), Action::Output(3)],
            ..Flow::default()
        },
    ]);
    let r = trace(&p, PORTS, &tcp_key(64), "br0");
    let v = serde_json::to_value(&r).expect("serializable");
    assert_eq!(v["bridge"], "br0");
    let top = &v["steps"][0];
    assert_eq!(top["table"], 0);
    assert_eq!(top["rule"]["priority"], 100);
    assert_eq!(top["rule"]["cookie"], 16);
    assert_eq!(top["actions"][0]["action"], "output:1");
    assert_eq!(top["actions"][0]["outcomes"][0]["kind"], "skipped_in_port");
    let nested = &top["actions"][1]["nested"];
    assert_eq!(nested["table"], 1);
    assert_eq!(nested["depth"], 1);
    assert_eq!(nested["actions"][1]["outcomes"][0]["kind"], "output");
    assert_eq!(nested["actions"][1]["outcomes"][0]["port"], 3);
    assert_eq!(v["datapath_actions"], "push_vlan(vid=0,pcp=0),3");
    assert!(v["outputs"][0]["packet"]
        .as_str()
        .is_some_and(|s| s.contains("dl_vlan=0,dl_vlan_pcp=0")));
    assert!(v["drop"].is_null());
    assert_eq!(
        r.steps[0].actions[0].outcomes,
        vec![ActionOutcome::SkippedInPort { port: 1 }]
    );
}

#[test]
fn trace_and_datapath_translation_agree() {
    let p = pipeline(vec![
        Flow {
            matches: ip_match(),
            actions: vec![
                Action::DecTtl,
                Action::Output(2),
                Action::PopVlan,
                resubmit(1),
            ],
            ..Flow::default()
        },
        Flow {
            table: 1,
            actions: vec![
                Action::SetField {
                    field: Field::TcpDst,
                    value: 8080,
                    mask: 0xffff,
                },
                Action::Output(ofswitch_flood()),
            ],
            ..Flow::default()
        },
    ]);
    for ttl in [0, 1, 2, 64] {
        let k = tcp_key(ttl);
        let x = translate(&p, PORTS, &k);
        let r = trace(&p, PORTS, &k, "br0");
        assert_eq!(r.actions, x.actions);
        assert_eq!(r.megaflow.mask, x.mask);
        assert_eq!(r.drop, x.drop);
        assert_eq!(r.datapath_actions, format_dp_actions(&x.actions));
        assert!(r
            .to_string()
            .ends_with(&format!("Datapath actions: {}", r.datapath_actions)));
    }
    let x = translate(&p, PORTS, &tcp_key(64));
    assert!(x.actions.contains(&DpAction::SetTcp {
        src: None,
        dst: Some(8080)
    }));
}

fn ofswitch_flood() -> PortNo {
    switch::flow::ofport::FLOOD
}
