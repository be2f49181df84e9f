//! `kalshi-stack audit` on a real exchange, where there is no truth: production against the
//! gatherers themselves. At the audit's cut ([`crate::audit`]), everything any gatherer had
//! stored is in production, with no more copies of a content than the gatherer holding the
//! most; every market, event and series a gatherer knows is there; nothing is quarantined.
//!
//! It cannot see what every gatherer missed (the declared gaps say that), and it must never
//! take an expected value from production.

use std::collections::HashMap;

use anyhow::Context as _;
use kalshi_testkit::held::Held;

use crate::GathererEndpoints;
use crate::audit::{AuditOptions, cut};

/// One stream of the cross-check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrossStream {
    pub stream: String,
    /// Records production holds.
    pub production: u64,
    /// Records the gatherers hold at the cut (each content counted as often as the gatherer
    /// holding the most copies of it).
    pub held: u64,
    /// Held by a gatherer at the cut, absent from production (or fewer copies there).
    pub missing: u64,
    /// More copies in production than any gatherer holds, at a time every gatherer still
    /// retains and before the cut.
    pub duplicates: u64,
    /// In production, held by no gatherer (newer than the cut, or older than a gatherer's
    /// retention, or from a replaced gatherer): reported, not judged.
    pub unwitnessed: u64,
    /// Some of the records missing or duplicated.
    pub examples: Vec<String>,
}

/// Production against the gatherers, without a truth (a real exchange).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrossCheck {
    /// When the gatherers' heads were read (production reached them after).
    pub cut_ms: i64,
    pub gatherers: Vec<String>,
    pub streams: Vec<CrossStream>,
    /// Markets, events and series a gatherer knows that production lacks.
    pub registry_missing: Vec<String>,
    pub registry: (u64, u64, u64),
    /// Gatherers that could not be read: what only they hold is undecided.
    pub unreadable: Vec<String>,
    pub quarantined: HashMap<String, u64>,
}

impl CrossCheck {
    pub fn ok(&self) -> bool {
        self.streams
            .iter()
            .all(|s| s.missing == 0 && s.duplicates == 0)
            && self.registry_missing.is_empty()
            && self.quarantined.values().all(|n| *n == 0)
    }

    pub fn inconclusive(&self) -> bool {
        !self.unreadable.is_empty()
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "cross-check of production against {} ({} gatherers; no truth: a real exchange), cut at {}\n",
            self.gatherers.join(", "),
            self.gatherers.len(),
            kalshi_shared::time::format_rfc3339_ms(self.cut_ms)
        );
        out.push_str(&format!(
            "{:<18}{:>11}{:>11}{:>9}{:>7}{:>13}\n",
            "stream", "production", "held", "missing", "dups", "unwitnessed"
        ));
        for s in &self.streams {
            out.push_str(&format!(
                "{:<18}{:>11}{:>11}{:>9}{:>7}{:>13}\n",
                s.stream, s.production, s.held, s.missing, s.duplicates, s.unwitnessed
            ));
        }
        let (m, e, s) = self.registry;
        out.push_str(&format!(
            "registry in production: {m} markets, {e} events, {s} series; known to a gatherer and missing: {}\n",
            self.registry_missing.len()
        ));
        for s in &self.streams {
            for x in &s.examples {
                out.push_str(&format!("{}: {x}\n", s.stream));
            }
        }
        for r in self.registry_missing.iter().take(10) {
            out.push_str(&format!("registry: missing {r}\n"));
        }
        for (stream, n) in &self.quarantined {
            if *n > 0 {
                out.push_str(&format!("problem: {n} rows of {stream} quarantined\n"));
            }
        }
        for u in &self.unreadable {
            out.push_str(&format!("unreadable: {u}\n"));
        }
        out.push_str(match (self.ok(), self.inconclusive()) {
            (false, _) => "CROSS-CHECK FAILED\n",
            (true, true) => "CROSS-CHECK INCONCLUSIVE: a gatherer could not be read\n",
            (true, false) => {
                "CROSS-CHECK PASSED: production holds everything the gatherers held at the cut, once\n"
            }
        });
        out
    }
}

use kalshi_testkit::oracle::counts;

/// One stream: `time` of a content (None: not judged for duplicates by time), `judged_from`
/// the earliest time every gatherer still retains, `cut_ms` the latest time every copy was
/// surely stored by the cut.
fn compare<K: std::hash::Hash + Eq + std::fmt::Debug>(
    stream: &str,
    prod: &[K],
    held: &[&[K]],
    time: impl Fn(&K) -> Option<i64>,
    (judged_from, cut_ms): (i64, i64),
) -> CrossStream {
    let p = counts(prod);
    let mut most: HashMap<&K, u64> = HashMap::new();
    for g in held {
        for (k, n) in counts(g.iter()) {
            let e = most.entry(k).or_default();
            *e = (*e).max(n);
        }
    }
    let mut s = CrossStream {
        stream: stream.to_owned(),
        production: prod.len() as u64,
        held: most.values().sum(),
        missing: 0,
        duplicates: 0,
        unwitnessed: 0,
        examples: Vec::new(),
    };
    for (k, want) in &most {
        let have = p.get(k).copied().unwrap_or(0);
        if have < *want {
            s.missing += want - have;
            if s.examples.len() < 5 {
                s.examples.push(format!(
                    "held by a gatherer, {have} of {want} in production: {k:?}"
                ));
            }
        }
    }
    for (k, have) in &p {
        let want = most.get(k).copied().unwrap_or(0);
        if *have <= want {
            continue;
        }
        let judged = time(k).is_some_and(|t| t >= judged_from && t <= cut_ms);
        if want > 0 && judged {
            s.duplicates += have - want;
            if s.examples.len() < 5 {
                s.examples.push(format!(
                    "{have} copies in production, at most {want} in a gatherer: {k:?}"
                ));
            }
        } else {
            s.unwitnessed += have - want;
        }
    }
    s
}

/// Production against every configured gatherer, with no truth: at the cut, everything a
/// gatherer held must be in production, with no more copies than the gatherer holding the
/// most. A gatherer that cannot be read makes it INCONCLUSIVE.
pub async fn run(
    production_url: &str,
    gatherers: &[GathererEndpoints],
    opts: &AuditOptions,
) -> anyhow::Result<CrossCheck> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(production_url)
        .await
        .context("connect to production")?;
    let (t0, reachable) = cut(&pool, gatherers, opts.catch_up).await?;
    let cut_ms = t0 - opts.ingest_allowance.as_millis() as i64;
    let prod = Held::from_production(&pool).await?;
    pool.close().await;
    let mut held = Vec::new();
    let mut unreadable = Vec::new();
    for g in gatherers {
        let Some((_, heads)) = reachable.iter().find(|(r, _)| r.id == g.id) else {
            unreadable.push(format!("{}: unreachable when the cut was taken", g.id));
            continue;
        };
        let read = async {
            let mut c = crate::gatherer_client(&g.grpc, g.tls.as_ref())
                .await
                .with_context(|| format!("connect to gatherer {}", g.id))?;
            Held::from_gatherer_upto(&mut c, &g.id, heads).await
        };
        match read.await {
            Ok(h) => held.push(h),
            Err(e) => unreadable.push(format!("{}: {e:#}", g.id)),
        }
    }
    // Duplicates are judged where every gatherer still retains the time.
    let from = |stream: &str| {
        held.iter()
            .filter_map(|h| h.retained_from_ms.get(stream).copied())
            .max()
            .unwrap_or(i64::MIN)
    };
    let trades: Vec<&[kalshi_testkit::sim::TradeFact]> =
        held.iter().map(|h| h.trades.as_slice()).collect();
    let deltas: Vec<&[kalshi_testkit::sim::DeltaKey]> =
        held.iter().map(|h| h.deltas.as_slice()).collect();
    let tickers: Vec<&[kalshi_testkit::sim::TickerKey]> =
        held.iter().map(|h| h.tickers.as_slice()).collect();
    let lifecycle: Vec<&[kalshi_testkit::sim::LifecycleKey]> =
        held.iter().map(|h| h.lifecycle.as_slice()).collect();
    let unknown: Vec<&[(String, String, String)]> =
        held.iter().map(|h| h.unknown.as_slice()).collect();
    let streams = vec![
        compare(
            "trades",
            &prod.trades,
            &trades,
            |t| Some(t.ts_ms),
            (from("trades"), cut_ms),
        ),
        compare(
            "orderbook_deltas",
            &prod.deltas,
            &deltas,
            |d| Some(d.1),
            (from("orderbook_deltas"), cut_ms),
        ),
        compare(
            "tickers",
            &prod.tickers,
            &tickers,
            |t| Some(t.1),
            (from("tickers"), cut_ms),
        ),
        // A lifecycle identity has no time here: its copies are judged everywhere.
        compare(
            "lifecycle",
            &prod.lifecycle,
            &lifecycle,
            |_| Some(cut_ms),
            (i64::MIN, cut_ms),
        ),
        // Messages of types no one models: as lifecycle messages, judged everywhere.
        compare(
            "unknown_messages",
            &prod.unknown,
            &unknown,
            |_| Some(cut_ms),
            (i64::MIN, cut_ms),
        ),
    ];
    let mut registry_missing = Vec::new();
    for h in &held {
        for (kind, mine, theirs) in [
            ("market", &h.markets, &prod.markets),
            ("event", &h.events, &prod.events),
            ("series", &h.series, &prod.series),
        ] {
            for k in mine.keys() {
                let name = format!("{kind} {k}");
                if !theirs.contains_key(k) && !registry_missing.contains(&name) {
                    registry_missing.push(name);
                }
            }
        }
    }
    // Every state of the exchange's status and schedule a gatherer saw is in production.
    for h in &held {
        for (object, body) in &h.exchange {
            let name = format!("exchange {object} {body}");
            if !prod.exchange.iter().any(|(o, b)| o == object && b == body)
                && !registry_missing.contains(&name)
            {
                registry_missing.push(name);
            }
        }
    }
    registry_missing.sort();
    Ok(CrossCheck {
        cut_ms: t0,
        gatherers: gatherers.iter().map(|g| g.id.clone()).collect(),
        streams,
        registry_missing,
        registry: (
            prod.markets.len() as u64,
            prod.events.len() as u64,
            prod.series.len() as u64,
        ),
        unreadable,
        quarantined: prod.quarantined.clone(),
    })
}
