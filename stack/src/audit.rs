//! `kalshi-stack audit`: production against the simulator's ground truth through the one
//! oracle (`kalshi_testkit::oracle`), on a settled or a live stack.
//!
//! On a live stack it takes a consistent cut first: at time `t0` it asks every reachable
//! gatherer for its heads and waits until production's `sync_cursors` reach them. Production
//! then holds everything those gatherers had stored at `t0`, and so everything the exchange
//! published before `t0 - ingest_allowance` (the bound on exchange-to-gatherer-store latency)
//! that was not lost. Records published after that cut are reported as in flight, never as
//! lost. A stack whose simulator is at rate 0 and published nothing after the cut is settled:
//! everything is judged, the registry too.
//!
//! Every configured gatherer is read, always: a record missing from production is excused (a
//! window every gatherer declared, or before its market's subscription) only if no gatherer
//! holds it, and a gatherer that cannot be read makes such an excuse undecidable: the audit
//! then says INCONCLUSIVE (exit 3), never PASSED.
//!
//! On a real exchange there is no truth: [`crosscheck`] takes the same cut and then holds
//! production to what the gatherers themselves hold (everything any gatherer had stored at
//! the cut is in production, and no more copies of it than the gatherer with the most).
//!
//! It must never take an expected value from production or a gatherer; gatherers are read only
//! to tell what some gatherer captured.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kalshi_testkit::held::Held;
use kalshi_testkit::oracle::{self, Reading, Rules, Verdict};
use kalshi_testkit::sim::SimControl;

use crate::GathererEndpoints;

/// How the audit judges.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// A market's records within this time after it appeared are "before subscription".
    pub subscription_latency: Duration,
    /// The bound on the time from the exchange publishing a record to a gatherer storing it.
    pub ingest_allowance: Duration,
    /// How long to wait for production to reach the gatherers' heads.
    pub catch_up: Duration,
    /// Judge everything (the caller knows the stack is settled).
    pub settled: bool,
    /// Progress lines on stderr (how long each step took).
    pub progress: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            subscription_latency: Duration::from_secs(5),
            ingest_allowance: Duration::from_secs(2),
            catch_up: Duration::from_secs(60),
            settled: false,
            progress: false,
        }
    }
}

/// Production's `sync_cursors` by `(gatherer, stream)`.
async fn cursors(pool: &sqlx::PgPool) -> anyhow::Result<HashMap<(String, String), i64>> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT gatherer_id, stream, cursor FROM sync_cursors")
            .fetch_all(pool)
            .await
            .context("read production's sync_cursors")?;
    Ok(rows.into_iter().map(|(g, s, c)| ((g, s), c)).collect())
}

/// Takes the cut: returns the wall-clock time at which the reachable gatherers' heads were
/// read, once production holds everything up to them, and the gatherers that answered.
async fn cut(
    pool: &sqlx::PgPool,
    gatherers: &[GathererEndpoints],
    within: Duration,
) -> anyhow::Result<(i64, Vec<(GathererEndpoints, HashMap<String, i64>)>)> {
    let t0 = kalshi_shared::time::now_ms();
    let mut want = Vec::new();
    let mut reachable = Vec::new();
    for g in gatherers {
        match crate::gatherer_heads(&g.grpc, g.tls.as_ref()).await {
            Ok(heads) => {
                for (stream, head) in &heads {
                    want.push((g.id.clone(), stream.clone(), *head));
                }
                reachable.push((g.clone(), heads.into_iter().collect()));
            }
            Err(e) => eprintln!(
                "audit: gatherer {} unreachable, not waited for: {e:#}",
                g.id
            ),
        }
    }
    let deadline = Instant::now() + within;
    loop {
        let have = cursors(pool).await?;
        let behind: Vec<String> = want
            .iter()
            .filter(|(g, s, head)| {
                *head > 0 && have.get(&(g.clone(), s.clone())).is_none_or(|c| c < head)
            })
            .map(|(g, s, head)| format!("{g}/{s} (head {head})"))
            .collect();
        if behind.is_empty() {
            return Ok((t0, reachable));
        }
        if Instant::now() >= deadline {
            bail!(
                "production did not reach the gatherers' heads within {within:?}: {}; is the deduplicator running (`deduplicator --config <data-dir>/deduplicator.toml status`)?",
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Audits production (`production_url`, read directly) against the simulator at `sim_control`.
/// `gatherers` are every configured gatherer: a window is declared only if all declared it.
pub async fn run(
    sim_control: &str,
    production_url: &str,
    gatherers: &[GathererEndpoints],
    opts: &AuditOptions,
) -> anyhow::Result<Verdict> {
    let (w, held) = collect(sim_control, production_url, gatherers, opts).await?;
    Ok(oracle::judge(&w.truth, &held, &w.readings, &w.rules))
}

/// What production is judged against: the exchange's truth, what every configured gatherer
/// holds, and the rules. Taken once, it judges a settled production as often as it changes
/// (the audit's injection test), without reading the truth and the gatherers again.
pub struct Witnesses {
    truth: kalshi_testkit::sim::Truth,
    readings: Vec<Reading>,
    rules: Rules,
}

impl Witnesses {
    /// Production as it is now, judged against these witnesses.
    pub async fn judge(&self, production_url: &str) -> anyhow::Result<Verdict> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(production_url)
            .await
            .context("connect to production")?;
        let held = Held::from_production(&pool).await?;
        pool.close().await;
        Ok(oracle::judge(
            &self.truth,
            &held,
            &self.readings,
            &self.rules,
        ))
    }
}

/// The witnesses of an audit, taken as [`run`] takes them. Only for a settled stack: neither
/// the truth nor the gatherers may change while they are used.
pub async fn witnesses(
    sim_control: &str,
    production_url: &str,
    gatherers: &[GathererEndpoints],
    opts: &AuditOptions,
) -> anyhow::Result<Witnesses> {
    Ok(collect(sim_control, production_url, gatherers, opts)
        .await?
        .0)
}

/// The cut, production, the truth and the gatherers, in that order (see the module's doc).
async fn collect(
    sim_control: &str,
    production_url: &str,
    gatherers: &[GathererEndpoints],
    opts: &AuditOptions,
) -> anyhow::Result<(Witnesses, Held)> {
    let sim = SimControl::new(sim_control);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(production_url)
        .await
        .context("connect to production")?;
    let started = Instant::now();
    let (t0, reachable) = cut(&pool, gatherers, opts.catch_up).await?;
    let say = |what: String| {
        if opts.progress {
            eprintln!("audit: {what} ({:.1?})", started.elapsed());
        }
    };
    say("cut taken".into());
    let cut_ms = t0 - opts.ingest_allowance.as_millis() as i64;
    // Production first, the truth after: everything production holds is already published.
    let held = Held::from_production(&pool).await?;
    pool.close().await;
    say("production read".into());
    let truth = sim.truth().await?;
    say(format!("the truth read up to position {}", truth.head));
    let idle = sim.stats().await?["rate"].as_u64() == Some(0);
    let newest = [
        truth.trades.last().map(|f| f.ts_ms),
        truth.deltas.last().map(|f| f.ts_ms),
        truth.tickers.last().map(|f| f.ts_ms),
        truth.lifecycle.last().map(|f| f.ts_ms),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(i64::MIN);
    let settled = opts.settled || (idle && newest <= cut_ms);
    let rules = Rules {
        gatherers: gatherers.iter().map(|g| g.id.clone()).collect(),
        subscription_latency_ms: opts.subscription_latency.as_millis() as i64,
        cut_ms: (!settled).then_some(cut_ms),
    };
    // What every configured gatherer holds: no excuse may cover a record one of them holds.
    let mut readings = Vec::new();
    for g in gatherers {
        let read = async {
            let mut c = crate::gatherer_client(&g.grpc, g.tls.as_ref())
                .await
                .with_context(|| format!("connect to gatherer {}", g.id))?;
            Held::from_gatherer(&mut c, &g.id).await
        };
        readings.push(if reachable.iter().any(|(r, _)| r.id == g.id) {
            match read.await {
                Ok(h) => Reading::of(g.id.clone(), h),
                Err(e) => Reading::unreadable(g.id.clone(), format!("{e:#}")),
            }
        } else {
            Reading::unreadable(g.id.clone(), "unreachable when the cut was taken")
        });
    }
    say("the gatherers read".into());
    Ok((
        Witnesses {
            truth,
            readings,
            rules,
        },
        held,
    ))
}

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

/// Counts per content.
fn counts<K: std::hash::Hash + Eq>(keys: &[K]) -> HashMap<&K, u64> {
    let mut m: HashMap<&K, u64> = HashMap::with_capacity(keys.len());
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

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
        for (k, n) in counts(g) {
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
pub async fn crosscheck(
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
