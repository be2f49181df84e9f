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
//! On a real exchange there is no truth: [`crate::crosscheck`] takes the same cut and then
//! holds production to what the gatherers themselves hold.
//!
//! It must never take an expected value from production or a gatherer; gatherers are read only
//! to tell what some gatherer captured.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kalshi_shared::config::gatherer::FileConfig as GathererFile;
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
pub(crate) async fn cut(
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
        // The stack's gatherers poll at the default intervals (the schedule every 5 minutes:
        // a stack run longer than a few minutes sees it change between two polls).
        exchange_poll_ms: GathererFile::default()
            .registry
            .exchange_status_interval
            .as_millis() as i64,
        exchange_schedule_poll_ms: GathererFile::default()
            .registry
            .exchange_schedule_interval
            .as_millis() as i64,
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

/// `audit --archive`: the deduplicator's own `archive verify` over the whole archive.
pub fn verify_archive(e: &crate::Endpoints) -> anyhow::Result<bool> {
    if e.s3.is_none() && e.archive_dir.is_none() {
        anyhow::bail!("this stack runs without an archive (--no-archive)");
    }
    let out = std::process::Command::new(crate::default_bin_dir().join("deduplicator"))
        .arg("--config")
        .arg(&e.deduplicator_config)
        .args(["archive", "verify", "--from", "0"])
        .envs(kalshi_testkit::s3::ENV)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().last().unwrap_or_default();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
    println!("archive: {summary}");
    for l in text
        .lines()
        .filter(|l| !l.ends_with("  ok") && *l != summary)
    {
        println!("  {l}");
    }
    Ok(out.status.success())
}
