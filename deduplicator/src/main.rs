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

fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    kalshi_shared::time::parse_rfc3339_ms(s)
        .map_err(|e| anyhow::anyhow!("{s:?} is neither RFC 3339 nor Unix milliseconds: {e}"))
}

fn main() -> ExitCode {
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            kalshi_shared::telemetry::init_logging(&cfg.log.level, cfg.log.format);
            runtime.block_on(run(cfg, cli.addr_file))
        }
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
        Command::Status => runtime.block_on(status(cfg)),
        Command::Gaps { from, to } => {
            let (from, to) = match (
                parse_time(&from),
                to.as_deref()
                    .map_or(Ok(kalshi_shared::time::now_ms()), parse_time),
            ) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                (Ok(_), Ok(_)) => {
                    eprintln!("deduplicator: --from is after --to");
                    return ExitCode::from(64);
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("deduplicator: {e}");
                    return ExitCode::from(64);
                }
            };
            runtime.block_on(gaps(cfg, from, to))
        }
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
async fn status(cfg: deduplicator::Config) -> ExitCode {
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
    let mut all_ok = true;
    println!(
        "{:<12} {:<20} {:>14} {:>14} {:>12}  health",
        "gatherer", "stream", "cursor", "head", "behind"
    );
    for g in &cfg.gatherers {
        let remote = async {
            let ch = tonic::transport::Endpoint::from_shared(g.endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(cfg.sources.connect_timeout)
                .connect()
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            GathererClient::new(ch)
                .status(pb::StatusRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| format!("status failed: {}", e.message()))
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
            println!("# {} at {}: version {build}", g.id, g.endpoint);
        }
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
                    } else if stored.is_some_and(|c| c.1 != st.instance_id) {
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
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// `deduplicator gaps`: windows no gatherer covered.
async fn gaps(cfg: deduplicator::Config, from: i64, to: i64) -> ExitCode {
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
