//! `kalshi-stack`: not built yet. Running the whole system locally is the subject of the
//! kalshi-stack issue; until the gatherer and deduplicator exist there is nothing to run.
//! For now, `kalshi-sim` runs the exchange on its own.

use clap::Parser;

/// Runs the whole kalshi-data system on one machine. NOT IMPLEMENTED YET: start `kalshi-sim`
/// directly for now.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "kalshi-stack: not implemented in this version (see the kalshi-stack issue); run `cargo run -p kalshi-sim --release -- --help` for the exchange simulator"
    );
    std::process::ExitCode::from(2)
}
