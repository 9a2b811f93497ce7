//! Flow tables: OpenFlow 1.3 flow-mod semantics as OVS implements them,
//! with literal examples an operator would type.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switch::flow::{Action, Field, Flow, FlowKey, FlowSpec, Match};
use switch::pipeline::table::{FlowMod, FlowModCommand, FlowModError, Pipeline, ReplaceDiff, Rule};

fn m(fields: &[(Field, u128)]) -> Match {
    let mut x = Match::CATCHALL;
    for &(f, v) in fields {
        x.set_exact(f, v);
    }
    x
}

fn ip_dst(last: u128) -> Match {
    m(&[(Field::EthType, 0x0800), (Field::IpDst, 0x0a00_0000 | last)])
}

fn arp() -> Match {
    m(&[(Field::EthType, 0x0806)])
}

fn ip() -> Match {
    m(&[(Field::EthType, 0x0800)])
}

fn spec(table: Option<u8>, priority: u16, matches: Match, actions: Vec<Action>) -> FlowSpec {
    FlowSpec {
        table,
        priority,
        matches,
        actions,
        ..FlowSpec::default()
    }
}

fn fm(command: FlowModCommand, spec: FlowSpec) -> FlowMod {
    FlowMod { command, spec }
}

fn add(table: u8, priority: u16, matches: Match, actions: Vec<Action>, cookie: u64) -> FlowMod {
    fm(
        FlowModCommand::Add,
        FlowSpec {
            cookie,
            ..spec(Some(table), priority, matches, actions)
        },
    )
}

fn out(p: u32) -> Vec<Action> {
    vec![Action::Output(p)]
}

fn all() -> FlowSpec {
    FlowSpec::default()
}

/// (table, priority, actions) of every rule, in dump order.
fn dump(p: &Pipeline) -> Vec<(u8, u16, Vec<Action>)> {
    p.select(&all(), false)
        .iter()
        .map(|r| (r.flow.table, r.flow.priority, r.flow.actions.clone()))
        .collect()
}

/// Pointer identity of every rule: proves a rollback put back the very same rules.
fn identity(p: &Pipeline) -> Vec<*const Rule> {
    p.select(&all(), false)
        .iter()
        .map(|r| Arc::as_ptr(r))
        .collect()
}

fn base() -> Pipeline {
    let mut p = Pipeline::new();
    p.apply(&[
        add(0, 10, ip_dst(1), out(1), 0x1),
        add(0, 20, ip_dst(2), out(2), 0x2),
        add(0, 10, arp(), out(2), 0x11),
        add(1, 5, ip(), out(3), 0x1),
    ])
    .unwrap();
    p
}

fn rule(p: &Pipeline, table: u8, priority: u16, matches: Match) -> &Arc<Rule> {
    let r = p.select(&spec(Some(table), priority, matches, vec![]), true);
    assert_eq!(r.len(), 1, "no rule table={table} priority={priority}");
    r[0]
}

#[test]
fn add_replaces_same_match_and_priority_carrying_counters() {
    let mut p = base();
    let old = Arc::clone(rule(&p, 0, 10, ip_dst(1)));
    old.stats.add(3, 300, 50);
    let o = p.apply(&[add(0, 10, ip_dst(1), out(7), 0x99)]).unwrap();
    assert_eq!((o.added, o.replaced), (1, 1));
    assert_eq!(p.n_rules(), 4);
    let new = rule(&p, 0, 10, ip_dst(1));
    assert_eq!(new.flow.actions, out(7));
    assert_eq!(new.flow.cookie, 0x99);
    // OpenFlow 1.3 add without reset_counts: counters carried over, duration restarts.
    assert_eq!(new.stats.n_packets.load(Ordering::Relaxed), 3);
    assert_eq!(new.stats.n_bytes.load(Ordering::Relaxed), 300);
    assert_eq!(new.stats.last_used_ms.load(Ordering::Relaxed), 0);
    assert!(new.installed >= old.installed);
    assert!(!Arc::ptr_eq(&new.stats, &old.stats));
    // Another priority is another flow.
    let o = p.apply(&[add(0, 11, ip_dst(1), out(8), 0)]).unwrap();
    assert_eq!((o.added, o.replaced), (1, 0));
    assert_eq!(p.n_rules(), 5);
}

#[test]
fn add_without_table_goes_to_table_0_and_255_is_rejected() {
    let mut p = Pipeline::new();
    p.apply(&[fm(FlowModCommand::Add, spec(None, 1, ip(), out(1)))])
        .unwrap();
    assert_eq!(p.table_ids_in_use(), vec![0]);
    let err = p
        .apply(&[fm(FlowModCommand::Add, spec(Some(255), 1, ip(), out(1)))])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::TableOutOfRange {
            index: 0,
            table: 255
        }
    );
    assert_eq!(err.index(), 0);
    assert!(err.to_string().contains("table 255 out of range"), "{err}");
}

#[test]
fn modify_loose_rewrites_covered_flows_keeping_counters_cookie_timeouts() {
    let mut p = Pipeline::new();
    p.apply(&[
        fm(
            FlowModCommand::Add,
            FlowSpec {
                idle_timeout: 30,
                hard_timeout: 60,
                cookie: 0x5,
                ..spec(Some(0), 10, ip_dst(1), out(1))
            },
        ),
        add(0, 20, ip_dst(2), out(2), 0x2),
        add(0, 10, arp(), out(2), 0x11),
    ])
    .unwrap();
    let before = Arc::clone(rule(&p, 0, 10, ip_dst(1)));
    before.stats.add(4, 400, 10);
    // mod-flows ip,actions=output:9 (no table: every table)
    let o = p
        .apply(&[fm(FlowModCommand::Modify, spec(None, 1, ip(), out(9)))])
        .unwrap();
    assert_eq!(o.modified, 2);
    let after = rule(&p, 0, 10, ip_dst(1));
    assert_eq!(after.flow.actions, out(9));
    assert!(Arc::ptr_eq(&after.stats, &before.stats), "counters kept");
    assert_eq!(after.stats.n_packets.load(Ordering::Relaxed), 4);
    assert_eq!(after.installed, before.installed, "duration kept");
    assert_eq!(
        (
            after.flow.cookie,
            after.flow.idle_timeout,
            after.flow.hard_timeout
        ),
        (0x5, 30, 60)
    );
    assert_eq!(rule(&p, 0, 20, ip_dst(2)).flow.actions, out(9));
    assert_eq!(
        rule(&p, 0, 10, arp()).flow.actions,
        out(2),
        "arp is not covered by ip"
    );
}

#[test]
fn modify_selects_by_cookie_mask() {
    let mut p = base();
    // mod-flows cookie=0x1/0xf,actions=output:8 : cookies 0x1 and 0x11 match, 0x2 not.
    let o = p
        .apply(&[fm(
            FlowModCommand::Modify,
            FlowSpec {
                cookie: 0x1,
                cookie_mask: 0xf,
                ..spec(None, 0, Match::CATCHALL, out(8))
            },
        )])
        .unwrap();
    assert_eq!(o.modified, 3);
    assert_eq!(rule(&p, 0, 20, ip_dst(2)).flow.actions, out(2));
    assert_eq!(rule(&p, 0, 10, arp()).flow.actions, out(8));
    assert_eq!(rule(&p, 1, 5, ip()).flow.actions, out(8));
    // cookie_mask all ones: exactly 0x11.
    let o = p
        .apply(&[fm(
            FlowModCommand::Modify,
            FlowSpec {
                cookie: 0x11,
                cookie_mask: u64::MAX,
                ..spec(None, 0, Match::CATCHALL, out(6))
            },
        )])
        .unwrap();
    assert_eq!(o.modified, 1);
    assert_eq!(rule(&p, 0, 10, arp()).flow.actions, out(6));
}

#[test]
fn modify_that_matches_nothing_adds_nothing() {
    let mut p = base();
    let o = p
        .apply(&[fm(
            FlowModCommand::Modify,
            spec(Some(0), 1, m(&[(Field::EthType, 0x86dd)]), out(1)),
        )])
        .unwrap();
    assert_eq!(o, Default::default());
    assert_eq!(p.n_rules(), 4);
    let o = p
        .apply(&[fm(
            FlowModCommand::ModifyStrict,
            spec(Some(0), 99, ip_dst(1), out(1)),
        )])
        .unwrap();
    assert_eq!(o.modified, 0);
    assert_eq!(p.n_rules(), 4);
}

#[test]
fn modify_strict_needs_exact_match_and_priority() {
    let mut p = base();
    // ip covers ip_dst(1) but strict wants this very match.
    let o = p
        .apply(&[fm(
            FlowModCommand::ModifyStrict,
            spec(None, 10, ip(), out(9)),
        )])
        .unwrap();
    assert_eq!(o.modified, 0);
    let o = p
        .apply(&[fm(
            FlowModCommand::ModifyStrict,
            spec(None, 10, ip_dst(1), out(9)),
        )])
        .unwrap();
    assert_eq!(o.modified, 1);
    assert_eq!(rule(&p, 0, 10, ip_dst(1)).flow.actions, out(9));
    assert_eq!(rule(&p, 0, 20, ip_dst(2)).flow.actions, out(2));
}

#[test]
fn delete_loose_vs_strict() {
    let mut p = base();
    // del-flows --strict table=0,priority=10,ip : no flow has exactly that match.
    let o = p
        .apply(&[fm(
            FlowModCommand::DeleteStrict,
            spec(Some(0), 10, ip(), vec![]),
        )])
        .unwrap();
    assert_eq!(o.deleted, 0);
    // del-flows table=0,ip : both ip flows of table 0, not arp, not table 1.
    let o = p
        .apply(&[fm(FlowModCommand::Delete, spec(Some(0), 0, ip(), vec![]))])
        .unwrap();
    assert_eq!(o.deleted, 2);
    assert_eq!(
        dump(&p),
        vec![(0, 10, out(2)), (1, 5, out(3))],
        "arp and table 1 remain"
    );
    // del-flows --strict priority=5,ip (no table: all tables)
    let o = p
        .apply(&[fm(
            FlowModCommand::DeleteStrict,
            spec(None, 5, ip(), vec![]),
        )])
        .unwrap();
    assert_eq!(o.deleted, 1);
    assert_eq!(dump(&p), vec![(0, 10, out(2))]);
}

#[test]
fn delete_without_table_empties_every_table() {
    let mut p = base();
    let o = p.apply(&[fm(FlowModCommand::Delete, all())]).unwrap();
    assert_eq!(o.deleted, 4);
    assert_eq!(p.n_rules(), 0);
    assert!(p.table_ids_in_use().is_empty());
    // Table 255 (OFPTT_ALL) also means every table for delete.
    let mut p = base();
    let o = p
        .apply(&[fm(
            FlowModCommand::Delete,
            FlowSpec {
                table: Some(255),
                ..all()
            },
        )])
        .unwrap();
    assert_eq!(o.deleted, 4);
}

#[test]
fn delete_by_out_port_and_cookie() {
    let mut p = base();
    // del-flows out_port=2 : flows with output:2 (ip_dst(2) and arp).
    let o = p
        .apply(&[fm(
            FlowModCommand::Delete,
            FlowSpec {
                out_port: Some(2),
                ..all()
            },
        )])
        .unwrap();
    assert_eq!(o.deleted, 2);
    assert_eq!(dump(&p), vec![(0, 10, out(1)), (1, 5, out(3))]);
    // del-flows cookie=0x1/-1,table=1
    let o = p
        .apply(&[fm(
            FlowModCommand::Delete,
            FlowSpec {
                table: Some(1),
                cookie: 1,
                cookie_mask: u64::MAX,
                ..all()
            },
        )])
        .unwrap();
    assert_eq!(o.deleted, 1);
    assert_eq!(dump(&p), vec![(0, 10, out(1))]);
    // Strict delete honours out_port too.
    let o = p
        .apply(&[fm(
            FlowModCommand::DeleteStrict,
            FlowSpec {
                out_port: Some(5),
                ..spec(Some(0), 10, ip_dst(1), vec![])
            },
        )])
        .unwrap();
    assert_eq!(o.deleted, 0);
}

#[test]
fn goto_table_is_validated() {
    let mut p = Pipeline::new();
    let cases = [
        (
            add(3, 1, ip(), vec![Action::GotoTable(3)], 0),
            FlowModError::GotoTableNotForward {
                index: 0,
                table: 3,
                target: 3,
            },
        ),
        (
            add(3, 1, ip(), vec![Action::GotoTable(1)], 0),
            FlowModError::GotoTableNotForward {
                index: 0,
                table: 3,
                target: 1,
            },
        ),
        (
            add(3, 1, ip(), vec![Action::GotoTable(255)], 0),
            FlowModError::GotoTableOutOfRange {
                index: 0,
                target: 255,
            },
        ),
        (
            add(0, 1, ip(), vec![Action::GotoTable(1), Action::Output(1)], 0),
            FlowModError::GotoTableNotLast { index: 0 },
        ),
    ];
    for (mod_, want) in cases {
        assert_eq!(p.apply(&[mod_]).unwrap_err(), want);
    }
    assert_eq!(p.n_rules(), 0);
    p.apply(&[add(
        3,
        1,
        ip(),
        vec![Action::Output(1), Action::GotoTable(254)],
        0,
    )])
    .unwrap();
    assert_eq!(p.n_rules(), 1);
}

#[test]
fn failed_batch_leaves_the_pipeline_unchanged() {
    let mut p = base();
    let before = identity(&p);
    let dump_before = dump(&p);
    let err = p
        .apply(&[
            add(0, 10, ip_dst(1), out(7), 0), // replaces
            add(2, 1, ip(), out(1), 0),       // new
            fm(FlowModCommand::Modify, spec(None, 0, arp(), out(5))),
            fm(
                FlowModCommand::Delete,
                spec(Some(1), 0, Match::CATCHALL, vec![]),
            ),
            add(4, 1, ip(), vec![Action::GotoTable(2)], 0), // bad
        ])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::GotoTableNotForward {
            index: 4,
            table: 4,
            target: 2
        }
    );
    assert_eq!(identity(&p), before);
    assert_eq!(dump(&p), dump_before);
}

#[test]
fn modify_checks_goto_against_each_selected_flow_table() {
    let mut p = base();
    p.apply(&[add(3, 1, ip_dst(1), out(1), 0)]).unwrap();
    let before = dump(&p);
    // ip covers flows in tables 0, 1 and 3; goto_table:2 is backwards for table 3.
    let err = p
        .apply(&[fm(
            FlowModCommand::Modify,
            spec(None, 0, ip(), vec![Action::GotoTable(2)]),
        )])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::GotoTableNotForward {
            index: 0,
            table: 3,
            target: 2
        }
    );
    assert_eq!(dump(&p), before);
}

#[test]
fn rollback_restores_tie_order_of_equal_priority_flows() {
    let mut p = Pipeline::new();
    p.apply(&[add(0, 7, ip_dst(1), out(1), 0), add(0, 7, ip(), out(2), 0)])
        .unwrap();
    let mut k = FlowKey::ZERO;
    k.dl_type = 0x0800;
    k.nw_dst = 0x0a00_0001;
    let mut wc = FlowKey::ZERO;
    assert_eq!(p.lookup(0, &k, &mut wc).unwrap().flow.actions, out(1));
    p.apply(&[
        fm(
            FlowModCommand::DeleteStrict,
            spec(Some(0), 7, ip_dst(1), vec![]),
        ),
        add(9, 1, ip(), vec![Action::GotoTable(0)], 0),
    ])
    .unwrap_err();
    assert_eq!(p.lookup(0, &k, &mut wc).unwrap().flow.actions, out(1));
}

#[test]
fn expiry_by_hard_and_idle_timeouts() {
    let mut p = Pipeline::new();
    let with_to = |prio: u16, idle: u16, hard: u16| {
        fm(
            FlowModCommand::Add,
            FlowSpec {
                idle_timeout: idle,
                hard_timeout: hard,
                ..spec(Some(0), prio, ip(), out(1))
            },
        )
    };
    p.apply(&[
        with_to(1, 0, 10),  // hard 10 s
        with_to(2, 5, 0),   // idle 5 s, used at 4 s
        with_to(3, 5, 0),   // idle 5 s, never used
        with_to(4, 0, 0),   // permanent
        with_to(5, 20, 30), // used at 29 s: hard still wins at 30 s
    ])
    .unwrap();
    let t0 = rule(&p, 0, 1, ip()).installed;
    rule(&p, 0, 2, ip()).stats.add(1, 64, 4000);
    rule(&p, 0, 5, ip()).stats.add(1, 64, 29_000);
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    // An instant before installation expires nothing.
    assert!(p.expire(t0.checked_sub(s(1)).unwrap_or(t0)).is_empty());
    assert!(
        p.expire(t0 + s(5)).is_empty(),
        "timeouts are strict: now > deadline"
    );
    let gone: Vec<u16> = p
        .expire(t0 + s(5) + ms(1))
        .iter()
        .map(|r| r.flow.priority)
        .collect();
    assert_eq!(gone, vec![3]);
    assert!(p.expire(t0 + s(9)).is_empty());
    let gone: Vec<u16> = p
        .expire(t0 + s(9) + ms(1))
        .iter()
        .map(|r| r.flow.priority)
        .collect();
    assert_eq!(gone, vec![2]);
    let gone: Vec<u16> = p
        .expire(t0 + s(10) + ms(1))
        .iter()
        .map(|r| r.flow.priority)
        .collect();
    assert_eq!(gone, vec![1]);
    let gone: Vec<u16> = p
        .expire(t0 + s(30) + ms(1))
        .iter()
        .map(|r| r.flow.priority)
        .collect();
    assert_eq!(gone, vec![5]);
    assert!(p.expire(t0 + s(100_000)).is_empty());
    assert_eq!(p.n_rules(), 1);
}

#[test]
fn select_orders_by_table_then_priority_and_filters() {
    let mut p = Pipeline::new();
    p.apply(&[
        add(2, 1, ip(), out(1), 0),
        add(0, 5, ip_dst(1), out(1), 0),
        add(1, 100, arp(), out(2), 0),
        add(0, 50, arp(), out(2), 0),
        add(0, 32768, Match::CATCHALL, vec![], 0),
    ])
    .unwrap();
    let order: Vec<(u8, u16)> = p
        .select(&all(), false)
        .iter()
        .map(|r| (r.flow.table, r.flow.priority))
        .collect();
    assert_eq!(order, vec![(0, 32768), (0, 50), (0, 5), (1, 100), (2, 1)]);
    // dump-flows table=0,ip
    let sel: Vec<(u8, u16)> = p
        .select(&spec(Some(0), 0, ip(), vec![]), false)
        .iter()
        .map(|r| (r.flow.table, r.flow.priority))
        .collect();
    assert_eq!(sel, vec![(0, 5)]);
    // dump-flows out_port=2
    assert_eq!(
        p.select(
            &FlowSpec {
                out_port: Some(2),
                ..all()
            },
            false
        )
        .len(),
        2
    );
    // strict select needs the priority too.
    assert_eq!(p.select(&spec(None, 50, arp(), vec![]), true).len(), 1);
    assert_eq!(p.select(&spec(None, 51, arp(), vec![]), true).len(), 0);
}

#[test]
fn table_queries_and_snapshots() {
    let p = base();
    assert_eq!(p.n_rules(), 4);
    assert_eq!(p.table_ids_in_use(), vec![0, 1]);
    assert_eq!(
        (p.n_active(0), p.n_active(1), p.n_active(2), p.n_active(255)),
        (3, 1, 0, 0)
    );
    let rows = p.table_summaries();
    assert_eq!(rows.len(), 255);
    assert_eq!((rows[0].id, rows[0].active), (0, 3));
    // A published clone shares table counters but not later flow-mods.
    let snap = p.clone();
    p.table(0).stats.lookups.fetch_add(7, Ordering::Relaxed);
    assert_eq!(snap.table_summaries()[0].lookups, 7);
    let mut p = p;
    p.apply(&[fm(FlowModCommand::Delete, all())]).unwrap();
    assert_eq!(snap.n_rules(), 4);
    assert_eq!(p.n_rules(), 0);
    let mut wc = FlowKey::ZERO;
    assert!(snap.lookup(255, &FlowKey::ZERO, &mut wc).is_none());
}

fn flow(table: u8, priority: u16, matches: Match, actions: Vec<Action>, cookie: u64) -> Flow {
    Flow {
        table,
        priority,
        matches,
        actions,
        cookie,
        ..Flow::default()
    }
}

#[test]
fn replace_flows_keeps_identical_flows_and_reports_the_diff() {
    let mut p = base();
    let kept = Arc::clone(rule(&p, 0, 10, ip_dst(1)));
    kept.stats.add(2, 200, 1);
    let changed = Arc::clone(rule(&p, 0, 20, ip_dst(2)));
    changed.stats.add(5, 500, 1);
    let new_set = vec![
        flow(0, 10, ip_dst(1), out(1), 0x1), // identical
        flow(0, 20, ip_dst(2), out(4), 0x2), // other actions
        flow(0, 10, arp(), out(2), 0x12),    // other cookie
        flow(5, 1, ip(), out(1), 0),         // new
                                             // table 1 flow missing: removed
    ];
    let diff = p.replace_flows(new_set.clone()).unwrap();
    assert_eq!(
        diff,
        ReplaceDiff {
            added: vec![new_set[3].clone()],
            modified: vec![new_set[1].clone(), new_set[2].clone()],
            removed: vec![flow(1, 5, ip(), out(3), 0x1)],
            unchanged: 1,
        }
    );
    let still = rule(&p, 0, 10, ip_dst(1));
    assert!(
        Arc::ptr_eq(still, &kept),
        "identical flow kept as is, counters and duration"
    );
    let redone = rule(&p, 0, 20, ip_dst(2));
    assert_eq!(redone.flow.actions, out(4));
    assert_eq!(
        redone.stats.n_packets.load(Ordering::Relaxed),
        5,
        "re-added: counters carried"
    );
    assert_eq!(p.n_rules(), 4);
    // Same set again: nothing to do.
    let again = p.replace_flows(new_set).unwrap();
    assert!(again.is_empty());
    assert_eq!(again.unchanged, 4);
}

#[test]
fn replace_flows_is_atomic_on_bad_input() {
    let mut p = base();
    let before = identity(&p);
    let err = p
        .replace_flows(vec![
            flow(0, 1, ip(), out(1), 0),
            flow(2, 1, ip(), vec![Action::GotoTable(1)], 0),
        ])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::GotoTableNotForward {
            index: 1,
            table: 2,
            target: 1
        }
    );
    assert_eq!(identity(&p), before);
    let err = p
        .replace_flows(vec![flow(255, 1, ip(), out(1), 0)])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::TableOutOfRange {
            index: 0,
            table: 255
        }
    );
    assert_eq!(identity(&p), before);
}

#[test]
fn replace_flows_later_duplicate_wins() {
    let mut p = Pipeline::new();
    let diff = p
        .replace_flows(vec![
            flow(0, 1, ip(), out(1), 0),
            flow(0, 1, ip(), out(2), 0),
        ])
        .unwrap();
    assert_eq!(diff.added.len(), 1);
    assert_eq!(dump(&p), vec![(0, 1, out(2))]);
}

#[test]
fn modify_instructions_are_checked_even_when_nothing_is_selected() {
    let mut p = Pipeline::new();
    let err = p
        .apply(&[fm(
            FlowModCommand::Modify,
            spec(Some(2), 0, ip(), vec![Action::GotoTable(1)]),
        )])
        .unwrap_err();
    assert_eq!(
        err,
        FlowModError::GotoTableNotForward {
            index: 0,
            table: 2,
            target: 1
        }
    );
    let err = p
        .apply(&[fm(
            FlowModCommand::ModifyStrict,
            spec(None, 0, ip(), vec![Action::GotoTable(3), Action::Output(1)]),
        )])
        .unwrap_err();
    assert_eq!(err, FlowModError::GotoTableNotLast { index: 0 });
}

#[test]
fn add_flow_never_panics_on_table_255() {
    let mut p = Pipeline::new();
    p.add_flow(flow(255, 1, ip(), out(1), 0));
    assert_eq!(p.n_rules(), 0);
    assert_eq!(p.table(255).classifier.len(), 0);
    p.add_flow(flow(254, 1, ip(), out(1), 0));
    assert_eq!(p.table_ids_in_use(), vec![254]);
}
