//! The whole kalshi-data system on one machine, as child processes of one supervisor: one
//! PostgreSQL cluster per gatherer and one for production (`ha`: plus a synchronous streaming
//! standby behind a TCP endpoint that can fail over), `kalshi-sim`, N gatherers and the
//! deduplicator, with generated configurations under a data directory. The deduplicator reaches
//! each gatherer through a TCP proxy too, so a network partition can be rehearsed.
//!
//! With an [`Exchange`] (`kalshi-stack up --exchange prod|demo|<url>`), there is no simulator:
//! the gatherers capture that exchange with the given API key, the data directory persists
//! (stop and start again: everything resumes from its cursors) and the archive is a local
//! directory under it.
//!
//! Every child is tied to this process (`setpriv --pdeathsig`): when the supervisor dies, even
//! by SIGKILL, nothing is left behind: it must never leave a child running. The end-to-end tests
//! drive the same library.

#![forbid(unsafe_code)]

pub mod audit;
pub mod control;
pub mod crosscheck;
pub mod exchange;
pub mod latency;
pub mod scenarios;
pub mod soak;
pub mod status;

mod client;
mod operate;
mod process;
mod up;

pub use client::*;
pub use process::Service;
use process::{loopback, port_of, start_reporting, wait_http};
pub use up::RemoteSim;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kalshi_shared::config::Secret;
use kalshi_shared::config::deduplicator::{
    FileConfig as DeduplicatorFile, GathererEndpoint, SourcesTlsSection,
};
use kalshi_shared::config::gatherer::{ApiTlsSection, FileConfig as GathererFile};
use kalshi_testkit::pg::{ClusterOptions, PgCluster};
use kalshi_testkit::proxy::{Mode, TcpProxy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub gatherers: usize,
    pub markets: usize,
    pub seed: u64,
    pub rate: u64,
    pub lifecycle_every: u64,
    /// Hours of trades the simulator has from before its start, served by its REST tiers only
    /// (`kalshi-sim --history-hours`; `kalshi-stack import` brings them in).
    pub history_hours: u32,
    /// Markets that settled in that history, served by `/historical/markets` only
    /// (`kalshi-sim --history-markets`; an import brings in those its trades are of).
    pub history_markets: usize,
    pub ha: bool,
    /// A second deduplicator, a warm standby behind the lease (`kill deduplicator` then kills
    /// whichever is active).
    pub standby: bool,
    /// Keep the data directory (and the clusters' data) after `down`.
    pub keep: bool,
    /// Where the `kalshi-sim`, `gatherer` and `deduplicator` binaries are.
    pub bin_dir: PathBuf,
    /// Log level of the services.
    pub log_level: String,
    /// mTLS between the deduplicator and the gatherers, with a throwaway CA (the default).
    pub mtls: bool,
    /// Archive to a local S3 (moto), one set of Parquet files per `archive_period`.
    pub archive: bool,
    pub archive_period: Duration,
    /// Capture this exchange instead of running the simulator (implies `keep`).
    pub exchange: Option<exchange::Exchange>,
}

impl Options {
    pub fn new(data_dir: PathBuf, bin_dir: PathBuf) -> Options {
        Options {
            data_dir,
            gatherers: 3,
            markets: 50,
            seed: 1,
            rate: 200,
            lifecycle_every: 2000,
            history_hours: 0,
            history_markets: 0,
            ha: false,
            standby: false,
            keep: false,
            bin_dir,
            log_level: "info".into(),
            mtls: true,
            archive: true,
            archive_period: Duration::from_secs(60),
            exchange: None,
        }
    }
}

/// The directory of the running executable's siblings: where `cargo build` puts every binary.
pub fn default_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KALSHI_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().map_or(d.clone(), Path::to_path_buf)
            } else {
                d
            }
        })
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

/// Where everything is, written to `<data_dir>/stack.json` for the other subcommands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    pub control: String,
    pub sim_rest: String,
    pub sim_ws: String,
    pub sim_control: String,
    pub production_url: String,
    pub gatherers: Vec<GathererEndpoints>,
    pub deduplicator_health: String,
    pub deduplicator_metrics: String,
    pub deduplicator_config: PathBuf,
    /// The standby deduplicator's `/health`, with `up --standby`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplicator_standby_health: Option<String>,
    /// The standby deduplicator's `/metrics`, with `up --standby`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplicator_standby_metrics: Option<String>,
    pub ha: bool,
    /// The local S3 holding the archive (bucket `kalshi-archive`), when the stack archives.
    #[serde(default)]
    pub s3: Option<String>,
    /// The exchange's REST base when the stack captures one (the `sim_*` fields are then
    /// empty: there is no simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// The archive's local directory, when it is not on S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GathererEndpoints {
    pub id: String,
    /// `https://` with mTLS (then `tls` says how to authenticate), `http://` without.
    pub grpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GrpcClientTls>,
    pub health: String,
    pub metrics: String,
    pub database_url: String,
}

/// How a client of a gatherer's gRPC authenticates (the deduplicator's certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrpcClientTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name the gatherer's certificate carries.
    pub server_name: String,
}

/// Fields drop in declaration order: the service stops before its database.
pub struct GathererSlot {
    pub id: String,
    pub service: Service,
    pub grpc_port: u16,
    pub http_port: u16,
    pub metrics_port: u16,
    /// What the deduplicator connects to (a proxy in front of `grpc_port`).
    pub proxy: TcpProxy,
    pub pg: PgCluster,
}

/// A running stack. Fields drop in declaration order: the deduplicator first, then the
/// gatherers (each before its database), the simulator, production last.
pub struct Stack {
    pub deduplicator: Service,
    /// The warm standby (`up --standby`).
    pub standby_deduplicator: Option<Service>,
    pub gatherers: Vec<GathererSlot>,
    /// None when the stack captures a real exchange.
    pub sim: Option<Service>,
    pub opts: Options,
    pub endpoints: Endpoints,
    /// The production endpoint the deduplicator uses (moves on failover).
    pub prod_proxy: TcpProxy,
    pub standby: Option<PgCluster>,
    pub prod: PgCluster,
    pub failed_over: bool,
    /// The local S3 (moto), when the stack archives.
    pub s3: Option<kalshi_testkit::s3::Moto>,
}

/// The simulator's test key pair: the stack's gatherers sign with it. Never used with Kalshi.
const TEST_KEY_PRIVATE: &[u8] = include_bytes!("../../shared/testdata/rsa-pkcs8.pem");
const TEST_KEY_PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");
