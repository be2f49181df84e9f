//! `gatherer`: not built yet. The collector service is the subject of the gatherer issue; this
//! binary exists so the workspace layout of DESIGN.md is in place, and says so when run.

use clap::Parser;

/// Collects every subscribed Kalshi market into a local database and serves it by cursor
/// over gRPC. NOT IMPLEMENTED YET: this build only reserves the binary name.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Path to gatherer.toml.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("gatherer: not implemented in this version (see the gatherer issue)");
    std::process::ExitCode::from(2)
}
