//! `Match`: a value/mask pair over [`FlowKey`], the left-hand side of a flow.

use super::field::Field;
use super::key::{FlowKey, FlowMask};

/// A flow match: a packet key `k` matches when `k & mask == value`.
/// `value` is always stored pre-masked, so two equal matches compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Match {
    value: FlowKey,
    mask: FlowMask,
}

impl Default for Match {
    fn default() -> Self {
        Match::CATCHALL
    }
}

impl Match {
    /// The match that matches every packet.
    pub const CATCHALL: Match = Match {
        value: FlowKey::ZERO,
        mask: FlowKey::ZERO,
    };

    /// Build from a value and a mask (the value is masked here).
    pub fn new(value: FlowKey, mask: FlowMask) -> Match {
        Match {
            value: value.masked(&mask),
            mask,
        }
    }

    /// The exact match on every bit of `key`.
    pub fn exact(key: &FlowKey) -> Match {
        Match {
            value: *key,
            mask: FlowKey::all_ones(),
        }
    }

    /// The (masked) value.
    #[inline]
    pub fn value(&self) -> &FlowKey {
        &self.value
    }

    /// The mask.
    #[inline]
    pub fn mask(&self) -> &FlowMask {
        &self.mask
    }

    /// True when `key` matches.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        let kw = key.words();
        let mw = self.mask.words();
        let vw = self.value.words();
        (0..kw.len()).all(|i| kw[i] & mw[i] == vw[i])
    }

    /// Add `field == value` under `mask` (bits of the field outside `mask` stay as they were).
    pub fn set_masked(&mut self, field: Field, value: u128, mask: u128) {
        let info = field.info();
        let m = mask & info.max_value();
        let old_m = info.get(&self.mask);
        let old_v = info.get(&self.value);
        info.set(&mut self.mask, old_m | m);
        info.set(&mut self.value, (old_v & !m) | (value & m));
    }

    /// Add `field == value` exactly.
    pub fn set_exact(&mut self, field: Field, value: u128) {
        self.set_masked(field, value, field.info().max_value());
    }

    /// The field's `(value, mask)` if any bit of it is matched.
    pub fn get(&self, field: Field) -> Option<(u128, u128)> {
        let info = field.info();
        let m = info.get(&self.mask);
        (m != 0).then(|| (info.get(&self.value), m))
    }

    /// True when every packet this match accepts is also accepted by `self`
    /// (`self` is the same or more general): OpenFlow's non-strict
    /// "covers" relation used by non-strict modify, delete and dump.
    pub fn covers(&self, other: &Match) -> bool {
        let sm = self.mask.words();
        let om = other.mask.words();
        let sv = self.value.words();
        let ov = other.value.words();
        (0..sm.len()).all(|i| sm[i] & !om[i] == 0 && ov[i] & sm[i] == sv[i])
    }

    /// True when some packet could match both.
    pub fn overlaps(&self, other: &Match) -> bool {
        let sm = self.mask.words();
        let om = other.mask.words();
        let sv = self.value.words();
        let ov = other.value.words();
        (0..sm.len()).all(|i| (sv[i] ^ ov[i]) & sm[i] & om[i] == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_and_matches() {
        let mut wide = Match::CATCHALL;
        wide.set_exact(Field::EthType, 0x0800);
        wide.set_masked(Field::IpDst, 0x0a00_0000, 0xff00_0000);
        let mut narrow = wide;
        narrow.set_masked(Field::IpDst, 0x0a01_0000, 0xffff_0000);
        assert!(wide.covers(&narrow));
        assert!(!narrow.covers(&wide));
        assert!(wide.overlaps(&narrow));
        let mut k = FlowKey::ZERO;
        k.dl_type = 0x0800;
        k.nw_dst = 0x0a01_0203;
        assert!(narrow.matches(&k) && wide.matches(&k));
        k.nw_dst = 0x0a02_0203;
        assert!(!narrow.matches(&k) && wide.matches(&k));
    }
}
