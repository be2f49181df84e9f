//! End-to-end latency of a running stack, from the deduplicator's
//! `dedup_end_to_end_seconds{stream}` histogram (exchange timestamp to production's COMMIT
//! having returned): two scrapes some time apart, and the quantiles of what was committed in
//! between, estimated as Prometheus's `histogram_quantile` does (linear within a bucket).
//!
//! It must never report a quantile beyond the histogram's buckets as if it were measured: one
//! that falls in the `+Inf` bucket is reported as "over" the largest bound.

use std::collections::BTreeMap;

const NAME: &str = "dedup_end_to_end_seconds_bucket";

/// Cumulative bucket counts per stream: `(upper bound, count)`, ascending, `+Inf` last.
pub type Buckets = BTreeMap<String, Vec<(f64, f64)>>;

/// The histogram's buckets on a `/metrics` page.
pub fn parse(page: &str) -> Buckets {
    let mut out: Buckets = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(NAME) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let labels = labels.trim_start_matches('{').trim_end_matches('}');
        let mut stream = None;
        let mut le = None;
        for pair in labels.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let v = v.trim_matches('"');
                match k {
                    "stream" => stream = Some(v.to_owned()),
                    "le" => {
                        le = if v == "+Inf" {
                            Some(f64::INFINITY)
                        } else {
                            v.parse().ok()
                        }
                    }
                    _ => {}
                }
            }
        }
        if let (Some(s), Some(le), Ok(n)) = (stream, le, value.trim().parse::<f64>()) {
            out.entry(s).or_default().push((le, n));
        }
    }
    for b in out.values_mut() {
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// What was observed between two scrapes.
pub fn delta(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(s, b)| {
            let old = before.get(s);
            let d = b
                .iter()
                .map(|(le, n)| {
                    let was = old
                        .and_then(|o| o.iter().find(|(l, _)| l == le))
                        .map_or(0.0, |x| x.1);
                    (*le, (n - was).max(0.0))
                })
                .collect();
            (s.clone(), d)
        })
        .collect()
}

/// A quantile of one stream's buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantile {
    /// Seconds, interpolated within its bucket.
    Within(f64),
    /// Beyond the largest finite bound (seconds).
    Over(f64),
    /// Nothing observed.
    Empty,
}

impl std::fmt::Display for Quantile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quantile::Within(s) => write!(f, "{:.0} ms", s * 1000.0),
            Quantile::Over(s) => write!(f, "> {s} s"),
            Quantile::Empty => f.write_str("-"),
        }
    }
}

/// The `q` quantile (0..=1) of cumulative `buckets`.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Quantile {
    let Some(&(_, total)) = buckets.last() else {
        return Quantile::Empty;
    };
    if total <= 0.0 {
        return Quantile::Empty;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Quantile::Over(prev.0);
            }
            let width = n - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return Quantile::Within(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    Quantile::Over(prev.0)
}

/// Count, p50, p90 and p99 of one stream.
pub fn summary(buckets: &[(f64, f64)]) -> (u64, Quantile, Quantile, Quantile) {
    let count = buckets.last().map_or(0.0, |b| b.1) as u64;
    (
        count,
        quantile(0.5, buckets),
        quantile(0.9, buckets),
        quantile(0.99, buckets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE dedup_end_to_end_seconds histogram
dedup_end_to_end_seconds_bucket{stream=\"trades\",le=\"0.05\"} 50
dedup_end_to_end_seconds_bucket{stream=\"trades\",le=\"0.1\"} 90
dedup_end_to_end_seconds_bucket{stream=\"trades\",le=\"0.25\"} 100
dedup_end_to_end_seconds_bucket{stream=\"trades\",le=\"+Inf\"} 100
dedup_end_to_end_seconds_sum{stream=\"trades\"} 6
dedup_end_to_end_seconds_count{stream=\"trades\"} 100
dedup_end_to_end_seconds_bucket{stream=\"tickers\",le=\"0.05\"} 0
dedup_end_to_end_seconds_bucket{stream=\"tickers\",le=\"+Inf\"} 4
";

    #[test]
    fn quantiles_interpolate_within_buckets_as_prometheus_does() {
        let b = parse(PAGE);
        let t = &b["trades"];
        assert_eq!(t.len(), 4);
        // Rank 50 is the top of the first bucket; rank 99 is 9/10 into (0.1, 0.25].
        assert_eq!(quantile(0.5, t), Quantile::Within(0.05));
        let Quantile::Within(p99) = quantile(0.99, t) else {
            panic!()
        };
        assert!((p99 - 0.235).abs() < 1e-9, "{p99}");
        // Everything beyond the last finite bound is said to be over it, never invented.
        assert_eq!(quantile(0.5, &b["tickers"]), Quantile::Over(0.05));
        assert_eq!(summary(t).0, 100);
        assert_eq!(quantile(0.5, &[]), Quantile::Empty);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let before = parse(PAGE);
        let later = PAGE.replace("} 100\n", "} 200\n");
        let d = delta(&before, &parse(&later));
        // 100 more observations, all in (0.1, 0.25].
        let t = &d["trades"];
        assert_eq!(t[0], (0.05, 0.0));
        assert_eq!(t[2], (0.25, 100.0));
        assert_eq!(summary(t).0, 100);
        let Quantile::Within(p50) = quantile(0.5, t) else {
            panic!()
        };
        assert!((p50 - 0.175).abs() < 1e-9, "{p50}");
    }
}
