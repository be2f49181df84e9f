//! `deduplicator`: parses the command line, loads the configuration, and runs the service
//! (default) or one of the operator commands. The service runs until SIGTERM/SIGINT (exit 0
//! after the writers committed what they held) or a failure (exit 1). Invalid configuration
//! exits with 64 before anything is bound or connected.
//!
//! It must never start the service on a configuration it could not validate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod cli;
use deduplicator::records::Stream;
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;

/// Merges every gatherer into the production PostgreSQL exactly once: tails each gatherer's
/// streams over gRPC from the cursors stored in production, drops duplicates, and commits each
/// batch with its cursors in one transaction, retrying through failover. Health on http.listen
/// (/health), Prometheus metrics on http.metrics_listen (/metrics).
#[derive(Parser)]
#[command(name = "deduplicator", version, after_help = deduplicator::config::REFERENCE)]
struct Cli {
    /// The configuration file (TOML). Every key can also be set from the environment as
    /// DEDUPLICATOR__SECTION__KEY; without a file, defaults plus the environment are used.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,

    /// When running, write the bound addresses as JSON ({"http", "metrics", "pid"}) to this
    /// file once listening (written whole, then renamed): start with port 0 and read the ports.
    #[arg(long, value_name = "FILE", global = true)]
    addr_file: Option<PathBuf>,

    /// Print machine-readable output instead of text: one JSON document (status, gaps,
    /// archive status, archive verify, restore, export; docs/deduplicator.md has each schema).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Apply the embedded production schema migrations and exit (also done at start-up).
    Migrate,
    /// Print each gatherer's stored cursor, its head, the records behind and its health.
    Status,
    /// The S3 archive: what is archived, pending and late, and a full check against
    /// production.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Reload archived periods from S3 into production, through the writers' ON CONFLICT
    /// merge: rows production already holds are left alone, so running it twice changes
    /// nothing. Every file is checked against its manifest first.
    Restore {
        /// Start: RFC 3339 or Unix milliseconds (periods overlapping [from, to) are restored).
        #[arg(long)]
        from: String,
        /// End (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Only these streams (comma-separated table names; default: all archived).
        #[arg(long, value_delimiter = ',')]
        streams: Vec<String>,
    },
    /// Rows production refused for their data (22xxx/23xxx) or malformed records, kept in
    /// `quarantine` with their error (runbooks/quarantine.md).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Export one stream's rows of a window, for some markets, events or series, as CSV
    /// (dollars, contracts) or Parquet (the archive's typed columns), from production, or from
    /// the archive for periods retention retired from production: the same rows either way.
    /// Prints the exact row count (--json: one JSON object).
    Export(cli::export::ExportArgs),
    /// List the windows that no configured gatherer covered (from the merged gaps).
    Gaps {
        /// Start of the window: RFC 3339 (2026-11-22T10:00:00Z) or Unix milliseconds.
        #[arg(long)]
        from: String,
        /// End of the window (default: now).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Periods archived (version, rows, verified), pending and late.
    Status,
    /// S3 against production for every archived period in the window: manifests, row counts
    /// and content checksums per stream, and every file's bytes. Exit 3 on any difference.
    Verify {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Quarantined rows, oldest first: id, when, gatherer, stream, cursor, SQLSTATE, error and
    /// what the record was. Rows a replay already put in their table are left out unless
    /// --all.
    List {
        /// Only this stream (a table name, e.g. trades).
        #[arg(long)]
        stream: Option<String>,
        /// Only these ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        id: Vec<i64>,
        /// Include rows already replayed into their table.
        #[arg(long)]
        all: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Writes the unresolved quarantined rows into their tables through the writers' own
    /// merge, after the cause is fixed: a row production already holds is left alone, each row
    /// is marked with what happened (inserted, already_present, refused, invalid) and a second
    /// run changes nothing. Exit 0 when every row is resolved, 3 when some are refused again,
    /// 1 when production fails for a reason that is not the rows'.
    Replay {
        /// Only this stream (a table name).
        #[arg(long)]
        stream: Option<String>,
        /// Only these ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        id: Vec<i64>,
    },
}

/// `--from`/`--to` as Unix ms, `from <= to`.
fn window(from: &str, to: Option<&str>) -> anyhow::Result<(i64, i64)> {
    let from = parse_time(from)?;
    let to = to.map_or(Ok(kalshi_shared::time::now_ms()), parse_time)?;
    if from > to {
        anyhow::bail!("--from is after --to");
    }
    Ok((from, to))
}

fn parse_time(s: &str) -> Result<i64, kalshi_shared::time::CliTimeError> {
    kalshi_shared::time::parse_cli_ms(s)
}

fn main() -> ExitCode {
    deduplicator::memory::configure();
    let cli = Cli::parse();
    let cfg = match deduplicator::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deduplicator: invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.check_config {
        println!(
            "deduplicator: configuration is valid ({} gatherers)",
            cfg.gatherers.len()
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deduplicator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every command logs (to standard error), as the service does.
    kalshi_shared::telemetry::init_logging(&cfg.log.level, cfg.log.format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => runtime.block_on(run(cfg, cli.addr_file)),
        Command::Export(args) => runtime.block_on(cli::export::run(cfg, args, cli.json)),
        Command::Migrate => runtime.block_on(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let prod = match connect(&cfg).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("deduplicator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match prod.migrate().await {
                Ok(v) if v.is_empty() => {
                    println!("production schema is up to date");
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    println!("applied migrations {v:?}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("deduplicator: migration failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Status => runtime.block_on(status(cfg, cli.json)),
        Command::Archive { command } => runtime.block_on(archive_cmd(cfg, command, cli.json)),
        Command::Restore { from, to, streams } => match window(&from, to.as_deref()) {
            Ok((from, to)) => runtime.block_on(restore(cfg, from, to, streams, cli.json)),
            Err(e) => {
                eprintln!("deduplicator: {e}");
                ExitCode::from(64)
            }
        },
        Command::Quarantine { command } => runtime.block_on(quarantine_cmd(cfg, command)),
        Command::Gaps { from, to } => match window(&from, to.as_deref()) {
            Ok((from, to)) => runtime.block_on(gaps(cfg, from, to, cli.json)),
            Err(e) => {
                eprintln!("deduplicator: {e}");
                ExitCode::from(64)
            }
        },
    }
}

async fn connect(
    cfg: &deduplicator::Config,
) -> anyhow::Result<std::sync::Arc<deduplicator::db::Prod>> {
    let prod = deduplicator::db::Prod::new(cfg.production.clone())?;
    if cfg.rds.iam_auth {
        let sdk = deduplicator::rds::sdk_config(&cfg.rds).await;
        deduplicator::rds::refresh_token(&prod, &sdk, &cfg.rds.region).await?;
    }
    Ok(prod)
}

async fn run(cfg: deduplicator::Config, addr_file: Option<PathBuf>) -> ExitCode {
    let d = match deduplicator::start(cfg).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "deduplicator failed to start");
            return ExitCode::FAILURE;
        }
    };
    let doc = serde_json::json!({
        "http": d.http_addr.to_string(),
        "metrics": d.metrics_addr.to_string(),
        "pid": std::process::id(),
    });
    let addr_file = addr_file.as_deref().map(|p| (p, doc));
    kalshi_shared::service::run_until_signal("deduplicator", d.into_service(), addr_file).await
}

/// `deduplicator status`: production's cursors next to each gatherer's heads.
async fn status(cfg: deduplicator::Config, json: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prod = match connect(&cfg).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deduplicator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cursors = match prod.cursors().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deduplicator: cannot read sync_cursors from production: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source_cfg = deduplicator::source::SourceConfig::of(&cfg);
    let mut all_ok = true;
    let mut doc = Vec::new();
    if !json {
        println!(
            "{:<12} {:<20} {:>14} {:>14} {:>12}  health",
            "gatherer", "stream", "cursor", "head", "behind"
        );
    }
    for g in &cfg.gatherers {
        // The channel the service reads this gatherer with (`[sources]`, mTLS with
        // `[sources.tls]`): what works here works for the service, and the other way round.
        let remote = async {
            let ch = deduplicator::source::channel(g, cfg.sources_tls.clone(), &source_cfg)
                .map_err(|e| e.to_string())?;
            GathererClient::new(ch)
                .max_decoding_message_size(source_cfg.max_message_bytes)
                .status(pb::StatusRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| match e.code() {
                    tonic::Code::Unavailable => format!("unreachable: {}", e.message()),
                    _ => format!("status failed: {}", e.message()),
                })
        };
        let st = tokio::time::timeout(cfg.sources.connect_timeout * 2, remote)
            .await
            .unwrap_or_else(|_| Err("unreachable: timed out".into()));
        if let Ok(st) = &st {
            // The build each gatherer runs: a rolling upgrade shows here, slot by slot.
            let build = if st.version.is_empty() {
                "unknown (older than 0.1.0)".to_owned()
            } else {
                format!("{} ({})", st.version, st.git_sha)
            };
            if !json {
                println!("# {} at {}: version {build}", g.id, g.endpoint);
            }
        }
        let mut streams = Vec::new();
        for s in Stream::ALL {
            let stored = cursors.get(&(g.id.clone(), s));
            let cursor = stored.map_or(0, |c| c.0);
            let (head, health) = match &st {
                Ok(st) => {
                    let head = st
                        .streams
                        .iter()
                        .find(|x| x.stream == s.to_pb() as i32)
                        .map_or(0, |x| x.head);
                    let health = if st.gatherer_id != g.id {
                        format!("WRONG IDENTITY (answers as {})", st.gatherer_id)
                    } else if stored.is_some_and(|c| {
                        !deduplicator::source::same_incarnation(&c.1, &st.instance_id)
                    }) {
                        format!(
                            "instance changed ({} -> {}): cursors reset on next run",
                            stored.map_or("", |c| c.1.as_str()),
                            st.instance_id
                        )
                    } else {
                        "ok".to_owned()
                    };
                    (Some(head), health)
                }
                Err(e) => (None, e.clone()),
            };
            if health != "ok" {
                all_ok = false;
            }
            if json {
                streams.push(serde_json::json!({
                    "stream": s.table(),
                    "cursor": cursor,
                    "head": head,
                    "behind": head.map(|h| (h - cursor).max(0)),
                    "health": health,
                }));
                continue;
            }
            println!(
                "{:<12} {:<20} {:>14} {:>14} {:>12}  {}",
                g.id,
                s.table(),
                cursor,
                head.map_or("-".to_owned(), |h| h.to_string()),
                head.map_or("-".to_owned(), |h| (h - cursor).max(0).to_string()),
                health
            );
        }
        if json {
            let (version, git_sha, instance) = match &st {
                Ok(st) => (
                    Some(st.version.clone()),
                    Some(st.git_sha.clone()),
                    Some(st.instance_id.clone()),
                ),
                Err(_) => (None, None, None),
            };
            doc.push(serde_json::json!({
                "id": g.id,
                "endpoint": g.endpoint,
                "reachable": st.is_ok(),
                "error": st.as_ref().err(),
                "version": version,
                "git_sha": git_sha,
                "instance_id": instance,
                "streams": streams,
            }));
        }
    }
    if json {
        println!("{}", serde_json::json!({"ok": all_ok, "gatherers": doc}));
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// `deduplicator quarantine list|replay`.
async fn quarantine_cmd(cfg: deduplicator::Config, cmd: QuarantineCommand) -> ExitCode {
    use deduplicator::quarantine::{self, Filter};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stream_ok = |s: &Option<String>| match s {
        Some(s) if Stream::from_table(s).is_none() => {
            let names: Vec<&str> = Stream::ALL.iter().map(|x| x.table()).collect();
            eprintln!(
                "deduplicator: --stream: {s:?} is not a stream (one of {})",
                names.join(", ")
            );
            false
        }
        _ => true,
    };
    let prod = match connect(&cfg).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deduplicator: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cmd {
        QuarantineCommand::List {
            stream,
            id,
            all,
            limit,
        } => {
            if !stream_ok(&stream) {
                return ExitCode::from(64);
            }
            let f = Filter {
                ids: id,
                stream,
                resolved: all,
            };
            let rows = match quarantine::list(&prod, &f, limit).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("deduplicator: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            println!("{} quarantined rows", rows.len());
            for e in &rows {
                println!(
                    "#{} {} {} {} cursor {} sqlstate {}{}",
                    e.id,
                    e.created_at,
                    e.gatherer_id,
                    e.stream,
                    e.cursor,
                    e.sqlstate.as_deref().unwrap_or("-"),
                    e.replay
                        .as_deref()
                        .map_or(String::new(), |r| format!(" (replayed: {r})")),
                );
                println!("    {}", e.summary);
                println!("    error: {}", e.error);
            }
            ExitCode::SUCCESS
        }
        QuarantineCommand::Replay { stream, id } => {
            if !stream_ok(&stream) {
                return ExitCode::from(64);
            }
            let f = Filter {
                ids: id,
                stream,
                resolved: false,
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let to = quarantine::ReplayTo {
                prod,
                archive_period_ms: cfg.archive.as_ref().map(|a| a.period_ms),
                retry: cfg.production_retry,
                lifecycle_window_ms: cfg.sink.lifecycle_match_window.as_millis() as i64,
            };
            match quarantine::replay(to, &f, &cancel).await {
                Ok(s) => {
                    for (id, what) in &s.rows {
                        println!("#{id} {what}");
                    }
                    println!(
                        "replayed {} rows: {} inserted, {} already present, {} refused again, {} invalid",
                        s.rows.len(),
                        s.inserted,
                        s.already_present,
                        s.refused,
                        s.invalid
                    );
                    if s.refused + s.invalid == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("deduplicator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `deduplicator gaps`: windows no gatherer covered.
async fn gaps(cfg: deduplicator::Config, from: i64, to: i64, json: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prod = match connect(&cfg).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deduplicator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = match deduplicator::coverage::load(&prod, from, to).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deduplicator: cannot read gaps from production: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ids: Vec<String> = cfg.gatherers.iter().map(|g| g.id.clone()).collect();
    let u = deduplicator::coverage::uncovered(&rows, &ids, from, to);
    let fmt = kalshi_shared::time::format_rfc3339_ms;
    if json {
        let windows: Vec<serde_json::Value> = u
            .iter()
            .map(|w| {
                serde_json::json!({
                    "stream": w.stream,
                    "market": w.market,
                    "from_ms": w.from_ms,
                    "to_ms": w.to_ms,
                    "reasons": w.reasons,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"from_ms": from, "to_ms": to, "gatherers": ids, "windows": windows})
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "windows between {} and {} that none of {} captured: {}",
        fmt(from),
        fmt(to),
        ids.join(", "),
        u.len()
    );
    for w in &u {
        println!(
            "{:<20} {:<28} {} .. {}  ({:.3} s)  {}",
            w.stream,
            if w.market.is_empty() { "*" } else { &w.market },
            fmt(w.from_ms),
            fmt(w.to_ms),
            Duration::from_millis((w.to_ms - w.from_ms).max(0) as u64).as_secs_f64(),
            w.reasons.join(",")
        );
    }
    ExitCode::SUCCESS
}

async fn archiver(cfg: &deduplicator::Config) -> Result<deduplicator::archive::Archiver, ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(a) = cfg.archive.clone() else {
        eprintln!("deduplicator: the archive is not configured ([archive] enabled = true)");
        return Err(ExitCode::from(64));
    };
    let prod = connect(cfg).await.map_err(|e| {
        eprintln!("deduplicator: {e}");
        ExitCode::FAILURE
    })?;
    let ids = cfg.gatherers.iter().map(|g| g.id.clone()).collect();
    deduplicator::archive::Archiver::new(a, prod, ids)
        .await
        .map_err(|e| {
            eprintln!("deduplicator: {e}");
            ExitCode::FAILURE
        })
}

/// `deduplicator archive status|verify`.
async fn archive_cmd(cfg: deduplicator::Config, cmd: ArchiveCommand, json: bool) -> ExitCode {
    let a = match archiver(&cfg).await {
        Ok(a) => a,
        Err(c) => return c,
    };
    let fmt = kalshi_shared::time::format_rfc3339_ms;
    match cmd {
        ArchiveCommand::Status => {
            let section = &a.cfg.section;
            let now = kalshi_shared::time::now_ms();
            let period = a.cfg.period_ms;
            let settled = (now - section.settle.as_millis() as i64).div_euclid(period) * period;
            let st = match a.status(settled).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("deduplicator: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let late = st.periods.iter().filter(|p| p.late).count();
            let unverified = st.periods.iter().filter(|p| !p.verified).count();
            let state = |p: &deduplicator::archive::ops::PeriodStatus| match (p.late, p.verified) {
                (true, _) => "late",
                (false, true) => "verified",
                (false, false) => "unverified",
            };
            if json {
                let periods: Vec<serde_json::Value> = st
                    .periods
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "start_ms": p.start_ms,
                            "version": p.version,
                            "rows": p.rows,
                            "state": state(p),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "location": a.store.location(),
                        "archived": st.periods.len(),
                        "unverified": unverified,
                        "late": late,
                        "periods": periods,
                        "pending": st.pending,
                    })
                );
                return ExitCode::SUCCESS;
            }
            println!(
                "archive {}: {} periods archived ({} unverified), {} pending, {} late",
                a.store.location(),
                st.periods.len(),
                unverified,
                st.pending.len(),
                late
            );
            println!("{:<26} {:>7} {:>12}  state", "period", "version", "rows");
            for p in &st.periods {
                let state = match state(p) {
                    "late" => "LATE (new version due)",
                    s => s,
                };
                println!(
                    "{:<26} {:>7} {:>12}  {state}",
                    fmt(p.start_ms),
                    p.version,
                    p.rows
                );
            }
            for p in &st.pending {
                println!("{:<26} {:>7} {:>12}  pending", fmt(*p), "-", "-");
            }
            ExitCode::SUCCESS
        }
        ArchiveCommand::Verify { from, to } => {
            let (from, to) = match window(&from, to.as_deref()) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("deduplicator: {e}");
                    return ExitCode::from(64);
                }
            };
            let mut bar = cli::progress::Progress::new("archive verify");
            let r = a
                .verify(from, to, |done, total, rows| bar.update(done, total, rows))
                .await;
            bar.finish();
            match r {
                Ok((found, ok)) if json => {
                    println!(
                        "{}",
                        serde_json::json!({"ok": ok, "from_ms": from, "to_ms": to, "checked": found})
                    );
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Ok((found, ok)) => {
                    let lines: Vec<String> = found.iter().map(|c| c.line()).collect();
                    for l in &lines {
                        println!("{l}");
                    }
                    println!(
                        "{}: {} stream-periods checked between {} and {}",
                        if ok {
                            "archive verified"
                        } else {
                            "ARCHIVE DIFFERS"
                        },
                        lines.len(),
                        fmt(from),
                        fmt(to)
                    );
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("deduplicator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `deduplicator restore`.
async fn restore(
    cfg: deduplicator::Config,
    from: i64,
    to: i64,
    streams: Vec<String>,
    json: bool,
) -> ExitCode {
    use deduplicator::archive::format::ARCHIVED;
    let mut chosen = Vec::new();
    for s in &streams {
        match ARCHIVED.iter().find(|x| x.table() == s) {
            Some(x) => chosen.push(*x),
            None => {
                let names: Vec<&str> = ARCHIVED.iter().map(|x| x.table()).collect();
                eprintln!(
                    "deduplicator: --streams: {s:?} is not archived (one of {})",
                    names.join(", ")
                );
                return ExitCode::from(64);
            }
        }
    }
    if chosen.is_empty() {
        chosen = ARCHIVED.to_vec();
    }
    let a = match archiver(&cfg).await {
        Ok(a) => a,
        Err(c) => return c,
    };
    let mut bar = cli::progress::Progress::new("restore");
    let r = a
        .restore(from, to, &chosen, |done, total, rows| {
            bar.update(done, total, rows)
        })
        .await;
    bar.finish();
    match r {
        Ok(per) if json => {
            let (r, i) = per.values().fold((0, 0), |(a, b), (r, i)| (a + r, b + i));
            let streams: serde_json::Map<String, serde_json::Value> = per
                .iter()
                .map(|(s, (r, i))| (s.clone(), serde_json::json!({"read": r, "inserted": i})))
                .collect();
            println!(
                "{}",
                serde_json::json!({"read": r, "inserted": i, "streams": streams})
            );
            ExitCode::SUCCESS
        }
        Ok(per) => {
            println!("{:<20} {:>12} {:>12}", "stream", "read", "inserted");
            for (s, (read, ins)) in &per {
                println!("{s:<20} {read:>12} {ins:>12}");
            }
            let (r, i) = per.values().fold((0, 0), |(a, b), (r, i)| (a + r, b + i));
            println!(
                "restored: {r} rows read from the archive, {i} inserted (the rest production already held)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            deduplicator::archive::count_error(&e);
            eprintln!("deduplicator: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}
