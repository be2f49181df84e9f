//! The soak's report on disk: `report.md` (verdict, figures, faults, the oracle's table),
//! `samples.json` (every sample, to plot again or compare runs) and one PNG per series.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use kalshi_testkit::oracle::Verdict as Audit;

use super::chart::{self, Series};
use super::report::{self, Fault, Goals, Sample};
use crate::Options;

/// What a soak ended with.
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub faults: Vec<Fault>,
    /// Seconds between samples.
    pub every: f64,
    /// Why production did not settle (then no audit ran).
    pub settled: Option<String>,
    /// A fault that could not be injected (it ended the fault phase early).
    pub failed: Option<String>,
    pub audit: Option<Audit>,
    /// `archive verify`'s outcome; None: no archive, or not run.
    pub archive: Option<bool>,
    /// Why the oracle and the archive check have no result yet (None: they ran).
    pub pending: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn series_of(samples: &[Sample], pick: impl Fn(&Sample) -> Vec<(String, f64)>) -> Vec<Series> {
    let mut out: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for s in samples {
        for (k, v) in pick(s) {
            out.entry(k).or_default().push((s.t, v));
        }
    }
    out.into_iter().collect()
}

/// The latency charts' ceiling: the tables give the figures beyond it.
const LATENCY_CLIP_MS: f64 = 1000.0;

/// The charts: `(file, title, unit, series)`.
fn charts(samples: &[Sample]) -> Vec<(&'static str, &'static str, &'static str, Vec<Series>)> {
    let ours = |k: &str| !k.starts_with("pg:") && k != "moto (S3)";
    let rss = |filter: &dyn Fn(&str) -> bool| {
        series_of(samples, |s| {
            s.procs
                .iter()
                .filter(|(k, _)| filter(k))
                .map(|(k, p)| (k.clone(), p.rss_bytes as f64 / MIB))
                .collect()
        })
    };
    let quantile = |which: usize| {
        series_of(samples, |s| {
            report::window_quantiles(s)
                .into_iter()
                .filter(|(k, _)| report::JUDGED_STREAMS.contains(&k.as_str()))
                .filter_map(|(k, q)| {
                    let v = if which == 0 { q.0 } else { q.1 };
                    // Clipped: a catch-up's minute would otherwise flatten every other line.
                    v.map(|v| (k, (v * 1000.0).min(LATENCY_CLIP_MS)))
                })
                .collect()
        })
    };
    vec![
        ("rss.png", "RSS of the services", "MiB", rss(&ours)),
        (
            "rss-postgres.png",
            "Anonymous RSS of each PostgreSQL cluster (all its processes) and the local S3",
            "MiB",
            rss(&|k: &str| !ours(k)),
        ),
        (
            "fds.png",
            "Open file descriptors",
            "descriptors",
            series_of(samples, |s| {
                s.procs
                    .iter()
                    .filter(|(k, _)| ours(k))
                    .map(|(k, p)| (k.clone(), p.fds as f64))
                    .collect()
            }),
        ),
        (
            "lag.png",
            "Production lag per gatherer (oldest record not yet in production)",
            "seconds",
            series_of(samples, |s| {
                s.lag_s.iter().map(|(k, v)| (k.clone(), *v)).collect()
            }),
        ),
        (
            "latency-p50.png",
            "End to end p50 (exchange time to production commit; clipped at 1 s)",
            "ms",
            quantile(0),
        ),
        (
            "latency-p99.png",
            "End to end p99 (exchange time to production commit; clipped at 1 s)",
            "ms",
            quantile(1),
        ),
        (
            "db-size.png",
            "Database sizes",
            "MiB",
            series_of(samples, |s| {
                s.db_bytes
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as f64 / MIB))
                    .collect()
            }),
        ),
        (
            "archive-lag.png",
            "Archive export lag",
            "seconds",
            series_of(samples, |s| {
                s.export_lag_s
                    .map(|v| ("export lag".to_owned(), v))
                    .into_iter()
                    .collect()
            }),
        ),
        (
            "cpu.png",
            "CPU: the machine busy (% of all cores)",
            "%",
            series_of(samples, |s| {
                s.cpu_busy
                    .map(|v| ("machine".to_owned(), v * 100.0))
                    .into_iter()
                    .collect()
            }),
        ),
        (
            "gaps.png",
            "Gap records declared in production",
            "records",
            series_of(samples, |s| {
                s.gaps
                    .map(|v| ("gaps".to_owned(), v as f64))
                    .into_iter()
                    .collect()
            }),
        ),
    ]
}

/// Writes the report; returns the verdict.
pub fn report(dir: &Path, o: &Outcome, goals: &Goals, opts: &Options) -> anyhow::Result<bool> {
    let rss = report::rss_figures(&o.samples, goals);
    let windows = report::windows(&o.samples, &o.faults, goals);
    let lag = report::lag_figures(&o.samples, &windows, o.every, goals);
    let lat = report::latency_figures(&o.samples, &windows, o.every, goals);
    let audit_ok = o.audit.as_ref().is_some_and(|a| a.ok);
    let mut verdict = report::verdict(&rss, &lag, &lat, goals, audit_ok, o.archive != Some(false));
    if let Some(why) = &o.pending {
        for c in verdict
            .checks
            .iter_mut()
            .filter(|c| c.0.starts_with("oracle") || c.0.starts_with("archive"))
        {
            c.1 = false;
            c.2 = format!("not run: {why}");
        }
    }
    if let Some(f) = &o.failed {
        verdict
            .checks
            .push(("every fault injected".into(), false, f.clone()));
    }
    if let Some(e) = &o.settled {
        verdict
            .checks
            .push(("production settled".into(), false, e.clone()));
    }
    let end = o.samples.last().map_or(0.0, |s| s.t);
    let mut drawn = Vec::new();
    for (file, title, unit, series) in charts(&o.samples) {
        chart::line_chart(&dir.join(file), title, unit, &series, &windows, end)
            .with_context(|| format!("draw {file}"))?;
        drawn.push((file, title));
    }
    std::fs::write(
        dir.join("samples.json"),
        serde_json::to_vec(&serde_json::json!({
            "samples": o.samples, "faults": o.faults, "goals": goals,
        }))?,
    )?;
    let mut md = String::new();
    let _ = writeln!(md, "# Soak report\n");
    let _ = writeln!(
        md,
        "{:.0} minutes; {} gatherers, {} markets, {} msg/s, archive {}; a sample every {:.0} s ({} samples); {} faults (shaded in the charts). Verdict: **{}**.\n",
        end / 60.0,
        opts.gatherers,
        opts.markets,
        opts.rate,
        if opts.archive {
            format!("every {}", humantime::format_duration(opts.archive_period))
        } else {
            "off".into()
        },
        o.every,
        o.samples.len(),
        o.faults.len(),
        if verdict.ok() { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(md, "| goal | met | figure |\n|---|---|---|");
    for (what, ok, why) in &verdict.checks {
        let _ = writeln!(
            md,
            "| {what} | {} | {why} |",
            if *ok { "yes" } else { "**NO**" }
        );
    }
    let _ = writeln!(
        md,
        "\n## Memory and files\n\nSlope: least squares over the longest life of the process within the second half, after its first {:.0} s (a restart starts a new life). PostgreSQL: anonymous RSS summed over a cluster's processes.\n",
        goals.warmup
    );
    let _ = writeln!(
        md,
        "| process | first MiB | last MiB | peak MiB | restarts | slope MiB/10 min | judged min | max fds | fd slope /10 min |\n|---|---|---|---|---|---|---|---|---|"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:+.p$}"));
    for r in &rss {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {} | {} |",
            r.name,
            r.first_mib,
            r.last_mib,
            r.peak_mib,
            r.restarts,
            opt(r.slope_mib_per_10min, 2),
            r.judged_seconds / 60.0,
            r.max_fds,
            opt(r.fd_slope_per_10min, 1)
        );
    }
    let cpu = report::cpu_figures(&o.samples);
    let (calm, slow, n_slow, n_calm) =
        report::busy_when_slow(&o.samples, &windows, o.every, goals, "orderbook_deltas");
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    let _ = writeln!(
        md,
        "\n## CPU\n\nThe machine was busy {} of its CPU time on average outside fault windows; {} in the {n_slow} of those {n_calm} sample windows whose orderbook_deltas p99 was over {:.0} ms. Per process (cores; PostgreSQL: its processes alive at each sample):\n\n| process | mean cores | peak cores |\n|---|---|---|",
        pct(calm),
        pct(slow),
        goals.p99 * 1000.0
    );
    for c in &cpu {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} |",
            c.name, c.mean_cores, c.peak_cores
        );
    }
    let _ = writeln!(
        md,
        "\n## Production lag\n\n| gatherer | max s | max s outside faults | slope s/10 min (second half, outside faults) |\n|---|---|---|---|"
    );
    for l in &lag {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {} |",
            l.gatherer,
            l.max_s,
            l.max_calm_s,
            opt(l.slope_per_10min, 3)
        );
    }
    let _ = writeln!(
        md,
        "\n## End to end (exchange time to production commit)\n\nOutside fault windows (a fault's window runs from its injection to {:.0} s after its scenario ended, and on until every gatherer's lag is back under a second). Judged: {}.\n",
        goals.grace,
        report::JUDGED_STREAMS.join(", ")
    );
    let _ = writeln!(
        md,
        "| stream | rows outside faults | p50 ms | p99 ms | p99 ms, all |\n|---|---|---|---|---|"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}", v * 1000.0));
    for f in &lat {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {}{} | {} |",
            f.stream,
            if f.judged { "" } else { " (not judged)" },
            f.rows_calm,
            ms(f.p50_calm),
            if f.p99_over { "> " } else { "" },
            ms(f.p99_calm),
            ms(f.p99_all)
        );
    }
    let last = o.samples.last();
    let _ = writeln!(md, "\n## Storage and archive at the end\n");
    if let Some(s) = last {
        for (db, b) in &s.db_bytes {
            let _ = writeln!(md, "- {db}: {:.1} MiB", *b as f64 / MIB);
        }
        let low = o.samples.iter().filter_map(|s| s.disk_free_bytes).min();
        let _ = writeln!(
            md,
            "- free disk under the data directory: {} at the end, {} at the least",
            s.disk_free_bytes.map_or("-".into(), |b| format!(
                "{:.1} GiB",
                b as f64 / (1024.0 * MIB)
            )),
            low.map_or("-".into(), |b| format!(
                "{:.1} GiB",
                b as f64 / (1024.0 * MIB)
            ))
        );
        let _ = writeln!(
            md,
            "- archive export lag: {}",
            s.export_lag_s.map_or("-".into(), |v| format!("{v:.0} s"))
        );
        let _ = writeln!(
            md,
            "- gap records declared: {}",
            s.gaps.map_or("-".into(), |v| v.to_string())
        );
    }
    let _ = writeln!(
        md,
        "- archive verify: {}",
        match (o.archive, &o.pending) {
            (_, Some(why)) => format!("not run: {why}"),
            (None, None) => "no archive".into(),
            (Some(true), None) => "every period matches production".into(),
            (Some(false), None) => "**FAILED**".into(),
        }
    );
    let _ = writeln!(
        md,
        "\n## Faults\n\nRecovery: from the scenario's end until every gatherer's production lag was under {:.0} s again (the fault's window, with the {:.0} s grace, ends there).\n\n| # | fault | from min | to min | recovered after s |\n|---|---|---|---|---|",
        goals.recovered_lag, goals.grace
    );
    for (i, (f, w)) in o.faults.iter().zip(&windows).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.0} |",
            i + 1,
            f.name,
            f.start / 60.0,
            f.end / 60.0,
            (w.end + goals.grace - f.end).max(0.0)
        );
    }
    let _ = writeln!(md, "\n## The oracle (strict, settled)\n");
    match (&o.audit, &o.settled) {
        _ if o.pending.is_some() => {
            let _ = writeln!(md, "not run: {}", o.pending.as_deref().unwrap_or_default());
        }
        (Some(a), _) => {
            let _ = writeln!(md, "```\n{}```", a.table());
        }
        (None, Some(e)) => {
            let _ = writeln!(md, "not run: production did not settle ({e})");
        }
        (None, None) => {
            let _ = writeln!(md, "not run");
        }
    }
    let _ = writeln!(md, "\n## Charts\n");
    for (file, title) in &drawn {
        let _ = writeln!(md, "### {title}\n\n![{title}]({file})\n");
    }
    std::fs::write(dir.join("report.md"), md)?;
    println!("soak report: {}", dir.join("report.md").display());
    for (what, ok, why) in &verdict.checks {
        println!(
            "  {} {what}{}{why}",
            if *ok { "ok  " } else { "FAIL" },
            if why.is_empty() { "" } else { ": " }
        );
    }
    Ok(verdict.ok())
}
