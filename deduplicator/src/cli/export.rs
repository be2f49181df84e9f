//! `deduplicator export`: see `deduplicator::archive::export`.

use std::path::PathBuf;
use std::process::ExitCode;

use deduplicator::archive::export::{ExportFormat, ExportRequest, Filter, export};
use deduplicator::records::Stream;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The stream: trades, deltas, snapshots, tickers, lifecycle, unknown_messages, markets,
    /// events, series or exchange (the archive's streams; table names work too).
    #[arg(long)]
    stream: String,
    /// Only these markets (comma-separated tickers).
    #[arg(long, value_delimiter = ',')]
    market: Vec<String>,
    /// Only the markets of these events (a market of event E is E-...).
    #[arg(long, value_delimiter = ',')]
    event: Vec<String>,
    /// Only the markets of these series (the ticker's part before the first '-').
    #[arg(long, value_delimiter = ',')]
    series: Vec<String>,
    /// Start: RFC 3339 or Unix milliseconds (inclusive).
    #[arg(long)]
    from: String,
    /// End: RFC 3339 or Unix milliseconds (exclusive; default: now).
    #[arg(long)]
    to: Option<String>,
    /// csv (dollars, contracts, RFC 3339 times) or parquet (the archive's typed columns).
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// The file to write (default: <stream>-<from>-<to>.<csv|parquet> here). Written whole,
    /// then renamed into place.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Parquet,
}

/// A stream by its name or its table's.
pub fn stream_named(name: &str) -> Option<Stream> {
    let table = match name {
        "deltas" => "orderbook_deltas",
        "snapshots" => "orderbook_snapshots",
        "unknown" => "unknown_messages",
        other => other,
    };
    deduplicator::archive::format::ARCHIVED
        .iter()
        .copied()
        .find(|s| s.table() == table)
}

pub async fn run(cfg: deduplicator::Config, args: ExportArgs, json: bool) -> ExitCode {
    let Some(stream) = stream_named(&args.stream) else {
        eprintln!(
            "deduplicator: --stream {:?} is not one of trades, deltas, snapshots, tickers, lifecycle, unknown_messages, markets, events, series, exchange",
            args.stream
        );
        return ExitCode::from(64);
    };
    let (from_ms, to_ms) = match crate::window(&args.from, args.to.as_deref()) {
        Ok((a, b)) if a < b => (a, b),
        Ok(_) => {
            eprintln!("deduplicator: --from must be before --to");
            return ExitCode::from(64);
        }
        Err(e) => {
            eprintln!("deduplicator: {e}");
            return ExitCode::from(64);
        }
    };
    let (format, ext) = match args.format {
        Format::Csv => (ExportFormat::Csv, "csv"),
        Format::Parquet => (ExportFormat::Parquet, "parquet"),
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-{from_ms}-{to_ms}.{ext}", stream.table())));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prod = match crate::connect(&cfg).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deduplicator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let archive = match &cfg.archive {
        Some(_) => match crate::archiver(&cfg).await {
            Ok(a) => Some(a),
            Err(c) => return c,
        },
        None => None,
    };
    let req = ExportRequest {
        stream,
        filter: Filter {
            markets: args.market,
            events: args.event,
            series: args.series,
        },
        from_ms,
        to_ms,
        format,
        out: out.clone(),
    };
    let mut bar = super::progress::Progress::new("export");
    let r = export(&prod, archive.as_ref(), &req, |p| {
        bar.update(p.periods_done, p.periods, p.rows);
    })
    .await;
    bar.finish();
    match r {
        Ok(s) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "stream": stream.table(),
                        "out": out.display().to_string(),
                        "format": ext,
                        "from_ms": from_ms,
                        "to_ms": to_ms,
                        "rows": s.rows,
                        "from_production": s.from_production,
                        "from_archive": s.from_archive,
                        "periods": s.periods,
                        "bytes": s.bytes,
                    })
                );
            } else {
                println!(
                    "exported {} rows of {} ({} from production, {} from the archive; {} periods) to {} ({} bytes)",
                    s.rows,
                    stream.table(),
                    s.from_production,
                    s.from_archive,
                    s.periods,
                    out.display(),
                    s.bytes
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deduplicator: export failed: {e}");
            ExitCode::FAILURE
        }
    }
}
