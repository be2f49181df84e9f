//! What a soak's samples say: the figures that would show a leak or a creeping lag, the
//! latency outside fault windows, and the verdict against the goals. Pure functions of the
//! samples, so they are tested on made-up series.
//!
//! It must never judge a process on a series a restart cut short, nor count a sample taken
//! during a fault (or its grace after) as "outside fault windows".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::{self, Buckets, Quantile};

/// One process (or one PostgreSQL cluster, all its processes) at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Proc {
    /// The process (the postmaster for a cluster): a new one means a restart.
    pub pid: u32,
    pub rss_bytes: u64,
    pub fds: u64,
    /// CPU time used (user + system), seconds: cumulative for a process, the sum over the
    /// processes alive now for a cluster (a backend that exited takes its share with it).
    #[serde(default)]
    pub cpu_s: f64,
}

/// Everything sampled at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t: f64,
    pub procs: BTreeMap<String, Proc>,
    /// Per gatherer: the largest `dedup_sync_lag_seconds` over its streams.
    pub lag_s: BTreeMap<String, f64>,
    /// `dedup_end_to_end_seconds` observed since the previous sample, per stream.
    #[serde(deserialize_with = "buckets_back")]
    pub e2e: Buckets,
    /// Database sizes in bytes (`gatherer-N`, `production`).
    pub db_bytes: BTreeMap<String, u64>,
    pub export_lag_s: Option<f64>,
    /// Gap records in production.
    pub gaps: Option<i64>,
    /// Share of the machine's CPU time busy since the previous sample (0 to 1, all cores).
    #[serde(default)]
    pub cpu_busy: Option<f64>,
    /// Free space on the data directory's file system.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
}

/// JSON has no infinity: serde_json writes the `+Inf` bucket's bound as null; read back as
/// infinity.
fn buckets_back<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Buckets, D::Error> {
    let raw: BTreeMap<String, Vec<(Option<f64>, f64)>> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .into_iter()
                .map(|(le, n)| (le.unwrap_or(f64::INFINITY), n))
                .collect();
            (k, v)
        })
        .collect())
}

/// A fault, from its injection to the end of its scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    pub name: String,
    pub start: f64,
    pub end: f64,
}

/// The goals the issue sets (configurable for other machines).
#[derive(Debug, Clone, Serialize)]
pub struct Goals {
    /// RSS slope bound, bytes per 10 minutes.
    pub rss_slope: f64,
    /// Lag slope bound outside faults, seconds per 10 minutes.
    pub lag_slope: f64,
    /// p99 end to end outside faults, seconds.
    pub p99: f64,
    /// A process life shorter than this within the second half is not judged.
    pub min_life: f64,
    /// Seconds after a fault ends that still count as inside it.
    pub grace: f64,
    /// Seconds at the start of a process's life not judged (caches filling: the gatherers'
    /// RSS levels off 15 to 20 minutes after a start at 5,000 msg/s).
    pub warmup: f64,
    /// A fault's window lasts until every gatherer's production lag is back under this
    /// (seconds): the catch-up after a fault is part of it, not steady state.
    pub recovered_lag: f64,
}

impl Default for Goals {
    fn default() -> Self {
        Goals {
            rss_slope: 1024.0 * 1024.0,
            lag_slope: 0.5,
            p99: 0.25,
            min_life: 600.0,
            grace: 15.0,
            warmup: 600.0,
            recovered_lag: 1.0,
        }
    }
}

/// The streams whose records carry the exchange's own time (the registry's versions carry
/// update times that can be hours old, so their "latency" is not the pipeline's).
pub const JUDGED_STREAMS: &[&str] = &["trades", "orderbook_deltas", "tickers"];

/// Whose memory the goal is about: the pipeline's own services. The others are shown, not
/// judged: the simulator keeps the whole ground truth in memory and the local S3 every
/// archived object (both grow by design), and PostgreSQL is not this project's code.
/// The deduplicator's heap in use ([`HEAP`]) is shown beside its RSS: growth in both is
/// something kept, growth in RSS alone is the allocator holding freed memory.
pub fn judged_process(name: &str) -> bool {
    !(name.starts_with("pg:") || name == "kalshi-sim" || name == "moto (S3)" || name == HEAP)
}

/// The pseudo-process under which the deduplicator's `dedup_heap_in_use_bytes` is sampled.
pub const HEAP: &str = "deduplicator heap in use";

/// Least-squares slope of `(x, y)` points (None under 3 points or no spread in x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// Whether time `t` is inside a fault window or its grace.
pub fn in_fault(t: f64, width: f64, faults: &[Fault], grace: f64) -> bool {
    // A sample covers (t - width, t]: inside when that overlaps [start, end + grace].
    faults
        .iter()
        .any(|f| t > f.start && t - width < f.end + grace)
}

/// The fault windows as judged: each from its injection until `grace` after its scenario
/// ended and then until every gatherer's lag is back under `recovered_lag` (the catch-up).
pub fn windows(samples: &[Sample], faults: &[Fault], goals: &Goals) -> Vec<Fault> {
    faults
        .iter()
        .map(|f| {
            let calm_from = f.end + goals.grace;
            let recovered = samples
                .iter()
                .filter(|s| s.t >= calm_from)
                // No lag read (the deduplicator restarting) is not recovered.
                .find(|s| !s.lag_s.is_empty() && s.lag_s.values().all(|v| *v < goals.recovered_lag))
                .map_or(calm_from, |s| s.t);
            Fault {
                name: f.name.clone(),
                start: f.start,
                end: recovered.max(calm_from) - goals.grace,
            }
        })
        .collect()
}

/// One process's memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct RssFigure {
    pub name: String,
    pub first_mib: f64,
    pub last_mib: f64,
    pub peak_mib: f64,
    pub restarts: usize,
    /// The slope (MiB per 10 minutes) over the longest life within the second half, after its
    /// warm-up; None when no life there was long enough.
    pub slope_mib_per_10min: Option<f64>,
    /// Seconds of that life the slope is over.
    pub judged_seconds: f64,
    pub max_fds: u64,
    pub fd_slope_per_10min: Option<f64>,
}

/// RSS and file-descriptor figures of every process.
pub fn rss_figures(samples: &[Sample], goals: &Goals) -> Vec<RssFigure> {
    let end = samples.last().map_or(0.0, |s| s.t);
    let half = end / 2.0;
    let names: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.procs.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let series: Vec<(f64, &Proc)> = samples
            .iter()
            .filter_map(|s| s.procs.get(name).map(|p| (s.t, p)))
            .collect();
        let Some(&(_, first)) = series.first() else {
            continue;
        };
        let last = series.last().map_or(first, |x| x.1);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        // Lives: runs of one pid.
        let mut lives: Vec<Vec<(f64, &Proc)>> = Vec::new();
        for &(t, p) in &series {
            match lives.last_mut() {
                Some(l) if l.last().is_some_and(|x| x.1.pid == p.pid) => l.push((t, p)),
                _ => lives.push(vec![(t, p)]),
            }
        }
        let restarts = lives.len().saturating_sub(1);
        // The longest judged stretch: within the second half, after the life's warm-up.
        let mut best: Option<Vec<(f64, &Proc)>> = None;
        for l in &lives {
            let born = l.first().map_or(0.0, |x| x.0);
            let from = half.max(born + goals.warmup);
            let part: Vec<(f64, &Proc)> = l.iter().copied().filter(|x| x.0 >= from).collect();
            let span = match (part.first(), part.last()) {
                (Some(a), Some(b)) => b.0 - a.0,
                _ => 0.0,
            };
            if span >= goals.min_life
                && best
                    .as_ref()
                    .is_none_or(|b| span > b.last().map_or(0.0, |x| x.0) - b[0].0)
            {
                best = Some(part);
            }
        }
        let per_10min = 600.0;
        let (slope_mib, judged, fd_slope) = match &best {
            Some(part) => {
                let rss: Vec<(f64, f64)> = part.iter().map(|x| (x.0, mib(x.1.rss_bytes))).collect();
                let fds: Vec<(f64, f64)> = part.iter().map(|x| (x.0, x.1.fds as f64)).collect();
                (
                    slope(&rss).map(|s| s * per_10min),
                    part.last().map_or(0.0, |x| x.0) - part[0].0,
                    slope(&fds).map(|s| s * per_10min),
                )
            }
            None => (None, 0.0, None),
        };
        out.push(RssFigure {
            name: name.clone(),
            first_mib: mib(first.rss_bytes),
            last_mib: mib(last.rss_bytes),
            peak_mib: series
                .iter()
                .map(|x| mib(x.1.rss_bytes))
                .fold(0.0, f64::max),
            restarts,
            slope_mib_per_10min: slope_mib,
            judged_seconds: judged,
            max_fds: series.iter().map(|x| x.1.fds).max().unwrap_or(0),
            fd_slope_per_10min: fd_slope,
        });
    }
    out
}

/// One gatherer's production lag.
#[derive(Debug, Clone, Serialize)]
pub struct LagFigure {
    pub gatherer: String,
    pub max_s: f64,
    /// Largest outside fault windows.
    pub max_calm_s: f64,
    /// Slope over the second half outside fault windows, seconds per 10 minutes.
    pub slope_per_10min: Option<f64>,
}

pub fn lag_figures(
    samples: &[Sample],
    faults: &[Fault],
    every: f64,
    goals: &Goals,
) -> Vec<LagFigure> {
    let half = samples.last().map_or(0.0, |s| s.t) / 2.0;
    let names: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.lag_s.keys()).collect();
    names
        .into_iter()
        .map(|g| {
            let all: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|s| s.lag_s.get(g).map(|v| (s.t, *v)))
                .collect();
            let calm: Vec<(f64, f64)> = all
                .iter()
                .copied()
                .filter(|(t, _)| !in_fault(*t, every, faults, goals.grace))
                .collect();
            let late: Vec<(f64, f64)> = calm.iter().copied().filter(|(t, _)| *t >= half).collect();
            LagFigure {
                gatherer: g.clone(),
                max_s: all.iter().map(|x| x.1).fold(0.0, f64::max),
                max_calm_s: calm.iter().map(|x| x.1).fold(0.0, f64::max),
                slope_per_10min: slope(&late).map(|s| s * 600.0),
            }
        })
        .collect()
}

/// One stream's end-to-end latency, outside fault windows and overall.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyFigure {
    pub stream: String,
    pub rows_calm: u64,
    pub p50_calm: Option<f64>,
    pub p99_calm: Option<f64>,
    /// True when the p99 lies beyond the histogram's largest bound (then `p99_calm` is that
    /// bound, a lower bound of the truth).
    pub p99_over: bool,
    pub p99_all: Option<f64>,
    pub judged: bool,
}

fn seconds(q: &Quantile) -> (Option<f64>, bool) {
    match q {
        Quantile::Within(s) => (Some(*s), false),
        Quantile::Over(s) => (Some(*s), true),
        Quantile::Empty => (None, false),
    }
}

/// Sums per-sample bucket deltas (cumulative counts per bound) over the chosen samples.
fn sum_buckets<'a>(it: impl Iterator<Item = &'a Buckets>) -> Buckets {
    let mut out: Buckets = BTreeMap::new();
    for b in it {
        for (stream, buckets) in b {
            let acc = out.entry(stream.clone()).or_default();
            if acc.is_empty() {
                acc.extend(buckets.iter().copied());
            } else {
                for (a, x) in acc.iter_mut().zip(buckets) {
                    a.1 += x.1;
                }
            }
        }
    }
    out
}

pub fn latency_figures(
    samples: &[Sample],
    faults: &[Fault],
    every: f64,
    goals: &Goals,
) -> Vec<LatencyFigure> {
    let calm = sum_buckets(
        samples
            .iter()
            .filter(|s| !in_fault(s.t, every, faults, goals.grace))
            .map(|s| &s.e2e),
    );
    let all = sum_buckets(samples.iter().map(|s| &s.e2e));
    all.iter()
        .map(|(stream, b_all)| {
            let b = calm.get(stream).cloned().unwrap_or_default();
            let (rows, p50, _, p99) = latency::summary(&b);
            let (p50, _) = seconds(&p50);
            let (p99, over) = seconds(&p99);
            let (_, _, _, p99_all) = latency::summary(b_all);
            LatencyFigure {
                stream: stream.clone(),
                rows_calm: rows,
                p50_calm: p50,
                p99_calm: p99,
                p99_over: over,
                p99_all: seconds(&p99_all).0,
                judged: JUDGED_STREAMS.contains(&stream.as_str()),
            }
        })
        .collect()
}

/// One process's CPU use: cores used on average and at most between two samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuFigure {
    pub name: String,
    pub mean_cores: f64,
    pub peak_cores: f64,
}

/// Per process, CPU seconds over wall seconds between consecutive samples of one life (a new
/// pid, or a counter that fell because a cluster's backend exited, is skipped).
pub fn cpu_figures(samples: &[Sample]) -> Vec<CpuFigure> {
    let mut acc: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for w in samples.windows(2) {
        let dt = w[1].t - w[0].t;
        if dt <= 0.0 {
            continue;
        }
        for (name, now) in &w[1].procs {
            let Some(before) = w[0].procs.get(name) else {
                continue;
            };
            let used = now.cpu_s - before.cpu_s;
            if before.pid != now.pid || used < 0.0 || name == HEAP {
                continue;
            }
            let e = acc.entry(name).or_insert((0.0, 0.0, 0.0));
            e.0 += used;
            e.1 += dt;
            e.2 = e.2.max(used / dt);
        }
    }
    acc.into_iter()
        .map(|(name, (used, wall, peak))| CpuFigure {
            name: name.to_owned(),
            mean_cores: if wall > 0.0 { used / wall } else { 0.0 },
            peak_cores: peak,
        })
        .collect()
}

/// The machine's busy share: mean over the samples outside fault windows, and the mean over
/// those of them whose window's p99 of `stream` was over `p99`: `(calm, calm and slow, slow
/// windows, calm windows)`.
pub fn busy_when_slow(
    samples: &[Sample],
    faults: &[Fault],
    every: f64,
    goals: &Goals,
    stream: &str,
) -> (Option<f64>, Option<f64>, usize, usize) {
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let calm: Vec<&Sample> = samples
        .iter()
        .filter(|s| !in_fault(s.t, every, faults, goals.grace))
        .collect();
    let busy: Vec<f64> = calm.iter().filter_map(|s| s.cpu_busy).collect();
    let slow: Vec<f64> = calm
        .iter()
        .filter(|s| {
            s.e2e
                .get(stream)
                .and_then(|b| seconds(&latency::quantile(0.99, b)).0)
                .is_some_and(|p| p > goals.p99)
        })
        .filter_map(|s| s.cpu_busy)
        .collect();
    (mean(&busy), mean(&slow), slow.len(), busy.len())
}

/// The p50 and p99 (seconds) of one sample's window, per stream (for the chart).
pub fn window_quantiles(s: &Sample) -> BTreeMap<String, (Option<f64>, Option<f64>)> {
    s.e2e
        .iter()
        .map(|(k, b)| {
            (
                k.clone(),
                (
                    seconds(&latency::quantile(0.5, b)).0,
                    seconds(&latency::quantile(0.99, b)).0,
                ),
            )
        })
        .collect()
}

/// The verdict: each goal, met or not, with why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub checks: Vec<(String, bool, String)>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.1)
    }
}

pub fn verdict(
    rss: &[RssFigure],
    lag: &[LagFigure],
    lat: &[LatencyFigure],
    goals: &Goals,
    audit_ok: bool,
    archive_ok: bool,
) -> Verdict {
    let mut checks = Vec::new();
    let bound = goals.rss_slope / (1024.0 * 1024.0);
    for r in rss {
        if !judged_process(&r.name) {
            checks.push((
                format!("memory: {}", r.name),
                true,
                format!(
                    "shown, not judged (test harness, PostgreSQL or the heap beside an RSS): {}",
                    r.slope_mib_per_10min
                        .map_or("-".into(), |s| format!("{s:+.2} MiB/10 min"))
                ),
            ));
            continue;
        }
        let (ok, why) = match r.slope_mib_per_10min {
            Some(s) => (
                s <= bound,
                format!("{s:+.2} MiB/10 min over {:.0} min", r.judged_seconds / 60.0),
            ),
            None => (
                true,
                format!(
                    "not judged: no life of {:.0} min in the second half ({} restarts)",
                    goals.min_life / 60.0,
                    r.restarts
                ),
            ),
        };
        checks.push((format!("memory flat: {}", r.name), ok, why));
    }
    for l in lag {
        let s = l.slope_per_10min.unwrap_or(0.0);
        checks.push((
            format!("lag not creeping: {}", l.gatherer),
            s <= goals.lag_slope,
            format!(
                "{s:+.3} s/10 min outside faults, max {:.2} s outside, {:.1} s in all",
                l.max_calm_s, l.max_s
            ),
        ));
    }
    for f in lat.iter().filter(|f| f.judged) {
        let ok = f.p99_calm.is_some_and(|p| p <= goals.p99 && !f.p99_over);
        checks.push((
            format!("p99 end to end outside faults: {}", f.stream),
            ok,
            match f.p99_calm {
                Some(p) => format!(
                    "{}{:.0} ms over {} rows",
                    if f.p99_over { "> " } else { "" },
                    p * 1000.0,
                    f.rows_calm
                ),
                None => "no rows".into(),
            },
        ));
    }
    checks.push((
        "oracle exact (strict, settled)".into(),
        audit_ok,
        String::new(),
    ));
    checks.push(("archive verify".into(), archive_ok, String::new()));
    Verdict { checks }
}

#[cfg(test)]
mod tests;
