//! The packet description `ofproto/trace` accepts (OVS lib/ofp-flow.c
//! `parse_ofp_exact_flow`), so an operator can paste a trace line into
//! `flowctl trace`: `in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,udp_src=53,udp_dst=99`.
//!
//! Text enters, a complete [`FlowKey`] leaves. Differences from flow syntax,
//! as in OVS: values are exact (no masks); every field not given is zero —
//! including `nw_ttl`, so a packet without `nw_ttl=` has TTL 0 and a
//! `dec_ttl` on it raises `invalid_ttl`, exactly as OVS's trace does; fields
//! are applied in order, so a protocol keyword (`udp`, `tcp6`, `arp`...) must
//! come before the fields that need it; and `tp_src`/`tp_dst` mean TCP ports
//! only (UDP uses `udp_src`/`udp_dst`).
//!
//! Never panics on any input.

use super::field::{Field, Prereq};
use super::key::FlowKey;
use super::parse::{
    field_contribution, lex, prereq_keyword, protocol, protocol_contribution, MatchBuilder,
    ParseError,
};

/// Parse an `ofproto/trace` packet description into the packet's key.
pub fn parse_packet(text: &str) -> Result<FlowKey, ParseError> {
    parse_packet_inner(text).map_err(|mut e| {
        e.input = text.to_string();
        e
    })
}

fn parse_packet_inner(text: &str) -> Result<FlowKey, ParseError> {
    let mut mb = MatchBuilder::new();
    for t in lex(text, 0)? {
        let tok = t.whole(text, 0);
        let off = t.key_off;
        if t.delim == b'(' {
            return Err(ParseError::new(
                format!(
                    "\"{}\": datapath flow syntax (in_port(1),eth(...)) is not supported; use the OpenFlow form in_port=1,dl_src=...",
                    tok
                ),
                off,
                tok,
            ));
        }
        if let Some((dl_type, proto)) = protocol(t.key) {
            if t.value.is_some() {
                return Err(ParseError::new(
                    format!("protocol keyword \"{}\" takes no value", t.key),
                    off,
                    tok,
                ));
            }
            mb.add(tok, off, protocol_contribution(dl_type, proto))?;
            continue;
        }
        if t.key == "eth" && t.value.is_none() {
            continue;
        }
        // `recirc_id=N`: trace the pass that `ct(table=N-1)` recirculates
        // (OVS's trace takes recirc_id the same way).
        if t.key == "recirc_id" {
            let v = t.value.unwrap_or("");
            let r = super::parse::parse_uint_max(v, 0xff, "recirc_id", t.value_off)?;
            mb.value.recirc_id = r as u32;
            continue;
        }
        let field = match Field::from_name(t.key) {
            Some(f) => f,
            None => {
                let e = super::parse::lookup_field(t.key, off);
                return Err(e.err().unwrap_or_else(|| {
                    ParseError::new(format!("unknown field \"{}\"", t.key), off, tok)
                }));
            }
        };
        let Some(v) = t.value else {
            return Err(ParseError::new(
                format!("field {} is missing its value ({}=VALUE)", t.key, t.key),
                off,
                tok,
            ));
        };
        if v.contains('/') || matches!(v, "yes" | "not_later") {
            return Err(ParseError::new(
                format!(
                    "\"{}\": a packet has exact values, masks and wildcards are not allowed here",
                    tok
                ),
                t.value_off,
                v,
            ));
        }
        // In trace syntax tp_src/tp_dst are OVS's MFF_TCP_SRC/DST aliases: TCP only.
        let mut c = field_contribution(field, v, t.value_off)?;
        if matches!(field, Field::TpSrc | Field::TpDst) {
            c.prereq = Prereq::Tcp;
        }
        if matches!(field, Field::DlVlan | Field::VlanPcp) {
            c.prereq = Prereq::None;
        }
        let icmp_any =
            Prereq::Icmp.satisfied_by(&mb.value) || Prereq::Icmpv6.satisfied_by(&mb.value);
        let ok = c.prereq.satisfied_by(&mb.value)
            || (mb.value.dl_type == super::key::ethertype::ARP
                && matches!(field, Field::IpSrc | Field::IpDst | Field::NwProto))
            // flow_format prints icmp_type/icmp_code for ICMPv6 too; accept them back.
            || (icmp_any
                && matches!(
                    field,
                    Field::IcmpType | Field::IcmpCode | Field::Icmpv6Type | Field::Icmpv6Code
                ));
        if !ok {
            return Err(ParseError::new(
                format!(
                    "prerequisites not met for setting {}: it requires {}; put \"{},\" before it",
                    t.key,
                    c.prereq.suggestion(),
                    prereq_keyword(c.prereq, &mb.value)
                ),
                off,
                tok,
            ));
        }
        mb.add(tok, off, c)?;
    }
    Ok(mb.value)
}
