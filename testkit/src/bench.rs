//! What the benchmarks share: one row of the report `./dev bench` prints, and a process's
//! memory.
//!
//! Each benchmark prints its own detail and, when `KALSHI_BENCH_OUT` names a file, appends
//! its headline figures to it as tab-separated rows (figure, value, baseline, ratio, RSS);
//! `./dev bench` runs them all and prints those rows as one table.

use std::io::Write as _;

/// One headline figure, its baseline measured in the same run (or the goal it is held to,
/// as the label says), their ratio and the memory of the process measured.
pub struct Row<'a> {
    pub figure: &'a str,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub rss: String,
}

/// Appends `row` to `$KALSHI_BENCH_OUT` (nothing when it is unset).
pub fn report(row: Row<'_>) {
    let Ok(path) = std::env::var("KALSHI_BENCH_OUT") else {
        return;
    };
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\n",
        clean(row.figure),
        clean(&row.value),
        clean(&row.baseline),
        clean(&row.ratio),
        clean(&row.rss)
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot append to KALSHI_BENCH_OUT {path}: {e}");
    }
}

/// A `/proc/<pid>/status` memory field (`VmRSS:`, `VmHWM:`) in MiB; 0 when unreadable.
pub fn mem_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
