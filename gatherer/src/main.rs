//! `gatherer`: parses the command line, loads the configuration, starts logging and the
//! service, and runs until SIGTERM/SIGINT (exit 0 after a clean flush) or a failure (exit 1).
//! Invalid configuration exits with 64 before anything is bound.
//!
//! It must never start the service on a configuration it could not validate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the intake allocates and frees a few small objects per
/// message across threads, and glibc's malloc/free were about a quarter of the gatherer's CPU
/// at 120,000 msg/s.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Collects every subscribed Kalshi market (trades, order-book snapshots and deltas, tickers,
/// lifecycle, series/events/markets) into a local PostgreSQL and serves it by cursor over
/// gRPC (kalshi.gatherer.v1.Gatherer). Health on http.listen (/health), Prometheus metrics on
/// http.metrics_listen (/metrics).
#[derive(Parser)]
#[command(name = "gatherer", version, after_help = gatherer::config::REFERENCE)]
struct Cli {
    /// The configuration file (TOML). Every key can also be set from the environment as
    /// GATHERER__SECTION__KEY; without a file, defaults plus the environment are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,

    /// Once listening, write the bound addresses as JSON ({"grpc", "http", "metrics", "pid"})
    /// to this file (written whole, then renamed): start with port 0 and read the real ports.
    #[arg(long, value_name = "FILE")]
    addr_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Import the trades of a past window from Kalshi's REST tiers (/historical/trades before
    /// the cutoff, /markets/trades after it) through the gatherer running on this
    /// configuration's database: it records the request there and follows it with a progress
    /// line. Idempotent with live capture and with itself (each trade is stored once); resumed
    /// after a crash of either.
    Import {
        /// Start: RFC 3339 or Unix milliseconds (inclusive).
        #[arg(long)]
        from: String,
        /// End: RFC 3339 or Unix milliseconds (exclusive).
        #[arg(long)]
        to: String,
        /// Record the request and return without following it.
        #[arg(long)]
        detach: bool,
    },
}

fn parse_time(s: &str) -> Result<i64, kalshi_shared::time::CliTimeError> {
    kalshi_shared::time::parse_cli_ms(s)
}

/// A runtime from `builder` with every driver, or the exit code after saying why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("gatherer: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match gatherer::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatherer: invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.check_config {
        println!(
            "gatherer: configuration is valid (gatherer_id {})",
            cfg.gatherer_id
        );
        return ExitCode::SUCCESS;
    }
    // Every command logs (to standard error), as the service does.
    kalshi_shared::telemetry::init_logging(&cfg.log.level, cfg.log.format);
    if let Some(Command::Import { from, to, detach }) = &cli.command {
        let (from, to) = match (parse_time(from), parse_time(to)) {
            (Ok(a), Ok(b)) if a < b => (a, b),
            (Ok(_), Ok(_)) => {
                eprintln!("gatherer import: --from must be before --to");
                return ExitCode::from(64);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("gatherer import: {e}");
                return ExitCode::from(64);
            }
        };
        // Trades older than the local retention would expire before production took them.
        if let Some(keep) = cfg.store.retention.get(&gatherer::store::Stream::Trades) {
            let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let oldest = kalshi_shared::time::now_ms() - keep_ms + 86_400_000;
            if from < oldest {
                eprintln!(
                    "gatherer import: --from is older than this gatherer keeps trades (store.retention.trades = {}d, less a day's margin): import it through a gatherer with a longer retention (or \"0s\", forever)",
                    keep.as_secs() / 86_400
                );
                return ExitCode::from(64);
            }
        }
        let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let url = cfg.store.database_url.expose().to_owned();
        return ExitCode::from(
            runtime.block_on(gatherer::import::request(&url, from, to, *detach)),
        );
    }
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let g = match gatherer::start(cfg).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "gatherer failed to start");
                return ExitCode::FAILURE;
            }
        };
        let doc = serde_json::json!({
            "grpc": g.grpc_addr.to_string(),
            "http": g.http_addr.to_string(),
            "metrics": g.metrics_addr.to_string(),
            "pid": std::process::id(),
        });
        let addr_file = cli.addr_file.as_deref().map(|p| (p, doc));
        kalshi_shared::service::run_until_signal("gatherer", g.into_service(), addr_file).await
    })
}
