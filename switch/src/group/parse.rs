//! The ovs-ofctl group syntax (ovs-ofctl(8) "Group Syntax", OVS
//! `lib/ofp-group.c` parse_ofp_group_mod_str / parse_bucket_str), parsed
//! into a [`GroupMod`] and printed back the way dump-groups shows it.
//!
//! Text enters from the control thread (add-group, mod-group,
//! insert-buckets, remove-buckets, del-groups, and the state file) and
//! leaves as a [`GroupMod`] or an error naming the offending token; the
//! formatter's output parses back to the same group (a test holds it to
//! that), which is how groups are persisted.
//!
//! `group_id=N,type=select,selection_method=hash,fields(ip_src,tcp_dst),bucket=bucket_id:0,weight:100,actions=output:1,bucket=...`:
//! everything before the first `bucket=` describes the group; each
//! `bucket=` runs to the next one. Inside a bucket, `bucket_id`, `weight`,
//! `watch_port` and `watch_group` take `:` or `=`; `actions=` (or the first
//! token that is none of those, as OVS allows) starts the action list, which
//! runs to the end of the bucket. Printing always shows `bucket_id`
//! (OVS shows it with OpenFlow 1.5) so a dump pastes back unchanged.
//!
//! Never panics on any input.

use std::fmt::Write as _;

use super::{
    Bucket, CommandBucket, GroupCommand, GroupDesc, GroupId, GroupMod, GroupType, HashField,
    SelectionMethod, BUCKET_MAX, OFPG_MAX,
};
use crate::flow::parse::{lex, lookup_field, parse_field_value, parse_port, parse_uint};
use crate::flow::{format_actions, ParseError};

/// Why a group-mod failed (OpenFlow `OFPGMFC_*` where one applies).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupModError {
    /// The text did not parse.
    #[error("{0}")]
    Parse(ParseError),
    /// The command needs `group_id=N`.
    #[error("must specify a group_id (group_id=N)")]
    NeedGroupId,
    /// add-group of an existing id (OFPGMFC_GROUP_EXISTS).
    #[error("OFPGMFC_GROUP_EXISTS: group {0} already exists (use mod-group to change it)")]
    GroupExists(GroupId),
    /// mod-group / insert / remove on a missing group (OFPGMFC_UNKNOWN_GROUP).
    #[error("OFPGMFC_UNKNOWN_GROUP: group {0} does not exist")]
    UnknownGroup(GroupId),
    /// insert-buckets with a bucket id the group already has (OFPGMFC_BUCKET_EXISTS).
    #[error("OFPGMFC_BUCKET_EXISTS: the group already has a bucket with bucket_id {0}")]
    BucketExists(u32),
    /// command_bucket_id names a bucket the group lacks (OFPGMFC_UNKNOWN_BUCKET).
    #[error("OFPGMFC_UNKNOWN_BUCKET: the group has no bucket with bucket_id {0}")]
    UnknownBucket(u32),
    /// `command_bucket_id=all` for insert-buckets.
    #[error(
        "command_bucket_id=all is not valid for insert-buckets (use first, last or a bucket id)"
    )]
    BadCommandBucket,
    /// An indirect group has exactly one bucket (OFPGMFC_INVALID_GROUP).
    #[error("OFPGMFC_INVALID_GROUP: an indirect group has exactly one bucket")]
    IndirectBuckets,
    /// A bucket outputs to a group that does not exist (OFPGMFC_CHAINING_UNSUPPORTED as OVS reports a bad chain).
    #[error("OFPBAC_BAD_OUT_GROUP: a bucket outputs to group {0}, which does not exist")]
    UnknownOutGroup(GroupId),
    /// del-groups of a group another group's bucket outputs to
    /// (OFPGMFC_CHAINED_GROUP).
    #[error("OFPGMFC_CHAINED_GROUP: group {group} is used by a bucket of group {by}; change or delete group {by} first")]
    StillChained {
        /// The group to delete.
        group: GroupId,
        /// The group whose bucket names it.
        by: GroupId,
    },
    /// A bucket outputs to its own group (OFPGMFC_LOOP).
    #[error("OFPGMFC_LOOP: a bucket of group {0} outputs to the group itself")]
    Loop(GroupId),
}

type PResult<T> = Result<T, ParseError>;

fn perr(message: impl Into<String>, offset: usize, token: &str) -> ParseError {
    ParseError {
        message: message.into(),
        offset,
        token: token.to_string(),
        input: String::new(),
    }
}

/// Parse a group-mod for `command` (ovs-ofctl's group syntax).
///
/// - add / modify: `group_id` and `type` are required (modify, like OVS,
///   replaces type, selection method and every bucket);
/// - insert-buckets: `group_id`, optional `command_bucket_id` (first, last
///   (default), or the id to insert after), and the buckets;
/// - remove-buckets: `group_id` and `command_bucket_id` (first, last, all
///   (default), or an id); no buckets;
/// - delete: empty (every group) or `group_id=N|all`.
pub fn parse_group_mod(text: &str, command: GroupCommand) -> Result<GroupMod, GroupModError> {
    parse_inner(text, command).map_err(|mut e| {
        e.input = text.to_string();
        GroupModError::Parse(e)
    })
}

/// Byte offsets of every top-level `bucket=` (OVS splits on the string
/// "bucket=", which `bucket_id=` and `command_bucket_id=` do not contain).
fn bucket_starts(text: &str) -> Vec<usize> {
    let mut v = Vec::new();
    let mut from = 0;
    while let Some(p) = text.get(from..).and_then(|t| t.find("bucket=")) {
        let at = from + p;
        // Not the tail of another word (e.g. "xbucket=").
        let ok = at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric();
        if ok && text.as_bytes().get(at.wrapping_sub(1)) != Some(&b'_') {
            v.push(at);
        }
        from = at + "bucket=".len();
    }
    v
}

fn parse_inner(text: &str, command: GroupCommand) -> PResult<GroupMod> {
    let starts = bucket_starts(text);
    let head_end = starts.first().copied().unwrap_or(text.len());
    let head = &text[..head_end];
    let mut id: Option<Option<GroupId>> = None;
    let mut gtype: Option<GroupType> = None;
    let mut method: Option<SelectionMethod> = None;
    let mut param: u64 = 0;
    let mut fields: Vec<HashField> = Vec::new();
    let mut cmd_bucket: Option<CommandBucket> = None;
    for t in lex(head, 0)? {
        let tok = t.whole(head, 0);
        let key = t.key.to_ascii_lowercase();
        let need = |what: &str| -> PResult<&str> {
            t.value.filter(|v| !v.is_empty()).ok_or_else(|| {
                perr(
                    format!("{} needs a value ({})", t.key, what),
                    t.key_off,
                    tok,
                )
            })
        };
        match key.as_str() {
            "group_id" => {
                let v = need("a number, or all")?;
                let g = if v.eq_ignore_ascii_case("all") {
                    if command != GroupCommand::Delete {
                        return Err(perr(
                            "group_id=all is only valid for del-groups",
                            t.value_off,
                            v,
                        ));
                    }
                    None
                } else {
                    let n = parse_uint(v).filter(|n| *n <= u128::from(OFPG_MAX)).ok_or_else(
                        || {
                            perr(
                                format!("\"{v}\" is not a valid group id (0 to 4294967040, or all)"),
                                t.value_off,
                                v,
                            )
                        },
                    )?;
                    Some(n as GroupId)
                };
                id = Some(g);
            }
            "type" => {
                let v = need("all, select, indirect or ff")?;
                gtype = Some(match v.to_ascii_lowercase().as_str() {
                    "all" => GroupType::All,
                    "select" => GroupType::Select,
                    "indirect" => GroupType::Indirect,
                    "ff" | "fast_failover" => GroupType::FastFailover,
                    _ => {
                        return Err(perr(
                            format!("\"{v}\" is not a group type (all, select, indirect, ff)"),
                            t.value_off,
                            v,
                        ))
                    }
                });
            }
            "selection_method" => {
                let v = need("hash or dp_hash")?;
                method = Some(match v {
                    "hash" => SelectionMethod::Hash,
                    "dp_hash" => SelectionMethod::DpHash,
                    _ => {
                        return Err(perr(
                            format!("\"{v}\" is not a supported selection_method (hash, dp_hash)"),
                            t.value_off,
                            v,
                        ))
                    }
                });
            }
            "selection_method_param" => {
                let v = need("a number")?;
                param = parse_uint(v)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        perr(
                            format!("\"{v}\" is not a valid selection_method_param (64 bits)"),
                            t.value_off,
                            v,
                        )
                    })?;
            }
            "fields" => {
                let v = need("a field list, fields(ip_src,tcp_dst)")?;
                parse_fields(v, t.value_off, &mut fields)?;
            }
            "command_bucket_id" => {
                let v = need("first, last, all or a bucket id")?;
                cmd_bucket = Some(match v.to_ascii_lowercase().as_str() {
                    "first" => CommandBucket::First,
                    "last" => CommandBucket::Last,
                    "all" => CommandBucket::All,
                    _ => CommandBucket::Id(parse_bucket_id(v, t.value_off)?),
                });
            }
            _ => {
                return Err(perr(
                    format!(
                        "unknown group field \"{}\" (group_id, type, selection_method, selection_method_param, fields, command_bucket_id, bucket)",
                        t.key
                    ),
                    t.key_off,
                    t.key,
                ))
            }
        }
    }

    let mut buckets = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let body_start = s + "bucket=".len();
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let body = text[body_start..end].trim_end_matches([',', ' ', '\t']);
        buckets.push(parse_bucket(body, body_start)?);
    }

    // Per-command requirements (OVS parse_ofp_group_mod_str__'s F_* masks).
    let where_ = |what: &str| perr(what.to_string(), 0, text.get(..head_end).unwrap_or(""));
    let id = match (command, id) {
        (GroupCommand::Delete, None) => None,
        (_, Some(g)) => g,
        (_, None) => return Err(where_("must specify a group_id (group_id=N)")),
    };
    match command {
        GroupCommand::Add | GroupCommand::Modify => {
            if cmd_bucket.is_some() {
                return Err(where_(
                    "command_bucket_id is only valid for insert-buckets and remove-buckets",
                ));
            }
        }
        GroupCommand::InsertBuckets => {
            if buckets.is_empty() {
                return Err(where_("insert-buckets needs at least one bucket=..."));
            }
            if gtype.is_some() || method.is_some() || !fields.is_empty() {
                return Err(where_(
                    "insert-buckets takes group_id, command_bucket_id and buckets only",
                ));
            }
        }
        GroupCommand::RemoveBuckets | GroupCommand::Delete => {
            if !buckets.is_empty() {
                return Err(perr(
                    "buckets are not allowed here",
                    starts.first().copied().unwrap_or(0),
                    "bucket=",
                ));
            }
            if gtype.is_some() || method.is_some() || !fields.is_empty() {
                return Err(where_(
                    "only group_id (and command_bucket_id) are allowed here",
                ));
            }
            if command == GroupCommand::Delete && cmd_bucket.is_some() {
                return Err(where_("command_bucket_id is not valid for del-groups"));
            }
        }
    }
    let group_type = match (command, gtype) {
        (GroupCommand::Add | GroupCommand::Modify, None) => {
            return Err(where_(
                "must specify a group type (type=all, select, indirect or ff)",
            ))
        }
        (_, t) => t.unwrap_or(GroupType::All),
    };
    if (method.is_some() || !fields.is_empty() || param != 0)
        && group_type != GroupType::Select
        && matches!(command, GroupCommand::Add | GroupCommand::Modify)
    {
        return Err(where_(
            "selection_method, selection_method_param and fields are only valid for type=select",
        ));
    }
    if !fields.is_empty() && method != Some(SelectionMethod::Hash) {
        return Err(where_(
            "fields(...) needs selection_method=hash (the default and dp_hash methods hash the 5-tuple)",
        ));
    }
    if method == Some(SelectionMethod::Hash) && fields.is_empty() {
        return Err(where_(
            "selection_method=hash needs the fields to hash: fields(ip_src,ip_dst,tcp_src,tcp_dst)",
        ));
    }
    // Bucket ids: explicit ones are kept; for add/modify an implicit id is
    // the previous bucket's id plus one (0 for the first), for
    // insert-buckets it is chosen against the group's buckets later
    // (marked u32::MAX here).
    if command != GroupCommand::InsertBuckets {
        let mut next = 0u32;
        for b in &mut buckets {
            if b.id == u32::MAX {
                b.id = next;
            }
            next = b.id.saturating_add(1);
        }
    }
    for (i, b) in buckets.iter().enumerate() {
        if b.id != u32::MAX && buckets[..i].iter().any(|o| o.id == b.id) {
            return Err(perr(
                format!("duplicate bucket_id {}", b.id),
                starts.get(i).copied().unwrap_or(0),
                "bucket=",
            ));
        }
    }
    if matches!(command, GroupCommand::Add | GroupCommand::Modify)
        && group_type != GroupType::Select
        && buckets.iter().any(|b| b.weight != 1)
    {
        return Err(where_("bucket weights are only valid for type=select"));
    }
    if matches!(command, GroupCommand::Add | GroupCommand::Modify)
        && group_type == GroupType::Indirect
        && buckets.len() != 1
    {
        return Err(where_("an indirect group has exactly one bucket"));
    }
    Ok(GroupMod {
        command,
        id,
        desc: GroupDesc {
            id: id.unwrap_or(0),
            group_type,
            method: method.unwrap_or(SelectionMethod::Default),
            method_param: param,
            fields,
            buckets,
        },
        command_bucket: cmd_bucket,
    })
}

fn parse_bucket_id(v: &str, off: usize) -> PResult<u32> {
    parse_uint(v)
        .filter(|n| *n <= u128::from(BUCKET_MAX))
        .map(|n| n as u32)
        .ok_or_else(|| {
            perr(
                format!("\"{v}\" is not a valid bucket id (0 to 4294967040)"),
                off,
                v,
            )
        })
}

/// `fields(...)`'s content: names, each optionally `=MASK`.
fn parse_fields(v: &str, base: usize, out: &mut Vec<HashField>) -> PResult<()> {
    for t in lex(v, base)? {
        let field = lookup_field(t.key, t.key_off)?;
        let info = field.info();
        let mask = match t.value {
            None => info.max_value(),
            Some(m) => {
                if !info.maskable {
                    return Err(perr(
                        format!("field {} cannot be masked", info.name),
                        t.value_off,
                        m,
                    ));
                }
                // OVS parse_select_group_field: the value given is the mask.
                let (val, _) = parse_field_value(info, m, t.value_off)?;
                if val == 0 {
                    return Err(perr(
                        format!("{}: a zero mask hashes nothing", info.name),
                        t.value_off,
                        m,
                    ));
                }
                val
            }
        };
        if out.iter().any(|h| h.field == field) {
            return Err(perr(
                format!("{}: duplicate field", t.key),
                t.key_off,
                t.key,
            ));
        }
        out.push(HashField { field, mask });
    }
    if out.is_empty() {
        return Err(perr("fields() is empty", base, v));
    }
    Ok(())
}

/// One bucket's text (after `bucket=`), starting at byte `base` of the input.
fn parse_bucket(body: &str, base: usize) -> PResult<Bucket> {
    let mut b = Bucket {
        id: u32::MAX,
        weight: 1,
        watch_port: None,
        watch_group: None,
        actions: Vec::new(),
        stats: Default::default(),
    };
    let mut actions: Option<(usize, usize)> = None; // (start in body, offset base)
    for t in lex(body, base)? {
        let rel = t.key_off - base;
        let key = t.key.to_ascii_lowercase();
        let value = || {
            t.value.filter(|v| !v.is_empty()).ok_or_else(|| {
                perr(
                    format!("{} needs a value", t.key),
                    t.key_off,
                    t.whole(body, base),
                )
            })
        };
        match key.as_str() {
            "bucket_id" => b.id = parse_bucket_id(value()?, t.value_off)?,
            "weight" => {
                let v = value()?;
                b.weight = parse_uint(v)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        perr(
                            format!("\"{v}\" is not a valid weight (0 to 65535)"),
                            t.value_off,
                            v,
                        )
                    })?;
            }
            "watch_port" => {
                let v = value()?;
                b.watch_port = Some(parse_port(v, t.value_off)?);
            }
            "watch_group" => {
                let v = value()?;
                let g = parse_uint(v)
                    .filter(|n| *n <= u128::from(OFPG_MAX))
                    .ok_or_else(|| {
                        perr(format!("\"{v}\" is not a valid group id"), t.value_off, v)
                    })?;
                b.watch_group = Some(g as GroupId);
            }
            "action" | "actions" => {
                let start = t.value_off - base;
                actions = Some((start, t.value_off));
                break;
            }
            _ => {
                // OVS parse_bucket_str: anything else begins the action list.
                actions = Some((rel, t.key_off));
                break;
            }
        }
    }
    if let Some((start, off)) = actions {
        let text = body.get(start..).unwrap_or("");
        b.actions = if text.trim() == "drop" {
            Vec::new()
        } else {
            crate::flow::parse::parse_bucket_actions(text, off)?
        };
    }
    Ok(b)
}

/// A group as dump-groups prints it (OVS `ofputil_group_desc` format with
/// OpenFlow 1.5's bucket ids): `group_id=1,type=select,selection_method=hash,fields(ip_src,tcp_dst),bucket=bucket_id:0,weight:100,actions=output:1`.
pub fn format_group(g: &GroupDesc) -> String {
    let mut s = format!("group_id={},type={}", g.id, g.group_type.name());
    match g.method {
        SelectionMethod::Default => {}
        SelectionMethod::Hash => s.push_str(",selection_method=hash"),
        SelectionMethod::DpHash => s.push_str(",selection_method=dp_hash"),
    }
    if g.method_param != 0 {
        let _ = write!(s, ",selection_method_param={}", g.method_param);
    }
    if !g.fields.is_empty() {
        s.push_str(",fields(");
        for (i, f) in g.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(crate::flow::format::mf_name(f.field));
            if f.mask != f.field.info().max_value() {
                s.push('=');
                s.push_str(&crate::flow::format::field_value(f.field, f.mask));
            }
        }
        s.push(')');
    }
    for b in &g.buckets {
        let _ = write!(s, ",bucket=bucket_id:{}", b.id);
        if g.group_type == GroupType::Select {
            let _ = write!(s, ",weight:{}", b.weight);
        }
        if let Some(p) = b.watch_port {
            let _ = write!(s, ",watch_port:{}", crate::flow::format::format_port(p));
        }
        if let Some(w) = b.watch_group {
            let _ = write!(s, ",watch_group:{}", w);
        }
        let _ = write!(s, ",actions={}", format_actions(&b.actions));
    }
    s
}
