//! One market's order book: resting bids on each side, price -> size.
//!
//! Both sides are bids (a YES bid at X is a NO ask at 1 - X). Sizes are exact
//! [`Quantity`]s; a level that reaches zero is removed and a change that would drive a level
//! negative is refused, so the book the simulator publishes is always consistent: it must never
//! publish a negative level.

use std::collections::BTreeMap;

use kalshi_shared::wire::Side;
use kalshi_shared::{Price, Quantity};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub yes: BTreeMap<Price, Quantity>,
    pub no: BTreeMap<Price, Quantity>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("delta would make the {side:?} level at {price} negative")]
    Negative { side: Side, price: Price },
    #[error("size overflow")]
    Overflow,
}

impl Book {
    pub fn side(&self, side: Side) -> &BTreeMap<Price, Quantity> {
        match side {
            Side::Yes => &self.yes,
            Side::No => &self.no,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<Price, Quantity> {
        match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        }
    }

    /// Applies a signed change; removes the level at exactly zero.
    pub fn apply(&mut self, side: Side, price: Price, delta: Quantity) -> Result<(), BookError> {
        let levels = self.side_mut(side);
        let current = levels.get(&price).copied().unwrap_or(Quantity::ZERO);
        let next = current.checked_add(delta).ok_or(BookError::Overflow)?;
        if next.is_negative() {
            return Err(BookError::Negative { side, price });
        }
        if next.is_zero() {
            levels.remove(&price);
        } else {
            levels.insert(price, next);
        }
        Ok(())
    }

    /// The best (highest) bid of a side.
    pub fn best(&self, side: Side) -> Option<(Price, Quantity)> {
        self.side(side).iter().next_back().map(|(p, q)| (*p, *q))
    }

    /// Levels ascending by price (Kalshi's order: best bid last).
    pub fn levels(&self, side: Side) -> Vec<(Price, Quantity)> {
        self.side(side).iter().map(|(p, q)| (*p, *q)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.yes.is_empty() && self.no.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn applies_and_removes_levels_exactly() {
        let mut b = Book::default();
        b.apply(Side::Yes, p("0.40"), q("10.50")).unwrap();
        b.apply(Side::Yes, p("0.42"), q("1")).unwrap();
        assert_eq!(b.best(Side::Yes), Some((p("0.42"), q("1"))));
        b.apply(Side::Yes, p("0.42"), q("-1")).unwrap();
        assert_eq!(b.best(Side::Yes), Some((p("0.40"), q("10.50"))));
        assert_eq!(
            b.apply(Side::Yes, p("0.40"), q("-10.51")),
            Err(BookError::Negative {
                side: Side::Yes,
                price: p("0.40")
            })
        );
        assert_eq!(b.levels(Side::Yes), vec![(p("0.40"), q("10.50"))]);
        assert_eq!(
            b.apply(Side::No, p("0.10"), q("-1")),
            Err(BookError::Negative {
                side: Side::No,
                price: p("0.10")
            })
        );
        assert!(b.no.is_empty());
    }
}
