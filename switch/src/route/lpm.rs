//! Longest-prefix match for IPv4 and IPv6: a read-only multibit trie with
//! popcount-compressed nodes (the poptrie idea: Asai & Ohara, "Poptrie: A
//! Compressed Trie with Population Count for Fast and Scalable Software IP
//! Routing Table Lookup", SIGCOMM 2015), built whole by the control thread
//! and published immutable.
//!
//! Data enters as a list of prefixes (address, length, value) given to
//! [`Lpm::build`]; it leaves through [`Lpm::lookup`] (the value of the
//! longest prefix containing an address) and [`Lpm::lookup_with_bits`],
//! which also says how many leading address bits decided the answer (the
//! megaflow un-wildcarding, see below). Addresses are `u128` holding the
//! address right-aligned in `width` bits (32 for IPv4, 128 for IPv6).
//!
//! Layout: the first 16 bits index a direct table (DPDK rte_lpm's tbl24
//! idea, smaller), whose entries are either a leaf or a node. A node
//! consumes 6 more bits (fewer at the end of the address): a 64-bit
//! `vector` says which of its 64 slots continue into a child node, and a
//! 64-bit `leafvec` marks where a new run of equal leaves starts among the
//! other slots, so a node stores each distinct leaf once and finds it with
//! one popcount. Prefixes are pushed down to the leaves when the trie is
//! built, so a lookup never backtracks: it reads one direct entry, then one
//! node and one leaf or child per 6 bits. IPv4 needs at most 3 nodes after
//! the direct table, IPv6 at most 19.
//!
//! Un-wildcarding (the megaflow contract): every leaf also records `bits`,
//! the fewest leading address bits that decide this lookup, which is OVS's
//! prefix-tree rule (`lib/classifier.c` `trie_lookup`): walking the binary
//! trie of all prefixes along the address, `bits` is the depth of the
//! deepest trie node on the path, plus one if that node has longer prefixes
//! below it (so a packet that differs in the next bit cannot reach them).
//! Equivalently `bits = max over every prefix P of min(lcp(addr, P) + 1,
//! len(P))` (0 for an empty table), which is what the property test checks
//! against. Every address sharing those bits has the same answer, and no
//! fewer bits would do.
//!
//! Never: allocate, lock or panic in a lookup (all indexing is checked and
//! a broken index reads as "no route"), or change after it is built.

/// The value a lookup returns when no prefix contains the address.
pub const NO_ROUTE: u32 = LEAF_VALUE_MASK;

/// Largest value a prefix may carry (values are 23 bits wide in a leaf).
pub const MAX_VALUE: u32 = LEAF_VALUE_MASK - 1;

/// Bits resolved by the direct table.
const TOP_BITS: u32 = 16;
/// Bits per node (64 slots: one `u64` bitmap).
const STRIDE: u32 = 6;
/// A direct-table entry with this bit set is a node index.
const NODE_FLAG: u32 = 1 << 31;
/// Leaf layout: bits 0..23 the value, bits 23..31 the deciding prefix length.
const LEAF_VALUE_MASK: u32 = (1 << 23) - 1;
const LEAF_BITS_SHIFT: u32 = 23;

/// One prefix to insert: `addr` right-aligned in `width` bits (host bits are
/// ignored), `len` leading bits, `value` at most [`MAX_VALUE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The address (right-aligned in the table's width).
    pub addr: u128,
    /// Prefix length in bits.
    pub len: u8,
    /// What a lookup returns for addresses this prefix decides.
    pub value: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Node {
    /// Slot `i` continues into a child node.
    vector: u64,
    /// Slot `i` (not a child) starts a new run of equal leaves.
    leafvec: u64,
    /// Index of the first leaf of this node in `leaves`.
    base_leaf: u32,
    /// Index of the first child of this node in `nodes`.
    base_child: u32,
    /// Bits this node consumes (6, or fewer at the end of the address).
    stride: u8,
}

/// An immutable longest-prefix-match table (see the module doc).
#[derive(Clone, Debug)]
pub struct Lpm {
    width: u32,
    top: Vec<u32>,
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    len: usize,
}

/// Error from [`Lpm::build`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// A prefix is longer than the address width.
    #[error("prefix length {len} is longer than the address ({width} bits)")]
    TooLong {
        /// The length given.
        len: u8,
        /// The address width.
        width: u32,
    },
    /// A value does not fit in a leaf.
    #[error("route value {0} is too large (at most {MAX_VALUE} routes per table)")]
    ValueTooLarge(u32),
}

/// The first `n` of the `width` bits of `addr`, right-aligned (`n` may be 0).
#[inline(always)]
fn head(addr: u128, width: u32, n: u32) -> u128 {
    if n == 0 {
        0
    } else {
        addr >> (width - n)
    }
}

/// `addr` with every bit after the first `len` of `width` cleared.
pub fn normalise(addr: u128, width: u32, len: u8) -> u128 {
    let l = u32::from(len).min(width);
    if l == 0 {
        0
    } else {
        head(addr, width, width) >> (width - l) << (width - l) & width_mask(width)
    }
}

/// All ones in the low `width` bits.
fn width_mask(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// `k` bits of `addr` starting `depth` bits from the top.
#[inline(always)]
fn chunk(addr: u128, width: u32, depth: u32, k: u32) -> usize {
    let v = (addr >> (width - depth - k)) & ((1u128 << k) - 1);
    // k <= 16, so v < 65536.
    v as usize
}

/// Leaves and child lists of one expanded level.
struct Expanded {
    /// Per slot: packed leaf (value | bits << 23), meaningful for non-child slots.
    leaf: Vec<u32>,
    /// Per slot: the longer prefixes continuing below it (non-empty = a child).
    below: Vec<Vec<Prefix>>,
}

impl Lpm {
    /// An empty table for `width`-bit addresses (32 or 128).
    pub fn empty(width: u32) -> Lpm {
        Lpm::build(width, &[]).unwrap_or(Lpm {
            width,
            top: Vec::new(),
            nodes: Vec::new(),
            leaves: Vec::new(),
            len: 0,
        })
    }

    /// Build the table of `prefixes`. Duplicates (same address bits and
    /// length): the last one wins. Host bits beyond `len` are ignored.
    pub fn build(width: u32, prefixes: &[Prefix]) -> Result<Lpm, LpmError> {
        let width = width.clamp(TOP_BITS, 128);
        // Normalise (host bits cleared), then deduplicate: the last of equal
        // prefixes wins.
        let mut last: std::collections::HashMap<(u8, u128), u32> =
            std::collections::HashMap::with_capacity(prefixes.len());
        for p in prefixes {
            if u32::from(p.len) > width {
                return Err(LpmError::TooLong { len: p.len, width });
            }
            if p.value > MAX_VALUE {
                return Err(LpmError::ValueTooLarge(p.value));
            }
            last.insert((p.len, normalise(p.addr, width, p.len)), p.value);
        }
        let mut dedup: Vec<Prefix> = last
            .into_iter()
            .map(|((len, addr), value)| Prefix { addr, len, value })
            .collect();
        // Ascending length: expansion lets longer prefixes overwrite shorter.
        dedup.sort_unstable_by_key(|p| (p.len, p.addr));
        let len = dedup.len();
        let default = dedup
            .iter()
            .find(|p| p.len == 0)
            .map_or(NO_ROUTE, |p| p.value);
        let cands: Vec<Prefix> = dedup.into_iter().filter(|p| p.len > 0).collect();
        let mut lpm = Lpm {
            width,
            top: Vec::new(),
            nodes: Vec::new(),
            leaves: Vec::new(),
            len,
        };
        let ex = lpm.expand(0, TOP_BITS, &cands, default);
        let mut top = vec![0u32; 1 << TOP_BITS];
        for (s, slot) in top.iter_mut().enumerate() {
            if ex.below[s].is_empty() {
                *slot = ex.leaf[s];
            } else {
                let idx = lpm.new_node();
                let inherited = ex.leaf[s] & LEAF_VALUE_MASK;
                lpm.fill_node(idx, TOP_BITS, &ex.below[s], inherited);
                *slot = NODE_FLAG | idx;
            }
        }
        lpm.top = top;
        Ok(lpm)
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address width in bits.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Bytes of lookup structure (direct table, nodes, leaves).
    pub fn memory(&self) -> usize {
        self.top.len() * 4 + self.nodes.len() * std::mem::size_of::<Node>() + self.leaves.len() * 4
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node::default());
        u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
    }

    /// Expand one level of `k` bits at `depth`: `cands` are the prefixes
    /// longer than `depth` under this level's path, `inherited` the value of
    /// the longest prefix above. Computes every slot's pushed-down leaf, its
    /// deciding bit count, and the prefixes that continue below it.
    fn expand(&self, depth: u32, k: u32, cands: &[Prefix], inherited: u32) -> Expanded {
        let w = self.width;
        let n = 1usize << k;
        let mut val = vec![inherited; n];
        let mut below: Vec<Vec<Prefix>> = vec![Vec::new(); n];
        // exists[j][b]: a trie node at depth+j with bits b (a prefix of
        // length >= depth+j passes there); desc[j][b]: a prefix longer than
        // depth+j passes there.
        let mut exists: Vec<Vec<bool>> = (0..=k).map(|j| vec![false; 1 << j]).collect();
        let mut desc: Vec<Vec<bool>> = (0..=k).map(|j| vec![false; 1 << j]).collect();
        if !cands.is_empty() {
            exists[0][0] = true;
            desc[0][0] = true;
        }
        // cands are sorted by length: longer prefixes overwrite shorter ones.
        for p in cands {
            let plen = u32::from(p.len);
            let rel = plen - depth;
            if rel <= k {
                let c = chunk(p.addr, w, depth, rel);
                let span = 1usize << (k - rel);
                let first = c << (k - rel);
                for v in &mut val[first..first + span] {
                    *v = p.value;
                }
            } else {
                below[chunk(p.addr, w, depth, k)].push(*p);
            }
            for j in 1..=rel.min(k) {
                let b = chunk(p.addr, w, depth, j);
                exists[j as usize][b] = true;
                if rel > j {
                    desc[j as usize][b] = true;
                }
            }
        }
        let mut leaf = vec![0u32; n];
        for s in 0..n {
            let mut bits = 0;
            for j in (0..=k).rev() {
                let b = s >> (k - j);
                if exists[j as usize][b] {
                    bits = depth + j + u32::from(desc[j as usize][b]);
                    break;
                }
            }
            // With no candidate at all, the longest prefix above decides
            // and the caller accounts for its bits (only at the top: a
            // node always has candidates).
            leaf[s] = (val[s] & LEAF_VALUE_MASK) | (bits.min(w) << LEAF_BITS_SHIFT);
        }
        Expanded { leaf, below }
    }

    /// Fill node `idx` at `depth` from `cands` (all longer than `depth`).
    fn fill_node(&mut self, idx: u32, depth: u32, cands: &[Prefix], inherited: u32) {
        let k = STRIDE.min(self.width - depth);
        let ex = self.expand(depth, k, cands, inherited);
        let mut vector = 0u64;
        let mut leafvec = 0u64;
        let base_leaf = u32::try_from(self.leaves.len()).unwrap_or(u32::MAX);
        let mut prev: Option<u32> = None;
        for s in 0..(1usize << k) {
            if !ex.below[s].is_empty() {
                vector |= 1 << s;
            } else if prev != Some(ex.leaf[s]) {
                leafvec |= 1 << s;
                self.leaves.push(ex.leaf[s]);
                prev = Some(ex.leaf[s]);
            }
        }
        let n_children = vector.count_ones();
        let base_child = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        for _ in 0..n_children {
            self.new_node();
        }
        if let Some(node) = self.nodes.get_mut(idx as usize) {
            *node = Node {
                vector,
                leafvec,
                base_leaf,
                base_child,
                stride: k as u8,
            };
        }
        let mut c = base_child;
        for s in 0..(1usize << k) {
            if !ex.below[s].is_empty() {
                let inh = ex.leaf[s] & LEAF_VALUE_MASK;
                self.fill_node(c, depth + k, &ex.below[s], inh);
                c += 1;
            }
        }
    }

    /// The packed leaf for `addr`.
    #[inline(always)]
    fn leaf(&self, addr: u128) -> u32 {
        let w = self.width;
        let Some(&e) = self.top.get(chunk(addr, w, 0, TOP_BITS)) else {
            return NO_ROUTE;
        };
        if e & NODE_FLAG == 0 {
            return e;
        }
        let mut idx = (e & !NODE_FLAG) as usize;
        let mut depth = TOP_BITS;
        loop {
            let Some(n) = self.nodes.get(idx) else {
                return NO_ROUTE;
            };
            let k = u32::from(n.stride);
            let v = chunk(addr, w, depth, k);
            let upto = u64::MAX >> (63 - v);
            if n.vector >> v & 1 != 0 {
                idx = n.base_child as usize + (n.vector & upto).count_ones() as usize - 1;
                depth += k;
                continue;
            }
            let i = n.base_leaf as usize + (n.leafvec & upto).count_ones() as usize - 1;
            return self.leaves.get(i).copied().unwrap_or(NO_ROUTE);
        }
    }

    /// The value of the longest prefix containing `addr`, or [`NO_ROUTE`].
    #[inline]
    pub fn lookup(&self, addr: u128) -> u32 {
        self.leaf(addr) & LEAF_VALUE_MASK
    }

    /// [`Lpm::lookup`], plus the number of leading address bits that decided
    /// the answer (see the module doc): un-wildcarding exactly those bits in
    /// a megaflow is sound and minimal.
    #[inline]
    pub fn lookup_with_bits(&self, addr: u128) -> (u32, u32) {
        let l = self.leaf(addr);
        (l & LEAF_VALUE_MASK, l >> LEAF_BITS_SHIFT)
    }
}

/// Reference answers by scanning every prefix (tests and the bench baseline):
/// the value of the longest prefix containing `addr` and the deciding bits.
pub fn naive_lookup(width: u32, prefixes: &[Prefix], addr: u128) -> (u32, u32) {
    let mut best: Option<(u8, u32)> = None;
    let mut bits = 0u32;
    for p in prefixes {
        let plen = u32::from(p.len);
        let lcp = {
            let x = (head(addr, width, width) ^ head(p.addr, width, width)) << (128 - width);
            x.leading_zeros().min(width)
        };
        bits = bits.max((lcp + 1).min(plen));
        if lcp >= plen && best.is_none_or(|(l, _)| p.len >= l) {
            best = Some((p.len, p.value));
        }
    }
    (best.map_or(NO_ROUTE, |(_, v)| v), bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: [u8; 4]) -> u128 {
        u128::from(u32::from_be_bytes(a))
    }

    #[test]
    fn basic_ipv4() {
        let ps = [
            Prefix {
                addr: v4([10, 0, 0, 0]),
                len: 8,
                value: 1,
            },
            Prefix {
                addr: v4([10, 1, 0, 0]),
                len: 16,
                value: 2,
            },
            Prefix {
                addr: v4([10, 1, 2, 0]),
                len: 24,
                value: 3,
            },
            Prefix {
                addr: v4([10, 1, 2, 128]),
                len: 25,
                value: 4,
            },
            Prefix {
                addr: v4([10, 1, 2, 3]),
                len: 32,
                value: 5,
            },
        ];
        let t = Lpm::build(32, &ps).unwrap();
        assert_eq!(t.lookup(v4([10, 9, 9, 9])), 1);
        assert_eq!(t.lookup(v4([10, 1, 9, 9])), 2);
        assert_eq!(t.lookup(v4([10, 1, 2, 9])), 3);
        assert_eq!(t.lookup(v4([10, 1, 2, 200])), 4);
        assert_eq!(t.lookup(v4([10, 1, 2, 3])), 5);
        assert_eq!(t.lookup(v4([11, 0, 0, 0])), NO_ROUTE);
        // 10.9.9.9: diverges from 10.1/16 at bit 12 (0000_1001 vs 0000_0001):
        // 13 bits decide it.
        assert_eq!(t.lookup_with_bits(v4([10, 9, 9, 9])), (1, 13));
        assert_eq!(t.lookup_with_bits(v4([10, 1, 2, 3])).1, 32);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn default_route_only_needs_no_bits() {
        let t = Lpm::build(
            32,
            &[Prefix {
                addr: 0,
                len: 0,
                value: 7,
            }],
        )
        .unwrap();
        assert_eq!(t.lookup_with_bits(v4([1, 2, 3, 4])), (7, 0));
        let e = Lpm::empty(128);
        assert_eq!(e.lookup_with_bits(1), (NO_ROUTE, 0));
    }

    #[test]
    fn duplicates_last_wins_and_bad_input_is_an_error() {
        let t = Lpm::build(
            32,
            &[
                Prefix {
                    addr: v4([10, 0, 0, 1]),
                    len: 8,
                    value: 1,
                },
                Prefix {
                    addr: v4([10, 0, 0, 0]),
                    len: 8,
                    value: 2,
                },
            ],
        )
        .unwrap();
        assert_eq!(t.lookup(v4([10, 5, 5, 5])), 2);
        assert_eq!(t.len(), 1);
        assert!(matches!(
            Lpm::build(
                32,
                &[Prefix {
                    addr: 0,
                    len: 33,
                    value: 1
                }]
            ),
            Err(LpmError::TooLong { .. })
        ));
        assert!(Lpm::build(
            32,
            &[Prefix {
                addr: 0,
                len: 3,
                value: NO_ROUTE
            }]
        )
        .is_err());
    }

    fn prefixes(width: u32, max: usize) -> impl Strategy<Value = Vec<Prefix>> {
        // Addresses drawn from a few clusters so prefixes nest and share
        // paths, which is where tries go wrong.
        let p = (any::<u128>(), 0u8..=(width as u8), 0u8..4, 0u32..1000).prop_map(
            move |(a, len, cluster, value)| {
                let base: u128 = match cluster {
                    0 => 0x0a00_0000_0000_0000_0000_0000_0000_0000,
                    1 => 0x0a01_0200_0000_0000_0000_0000_0000_0000,
                    2 => 0xfd00_0000_0000_0000_0000_0000_0000_0000,
                    _ => a,
                };
                let full = if cluster < 3 {
                    base ^ (a >> (16 + (a as u32 % 64)))
                } else {
                    a
                };
                let addr = if width == 32 { full >> 96 } else { full };
                Prefix { addr, len, value }
            },
        );
        proptest::collection::vec(p, 0..max)
    }

    fn addrs(width: u32, ps: Vec<Prefix>) -> impl Strategy<Value = (Vec<Prefix>, Vec<u128>)> {
        let n = ps.len();
        let ps2 = ps.clone();
        (
            Just(ps),
            proptest::collection::vec((any::<u128>(), 0..n.max(1), any::<u8>()), 1..64).prop_map(
                move |v| {
                    v.into_iter()
                        .map(|(r, i, flip)| {
                            let keep = if width == 128 {
                                u128::MAX
                            } else {
                                (1 << width) - 1
                            };
                            match ps2.get(i) {
                                // Near a prefix: its address with a random bit flipped.
                                Some(p) if flip % 3 != 0 => {
                                    (p.addr ^ (1u128 << (u32::from(flip) % width)) ^ (r & 1)) & keep
                                }
                                Some(p) if flip % 3 == 0 => p.addr & keep,
                                _ => r & keep,
                            }
                        })
                        .collect()
                },
            ),
        )
    }

    fn check(width: u32, ps: &[Prefix], addrs: &[u128]) -> Result<(), TestCaseError> {
        let t = Lpm::build(width, ps).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The reference sees the normalised, deduplicated set (last wins).
        let mut norm: Vec<Prefix> = Vec::new();
        for p in ps {
            let l = u32::from(p.len);
            let addr = if l == 0 {
                0
            } else {
                head(p.addr, width, l) << (width - l)
            };
            norm.retain(|q| !(q.len == p.len && q.addr == addr));
            norm.push(Prefix { addr, ..*p });
        }
        for &a in addrs {
            prop_assert_eq!(
                t.lookup_with_bits(a),
                naive_lookup(width, &norm, a),
                "addr {:#x}",
                a
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn ipv4_matches_linear_scan((ps, addrs) in prefixes(32, 200).prop_flat_map(|p| addrs(32, p))) {
            check(32, &ps, &addrs)?;
        }

        #[test]
        fn ipv6_matches_linear_scan((ps, addrs) in prefixes(128, 120).prop_flat_map(|p| addrs(128, p))) {
            check(128, &ps, &addrs)?;
        }
    }
}
