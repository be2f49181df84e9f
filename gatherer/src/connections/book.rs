//! A market's book as one connection sees it. Occurrence counting is process-wide, in
//! `kalshi_shared::identity::occurrence`.
//!
//! It must never let a level go negative: `apply` refuses such a delta, and the caller then
//! treats the book as broken until a fresh snapshot.

use std::collections::BTreeMap;

use kalshi_shared::wire::Side;

#[derive(Debug, Default)]
pub struct MarketBook {
    /// A snapshot has arrived in this run and nothing since broke the chain.
    pub valid: bool,
    pub yes: BTreeMap<i64, i64>,
    pub no: BTreeMap<i64, i64>,
    pub last_delta_ts: Option<i64>,
}

impl MarketBook {
    pub fn load(&mut self, yes: &[(i64, i64)], no: &[(i64, i64)]) {
        self.yes = yes.iter().copied().collect();
        self.no = no.iter().copied().collect();
        self.valid = true;
    }

    pub fn invalidate(&mut self) {
        self.valid = false;
        self.yes.clear();
        self.no.clear();
    }

    /// Applies a delta; false if it would make the level negative (the chain is broken).
    pub fn apply(&mut self, side: Side, price: i64, delta: i64) -> bool {
        let levels = match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        };
        let next = levels.get(&price).copied().unwrap_or(0).checked_add(delta);
        match next {
            Some(n) if n > 0 => {
                levels.insert(price, n);
                true
            }
            Some(0) => {
                levels.remove(&price);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_and_detects_negative_levels() {
        let mut b = MarketBook::default();
        b.load(&[(400_000, 1_000)], &[]);
        assert!(b.apply(Side::Yes, 400_000, -400));
        assert_eq!(b.yes[&400_000], 600);
        assert!(b.apply(Side::Yes, 400_000, -600));
        assert!(!b.yes.contains_key(&400_000));
        assert!(
            !b.apply(Side::No, 300_000, -1),
            "a level that does not exist cannot shrink"
        );
    }
}
