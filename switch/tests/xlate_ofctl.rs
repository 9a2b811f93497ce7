//! End to end with ovs-ofctl syntax: the flows and trace packets an operator
//! would paste, through the flow parser, translation and the trace printer,
//! give the datapath actions OVS 3.1 gives (OVS_SEMANTICS.md).

use switch::flow::{parse_flow, parse_packet, ParseMode, PortNo};
use switch::pipeline::odp_format::format_dp_actions;
use switch::pipeline::trace::trace;
use switch::pipeline::xlate::translate;
use switch::pipeline::Pipeline;

const PORTS: &[PortNo] = &[1, 2, 3, 4, 5];

fn pipeline(flows: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        match parse_flow(f, ParseMode::Add) {
            Ok(spec) => p.add_flow(spec.to_flow()),
            Err(e) => panic!("{f}: {e:?}"),
        }
    }
    p
}

fn dp(flows: &[&str], packet: &str) -> String {
    let p = pipeline(flows);
    let k = match parse_packet(packet) {
        Ok(k) => k,
        Err(e) => panic!("{packet}: {e:?}"),
    };
    let text = format_dp_actions(&translate(&p, PORTS, &k).actions);
    let report = trace(&p, PORTS, &k, "br0").to_string();
    assert!(
        report.ends_with(&format!("Datapath actions: {text}")),
        "{report}"
    );
    text
}

#[test]
fn semantics_examples_from_ovs() {
    let flows = [
        "table=0,actions=resubmit(,1),output:5",
        "table=1,actions=output:2,goto_table:2",
        "table=2,actions=output:3",
    ];
    assert_eq!(dp(&flows, "in_port=1,tcp,nw_ttl=64"), "2,3,5");

    let flows = [
        "table=0,ip,actions=output:2,resubmit(,1),output:3",
        "table=1,ip,actions=dec_ttl,output:4",
    ];
    assert_eq!(dp(&flows, "in_port=1,tcp,nw_ttl=1"), "2,3");
    assert_eq!(
        dp(&flows, "in_port=1,tcp,nw_ttl=64"),
        "2,set(ipv4(ttl=63)),4,3"
    );

    let flows = ["table=0,actions=output:2,goto_table:1"];
    assert_eq!(dp(&flows, "in_port=1,tcp"), "2");

    let flows = ["in_port=1,actions=output:1,output:2"];
    assert_eq!(dp(&flows, "in_port=1,tcp"), "2");
    let flows = ["in_port=1,actions=in_port"];
    assert_eq!(dp(&flows, "in_port=1,tcp"), "1");
}

#[test]
fn vlan_actions_from_ovs_syntax() {
    // mod_vlan_vid without dl_vlan in the match pushes a new tag.
    let flows = ["in_port=1,actions=mod_vlan_vid:5,output:2"];
    assert_eq!(dp(&flows, "in_port=1,tcp"), "push_vlan(vid=5,pcp=0),2");
    assert_eq!(
        dp(&flows, "in_port=1,dl_vlan=7,dl_vlan_pcp=3,tcp"),
        "push_vlan(vid=5,pcp=0),2"
    );
    // With dl_vlan in the match it modifies the VID and keeps the PCP.
    let flows = ["in_port=1,dl_vlan=7,actions=mod_vlan_vid:5,output:2"];
    assert_eq!(
        dp(&flows, "in_port=1,dl_vlan=7,dl_vlan_pcp=3,tcp"),
        "set(vlan(vid=5,pcp=3)),2"
    );
    let flows = ["in_port=1,dl_vlan=7,actions=strip_vlan,output:2"];
    assert_eq!(dp(&flows, "in_port=1,dl_vlan=7,tcp"), "pop_vlan,2");
    let flows = ["in_port=1,actions=push_vlan:0x8100,output:2"];
    assert_eq!(dp(&flows, "in_port=1,tcp"), "push_vlan(vid=0,pcp=0),2");
}

#[test]
fn header_rewrites_from_ovs_syntax() {
    let flows = ["ip,actions=mod_dl_dst:02:00:00:00:00:02,dec_ttl,output:2"];
    assert_eq!(
        dp(&flows, "in_port=1,tcp,dl_dst=02:00:00:00:00:09,nw_ttl=64"),
        "set(eth(dst=02:00:00:00:00:02)),set(ipv4(ttl=63)),2"
    );
    let flows = ["udp,actions=mod_tp_dst:53,mod_nw_dst:10.0.0.9,output:2"];
    assert_eq!(
        dp(&flows, "in_port=1,udp,nw_dst=10.0.0.2,udp_dst=99"),
        "set(ipv4(dst=10.0.0.9)),set(udp(dst=53)),2"
    );
    let flows = ["actions=set_field:5->tun_id,set_field:10.1.1.1->tun_dst,output:3"];
    assert_eq!(
        dp(&flows, "in_port=1,tcp"),
        "set(tunnel(tun_id=0x5,dst=10.1.1.1)),3"
    );
}
