//! `kalshi-stack audit`: production against the simulator's ground truth, per stream:
//! expected, present, missing, duplicated, and of the missing ones how many lie where every
//! gatherer declared a gap (reported, not silent) or before any gatherer subscribed to the
//! market (carried by its first snapshot). Anything else missing, any duplicate and anything
//! the exchange never published is a failure.

use std::collections::HashMap;

use anyhow::Context as _;
use deduplicator::coverage::{GapRow, Uncovered, uncovered};
use kalshi_shared::{Price, Quantity};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row as _;

#[derive(Debug, Default, Clone, Serialize)]
pub struct StreamAudit {
    pub stream: String,
    pub expected: u64,
    pub present: u64,
    pub missing: u64,
    /// Missing, inside a window every gatherer declared as a gap.
    pub missing_declared: u64,
    /// Missing, published before any gatherer held a snapshot of the market.
    pub missing_before_subscription: u64,
    /// Missing and neither: silent loss.
    pub missing_silent: u64,
    pub duplicated: u64,
    /// In production, never published.
    pub unexpected: u64,
}

impl StreamAudit {
    pub fn ok(&self) -> bool {
        self.missing_silent == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Audit {
    pub streams: Vec<StreamAudit>,
    pub uncovered_windows: usize,
    pub quarantined: u64,
    pub ok: bool,
}

impl Audit {
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<18} {:>9} {:>9} {:>8} {:>9} {:>11} {:>7} {:>6} {:>6}\n",
            "stream",
            "expected",
            "present",
            "missing",
            "declared",
            "before-sub",
            "silent",
            "dups",
            "extra"
        );
        for a in &self.streams {
            s.push_str(&format!(
                "{:<18} {:>9} {:>9} {:>8} {:>9} {:>11} {:>7} {:>6} {:>6}\n",
                a.stream,
                a.expected,
                a.present,
                a.missing,
                a.missing_declared,
                a.missing_before_subscription,
                a.missing_silent,
                a.duplicated,
                a.unexpected
            ));
        }
        s.push_str(&format!(
            "windows no gatherer covered: {}; quarantined rows: {}\nAUDIT {}\n",
            self.uncovered_windows,
            self.quarantined,
            if self.ok {
                "PASSED: no silent loss, no duplicate"
            } else {
                "FAILED"
            }
        ));
        s
    }
}

async fn truth(control: &str, types: &str) -> anyhow::Result<Vec<Value>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page: Value = client
            .get(format!(
                "{control}/truth?after={after}&limit=100000&types={types}"
            ))
            .send()
            .await?
            .json()
            .await?;
        let next = page["next"].as_u64().context("truth page without next")?;
        if let Some(r) = page["records"].as_array() {
            out.extend(r.iter().cloned());
        }
        if next >= page["head"].as_u64().unwrap_or(0) || next == after {
            return Ok(out);
        }
        after = next;
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Compares a multiset of keys; missing ones are classified by `(market, ts_ms)`.
fn compare<K: std::hash::Hash + Eq + Clone>(
    name: &str,
    truth: Vec<(K, String, i64)>,
    prod: Vec<K>,
    declared: &dyn Fn(&str, i64) -> bool,
    before_sub: &dyn Fn(&str, i64) -> bool,
) -> StreamAudit {
    let mut a = StreamAudit {
        stream: name.into(),
        expected: truth.len() as u64,
        ..Default::default()
    };
    let mut have: HashMap<K, i64> = HashMap::new();
    for k in prod {
        *have.entry(k).or_default() += 1;
    }
    let mut want: HashMap<K, i64> = HashMap::new();
    for (k, _, _) in &truth {
        *want.entry(k.clone()).or_default() += 1;
    }
    for (k, n) in &have {
        match want.get(k) {
            None => a.unexpected += *n as u64,
            Some(w) if n > w => a.duplicated += (n - w) as u64,
            _ => {}
        }
    }
    for (k, market, ts) in truth {
        match have.get_mut(&k) {
            Some(n) if *n > 0 => {
                *n -= 1;
                a.present += 1;
            }
            _ => {
                a.missing += 1;
                if before_sub(&market, ts) {
                    a.missing_before_subscription += 1;
                } else if declared(&market, ts) {
                    a.missing_declared += 1;
                } else {
                    a.missing_silent += 1;
                }
            }
        }
    }
    a
}

/// Audits production (`production_url`, read directly) against the simulator at `sim_control`;
/// `gatherers` are the configured gatherer ids (a window is declared only if all declared it).
pub async fn run(
    sim_control: &str,
    production_url: &str,
    gatherers: &[String],
) -> anyhow::Result<Audit> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(production_url)
        .await
        .context("connect to production")?;
    let gaps: Vec<GapRow> =
        sqlx::query("SELECT gatherer_id, stream, market_ticker, from_ms, to_ms, reason FROM gaps")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| GapRow {
                gatherer_id: r.get(0),
                stream: r.get(1),
                market: r.get(2),
                from_ms: r.get(3),
                to_ms: r.get(4),
                reason: r.get(5),
            })
            .collect();
    let windows: Vec<Uncovered> = uncovered(&gaps, gatherers, i64::MIN / 2, i64::MAX / 2);
    let declared_in = |stream: &'static str| {
        let w: Vec<Uncovered> = windows
            .iter()
            .filter(|u| u.stream == stream)
            .cloned()
            .collect();
        move |market: &str, ts: i64| {
            w.iter().any(|u| {
                (u.market.is_empty() || u.market == market) && u.from_ms <= ts && ts <= u.to_ms
            })
        }
    };
    // The first snapshot of each market in production (any gatherer).
    let first_snap: HashMap<String, i64> =
        sqlx::query("SELECT market_ticker, min(received_ms) FROM orderbook_snapshots GROUP BY 1")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    r.get::<Option<i64>, _>(1).unwrap_or(i64::MAX),
                )
            })
            .collect();
    let before_sub = |market: &str, ts: i64| first_snap.get(market).is_none_or(|first| ts < *first);
    let never = |_: &str, _: i64| false;
    let mut out = Audit::default();

    // Trades: by id; a trade needs no subscription (backfill recovers it), so none is "before".
    let t_truth: Vec<(String, String, i64)> = truth(sim_control, "trade")
        .await?
        .iter()
        .map(|r| {
            (
                s(&r["msg"]["trade_id"]),
                s(&r["msg"]["market_ticker"]),
                r["msg"]["ts_ms"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let t_prod: Vec<String> = sqlx::query_scalar("SELECT trade_id FROM trades")
        .fetch_all(&pool)
        .await?;
    out.streams.push(compare(
        "trades",
        t_truth,
        t_prod,
        &declared_in("trades"),
        &never,
    ));

    // Deltas: the multiset of (market, ts_ms, side, price, delta).
    type DKey = (String, i64, i16, i64, i64);
    let d_truth: Vec<(DKey, String, i64)> = truth(sim_control, "orderbook_delta")
        .await?
        .iter()
        .filter_map(|r| {
            let m = &r["msg"];
            let side = if m["side"] == "yes" { 1 } else { 2 };
            let price = Price::parse(m["price_dollars"].as_str()?).ok()?.raw();
            let delta = Quantity::parse(m["delta_fp"].as_str()?).ok()?.raw();
            let ts = m["ts_ms"].as_i64()?;
            Some((
                (s(&m["market_ticker"]), ts, side, price, delta),
                s(&m["market_ticker"]),
                ts,
            ))
        })
        .collect();
    let d_prod: Vec<DKey> =
        sqlx::query("SELECT market_ticker, ts_ms, side, price, delta FROM orderbook_deltas")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
    out.streams.push(compare(
        "orderbook_deltas",
        d_truth,
        d_prod,
        &declared_in("orderbook_deltas"),
        &before_sub,
    ));

    // Tickers: the multiset of (market, ts_ms).
    let k_truth: Vec<((String, i64), String, i64)> = truth(sim_control, "ticker")
        .await?
        .iter()
        .map(|r| {
            let m = &r["msg"];
            let ts = m["ts_ms"].as_i64().unwrap_or(0);
            ((s(&m["market_ticker"]), ts), s(&m["market_ticker"]), ts)
        })
        .collect();
    let k_prod: Vec<(String, i64)> = sqlx::query("SELECT market_ticker, ts_ms FROM tickers")
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    out.streams.push(compare(
        "tickers",
        k_truth,
        k_prod,
        &declared_in("tickers"),
        &before_sub,
    ));

    // Market lifecycle: the set of (market, event type); identical repeats are one record.
    let mut l_truth: Vec<((String, String), String, i64)> =
        truth(sim_control, "market_lifecycle_v2")
            .await?
            .iter()
            .map(|r| {
                let m = &r["msg"];
                (
                    (s(&m["market_ticker"]), s(&m["event_type"])),
                    s(&m["market_ticker"]),
                    r["ts_ms"].as_i64().unwrap_or(0),
                )
            })
            .collect();
    l_truth.sort();
    l_truth.dedup_by(|a, b| a.0 == b.0);
    let l_prod: Vec<(String, String)> =
        sqlx::query("SELECT DISTINCT ticker, event_type FROM lifecycle WHERE kind = 'market'")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    out.streams.push(compare(
        "lifecycle",
        l_truth,
        l_prod,
        &declared_in("lifecycle"),
        &never,
    ));

    out.uncovered_windows = windows.len();
    out.quarantined = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM quarantine")
        .fetch_one(&pool)
        .await? as u64;
    out.ok = out.streams.iter().all(StreamAudit::ok) && out.quarantined == 0;
    pool.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_records_are_classified() {
        let truth = vec![
            ("a".to_owned(), "M".to_owned(), 10),
            ("b".to_owned(), "M".to_owned(), 20),
            ("c".to_owned(), "M".to_owned(), 30),
            ("d".to_owned(), "M".to_owned(), 40),
            ("e".to_owned(), "M".to_owned(), 50),
        ];
        let prod = vec![
            "a".to_owned(),
            "e".to_owned(),
            "e".to_owned(),
            "z".to_owned(),
        ];
        let a = compare("t", truth, prod, &|_, ts| ts == 30, &|_, ts| ts < 25);
        assert_eq!((a.expected, a.present, a.missing), (5, 2, 3));
        assert_eq!(
            (
                a.missing_before_subscription,
                a.missing_declared,
                a.missing_silent
            ),
            (1, 1, 1)
        );
        assert_eq!((a.duplicated, a.unexpected), (1, 1));
        assert!(!a.ok());
    }
}
