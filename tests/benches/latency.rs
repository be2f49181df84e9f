//! Latency benchmark: the whole stack as `kalshi-stack up` runs it (simulator, three gatherers,
//! the deduplicator, local PostgreSQL clusters) following 1,000 markets at 2,000 msg/s; end to
//! end from each record's exchange time to the production COMMIT that carried it having
//! returned (`dedup_end_to_end_seconds`, through `kalshi-stack latency`), and every service's
//! memory while it runs.
//!
//! Run: `cargo bench -p kalshi-e2e --bench latency` after a release build of the binaries
//! (`./dev bench` does both; about three minutes). Settings: `LATENCY_MARKETS` (1000),
//! `LATENCY_RATE` (2000 msg/s), `LATENCY_SECS` (60 s measured after 20 s of warm-up).
//! There is no same-run baseline for a latency: the table holds it to the goal instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark binary

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kalshi_testkit::bench::{Row, mem_mib, report};
use serde_json::Value;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every descendant of `root` by command name (the services exec themselves, so their
/// names are their binaries').
fn services(root: u32) -> BTreeMap<String, Vec<u32>> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |x| x.1).to_owned();
        let ppid: u32 = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, (ppid, comm));
    }
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (&pid, (_, comm)) in &parent {
        let mut p = pid;
        while let Some((pp, _)) = parent.get(&p) {
            if *pp == root {
                out.entry(comm.clone()).or_default().push(pid);
                break;
            }
            p = *pp;
        }
    }
    out
}

fn stack(bin: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ms(q: &Value) -> Option<f64> {
    q.as_str()?.strip_suffix(" ms")?.trim().parse().ok()
}

fn main() {
    let markets = env_or("LATENCY_MARKETS", 1000);
    let rate = env_or("LATENCY_RATE", 2000);
    let secs = env_or("LATENCY_SECS", 60);
    let bin = kalshi_stack::default_bin_dir().join("kalshi-stack");
    assert!(
        bin.exists(),
        "{} is missing: build the release binaries first (cargo build --release --workspace --bins)",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("kalshi-latency-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("latency: the stack on {markets} markets at {rate} msg/s, {secs} s measured");
    let log = std::fs::File::create(std::env::temp_dir().join("kalshi-latency-bench.log")).unwrap();
    let mut up = Command::new(&bin)
        .arg("--data-dir")
        .arg(&dir)
        .args(["up", "--no-archive", "--markets", &markets.to_string()])
        .args(["--rate", &rate.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stack(&bin, &dir, &["latency", "--over", "1s"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the stack did not come up (see kalshi-latency-bench.log in the temp dir)"
        );
        assert!(up.try_wait().unwrap().is_none(), "kalshi-stack up exited");
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(20));
    let out = stack(
        &bin,
        &dir,
        &["latency", "--over", &format!("{secs}s"), "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let procs = services(up.id());
    let mut rss = BTreeMap::new();
    for (name, pids) in &procs {
        if ["gatherer", "deduplicator", "kalshi-sim"].contains(&name.as_str()) {
            let worst = pids
                .iter()
                .map(|p| mem_mib(*p, "VmHWM:"))
                .fold(0.0, f64::max);
            rss.insert(name.clone(), (pids.len(), worst));
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status();
    let _ = up.wait();
    let _ = std::fs::remove_dir_all(&dir);

    for r in rows.iter().filter(|r| r["rows"].as_u64().unwrap_or(0) > 0) {
        println!(
            "  {}: {} rows, p50 {}, p90 {}, p99 {}",
            r["stream"].as_str().unwrap_or(""),
            r["rows"],
            r["p50"].as_str().unwrap_or(""),
            r["p90"].as_str().unwrap_or(""),
            r["p99"].as_str().unwrap_or("")
        );
    }
    let dedup_rss = rss.get("deduplicator").map_or(0.0, |r| r.1);
    for (name, (n, mib)) in &rss {
        println!("  {name}: {n} process(es), peak RSS {mib:.1} MiB (the largest)");
    }
    for stream in ["orderbook_deltas", "trades", "tickers"] {
        let Some(r) = rows.iter().find(|r| r["stream"] == stream) else {
            continue;
        };
        for (q, goal) in [("p50", 60.0), ("p99", 250.0)] {
            let Some(v) = ms(&r[q]) else { continue };
            report(Row {
                figure: &format!("end to end {q}, {stream} ({markets} markets, {rate} msg/s)"),
                value: format!("{v:.0} ms"),
                baseline: format!("goal {goal:.0} ms"),
                ratio: format!("{:.2}", v / goal),
                rss: format!("dedup {dedup_rss:.0} MiB"),
            });
        }
    }
    let mem = rss
        .iter()
        .map(|(name, (n, mib))| {
            format!(
                "{name} {mib:.0} MiB{}",
                if *n > 1 { " (largest)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    report(Row {
        figure: &format!("peak RSS per service, {markets} markets at {rate} msg/s"),
        value: String::new(),
        baseline: String::new(),
        ratio: String::new(),
        rss: mem,
    });
}
