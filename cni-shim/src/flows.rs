//! The flows of one pod attachment, in ovs-ofctl text.
//!
//! Input: the pod's port number, MAC, IPv4, gateway, router MAC, mode and
//! cookie; output: the flow strings ADD sends in one `add-flows` request
//! (all or nothing) and CHECK compares with `dump-flows cookie=C/-1`. Every
//! flow carries the attachment's cookie and nothing is shared between pods,
//! so DEL is one `del-flows cookie=C/-1`. Table layout and rationale:
//! docs/cni.md "Flows per pod". The ARP responder follows
//! demo/node-flows.txt (OVN's logical router ARP reply: swap Ethernet
//! addresses, arp_op=2, sha/spa to tha/tpa, load ours, IN_PORT).
//!
//! Every IPv4 packet passes the ACL hooks of `cni_shim::tables` (docs/cni.md
//! "Table layout"): the egress hook after port security, the ingress hook
//! before delivery. The plugin's own flows there only pass packets on, so a
//! pod no NetworkPolicy selects is forwarded with no conntrack at all; the
//! policy compiler adds higher-priority `ct(...)` flows for selected pods.

use std::net::Ipv4Addr;

pub use crate::tables::{
    T_ARP, T_CLASSIFY, T_EGRESS_HOOK, T_EGRESS_OUT, T_INGRESS_HOOK, T_INGRESS_OUT, T_L2, T_ROUTE,
};

/// Network mode: what the pod's flows look like and the default MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pods of a node share an L2 subnet; other nodes via the node's tunnel.
    Overlay,
    /// Every hop routed by the switch (proxy ARP); no encapsulation.
    Routed,
}

/// What the flows of one pod depend on.
#[derive(Clone, Debug)]
pub struct PodFlows<'a> {
    /// OpenFlow port.
    pub ofport: u32,
    /// Pod MAC.
    pub mac: &'a str,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Pod gateway (None: no gateway; no ARP responder).
    pub gateway: Option<Ipv4Addr>,
    /// Router MAC.
    pub router_mac: &'a str,
    /// Mode.
    pub mode: Mode,
    /// Cookie.
    pub cookie: u64,
}

fn mac_hex(mac: &str) -> String {
    mac.split(':').collect()
}

impl PodFlows<'_> {
    /// The flows, in ovs-ofctl add-flow syntax.
    pub fn flows(&self) -> Vec<String> {
        let (p, m, i, r) = (self.ofport, self.mac, self.ip, self.router_mac);
        let c = format!("cookie={:#x}", self.cookie);
        let rhex = mac_hex(r);
        let mut f = vec![
            format!("table={T_CLASSIFY},priority=200,{c},in_port={p},dl_src={m},arp,arp_spa={i},arp_sha={m},actions=goto_table:{T_ARP}"),
            format!("table={T_CLASSIFY},priority=200,{c},in_port={p},dl_src={m},dl_dst={r},ip,nw_src={i},actions=goto_table:{T_EGRESS_HOOK}"),
        ];
        if self.mode == Mode::Overlay {
            f.push(format!("table={T_CLASSIFY},priority=190,{c},in_port={p},dl_src={m},ip,nw_src={i},actions=goto_table:{T_EGRESS_HOOK}"));
        }
        // Egress hook: no policy, no conntrack: straight on. The dispatch to
        // routing (to the router MAC) or L2 delivery is the same before and
        // after the egress ACL.
        f.push(format!(
            "table={T_EGRESS_HOOK},priority=10,{c},in_port={p},ip,actions=goto_table:{T_EGRESS_OUT}"
        ));
        f.push(format!(
            "table={T_EGRESS_OUT},priority=10,{c},in_port={p},dl_dst={r},ip,actions=goto_table:{T_ROUTE}"
        ));
        if self.mode == Mode::Overlay {
            f.push(format!(
                "table={T_EGRESS_OUT},priority=5,{c},in_port={p},ip,actions=goto_table:{T_L2}"
            ));
        }
        // Anything else from the pod is spoofed or not IPv4/ARP: dropped,
        // counted on this flow (port security).
        f.push(format!(
            "table={T_CLASSIFY},priority=100,{c},in_port={p},actions=drop"
        ));
        let reply_head = format!(
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{r},load:0x2->NXM_OF_ARP_OP[],\
             move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]"
        );
        match self.mode {
            Mode::Overlay => {
                if let Some(g) = self.gateway {
                    let ghex = u32::from(g);
                    f.push(format!(
                        "table={T_ARP},priority=100,{c},in_port={p},arp,arp_op=1,arp_tpa={g},actions=\
                         {reply_head},move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],\
                         load:0x{rhex}->NXM_NX_ARP_SHA[],load:{ghex:#010x}->NXM_OF_ARP_SPA[],IN_PORT"
                    ));
                }
                f.push(format!(
                    "table={T_ARP},priority=50,{c},arp,arp_tpa={i},actions=output:{p}"
                ));
                f.push(format!(
                    "table={T_L2},priority=100,{c},dl_dst={m},actions=goto_table:{T_INGRESS_HOOK}"
                ));
            }
            Mode::Routed => {
                // A probe or gratuitous ARP for its own address gets no answer
                // (answering it would look like an address conflict).
                f.push(format!(
                    "table={T_ARP},priority=110,{c},in_port={p},arp,arp_tpa={i},actions=drop"
                ));
                // Proxy ARP: every address resolves to the router MAC; the
                // requested address becomes the reply's sender through reg0.
                f.push(format!(
                    "table={T_ARP},priority=100,{c},in_port={p},arp,arp_op=1,actions=\
                     move:NXM_OF_ARP_TPA[]->NXM_NX_REG0[],{reply_head},\
                     move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0x{rhex}->NXM_NX_ARP_SHA[],\
                     move:NXM_NX_REG0[]->NXM_OF_ARP_SPA[],IN_PORT"
                ));
            }
        }
        f.push(format!(
            "table={T_ROUTE},priority=100,{c},ip,nw_dst={i},actions=mod_dl_src:{r},mod_dl_dst:{m},dec_ttl,goto_table:{T_INGRESS_HOOK}"
        ));
        // Ingress hook and delivery: whatever reaches the pod's MAC here was
        // addressed to it by table 20 or 30. No policy: straight out.
        f.push(format!(
            "table={T_INGRESS_HOOK},priority=10,{c},dl_dst={m},actions=output:{p}"
        ));
        f.push(format!(
            "table={T_INGRESS_OUT},priority=10,{c},dl_dst={m},actions=output:{p}"
        ));
        f
    }
}

/// The del-flows / dump-flows selection of an attachment's flows.
pub fn cookie_selector(cookie: u64) -> String {
    format!("cookie={cookie:#x}/-1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::flow::{parse_flow, ParseMode};

    fn pod(mode: Mode) -> PodFlows<'static> {
        PodFlows {
            ofport: 7,
            mac: "0a:58:0a:f4:01:07",
            ip: Ipv4Addr::new(10, 244, 1, 7),
            gateway: Some(Ipv4Addr::new(10, 244, 1, 1)),
            router_mac: "0a:58:00:00:00:01",
            mode,
            cookie: 0xf5aa_bbcc_ddee_ff00,
        }
    }

    #[test]
    fn every_flow_parses_with_switchds_parser_and_carries_the_cookie() {
        for mode in [Mode::Overlay, Mode::Routed] {
            for f in pod(mode).flows() {
                let spec =
                    parse_flow(&f, ParseMode::Add).unwrap_or_else(|e| panic!("{mode:?}: {f}: {e}"));
                assert_eq!(spec.cookie, 0xf5aa_bbcc_ddee_ff00, "{f}");
            }
        }
        let sel = parse_flow(&cookie_selector(0xf5aa_bbcc_ddee_ff00), ParseMode::Delete).unwrap();
        assert_eq!(sel.cookie_mask, u64::MAX);
    }

    #[test]
    fn overlay_has_l2_and_gateway_responder() {
        let f = pod(Mode::Overlay).flows();
        assert_eq!(f.len(), 13);
        let join = f.join("\n");
        assert!(join.contains("table=20,priority=100,cookie=0xf5aabbccddeeff00,dl_dst=0a:58:0a:f4:01:07,actions=goto_table:40"));
        assert!(join.contains("table=42,priority=10,cookie=0xf5aabbccddeeff00,dl_dst=0a:58:0a:f4:01:07,actions=output:7"));
        assert!(join.contains("arp_tpa=10.244.1.1,actions="));
        // Gateway 10.244.1.1 as the reply's sender, router MAC as its sha.
        assert!(join.contains("load:0x0af40101->NXM_OF_ARP_SPA[]"));
        assert!(join.contains("load:0x0a5800000001->NXM_NX_ARP_SHA[]"));
        assert!(join.contains("mod_dl_dst:0a:58:0a:f4:01:07,dec_ttl,goto_table:40"));
        // Port security: the pod's source MAC and IP only.
        assert!(join.contains(
            "in_port=7,dl_src=0a:58:0a:f4:01:07,arp,arp_spa=10.244.1.7,arp_sha=0a:58:0a:f4:01:07"
        ));
    }

    #[test]
    fn routed_has_proxy_arp_and_no_l2() {
        let f = pod(Mode::Routed).flows();
        let join = f.join("\n");
        assert!(!join.contains("table=20"));
        assert!(!join.contains("goto_table:20"));
        assert!(join.contains("move:NXM_NX_REG0[]->NXM_OF_ARP_SPA[]"));
        assert!(join.contains("table=10,priority=110,cookie=0xf5aabbccddeeff00,in_port=7,arp,arp_tpa=10.244.1.7,actions=drop"));
        assert_eq!(f.len(), 10);
    }

    #[test]
    fn no_gateway_no_responder() {
        let mut p = pod(Mode::Overlay);
        p.gateway = None;
        assert!(!p.flows().join("\n").contains("arp_op=1"));
    }
}
