//! OpenFlow actions and instructions as the pipeline executes them.
//!
//! This is the parsed, normalised form: the flow parser maps ovs-ofctl's
//! spellings onto it the way OVS does for OpenFlow 1.3 (`mod_dl_src` becomes
//! `SetField(EthSrc)`, `strip_vlan` becomes `PopVlan`, `mod_vlan_vid` becomes
//! an optional `PushVlan` plus `SetField(VlanVid)` depending on the match), and
//! the formatter prints it back the way `ovs-ofctl -O OpenFlow13 dump-flows`
//! does. An empty action list is `drop`.

use super::field::Field;

/// An OpenFlow port number (OpenFlow 1.3: 32 bits).
pub type PortNo = u32;

/// Reserved OpenFlow 1.3 port numbers (OFPP_*).
pub mod ofport {
    use super::PortNo;
    /// Highest number of a physical/logical port.
    pub const MAX: PortNo = 0xffff_ff00;
    /// Send back out the ingress port (`in_port`, printed `IN_PORT`).
    pub const IN_PORT: PortNo = 0xffff_fff8;
    /// Submit to the first table (packet-out only).
    pub const TABLE: PortNo = 0xffff_fff9;
    /// The switch's normal L2/L3 processing (`NORMAL`).
    pub const NORMAL: PortNo = 0xffff_fffa;
    /// Every port except the ingress port (`FLOOD`).
    pub const FLOOD: PortNo = 0xffff_fffb;
    /// Every port except the ingress port (`ALL`).
    pub const ALL: PortNo = 0xffff_fffc;
    /// The controller (`CONTROLLER`).
    pub const CONTROLLER: PortNo = 0xffff_fffd;
    /// The bridge's local (host stack) port (`LOCAL`).
    pub const LOCAL: PortNo = 0xffff_fffe;
    /// Wildcard / none (`ANY`, `NONE`).
    pub const ANY: PortNo = 0xffff_ffff;
}

/// A bit range of a field, NXM style: `NXM_NX_REG0[8..15]` is `{Reg0, ofs 8, n_bits 8}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldRange {
    /// The field.
    pub field: Field,
    /// First bit (0 = least significant).
    pub ofs: u32,
    /// Number of bits.
    pub n_bits: u32,
}

/// One action or instruction of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:N`, or a reserved port (`IN_PORT`, `LOCAL`, `FLOOD`, `ALL`, `NORMAL`, `CONTROLLER`).
    Output(PortNo),
    /// `set_field:VALUE[/MASK]->FIELD` (and the `mod_*` actions, normalised).
    /// `mask` is the field's all-ones value for an unmasked set.
    SetField {
        /// Target field.
        field: Field,
        /// Value, right-aligned.
        value: u128,
        /// Bits of the field to write.
        mask: u128,
    },
    /// `load:VALUE->DST[ofs..end]`.
    Load {
        /// Destination bits.
        dst: FieldRange,
        /// Value, right-aligned to `dst.ofs`.
        value: u128,
    },
    /// `move:SRC[..]->DST[..]` (equal widths).
    Move {
        /// Source bits.
        src: FieldRange,
        /// Destination bits.
        dst: FieldRange,
    },
    /// `dec_ttl`: decrement the IPv4 TTL / IPv6 hop limit; at 0 or 1, an
    /// `invalid_ttl` exception ends the current flow's actions.
    DecTtl,
    /// `route` / `route(table=N)` (ferroswitch extension): longest-prefix
    /// match of the IPv4/IPv6 destination in route table N, ECMP next-hop
    /// choice by flow hash, TTL decrement (TTL 0/1: dropped as
    /// `ttl_exceeded`), Ethernet rewrite to the router MAC and the next hop's
    /// MAC, and output to the next hop's port (see `crate::route`).
    Route {
        /// Route table.
        table: u8,
    },
    /// `push_vlan:ETHERTYPE`: push a tag with vid 0, pcp 0.
    PushVlan(u16),
    /// `pop_vlan` (`strip_vlan`).
    PopVlan,
    /// `resubmit([port],[table])`: run the packet through a table and come back.
    Resubmit {
        /// Pretend the packet came in on this port (None: keep in_port).
        in_port: Option<PortNo>,
        /// Table to search (None: the current table).
        table: Option<u8>,
    },
    /// `write_metadata:VALUE[/MASK]` instruction.
    WriteMetadata {
        /// Value.
        value: u64,
        /// Bits to write.
        mask: u64,
    },
    /// `goto_table:N` instruction (always last).
    GotoTable(u8),
    /// `group:N`: run the packet through group N's bucket(s) (OpenFlow 1.3
    /// §5.6; see `crate::group`). Each bucket works on a clone: header
    /// changes a bucket makes are undone when it ends (OVS
    /// `xlate_group_bucket`). A flow naming a group that does not exist is
    /// refused (`OFPBAC_BAD_OUT_GROUP`).
    Group(u32),
    /// `ct(...)`: send the packet through connection tracking (ovs-actions(7)).
    Ct(Box<CtAction>),
    /// `ct_clear`: forget the packet's conntrack state (every `ct_*` field 0).
    CtClear,
}

/// Where `ct(zone=...)` takes the zone from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// `zone=N`.
    Imm(u16),
    /// `zone=FIELD[a..b]` (16 bits of a field, e.g. `NXM_NX_REG0[0..15]`).
    Field(FieldRange),
}

/// The arguments of `ct(...)` (OVS `struct ofpact_conntrack`).
///
/// Semantics (ovs-actions(7)): the packet goes through the tracker in the
/// zone. With `table=T` it is then recirculated: a copy continues in table
/// T with `ct_state`, `ct_zone`, `ct_mark` and `ct_label` set from the
/// tracker, while the current action list continues with the packet's
/// state as before the `ct`. `commit` creates the connection; `exec`'s
/// `set_field`s on `ct_mark` / `ct_label` are stored in a committed
/// connection. `nat` applies the connection's address translation (and
/// with `commit` and a range, binds a new connection to one); see
/// `crate::conntrack::nat`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CtAction {
    /// `commit`.
    pub commit: bool,
    /// `zone=`: the conntrack zone (default 0).
    pub zone: CtZone,
    /// `table=`: recirculate to this table (None: no recirculation).
    pub table: Option<u8>,
    /// `exec(set_field:V[/M]->ct_mark)`: value and mask.
    pub mark: Option<(u32, u32)>,
    /// `exec(set_field:V[/M]->ct_label)`: value and mask.
    pub label: Option<(u128, u128)>,
    /// `nat`, `nat(src=...)` or `nat(dst=...)`.
    pub nat: Option<crate::conntrack::nat::NatSpec>,
}
