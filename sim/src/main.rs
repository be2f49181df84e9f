//! `kalshi-sim`: parses the command line, starts the simulator, prints where it listens and
//! runs until SIGINT or SIGTERM.
//!
//! It must never start on invalid arguments (exit 64 with the reason).

use std::process::ExitCode;

use clap::Parser;
use kalshi_sim::{Cli, SimConfig};

/// mimalloc instead of glibc's malloc: the simulator formats and frees a few small strings per
/// message per client; under a benchmark it shares the cores with what it measures, so it
/// should cost as little as it can.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match SimConfig::try_from(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kalshi-sim: invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kalshi-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, cfg))
}

async fn run(cli: Cli, cfg: SimConfig) -> ExitCode {
    let (seed, markets, rate) = (cfg.seed, cfg.markets, cfg.rate);
    let sim = match kalshi_sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kalshi-sim: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("kalshi-sim seed={seed} markets={markets} rate={rate}/s");
    println!("  rest     {}", sim.rest_url());
    println!("  ws       {}", sim.ws_url());
    println!("  control  {}", sim.control_url());
    println!("  truth    {}", sim.truth().path().display());
    if let Some(path) = &cli.addr_file {
        let doc = serde_json::json!({
            "rest": sim.rest_url(),
            "ws": sim.ws_url(),
            "control": sim.control_url(),
            "truth_file": sim.truth().path(),
            "pid": std::process::id(),
        });
        if let Err(e) = kalshi_shared::telemetry::write_addr_file(path, &doc) {
            eprintln!("kalshi-sim: cannot write {}: {e}", path.display());
            sim.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kalshi-sim: cannot listen for SIGTERM: {e}");
            sim.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sim.shutdown().await;
    ExitCode::SUCCESS
}
