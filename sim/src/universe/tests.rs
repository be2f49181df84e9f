use super::*;

#[test]
fn dates_are_civil() {
    // Day 9497 since 2000-01-01 is 2026-01-01.
    assert_eq!(UniverseGen::date_code(9497).0, "26JAN01");
    assert_eq!(UniverseGen::date_code(9497 + 325).0, "26NOV22");
    assert_eq!(UniverseGen::date_code(0).0, "00JAN01");
    assert_eq!(UniverseGen::date_code(9497).1, 1_767_225_600);
}

#[test]
fn grids_cover_their_ranges() {
    let mut rng = Rng::new(3);
    for _ in 0..50 {
        let (structure, ranges, ticks) = price_grid(&mut rng, false);
        match structure {
            "linear_cent" => assert_eq!(ticks.len(), 99),
            "deci_cent" => assert_eq!(ticks.len(), 999),
            "tapered_deci_cent" => assert_eq!(ticks.len(), 100 + 81 + 100 - 2),
            other => panic!("unexpected {other}"),
        }
        assert!(!ranges.is_empty());
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
        assert!(ticks[0].raw() > 0 && ticks[ticks.len() - 1].raw() < 1_000_000);
    }
}

#[test]
fn same_seed_same_catalogue() {
    let make = || {
        let mut g = UniverseGen::new(Rng::new(9), 9, 1_700_000_000_000, 12, false);
        let series = g.make_series();
        let mut tickers = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let (e, ms) = g.make_event(i, s, 3, 1_700_000_000_000, i);
            tickers.push(e.ticker);
            tickers.extend(ms.into_iter().map(|m| m.ticker));
        }
        tickers
    };
    let a = make();
    assert_eq!(a, make());
    let unique: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(unique.len(), a.len(), "tickers are unique");
    assert!(a.iter().any(|t| t.starts_with("KXHIGHNY-")));
    assert!(a.iter().any(|t| t.starts_with("KXHIGHNY2-")), "{a:?}");
}
