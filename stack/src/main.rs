//! `kalshi-stack`: the whole system on one machine.
//!
//! `up` starts it and shows live progress until Ctrl-C; `kill`, `start`, `failover`, `fault`,
//! `partition`, `production` and `rate` act on a running stack (through its control port);
//! `audit` compares production with the simulator's ground truth; `chaos` runs a fault scenario
//! on a fresh stack and finishes with the audit.
//!
//! It must never act on a command it cannot name exactly (see [`kalshi_stack::control`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kalshi_stack::control::{Action, Partition, Power, Target};
use kalshi_stack::{Endpoints, Options, Stack, audit, scenarios};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Runs kalshi-data on one machine: the exchange simulator, N gatherers each with its own
/// PostgreSQL, the deduplicator and a production PostgreSQL, as child processes (built
/// binaries are taken from the directory of this executable, or $KALSHI_BIN_DIR). Nothing is
/// left running when it stops, even if it is killed.
#[derive(Parser)]
#[command(name = "kalshi-stack", version)]
struct Cli {
    /// Where configurations, logs, clusters and stack.json live.
    #[arg(long, global = true, default_value = "target/kalshi-stack")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct UpArgs {
    #[arg(long, default_value_t = 3)]
    gatherers: usize,
    #[arg(long, default_value_t = 50)]
    markets: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulator messages per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Hours of trades the simulator has from before its start, in its REST tiers only
    /// (`kalshi-stack import` brings them in).
    #[arg(long, default_value_t = 0)]
    history_hours: u32,
    /// Markets that settled in that history: only `/historical/markets` serves them (an import
    /// brings in those its trades are of).
    #[arg(long, default_value_t = 0)]
    history_markets: usize,
    /// A synchronous streaming standby of production behind a TCP endpoint (`failover`).
    #[arg(long)]
    ha: bool,
    /// A second deduplicator as a warm standby: one holds the lease and writes, the other
    /// takes over when it dies (`kill deduplicator` kills whichever is active).
    #[arg(long)]
    standby: bool,
    /// Keep the data directory (clusters, logs, truth) after stopping.
    #[arg(long)]
    keep: bool,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// Service log level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Plaintext gRPC between the deduplicator and the gatherers. Without it the stack makes a
    /// throwaway CA and certificates (under the data directory's tls/) and runs with mTLS.
    #[arg(long)]
    insecure: bool,
    /// No archive: without it the stack runs a local S3 (moto) and the deduplicator archives
    /// to it (bucket kalshi-archive, one set of Parquet files per --archive-period).
    #[arg(long)]
    no_archive: bool,
    /// One set of Parquet files per period: default 1m on the simulator (files within
    /// minutes), 1h on a real exchange (the production default: fewer, larger files).
    #[arg(long, value_parser = humantime::parse_duration)]
    archive_period: Option<Duration>,
    /// Capture a real exchange instead of running the simulator: `prod`, `demo`, or a REST
    /// base such as https://host/trade-api/v2 (the WebSocket URL is derived from it as
    /// Kalshi's hosts do; --ws-url overrides). Needs --key-id and --key-file. The data
    /// directory is kept: stop, start again on it, and everything resumes from its cursors.
    /// The archive goes to <data-dir>/archive (the S3 layout) unless --no-archive.
    #[arg(long, env = "KALSHI_EXCHANGE", value_name = "prod|demo|URL")]
    exchange: Option<String>,
    /// The exchange's WebSocket URL, when it cannot be derived from --exchange.
    #[arg(long, requires = "exchange")]
    ws_url: Option<String>,
    /// The API key's id (Kalshi: account settings, API keys).
    #[arg(long, env = "KALSHI_KEY_ID", requires = "exchange")]
    key_id: Option<String>,
    /// The API key's RSA private key (PEM), as Kalshi gave it.
    #[arg(long, env = "KALSHI_KEY_FILE", requires = "exchange")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything and show live progress until Ctrl-C.
    Up(UpArgs),
    /// SIGKILL a service: `kill gatherer 2`, `kill deduplicator`.
    Kill {
        #[arg(value_enum)]
        target: Target,
        n: Option<usize>,
    },
    /// Start a stopped service: `start gatherer 2`, `start deduplicator`.
    Start {
        #[arg(value_enum)]
        target: Target,
        n: Option<usize>,
    },
    /// SIGTERM a service (graceful): `term gatherer 2`, `term deduplicator`.
    Term {
        #[arg(value_enum)]
        target: Target,
        n: Option<usize>,
    },
    /// Kill the production primary, promote the standby, move the endpoint (needs `up --ha`).
    Failover,
    /// A simulator fault, as JSON: `fault '{"fault":"outage","duration_ms":5000}'`.
    Fault { json: String },
    /// Stall (`on`) or restore (`off`) the network between the deduplicator and gatherer N.
    Partition {
        n: usize,
        #[arg(value_enum)]
        state: Partition,
    },
    /// Production `down` or `up`.
    Production {
        #[arg(value_enum)]
        state: Power,
    },
    /// Set the simulator's message rate.
    Rate { rate: u64 },
    /// Import the trades of a past window from the exchange's REST tiers into the stack
    /// (`gatherer import` on the first gatherer, followed with a progress line; production
    /// takes them from there). Running it again, or over a window captured live, stores
    /// nothing twice.
    Import {
        /// Start: RFC 3339 or Unix milliseconds (inclusive).
        #[arg(long)]
        from: String,
        /// End: RFC 3339 or Unix milliseconds (exclusive).
        #[arg(long)]
        to: String,
    },
    /// Compare production with the ground truth through the oracle; exit 1 on any silent loss,
    /// duplicate, invented or quarantined record, wrong book or registry entry, or unsubscribed
    /// market; exit 3 (INCONCLUSIVE) when nothing is wrong but an excuse could not be decided
    /// (a configured gatherer could not be read, or no longer holds that time). On a live
    /// stack, records newer than the cut (where production is known complete) are in flight.
    Audit {
        #[arg(long)]
        json: bool,
        /// Records of a market within this time after it appeared are "before subscription".
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        subscription_latency: Duration,
        /// Bound on the time from the exchange publishing a record to a gatherer storing it:
        /// the cut lies this far before the moment the gatherers' heads are read.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        ingest_allowance: Duration,
        /// Also check the S3 archive: `deduplicator archive verify` compares every archived
        /// period (files, row counts, content checksums) with production, which the audit has
        /// just compared with the ground truth.
        #[arg(long)]
        archive: bool,
    },
    /// The running stack at a glance: each gatherer's health, inserts, connections, gaps and
    /// merge lag; the deduplicator's health and what it wrote (`--json`: one JSON document).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// End-to-end latency (exchange timestamp to production's COMMIT having returned) of what
    /// the deduplicator commits over the next `--over`: rows, p50, p90 and p99 per stream.
    Latency {
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        over: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Endurance: a fresh stack at production shape for --minutes with faults of every kind
    /// from the chaos list at random intervals, sampled every --every (RSS and open files of
    /// every process, production lag, end-to-end latency, database sizes, archive export lag,
    /// declared gaps); then the oracle (strict, settled), `archive verify`, and a report in
    /// --out (report.md, samples.json, PNG charts). Exit 0 only when every goal is met: no
    /// process's RSS slope above --rss-slope-mib per 10 minutes over the second half, no
    /// creeping lag, p99 end to end under --p99 outside fault windows, the oracle exact.
    Soak(SoakArgs),
    /// Run a fault scenario on a fresh stack, then the audit (`--list` for the scenarios).
    Chaos {
        #[arg(long, default_value = "mixed", value_parser = clap::builder::PossibleValuesParser::new(scenarios::SCENARIOS.iter().map(|(name, _)| *name)))]
        scenario: String,
        /// Minutes of faults for `mixed`.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        #[arg(long)]
        list: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        up: UpArgs,
    },
}

#[derive(clap::Args, Clone)]
struct SoakArgs {
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Between samples.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// The shortest calm between two faults.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    fault_gap_min: Duration,
    /// The longest calm between two faults.
    #[arg(long, default_value = "150s", value_parser = humantime::parse_duration)]
    fault_gap_max: Duration,
    /// Where the report goes (outside the data directory, which is removed at the end unless
    /// --keep).
    #[arg(long, default_value = "target/kalshi-soak")]
    out: PathBuf,
    /// The memory goal: MiB per 10 minutes.
    #[arg(long, default_value_t = 1.0)]
    rss_slope_mib: f64,
    /// The latency goal outside fault windows.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    p99: Duration,
    /// Seconds after a fault that still count as its window.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    fault_grace: Duration,
    #[arg(long, default_value_t = 3)]
    gatherers: usize,
    #[arg(long, default_value_t = 1000)]
    markets: usize,
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    archive_period: Duration,
    /// A synchronous standby of production (adds `failover` to the faults).
    #[arg(long)]
    ha: bool,
    /// A warm standby deduplicator.
    #[arg(long)]
    standby: bool,
    #[arg(long)]
    keep: bool,
    /// Start nothing: make the report again from --out's samples.jsonl and faults.jsonl (a
    /// soak stopped or killed before its own report).
    #[arg(long)]
    report_only: bool,
}

impl SoakArgs {
    fn up(&self) -> UpArgs {
        UpArgs {
            gatherers: self.gatherers,
            markets: self.markets,
            seed: self.seed,
            rate: self.rate,
            history_hours: 0,
            history_markets: 0,
            ha: self.ha,
            standby: self.standby,
            keep: self.keep,
            every: 2,
            log_level: "info".into(),
            insecure: false,
            no_archive: false,
            archive_period: Some(self.archive_period),
            exchange: None,
            ws_url: None,
            key_id: None,
            key_file: None,
        }
    }
}

async fn soak(data_dir: PathBuf, a: SoakArgs) -> anyhow::Result<bool> {
    use kalshi_stack::soak;
    let opts = options(data_dir.clone(), &a.up())?;
    let o = soak::SoakOptions {
        minutes: a.minutes,
        every: a.every,
        fault_gap: (a.fault_gap_min, a.fault_gap_max.max(a.fault_gap_min)),
        seed: a.seed,
        out: a.out.clone(),
        goals: soak::report::Goals {
            rss_slope: a.rss_slope_mib * 1024.0 * 1024.0,
            p99: a.p99.as_secs_f64(),
            grace: a.fault_grace.as_secs_f64(),
            ..soak::report::Goals::default()
        },
    };
    if a.report_only {
        return soak::report_only(&o.out, &o, &opts);
    }
    println!(
        "soak: {} minutes, {} gatherers, {} markets, {} msg/s; report in {}",
        a.minutes,
        a.gatherers,
        a.markets,
        a.rate,
        o.out.display()
    );
    soak::check_disk(&data_dir, a.minutes, a.rate)?;
    let stack = Stack::up(opts).await?;
    soak::run(stack, &o).await
}

fn options(data_dir: PathBuf, a: &UpArgs) -> anyhow::Result<Options> {
    let mut o = Options::new(data_dir, kalshi_stack::default_bin_dir());
    if let Some(name) = &a.exchange {
        o.exchange = Some(kalshi_stack::exchange::Exchange::resolve(
            name,
            a.ws_url.as_deref(),
            a.key_id.as_deref().unwrap_or_default(),
            a.key_file.clone().context(
                "--key-file is required with --exchange (the API key's private key, PEM)",
            )?,
        )?);
    }
    o.gatherers = a.gatherers;
    o.markets = a.markets;
    o.seed = a.seed;
    o.rate = a.rate;
    o.history_hours = a.history_hours;
    o.history_markets = a.history_markets;
    o.ha = a.ha;
    o.standby = a.standby;
    o.keep = a.keep;
    o.log_level = a.log_level.clone();
    o.mtls = !a.insecure;
    o.archive = !a.no_archive;
    o.archive_period = a.archive_period.unwrap_or(if o.exchange.is_some() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(60)
    });
    Ok(o)
}

fn endpoints(data_dir: &std::path::Path) -> anyhow::Result<Endpoints> {
    let p = data_dir.join("stack.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "no running stack: cannot read {} (start one with `kalshi-stack up`)",
            p.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

async fn control(data_dir: &std::path::Path, action: Action) -> anyhow::Result<()> {
    let e = endpoints(data_dir)?;
    let v = kalshi_stack::post(
        &format!("{}/control", e.control),
        serde_json::to_value(action)?,
    )
    .await?;
    println!("{}", v["result"].as_str().unwrap_or("ok"));
    Ok(())
}

async fn up(data_dir: PathBuf, a: UpArgs) -> anyhow::Result<()> {
    let opts = options(data_dir.clone(), &a)?;
    match &opts.exchange {
        Some(x) => println!(
            "starting kalshi-stack in {} ({} gatherers capturing {} as key {}{}; the data directory is kept)",
            data_dir.display(),
            a.gatherers,
            x.rest_url,
            x.key_id,
            if a.ha { ", HA production" } else { "" }
        ),
        None => println!(
            "starting kalshi-stack in {} ({} gatherers, {} markets, {} msg/s{})",
            data_dir.display(),
            a.gatherers,
            a.markets,
            a.rate,
            if a.ha { ", HA production" } else { "" }
        ),
    }
    let mut stack = Stack::up(opts).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    stack.endpoints.control = format!("http://{}", listener.local_addr()?);
    stack.write_endpoints()?;
    let e = stack.endpoints.clone();
    match (&stack.opts.exchange, &e.archive_dir) {
        (Some(x), dir) => {
            println!("exchange      REST {}  WS {}", x.rest_url, x.ws_url);
            if let Some(d) = dir {
                println!(
                    "archive       {} (Parquet, the S3 layout: docs/archive.md)",
                    d.display()
                );
            }
        }
        (None, _) => println!(
            "simulator     REST {}  WS {}  control {}",
            e.sim_rest, e.sim_ws, e.sim_control
        ),
    }
    for g in &e.gatherers {
        println!(
            "{:<13} gRPC {}  health {}  metrics {}  db {}",
            g.id, g.grpc, g.health, g.metrics, g.database_url
        );
    }
    println!(
        "deduplicator  health {}  metrics {}  config {}",
        e.deduplicator_health,
        e.deduplicator_metrics,
        e.deduplicator_config.display()
    );
    // Without its password (loopback trusts it; the password is there to be kept secret).
    println!(
        "production    {}",
        kalshi_stack::without_password(&e.production_url)
    );
    println!(
        "logs          {}/logs   control {}   (Ctrl-C stops everything)",
        data_dir.display(),
        e.control
    );
    if stack.opts.exchange.is_some() {
        println!(
            "try: deduplicator --config {} status | kalshi-stack kill gatherer 2 | kalshi-stack audit (the gatherers against production)",
            e.deduplicator_config.display()
        );
    } else {
        println!(
            "try: kalshi-stack kill gatherer 2 | kalshi-stack fault '{{\"fault\":\"outage\",\"duration_ms\":5000}}' | kalshi-stack audit"
        );
    }
    let stack = Arc::new(Mutex::new(Some(stack)));
    let s2 = stack.clone();
    let app = axum::Router::new().route(
        "/control",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let s = s2.clone();
            async move {
                let mut guard = s.lock().await;
                let Some(st) = guard.as_mut() else {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({ "error": "the stack is stopping" })),
                    );
                };
                let action = match serde_json::from_value::<Action>(body) {
                    Ok(a) => a,
                    Err(e) => {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(json!({ "error": format!("not a stack command: {e}") })),
                        );
                    }
                };
                match action.apply(st).await {
                    Ok(r) => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({ "result": r })),
                    ),
                    Err(e) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({ "error": format!("{e:#}") })),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut last = kalshi_stack::Progress::default();
    let signal = kalshi_shared::telemetry::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep(Duration::from_secs(a.every.max(1))) => {
                let mut guard = stack.lock().await;
                let Some(st) = guard.as_mut() else { break };
                let line = st.progress(&mut last).await;
                println!("{}", kalshi_shared::time::format_rfc3339_s(kalshi_shared::time::now_ms() / 1000));
                print!("{line}");
            }
        }
    }
    println!("stopping...");
    let st = stack
        .lock()
        .await
        .take()
        .context("the stack is already stopped")?;
    let codes = tokio::task::spawn_blocking(move || st.down()).await?;
    for (name, code) in codes {
        println!(
            "  {name}: exit {}",
            code.map_or("killed".to_owned(), |c| c.to_string())
        );
    }
    Ok(())
}

async fn chaos(
    data_dir: PathBuf,
    scenario: &str,
    minutes: f64,
    json_out: bool,
    a: UpArgs,
) -> anyhow::Result<bool> {
    let mut a = a;
    if scenario == "failover" {
        a.ha = true;
    }
    if a.exchange.is_some() {
        anyhow::bail!("chaos injects faults in the simulator: it cannot run against --exchange");
    }
    let opts = options(data_dir, &a)?;
    println!("chaos {scenario}: starting a fresh stack");
    let mut stack = Stack::up(opts).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let faults = if scenario == "mixed" {
        scenarios::mixed(&mut stack, minutes, a.seed).await?
    } else {
        scenarios::run_one(&mut stack, scenario).await?;
        vec![scenario.to_owned()]
    };
    println!(
        "faults done ({}); stopping traffic and letting production catch up",
        faults.join(", ")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.set_rate(0).await?;
    stack.wait_settled(Duration::from_secs(300)).await?;
    let report = audit::run(
        &stack.endpoints.sim_control,
        &stack.production_direct_url(),
        &stack.endpoints.gatherers,
        &audit::AuditOptions {
            settled: true,
            subscription_latency: scenarios::subscription_bound(scenario),
            ..audit::AuditOptions::default()
        },
    )
    .await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "scenario": scenario, "faults": faults, "audit": report })
            )?
        );
    } else {
        print!("{}", report.table());
    }
    let _ = tokio::task::spawn_blocking(move || stack.down()).await;
    Ok(report.ok)
}

/// `kalshi-stack latency`: two scrapes `over` apart, the quantiles of what came between.
async fn latency(metrics_url: &str, over: Duration, as_json: bool) -> anyhow::Result<bool> {
    use kalshi_stack::latency;
    let before = latency::parse(&kalshi_stack::get_text(metrics_url).await?);
    tokio::time::sleep(over).await;
    let after = latency::parse(&kalshi_stack::get_text(metrics_url).await?);
    let window = latency::delta(&before, &after);
    let rows: Vec<Value> = window
        .iter()
        .map(|(stream, b)| {
            let (n, p50, p90, p99) = latency::summary(b);
            json!({"stream": stream, "rows": n, "p50": p50.to_string(), "p90": p90.to_string(), "p99": p99.to_string()})
        })
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "exchange time to production commit, over {}",
            humantime::format_duration(over)
        );
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9}",
            "stream", "rows", "p50", "p90", "p99"
        );
        for r in &rows {
            println!(
                "{:<22} {:>9} {:>9} {:>9} {:>9}",
                r["stream"].as_str().unwrap_or(""),
                r["rows"].as_u64().unwrap_or(0),
                r["p50"].as_str().unwrap_or(""),
                r["p90"].as_str().unwrap_or(""),
                r["p99"].as_str().unwrap_or("")
            );
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kalshi_shared::telemetry::init_logging(
        "kalshi_stack=info,warn",
        kalshi_shared::telemetry::LogFormat::Text,
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kalshi-stack: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = cli.data_dir.clone();
    let r: anyhow::Result<bool> = rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match cli.command {
            Cmd::Up(a) => up(dir, a).await.map(|_| true),
            Cmd::Kill { target, n } => control(&dir, Action::Kill { target, n })
                .await
                .map(|_| true),
            Cmd::Start { target, n } => control(&dir, Action::Start { target, n })
                .await
                .map(|_| true),
            Cmd::Term { target, n } => control(&dir, Action::Term { target, n })
                .await
                .map(|_| true),
            Cmd::Failover => control(&dir, Action::Failover).await.map(|_| true),
            Cmd::Fault { json: text } => {
                let fault: Value = serde_json::from_str(&text).context("the fault must be JSON")?;
                control(&dir, Action::Fault { fault }).await.map(|_| true)
            }
            Cmd::Partition { n, state } => control(&dir, Action::Partition { n, state })
                .await
                .map(|_| true),
            Cmd::Production { state } => control(&dir, Action::Production { state })
                .await
                .map(|_| true),
            Cmd::Rate { rate } => control(&dir, Action::Rate { rate }).await.map(|_| true),
            Cmd::Import { from, to } => {
                let e = endpoints(&dir)?;
                let g = e.gatherers.first().context("the stack has no gatherer")?;
                let status =
                    std::process::Command::new(kalshi_stack::default_bin_dir().join("gatherer"))
                        .arg("--config")
                        .arg(dir.join(format!("{}.toml", g.id)))
                        .args(["import", "--from", &from, "--to", &to])
                        .status()
                        .context("run gatherer import")?;
                Ok(status.success())
            }
            Cmd::Audit {
                json: as_json,
                subscription_latency,
                ingest_allowance,
                archive,
            } => {
                let e = endpoints(&dir)?;
                let opts = audit::AuditOptions {
                    subscription_latency,
                    ingest_allowance,
                    progress: !as_json,
                    ..audit::AuditOptions::default()
                };
                if e.sim_control.is_empty() {
                    // A real exchange: no truth to judge by, so the gatherers are the witnesses.
                    let report =
                        kalshi_stack::crosscheck::run(&e.production_url, &e.gatherers, &opts)
                            .await?;
                    if as_json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.table());
                    }
                    let archive_ok = if archive {
                        audit::verify_archive(&e)?
                    } else {
                        true
                    };
                    if report.inconclusive() && archive_ok && report.ok() {
                        return Err(anyhow::Error::new(Inconclusive));
                    }
                    return Ok(report.ok() && !report.inconclusive() && archive_ok);
                }
                let report =
                    audit::run(&e.sim_control, &e.production_url, &e.gatherers, &opts).await?;
                if as_json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.table());
                }
                let archive_ok = if archive {
                    audit::verify_archive(&e)?
                } else {
                    true
                };
                if report.outcome == kalshi_testkit::oracle::Outcome::Inconclusive && archive_ok {
                    // Nothing wrong found, but not everything decided: its own exit code.
                    return Err(anyhow::Error::new(Inconclusive));
                }
                Ok(report.ok && archive_ok)
            }
            Cmd::Status { json } => {
                let e = endpoints(&dir)?;
                let v = kalshi_stack::status::status(&e).await;
                if json {
                    println!("{v}");
                } else {
                    print!("{}", kalshi_stack::status::text(&v));
                }
                Ok(true)
            }
            Cmd::Latency { over, json } => {
                let e = endpoints(&dir)?;
                latency(&e.deduplicator_metrics, over, json).await
            }
            Cmd::Soak(a) => soak(dir, a).await,
            Cmd::Chaos {
                scenario,
                minutes,
                list,
                json,
                up,
            } => {
                if list {
                    for (name, what) in scenarios::SCENARIOS {
                        println!("{name:<20} {what}");
                    }
                    return Ok(true);
                }
                chaos(dir, &scenario, minutes, json, up).await
            }
        }
    });
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Inconclusive>() => ExitCode::from(3),
        Err(e) => {
            eprintln!("kalshi-stack: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The audit found nothing wrong but could not decide everything (exit 3).
#[derive(Debug)]
struct Inconclusive;

impl std::fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the audit is inconclusive")
    }
}

impl std::error::Error for Inconclusive {}
