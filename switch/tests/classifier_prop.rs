//! Tuple-space-search classifier vs the linear-scan reference, and the
//! megaflow (`wc`) contract of `Classifier::lookup`.

use proptest::prelude::*;
use switch::flow::key::FlowKey;
use switch::flow::Match;
use switch::pipeline::classifier::{Classifier, LinearClassifier};

/// The fields the generated rules and keys use, each with a small value
/// domain so that random rules overlap and random keys hit them.
#[derive(Clone, Copy, Debug)]
enum F {
    InPort,
    DlType,
    Vlan,
    NwSrc,
    NwDst,
    NwProto,
    TpDst,
    Reg0,
    Metadata,
    DlDst,
}

const FIELDS: [F; 10] = [
    F::InPort,
    F::DlType,
    F::Vlan,
    F::NwSrc,
    F::NwDst,
    F::NwProto,
    F::TpDst,
    F::Reg0,
    F::Metadata,
    F::DlDst,
];

fn domain(f: F) -> &'static [u64] {
    match f {
        F::InPort => &[1, 2, 3, 4],
        F::DlType => &[0x0800, 0x0806, 0x86dd],
        F::Vlan => &[0, 0x1005, 0x100a, 0x3005],
        F::NwSrc => &[0x0a00_0001, 0x0a00_0002, 0x0a00_0101, 0x0a01_0001],
        F::NwDst => &[0x0a00_0001, 0x0a00_0002, 0x0a00_0101, 0xc0a8_0001],
        F::NwProto => &[1, 6, 17],
        F::TpDst => &[22, 53, 80, 443],
        F::Reg0 => &[0, 1, 2],
        F::Metadata => &[0, 1, 0x100],
        F::DlDst => &[0x0000_0000_0001, 0x0000_0000_0002, 0xffff_ffff_ffff],
    }
}

fn width_mask(f: F) -> u64 {
    match f {
        F::InPort | F::NwSrc | F::NwDst | F::Reg0 => u64::from(u32::MAX),
        F::DlType | F::Vlan | F::TpDst => u64::from(u16::MAX),
        F::NwProto => u64::from(u8::MAX),
        F::Metadata => u64::MAX,
        F::DlDst => 0xffff_ffff_ffff,
    }
}

#[allow(clippy::cast_possible_truncation)]
fn set(k: &mut FlowKey, f: F, v: u64) {
    match f {
        F::InPort => k.in_port = v as u32,
        F::DlType => k.dl_type = v as u16,
        F::Vlan => k.vlan_tci = v as u16,
        F::NwSrc => k.nw_src = v as u32,
        F::NwDst => k.nw_dst = v as u32,
        F::NwProto => k.nw_proto = v as u8,
        F::TpDst => k.tp_dst = v as u16,
        F::Reg0 => k.regs[0] = v as u32,
        F::Metadata => k.metadata = v,
        F::DlDst => k.dl_dst.copy_from_slice(&v.to_be_bytes()[2..]),
    }
}

/// Realistic masks: (field, mask) lists as real pipelines use them.
fn realistic_masks() -> Vec<Vec<(F, u64)>> {
    vec![
        vec![],
        vec![(F::InPort, u64::MAX)],
        vec![(F::DlDst, u64::MAX)],
        vec![(F::InPort, u64::MAX), (F::Vlan, 0x1fff)],
        vec![(F::DlType, u64::MAX), (F::NwDst, 0xffff_ff00)],
        vec![(F::DlType, u64::MAX), (F::NwDst, 0xffff_ffff)],
        vec![
            (F::DlType, u64::MAX),
            (F::NwSrc, 0xffff_0000),
            (F::NwDst, 0xffff_ffff),
        ],
        vec![
            (F::DlType, u64::MAX),
            (F::NwProto, u64::MAX),
            (F::TpDst, u64::MAX),
        ],
        vec![(F::Reg0, u64::MAX), (F::Metadata, u64::MAX)],
        vec![(F::InPort, u64::MAX), (F::DlType, u64::MAX)],
    ]
}

fn build_mask(fields: &[(F, u64)]) -> FlowKey {
    let mut m = FlowKey::ZERO;
    for &(f, bits) in fields {
        set(&mut m, f, bits & width_mask(f));
    }
    m
}

fn key_from(choices: &[u8]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    for (i, f) in FIELDS.iter().enumerate() {
        let d = domain(*f);
        set(&mut k, *f, d[usize::from(choices[i]) % d.len()]);
    }
    k
}

fn arb_mask() -> impl Strategy<Value = FlowKey> {
    let realistic = realistic_masks();
    let n = realistic.len();
    prop_oneof![
        3 => (0..n).prop_map(move |i| build_mask(&realistic[i])),
        // Random masks: a random subset of fields, each with random bits.
        1 => proptest::collection::vec((any::<bool>(), any::<u64>()), FIELDS.len()).prop_map(|v| {
            let fs: Vec<(F, u64)> = FIELDS
                .iter()
                .zip(v)
                .filter(|(_, (on, _))| *on)
                .map(|(f, (_, bits))| (*f, bits | 1))
                .take(3)
                .collect();
            build_mask(&fs)
        }),
    ]
}

fn arb_choices() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), FIELDS.len())
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Box<FlowKey>, Vec<u8>, u16),
    Remove(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (arb_mask(), arb_choices(), prop::sample::select(vec![0u16, 1, 2, 5, 10, 100, 32768, 65535]))
            .prop_map(|(m, c, p)| Op::Insert(Box::new(m), c, p)),
        1 => any::<usize>().prop_map(Op::Remove),
    ]
}

#[derive(Clone, Debug)]
enum KeyGen {
    /// A random key from the domains.
    Random(Vec<u8>),
    /// An installed rule's value with some fields re-drawn (hits rules).
    NearRule(usize, Vec<u8>, u16),
}

fn arb_key() -> impl Strategy<Value = KeyGen> {
    prop_oneof![
        1 => arb_choices().prop_map(KeyGen::Random),
        2 => (any::<usize>(), arb_choices(), any::<u16>()).prop_map(|(i, c, f)| KeyGen::NearRule(i, c, f)),
    ]
}

fn make_key(g: &KeyGen, rules: &[(Match, u16)]) -> FlowKey {
    match g {
        KeyGen::Random(c) => key_from(c),
        KeyGen::NearRule(i, c, flip) => {
            if rules.is_empty() {
                return key_from(c);
            }
            let (m, _) = rules[i % rules.len()];
            let base = key_from(c);
            // Start from the rule's value on its mask, fill the rest from `base`,
            // then re-draw the fields whose bit is set in `flip`.
            let mut k = *m.value();
            for (w, (mw, bw)) in k
                .words_mut()
                .iter_mut()
                .zip(m.mask().words().iter().zip(base.words()))
            {
                *w |= bw & !mw;
            }
            for (j, f) in FIELDS.iter().enumerate() {
                if flip & (1 << j) != 0 && flip & 0x8000 != 0 {
                    let d = domain(*f);
                    set(&mut k, *f, d[usize::from(c[j]) % d.len()]);
                }
            }
            k
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn tss_agrees_with_linear_and_keeps_the_wc_contract(
        ops in proptest::collection::vec(arb_op(), 1..60),
        keys in proptest::collection::vec((arb_key(), any::<[u64; 4]>(), arb_choices()), 1..40),
    ) {
        let mut tss: Classifier<u32> = Classifier::new();
        let mut lin: LinearClassifier<u32> = LinearClassifier::new();
        let mut installed: Vec<(Match, u16)> = Vec::new();
        for (id, op) in ops.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            match op {
                Op::Insert(mask, c, p) => {
                    let m = Match::new(key_from(c), **mask);
                    let a = tss.insert(m, *p, id);
                    let b = lin.insert(m, *p, id);
                    prop_assert_eq!(a, b);
                    if a.is_none() {
                        installed.push((m, *p));
                    }
                }
                Op::Remove(i) => {
                    if !installed.is_empty() {
                        let (m, p) = installed.swap_remove(i % installed.len());
                        let a = tss.remove(&m, p);
                        prop_assert!(a.is_some());
                        prop_assert_eq!(a, lin.remove(&m, p));
                        prop_assert_eq!(tss.get(&m, p), None);
                    }
                }
            }
            prop_assert_eq!(tss.len(), lin.len());
        }
        for (m, p) in &installed {
            prop_assert_eq!(tss.get(m, *p), lin.get(m, *p));
        }
        let mut a: Vec<_> = tss.iter().map(|(_, _, v)| *v).collect();
        let mut b: Vec<_> = lin.iter().map(|(_, _, v)| *v).collect();
        a.sort_unstable();
        b.sort_unstable();
        prop_assert_eq!(a, b);

        for (g, noise, c2) in &keys {
            let key = make_key(g, &installed);
            let mut wc = FlowKey::ZERO;
            let got = tss.lookup(&key, &mut wc).map(|(m, p, v)| (*m, p, *v));
            let mut lwc = FlowKey::ZERO;
            let want = lin.lookup(&key, &mut lwc).map(|(m, p, v)| (*m, p, *v));
            // Ties are broken the same way (earliest insert wins), so the
            // exact rule must agree, not only the priority.
            prop_assert_eq!(got, want);
            if let Some((m, _, _)) = got {
                prop_assert!(m.matches(&key));
                // The winner's own mask is always part of the megaflow.
                let mut both = *m.mask();
                both.or_assign(&wc);
                prop_assert_eq!(both, wc);
            }
            // wc contract: keys equal to `key` under wc get the same answer.
            let mut alts = Vec::new();
            let mut rnd = FlowKey::ZERO;
            for (i, w) in rnd.words_mut().iter_mut().enumerate() {
                *w = noise[i % 4].rotate_left(u32::try_from(i).unwrap_or(0) * 7);
            }
            alts.push(rnd);
            alts.push(key_from(c2));
            alts.push(make_key(&KeyGen::NearRule(usize::from(c2[0]), c2.clone(), 0), &installed));
            for other in alts {
                let mut k2 = key;
                for ((w, ow), mw) in k2.words_mut().iter_mut().zip(other.words()).zip(wc.words()) {
                    *w = (*w & mw) | (ow & !mw);
                }
                let mut wc2 = FlowKey::ZERO;
                let got2 = tss.lookup(&k2, &mut wc2).map(|(m, p, v)| (*m, p, *v));
                prop_assert_eq!(got2, got);
                prop_assert_eq!(wc2, wc);
            }
        }
    }
}

fn m_port(port: u32) -> Match {
    let mut k = FlowKey::ZERO;
    k.in_port = port;
    let mut mask = FlowKey::ZERO;
    mask.in_port = u32::MAX;
    Match::new(k, mask)
}

#[test]
fn insert_replaces_same_match_and_priority_only() {
    let mut c = Classifier::new();
    assert_eq!(c.insert(m_port(1), 10, "a"), None);
    assert_eq!(c.insert(m_port(1), 20, "b"), None);
    assert_eq!(c.len(), 2);
    assert_eq!(c.insert(m_port(1), 10, "c"), Some("a"));
    assert_eq!(c.len(), 2);
    assert_eq!(c.get(&m_port(1), 10), Some(&"c"));
    assert_eq!(c.get(&m_port(1), 20), Some(&"b"));
    assert_eq!(c.get(&m_port(1), 30), None);
    assert_eq!(c.get(&m_port(2), 10), None);
}

#[test]
fn remove_and_get_are_strict() {
    let mut c = Classifier::new();
    c.insert(m_port(1), 10, 1);
    c.insert(Match::CATCHALL, 10, 2);
    assert_eq!(c.remove(&m_port(1), 11), None);
    assert_eq!(c.remove(&m_port(2), 10), None);
    assert_eq!(c.remove(&m_port(1), 10), Some(1));
    assert_eq!(c.remove(&m_port(1), 10), None);
    assert_eq!(c.len(), 1);
    assert_eq!(c.get(&Match::CATCHALL, 10), Some(&2));
    assert_eq!(c.remove(&Match::CATCHALL, 10), Some(2));
    assert!(c.is_empty());
    let mut wc = FlowKey::ZERO;
    assert!(c.lookup(&FlowKey::ZERO, &mut wc).is_none());
    assert!(wc.is_zero());
}

#[test]
fn lookup_picks_highest_priority_and_ties_go_to_the_earliest() {
    let mut c = Classifier::new();
    c.insert(Match::CATCHALL, 1, "low");
    c.insert(m_port(1), 5, "port1");
    c.insert(Match::CATCHALL, 5, "wide5");
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    let mut wc = FlowKey::ZERO;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("port1"));
    k.in_port = 2;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("wide5"));
    // Replacing keeps the position: "port1" still wins the tie.
    c.insert(m_port(1), 5, "port1b");
    k.in_port = 1;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("port1b"));
}

#[test]
fn early_stop_leaves_lower_subtables_out_of_wc() {
    let mut c = Classifier::new();
    c.insert(m_port(1), 100, "p1");
    let mut tcp = FlowKey::ZERO;
    tcp.tp_dst = 80;
    let mut tmask = FlowKey::ZERO;
    tmask.tp_dst = u16::MAX;
    c.insert(Match::new(tcp, tmask), 10, "http");
    let mut k = FlowKey::ZERO;
    k.in_port = 1;
    k.tp_dst = 80;
    let mut wc = FlowKey::ZERO;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("p1"));
    assert_eq!(wc.in_port, u32::MAX);
    assert_eq!(wc.tp_dst, 0, "the priority-10 subtable was never probed");
    k.in_port = 2;
    let mut wc = FlowKey::ZERO;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| *r.2), Some("http"));
    assert_eq!((wc.in_port, wc.tp_dst), (u32::MAX, u16::MAX));
}
