//! `kalshi-stack soak`: the stack at production shape for N minutes with faults of every kind
//! from the chaos list at random intervals, sampled every few seconds (RSS and open files of
//! every process, production lag per gatherer, end-to-end latency per stream, database sizes,
//! archive export lag, declared gaps). At the end: the oracle (strict, settled), `archive
//! verify`, and a report (Markdown, the samples as JSON, one PNG chart per series).
//!
//! It must never leave a fault on when it stops, nor report a verdict it did not compute from
//! the samples and the oracle.

pub mod chart;
mod procs;
pub mod report;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Mutex;

use crate::{Endpoints, Stack, audit, latency, scenarios};
use report::{Fault, Goals, Sample};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub minutes: f64,
    /// Between samples.
    pub every: Duration,
    /// A fault starts a random time in this range after the previous one ended.
    pub fault_gap: (Duration, Duration),
    /// Seeds the faults' order and timing.
    pub seed: u64,
    /// Where the report goes.
    pub out: PathBuf,
    pub goals: Goals,
}

/// Bytes the stack writes per published message, all stores together: the gatherers'
/// databases, production, their WAL, the archive's spool and the local S3. Measured: 17.3 GB
/// of databases after 42 minutes at 5,000 msg/s (1,370 bytes a message), with a margin.
pub const DISK_PER_MESSAGE: u64 = 1_600;

/// Below this much free space the soak stops injecting faults and says why: what the stack
/// does on a full disk is not what the soak measures.
pub const DISK_FLOOR: u64 = 2 << 30;

/// Free bytes for an unprivileged writer on the file system of `path` (or of its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path;
    loop {
        if p.exists() {
            let v = rustix::fs::statvfs(p).ok()?;
            return Some(v.f_bavail.saturating_mul(v.f_frsize));
        }
        p = p.parent()?;
    }
}

/// Refuses a soak the disk under `dir` cannot hold: `minutes` at `rate` messages per second
/// need about [`DISK_PER_MESSAGE`] bytes each, plus [`DISK_FLOOR`].
pub fn check_disk(dir: &Path, minutes: f64, rate: u64) -> anyhow::Result<()> {
    let need = ((minutes * 60.0 * rate as f64) as u64)
        .saturating_mul(DISK_PER_MESSAGE)
        .saturating_add(DISK_FLOOR);
    match free_bytes(dir) {
        Some(free) if free < need => anyhow::bail!(
            "{minutes} minutes at {rate} msg/s need about {:.1} GiB under {} and {:.1} GiB are free: free some space, choose another --data-dir, or lower --minutes or --rate",
            need as f64 / f64::from(1u32 << 30),
            dir.display(),
            free as f64 / f64::from(1u32 << 30),
        ),
        _ => Ok(()),
    }
}

/// The faults a soak draws from: every scenario of the chaos list this stack can run.
pub fn fault_pool(stack: &Stack) -> Vec<&'static str> {
    scenarios::SCENARIOS
        .iter()
        .map(|(name, _)| *name)
        .filter(|n| *n != "mixed")
        .filter(|n| *n != "failover" || stack.opts.ha)
        .filter(|n| *n != "two-down" || stack.gatherers.len() >= 3)
        .collect()
}

/// A small xorshift: the same seed, the same faults at the same offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next() % span })
    }
}

/// What the sampler keeps between samples.
struct Sampler {
    started: Instant,
    /// The stack's data directory: its free space is sampled.
    data_dir: PathBuf,
    me: u32,
    endpoints: Endpoints,
    pools: Vec<(String, Option<sqlx::PgPool>, String)>,
    last_e2e: Option<latency::Buckets>,
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    fn new(started: Instant, endpoints: Endpoints, data_dir: PathBuf) -> Sampler {
        let mut pools: Vec<(String, Option<sqlx::PgPool>, String)> = endpoints
            .gatherers
            .iter()
            .map(|g| (g.id.clone(), None, g.database_url.clone()))
            .collect();
        pools.push(("production".into(), None, endpoints.production_url.clone()));
        Sampler {
            started,
            data_dir,
            me: std::process::id(),
            endpoints,
            pools,
            last_e2e: None,
            last_cpu: None,
        }
    }

    async fn sample(&mut self) -> Sample {
        let t = self.started.elapsed().as_secs_f64();
        let procs = procs::snapshot(self.me);
        let cpu = procs::machine_cpu();
        let mut s = Sample {
            t,
            procs,
            cpu_busy: match (self.last_cpu, cpu) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    Some(b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
                }
                _ => None,
            },
            ..Sample::default()
        };
        self.last_cpu = cpu;
        s.disk_free_bytes = free_bytes(&self.data_dir);
        if let Ok(page) = crate::get_text(&self.endpoints.deduplicator_metrics).await {
            for line in page
                .lines()
                .filter(|l| l.starts_with("dedup_sync_lag_seconds{"))
            {
                let gatherer = line
                    .split("gatherer=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next());
                let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                if let (Some(g), Some(v)) = (gatherer, value) {
                    let e = s.lag_s.entry(g.to_owned()).or_insert(0.0);
                    *e = e.max(v);
                }
            }
            if page.lines().any(|l| l.starts_with("export_lag_seconds")) {
                s.export_lag_s = Some(kalshi_testkit::prom::metric_sum(
                    &page,
                    "export_lag_seconds",
                ));
            }
            let heap = page
                .lines()
                .find(|l| l.starts_with("dedup_heap_in_use_bytes "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
            let pid = s.procs.get("deduplicator").map(|p| p.pid);
            if let (Some(bytes), Some(pid)) = (heap, pid) {
                s.procs.insert(
                    report::HEAP.to_owned(),
                    report::Proc {
                        pid,
                        rss_bytes: bytes as u64,
                        fds: 0,
                        cpu_s: 0.0,
                    },
                );
            }
            let now = latency::parse(&page);
            s.e2e = match &self.last_e2e {
                // A restarted deduplicator counts from zero: its totals are the window.
                Some(before) if !restarted(before, &now) => latency::delta(before, &now),
                Some(_) => now.clone(),
                None => Default::default(),
            };
            self.last_e2e = Some(now);
        }
        for (name, pool, url) in &mut self.pools {
            if pool.is_none() {
                *pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect(url)
                    .await
                    .ok();
            }
            let Some(p) = pool.as_ref() else { continue };
            let size = sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                .fetch_one(p)
                .await;
            match size {
                Ok(b) => {
                    s.db_bytes
                        .insert(name.clone(), u64::try_from(b).unwrap_or(0));
                }
                // Its database restarted (a fault): connect again next time.
                Err(_) => *pool = None,
            }
            if name == "production"
                && let Some(p) = pool.as_ref()
            {
                s.gaps = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM gaps")
                    .fetch_one(p)
                    .await
                    .ok();
            }
        }
        s
    }
}

fn restarted(before: &latency::Buckets, now: &latency::Buckets) -> bool {
    before.iter().any(|(k, b)| {
        let was = b.last().map_or(0.0, |x| x.1);
        let is = now.get(k).and_then(|n| n.last()).map_or(0.0, |x| x.1);
        is < was
    })
}

/// Runs the soak on a started stack; returns whether every goal was met.
pub async fn run(stack: Stack, o: &SoakOptions) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&o.out).with_context(|| format!("create {}", o.out.display()))?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(o.minutes * 60.0);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut sampler = Sampler::new(
        started,
        stack.endpoints.clone(),
        stack.opts.data_dir.clone(),
    );
    let every = o.every;
    let sink = samples.clone();
    let disk_full = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let low = disk_full.clone();
    let jsonl = o.out.join("samples.jsonl");
    let sampling = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.changed() => break,
            }
            let s = sampler.sample().await;
            if let Some(free) = s.disk_free_bytes.filter(|f| *f < DISK_FLOOR) {
                low.store(free, std::sync::atomic::Ordering::Relaxed);
            }
            // Appended as it goes: a soak cut short still leaves its samples.
            if let Ok(line) = serde_json::to_string(&s) {
                let _ = append(&jsonl, &line);
            }
            sink.lock().await.push(s);
        }
    });
    let pool = fault_pool(&stack);
    let stack = Arc::new(Mutex::new(stack));
    let mut faults: Vec<Fault> = Vec::new();
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut failed = None;
    let full = |flag: &std::sync::atomic::AtomicU64| {
        let free = flag.load(std::sync::atomic::Ordering::Relaxed);
        (free != u64::MAX).then(|| {
            format!(
                "the disk under the data directory is nearly full ({:.1} GiB free): stopped early; what the stack does on a full disk is not what the soak measures",
                free as f64 / f64::from(1u32 << 30)
            )
        })
    };
    loop {
        let wait = rng.between(o.fault_gap.0, o.fault_gap.1);
        let until = (Instant::now() + wait).min(end);
        // A second at a time: a full disk ends the soak within one sample.
        while Instant::now() < until && full(&disk_full).is_none() {
            tokio::time::sleep(
                Duration::from_secs(1).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        if let Some(why) = full(&disk_full) {
            failed = Some(why);
            break;
        }
        if Instant::now() >= end {
            break;
        }
        let pick = pool[(rng.next() % pool.len() as u64) as usize];
        let start = started.elapsed().as_secs_f64();
        println!("soak {:>5.1} min: {pick}", start / 60.0);
        let r = scenarios::run_one(&mut *stack.lock().await, pick).await;
        let f = Fault {
            name: pick.to_owned(),
            start,
            end: started.elapsed().as_secs_f64(),
        };
        if let Ok(line) = serde_json::to_string(&f) {
            let _ = append(&o.out.join("faults.jsonl"), &line);
        }
        faults.push(f);
        if let Err(e) = r {
            failed = Some(format!("fault {pick}: {e:#}"));
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = sampling.await;
    let samples = std::mem::take(&mut *samples.lock().await);
    let mut stack = Arc::try_unwrap(stack)
        .map_err(|_| anyhow::anyhow!("the stack is still shared"))?
        .into_inner();
    // The figures first: what follows (settling, the oracle over an hour of records) can fail
    // or run out of memory, and must not take the samples' report with it.
    let mut result = write::Outcome {
        samples,
        faults,
        every: o.every.as_secs_f64(),
        settled: None,
        failed,
        audit: None,
        archive: None,
        pending: Some("the oracle and archive verify had not run yet".into()),
    };
    write::report(&o.out, &result, &o.goals, &stack.opts)?;
    println!(
        "soak: faults over ({}); settling, then the oracle",
        result.faults.len()
    );
    stack.set_rate(0).await?;
    let settled = stack.wait_settled(Duration::from_secs(600)).await;
    let bound = if result.faults.iter().any(|f| f.name == "rest-429") {
        scenarios::subscription_bound("rest-429")
    } else {
        scenarios::subscription_bound("mixed")
    };
    let audit = match &settled {
        Ok(()) => Some(
            audit::run(
                &stack.endpoints.sim_control,
                &stack.production_direct_url(),
                &stack.endpoints.gatherers,
                &audit::AuditOptions {
                    settled: true,
                    subscription_latency: bound,
                    ..audit::AuditOptions::default()
                },
            )
            .await?,
        ),
        Err(_) => None,
    };
    result.archive = stack
        .opts
        .archive
        .then(|| audit::verify_archive(&stack.endpoints).unwrap_or(false));
    result.settled = settled.as_ref().err().map(|e| format!("{e:#}"));
    result.audit = audit;
    result.pending = None;
    let ok = write::report(&o.out, &result, &o.goals, &stack.opts)?;
    let _ = tokio::task::spawn_blocking(move || stack.down()).await;
    Ok(ok)
}

/// The report again from a soak's `samples.jsonl` and `faults.jsonl` in `out` (a soak that
/// was stopped, or killed, before it wrote its own); without the oracle and the archive check,
/// which need the running stack.
pub fn report_only(out: &Path, o: &SoakOptions, opts: &crate::Options) -> anyhow::Result<bool> {
    fn lines<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}: line {}", path.display(), i + 1))
            })
            .collect()
    }
    let faults_file = out.join("faults.jsonl");
    let result = write::Outcome {
        samples: lines(&out.join("samples.jsonl"))?,
        faults: if faults_file.exists() { lines(&faults_file)? } else { Vec::new() },
        every: o.every.as_secs_f64(),
        settled: None,
        failed: None,
        audit: None,
        archive: None,
        pending: Some("the report was made again from the samples (--report-only): the oracle and archive verify need the running stack".into()),
    };
    write::report(out, &result, &o.goals, opts)
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soak_the_disk_cannot_hold_is_refused_with_the_figures() {
        let dir = std::env::temp_dir().join(format!("no-such-dir-{}/deeper", std::process::id()));
        // A missing directory is judged by its nearest existing ancestor.
        let free = free_bytes(&dir).unwrap();
        assert!(free > 0);
        let e = check_disk(&dir, 525_600.0, 1_000_000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("GiB are free") && e.contains("lower --minutes or --rate"),
            "{e}"
        );
        // What the disk holds passes: nothing to write needs only the floor.
        if free > DISK_FLOOR {
            check_disk(&dir, 0.0, 0).unwrap();
        }
    }
}
