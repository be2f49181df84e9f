//! `deduplicator`: not built yet. The merger service is the subject of the deduplicator issue;
//! this binary exists so the workspace layout of DESIGN.md is in place, and says so when run.

use clap::Parser;

/// Merges every gatherer into the production database exactly once. NOT IMPLEMENTED YET:
/// this build only reserves the binary name.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Path to deduplicator.toml.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("deduplicator: not implemented in this version (see the deduplicator issue)");
    std::process::ExitCode::from(2)
}
