//! Logs (tracing) and metrics (the `metrics` facade, exported for Prometheus).
//!
//! The metrics recorder is process-global: [`metrics_handle`] installs it once and every
//! service in the process reports into it. It must never install a second one.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Starts logging to stderr. `filter` uses `RUST_LOG` syntax (`info`, `gatherer=debug,info`).
/// Calling it twice is harmless (the second call changes nothing).
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Histogram buckets for durations in seconds (1 ms to 30 s).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for end-to-end latencies (exchange to production commit): fine where the goals are
/// (p50 under 60 ms, p99 under 250 ms), coarse out to an hour for catch-ups.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Histograms that take [`LATENCY_BUCKETS`].
pub const LATENCY_HISTOGRAMS: &[&str] = &["dedup_end_to_end_seconds"];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            for name in LATENCY_HISTOGRAMS {
                builder = match builder.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full((*name).to_owned()),
                    LATENCY_BUCKETS,
                ) {
                    Ok(b) => b,
                    Err(_) => PrometheusBuilder::new(),
                };
            }
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is already installed (e.g. by a test harness): keep a
                // private one so /metrics still renders something.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// An axum router serving `GET /metrics` in the Prometheus text format.
pub fn metrics_router() -> axum::Router {
    let handle = metrics_handle();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let h = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    h.render(),
                )
            }
        }),
    )
}

/// Waits for SIGTERM or SIGINT and returns its name.
pub async fn shutdown_signal() -> &'static str {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Writes a service's bound addresses (`--addr-file`), whole or not at all: to a temporary
/// name, then renamed, so a reader never sees half a file. Whoever starts the service with
/// port 0 reads the ports it actually got, instead of guessing a free port that another
/// process can take first.
pub fn write_addr_file(path: &std::path::Path, doc: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(&tmp, path)
}

/// A metric's kind, in a table of descriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric's description: its kind, name, unit and help text.
pub type Help = (
    MetricKind,
    &'static str,
    Option<metrics::Unit>,
    &'static str,
);

/// Registers every description of `table` (shown as `# HELP` lines).
pub fn describe_all(table: &[Help]) {
    for &(kind, name, unit, help) in table {
        match (kind, unit) {
            (MetricKind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (MetricKind::Counter, None) => metrics::describe_counter!(name, help),
            (MetricKind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(name, help),
            (MetricKind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}
