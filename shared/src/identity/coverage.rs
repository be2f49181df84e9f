//! Coverage: from the gatherers' declared gaps, the windows that NO configured gatherer
//! captured. A gatherer covers a moment of a stream and market unless one of its gaps (for
//! that market, or for every market) contains it; a window is uncovered when every configured
//! gatherer has a gap over it. Pure interval arithmetic on closed millisecond intervals.
//!
//! It must never read a database (the deduplicator loads the gaps), and never report a
//! window as uncovered that any configured gatherer captured. The test oracle keeps its own
//! independent version of this rule: it must not share code with the system it judges.

use std::collections::{BTreeMap, BTreeSet};

/// One declared gap, as production holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub gatherer_id: String,
    pub stream: String,
    /// Empty: every market of the stream.
    pub market: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

/// A window no gatherer covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    pub stream: String,
    /// Empty: every market.
    pub market: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The reasons the gatherers gave, deduplicated.
    pub reasons: Vec<String>,
}

/// Sorted, merged closed intervals.
fn union(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect(x: &[(i64, i64)], y: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() && j < y.len() {
        let a = x[i].0.max(y[j].0);
        let b = x[i].1.min(y[j].1);
        if a <= b {
            out.push((a, b));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The windows within `[from_ms, to_ms]` that none of `gatherers` captured.
///
/// Linear in the gaps (plus each market's share of the all-market ones): the gaps are grouped
/// by stream and market first. An hour of faults over 1,000 markets is ~100,000 gaps, and
/// scanning them all for every market and gatherer took seconds a minute.
pub fn uncovered(
    gaps: &[GapRow],
    gatherers: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Vec<Uncovered> {
    let clip = |v: Vec<(i64, i64)>| -> Vec<(i64, i64)> {
        v.into_iter()
            .filter_map(|(a, b)| {
                let (a, b) = (a.max(from_ms), b.min(to_ms));
                (a <= b).then_some((a, b))
            })
            .collect()
    };
    // Stream, then market (empty: every market), then its rows.
    let mut by: BTreeMap<&str, BTreeMap<&str, Vec<&GapRow>>> = BTreeMap::new();
    for g in gaps {
        by.entry(g.stream.as_str())
            .or_default()
            .entry(g.market.as_str())
            .or_default()
            .push(g);
    }
    let mut out = Vec::new();
    for (stream, markets) in &by {
        let every: &[&GapRow] = markets.get("").map(Vec::as_slice).unwrap_or_default();
        // Per gatherer, its all-market holes, merged (unclipped).
        let every_holes: Vec<Vec<(i64, i64)>> = gatherers
            .iter()
            .map(|g| {
                union(
                    every
                        .iter()
                        .filter(|r| r.gatherer_id == *g)
                        .map(|r| (r.from_ms, r.to_ms))
                        .collect(),
                )
            })
            .collect();
        for (market, own) in markets {
            // The rows that bear on this market: its own and the all-market ones.
            let rows: Vec<&GapRow> = if market.is_empty() {
                own.clone()
            } else {
                own.iter().chain(every.iter()).copied().collect()
            };
            // Per gatherer: its holes for this market (its own plus its all-market ones).
            let mut common: Option<Vec<(i64, i64)>> = None;
            for g in gatherers {
                let holes = union(clip(
                    rows.iter()
                        .filter(|r| r.gatherer_id == *g)
                        .map(|r| (r.from_ms, r.to_ms))
                        .collect(),
                ));
                common = Some(match common {
                    None => holes,
                    Some(c) => intersect(&c, &holes),
                });
            }
            for (a, b) in common.unwrap_or_default() {
                // An all-market window shows once, under the empty market.
                if !market.is_empty()
                    && !gatherers.is_empty()
                    && every_holes
                        .iter()
                        .all(|h| h.iter().any(|&(x, y)| x <= a && b <= y))
                {
                    continue;
                }
                let reasons: BTreeSet<String> = rows
                    .iter()
                    .filter(|r| r.from_ms <= b && a <= r.to_ms)
                    .map(|r| r.reason.clone())
                    .collect();
                out.push(Uncovered {
                    stream: (*stream).to_owned(),
                    market: (*market).to_owned(),
                    from_ms: a,
                    to_ms: b,
                    reasons: reasons.into_iter().collect(),
                });
            }
        }
    }
    out
}

/// Per stream, how many uncovered windows and milliseconds (for a summary line).
pub fn totals(u: &[Uncovered]) -> BTreeMap<String, (usize, i64)> {
    let mut t: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for w in u {
        let e = t.entry(w.stream.clone()).or_default();
        e.0 += 1;
        e.1 += w.to_ms - w.from_ms;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(g: &str, market: &str, a: i64, b: i64) -> GapRow {
        GapRow {
            gatherer_id: g.into(),
            stream: "orderbook_deltas".into(),
            market: market.into(),
            from_ms: a,
            to_ms: b,
            reason: format!("r-{g}"),
        }
    }

    #[test]
    fn a_window_is_uncovered_only_when_every_gatherer_missed_it() {
        let gs = vec!["g1".to_owned(), "g2".to_owned()];
        // g1 missed M over 10..30, g2 over 20..40: only 20..30 is lost.
        let gaps = vec![gap("g1", "M", 10, 30), gap("g2", "M", 20, 40)];
        let u = uncovered(&gaps, &gs, 0, 100);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].market.as_str(), u[0].from_ms, u[0].to_ms),
            ("M", 20, 30)
        );
        assert_eq!(u[0].reasons, vec!["r-g1".to_owned(), "r-g2".to_owned()]);
        // A third gatherer with no gap covers everything.
        let gs3 = vec!["g1".to_owned(), "g2".to_owned(), "g3".to_owned()];
        assert!(uncovered(&gaps, &gs3, 0, 100).is_empty());
    }

    #[test]
    fn all_market_gaps_combine_with_market_gaps_and_are_clipped() {
        let gs = vec!["g1".to_owned(), "g2".to_owned()];
        let gaps = vec![
            gap("g1", "", 0, 50),
            gap("g2", "M", 40, 60),
            gap("g2", "", 45, 48),
        ];
        let u = uncovered(&gaps, &gs, 42, 100);
        // All markets: g1 0..50 ∩ g2 45..48 → 45..48 reported once, under "".
        // Market M: g1 0..50 ∩ g2 (40..60 ∪ 45..48) → 42..50, which is more than 45..48.
        let got: Vec<(&str, i64, i64)> = u
            .iter()
            .map(|w| (w.market.as_str(), w.from_ms, w.to_ms))
            .collect();
        assert_eq!(got, vec![("", 45, 48), ("M", 42, 50)]);
        assert_eq!(totals(&u)["orderbook_deltas"], (2, 3 + 8));
    }

    #[test]
    fn interval_algebra() {
        assert_eq!(union(vec![(5, 7), (1, 3), (2, 4)]), vec![(1, 4), (5, 7)]);
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(5, 10), (20, 25)]
        );
    }

    /// The rule as first written (every gap scanned for every market and gatherer): the
    /// grouped version must say exactly the same.
    fn naive(gaps: &[GapRow], gatherers: &[String], from_ms: i64, to_ms: i64) -> Vec<Uncovered> {
        let clip = |v: Vec<(i64, i64)>| -> Vec<(i64, i64)> {
            v.into_iter()
                .filter_map(|(a, b)| {
                    let (a, b) = (a.max(from_ms), b.min(to_ms));
                    (a <= b).then_some((a, b))
                })
                .collect()
        };
        let streams: BTreeSet<&str> = gaps.iter().map(|g| g.stream.as_str()).collect();
        let mut out = Vec::new();
        for stream in streams {
            let of: Vec<&GapRow> = gaps.iter().filter(|g| g.stream == stream).collect();
            let markets: BTreeSet<&str> = of.iter().map(|g| g.market.as_str()).collect();
            for market in markets {
                let mut common: Option<Vec<(i64, i64)>> = None;
                for g in gatherers {
                    let holes = union(clip(
                        of.iter()
                            .filter(|r| {
                                r.gatherer_id == *g && (r.market == market || r.market.is_empty())
                            })
                            .map(|r| (r.from_ms, r.to_ms))
                            .collect(),
                    ));
                    common = Some(match common {
                        None => holes,
                        Some(c) => intersect(&c, &holes),
                    });
                }
                for (a, b) in common.unwrap_or_default() {
                    let every = gatherers.iter().all(|g| {
                        union(
                            of.iter()
                                .filter(|r| r.gatherer_id == *g && r.market.is_empty())
                                .map(|r| (r.from_ms, r.to_ms))
                                .collect(),
                        )
                        .iter()
                        .any(|&(x, y)| x <= a && b <= y)
                    });
                    if !market.is_empty() && every {
                        continue;
                    }
                    let reasons: BTreeSet<String> = of
                        .iter()
                        .filter(|r| {
                            (r.market == market || r.market.is_empty())
                                && r.from_ms <= b
                                && a <= r.to_ms
                        })
                        .map(|r| r.reason.clone())
                        .collect();
                    out.push(Uncovered {
                        stream: stream.to_owned(),
                        market: market.to_owned(),
                        from_ms: a,
                        to_ms: b,
                        reasons: reasons.into_iter().collect(),
                    });
                }
            }
        }
        out
    }

    #[test]
    fn grouped_and_naive_agree_on_random_gaps() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let gs: Vec<String> = ["g1", "g2", "g3"].iter().map(|s| (*s).to_owned()).collect();
        let mut windows = 0;
        for _ in 0..300 {
            let gaps: Vec<GapRow> = (0..next(40))
                .map(|_| {
                    let a = next(1_000) as i64;
                    GapRow {
                        gatherer_id: gs[next(3) as usize].clone(),
                        stream: ["trades", "tickers"][next(2) as usize].to_owned(),
                        market: ["", "A", "B", "C"][next(4) as usize].to_owned(),
                        from_ms: a,
                        to_ms: a + next(300) as i64,
                        reason: format!("r{}", next(3)),
                    }
                })
                .collect();
            let (from, to) = (next(200) as i64, 800 + next(400) as i64);
            for n in 1..=3 {
                let want = naive(&gaps, &gs[..n], from, to);
                windows += want.len();
                assert_eq!(uncovered(&gaps, &gs[..n], from, to), want, "{gaps:?}");
            }
        }
        // The cases are not all empty.
        assert!(windows > 300, "{windows} windows");
    }
}
