//! Metric names in texts (rules, dashboards, runbooks, docs) and on /metrics pages, so tests
//! can check that every name a text uses is one a service exposes.

use std::collections::BTreeSet;

/// Metric names a text mentions (ours all carry one of these prefixes).
pub fn mentioned(text: &str) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "ws_client_",
        "conn_manager_",
        "market_registry_",
        "backfill_",
        "writer_",
        "gaps_declared",
        "dedup_",
        "api_",
        "retention_",
        "export_",
        // Not "archive_": archive_periods and archive_touch are tables, archive_bucket a
        // Terraform output.
        "archive_objects_",
        "archive_bytes_",
        "archive_rows_",
        "archive_errors_",
        "archive_periods_pending",
        "archive_late_",
        "archive_partitions_",
        "spill_",
        "tls_reloads",
        "http_server_",
        "gatherer_build_info",
        "gatherer_credential_reloads",
        "deduplicator_build_info",
        "node_filesystem_",
        "node_memory_",
    ];
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| PREFIXES.iter().any(|p| t.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// Metric names a /metrics page exposes (histograms also as `_bucket`, `_sum`, `_count`).
pub fn exposed(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in page.lines() {
        let name = match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None if l.starts_with('#') => continue,
            None => l.split(['{', ' ']).next().unwrap_or(""),
        };
        if !name.is_empty() {
            out.insert(name.to_owned());
            if l.ends_with(" histogram") {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        }
    }
    out
}
