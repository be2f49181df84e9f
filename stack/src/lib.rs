//! The whole kalshi-data system on one machine, as child processes of one supervisor: one
//! PostgreSQL cluster per gatherer and one for production (`ha`: plus a synchronous streaming
//! standby behind a TCP endpoint that can fail over), `kalshi-sim`, N gatherers and the
//! deduplicator, with generated configurations under a data directory. The deduplicator reaches
//! each gatherer through a TCP proxy too, so a network partition can be rehearsed.
//!
//! Every child is tied to this process (`setpriv --pdeathsig`): when the supervisor dies, even
//! by SIGKILL, nothing is left behind: it must never leave a child running. The end-to-end tests
//! drive the same library.

#![forbid(unsafe_code)]

pub mod audit;
pub mod control;
pub mod scenarios;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kalshi_shared::config::Secret;
use kalshi_shared::config::deduplicator::{FileConfig as DeduplicatorFile, GathererEndpoint};
use kalshi_shared::config::gatherer::FileConfig as GathererFile;
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
    pub ha: bool,
    /// Keep the data directory (and the clusters' data) after `down`.
    pub keep: bool,
    /// Where the `kalshi-sim`, `gatherer` and `deduplicator` binaries are.
    pub bin_dir: PathBuf,
    /// Log level of the services.
    pub log_level: String,
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
            ha: false,
            keep: false,
            bin_dir,
            log_level: "info".into(),
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
    pub ha: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GathererEndpoints {
    pub id: String,
    pub grpc: String,
    pub health: String,
    pub metrics: String,
    pub database_url: String,
}

/// Starts a service that reports its bound addresses: `--addr-file <dir>/<name>.addr.json` is
/// appended to `args`, the log goes to `<dir>/logs/<name>.log`. Returns the running service and
/// what it reported (see [`read_addr_file`]).
async fn start_reporting(
    name: &str,
    program: PathBuf,
    mut args: Vec<String>,
    dir: &Path,
    within: Duration,
) -> anyhow::Result<(Service, Value)> {
    let addr_file = dir.join(format!("{name}.addr.json"));
    let _ = std::fs::remove_file(&addr_file);
    args.push("--addr-file".into());
    args.push(addr_file.display().to_string());
    let mut service = Service::new(name, program, args, dir.join(format!("logs/{name}.log")));
    service.start()?;
    let addrs = read_addr_file(&addr_file, &mut service, within).await?;
    Ok((service, addrs))
}

/// Waits for a service's `--addr-file` (written once it listens), or fails with the end of
/// its log if it exits first or takes longer than `within`.
async fn read_addr_file(
    path: &Path,
    service: &mut Service,
    within: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return Ok(v);
        }
        if !service.running() {
            bail!(
                "{} exited at start-up:\n{}",
                service.name,
                log_tail(service.log_path())
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not report its addresses within {within:?}:\n{}",
                service.name,
                log_tail(service.log_path())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The port of one address in an address file.
fn port_of(addrs: &Value, key: &str) -> anyhow::Result<u16> {
    let text = addrs[key]
        .as_str()
        .with_context(|| format!("address file without {key}: {addrs}"))?;
    Ok(text
        .parse::<SocketAddr>()
        .with_context(|| format!("address file: {key} = {text:?}"))?
        .port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One service process.
pub struct Service {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Service {
        Service {
            name: name.into(),
            program,
            args,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        if !self.program.exists() {
            bail!(
                "{} not found: build it first (cargo build --release --workspace) or set KALSHI_BIN_DIR",
                self.program.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let err = log.try_clone()?;
        let args = self.args.clone();
        let child = kalshi_testkit::process::spawn_tied(&self.program, move |c| {
            c.args(&args).stdin(Stdio::null()).stdout(log).stderr(err);
        })
        .with_context(|| format!("start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (the setpriv wrapper execs the service, so the pid is the service's).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        if let Some(c) = self.child.as_ref() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::TERM,
            );
        }
    }

    /// SIGTERM, then wait up to `within` (SIGKILL after). Returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(15));
    }
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
    pub gatherers: Vec<GathererSlot>,
    pub sim: Service,
    pub opts: Options,
    pub endpoints: Endpoints,
    /// The production endpoint the deduplicator uses (moves on failover).
    pub prod_proxy: TcpProxy,
    pub standby: Option<PgCluster>,
    pub prod: PgCluster,
    pub failed_over: bool,
}

async fn wait_http(
    url: &str,
    within: Duration,
    healthy: impl Fn(u16, &Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        if let Ok(r) = client.get(url).send().await {
            let code = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if healthy(code, &v) {
                return Ok(v);
            }
        }
        if Instant::now() >= deadline {
            bail!("{url} not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Stack {
    /// Starts everything and waits until the gatherers are subscribed and the deduplicator is
    /// healthy. The simulator starts at rate 0 and is set to `opts.rate` once all are ready, so
    /// every gatherer sees the whole order flow.
    pub async fn up(mut opts: Options) -> anyhow::Result<Stack> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // PostgreSQL and the services run with other working directories: every path they
        // are given must be absolute (the default data dir is relative to the checkout).
        opts.data_dir = std::path::absolute(&opts.data_dir)
            .with_context(|| format!("data directory {}", opts.data_dir.display()))?;
        opts.bin_dir = std::path::absolute(&opts.bin_dir)
            .with_context(|| format!("binary directory {}", opts.bin_dir.display()))?;
        let dir = opts.data_dir.clone();
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("create {}", dir.display()))?;
        let bin = |name: &str| opts.bin_dir.join(name);
        let pg_opts = |name: &str| ClusterOptions {
            base_dir: Some(dir.join("pg")),
            dir: Some(dir.join("pg").join(name)),
            keep: opts.keep,
            ..Default::default()
        };

        // The exchange.
        let key_dir = dir.join("keys");
        std::fs::create_dir_all(&key_dir)?;
        std::fs::write(key_dir.join("sim-private.pem"), TEST_KEY_PRIVATE)?;
        std::fs::write(key_dir.join("sim-public.pem"), TEST_KEY_PUBLIC)?;
        // Port 0 and an address file: no race for a port between choosing and binding it.
        let sim_args = vec![
            "--listen".into(),
            loopback(0).to_string(),
            "--control-listen".into(),
            loopback(0).to_string(),
            "--seed".into(),
            opts.seed.to_string(),
            "--markets".into(),
            opts.markets.to_string(),
            "--rate".into(),
            "0".into(),
            "--lifecycle-every".into(),
            opts.lifecycle_every.to_string(),
            "--public-key".into(),
            key_dir.join("sim-public.pem").display().to_string(),
            "--key-id".into(),
            "stack-key".into(),
            "--rest-rate".into(),
            "1000".into(),
            "--rest-burst".into(),
            "1000".into(),
            "--truth-file".into(),
            dir.join("truth.jsonl").display().to_string(),
        ];
        let _ = std::fs::remove_file(dir.join("truth.jsonl"));
        let (sim, addrs) = start_reporting(
            "kalshi-sim",
            bin("kalshi-sim"),
            sim_args,
            &dir,
            Duration::from_secs(30),
        )
        .await?;
        let sim_rest = addrs["rest"]
            .as_str()
            .context("sim address file without rest")?
            .to_owned();
        let sim_ws = addrs["ws"]
            .as_str()
            .context("sim address file without ws")?
            .to_owned();
        let sim_control = addrs["control"]
            .as_str()
            .context("sim address file without control")?
            .to_owned();
        wait_http(
            &format!("{sim_control}/health"),
            Duration::from_secs(30),
            |c, _| c == 200,
        )
        .await?;

        // Production (and its standby), behind an endpoint that can move.
        let prod =
            PgCluster::start(pg_opts("production")).context("start the production cluster")?;
        let standby = if opts.ha {
            let s = PgCluster::start_standby(&prod, pg_opts("production-standby"))
                .context("start the standby")?;
            prod.psql(
                "postgres",
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
            )?;
            prod.psql("postgres", "SELECT pg_reload_conf()")?;
            Some(s)
        } else {
            None
        };
        let prod_proxy = TcpProxy::start(loopback(0), loopback(prod.port())).await?;
        let production_url = format!("postgres://postgres@{}/postgres", prod_proxy.addr());

        // Gatherers.
        let mut gatherers = Vec::new();
        for i in 1..=opts.gatherers {
            let id = format!("g{i}");
            let pg =
                PgCluster::start(pg_opts(&id)).with_context(|| format!("start {id}'s cluster"))?;
            // Ports 0 at first: the gatherer binds and reports what it got (--addr-file), so no
            // port is guessed that another process could take first. The configuration then
            // names those ports, so a restart of this gatherer keeps its endpoints.
            let render = |grpc_port: u16, http_port: u16, metrics_port: u16| {
                let mut f = GathererFile {
                    gatherer_id: id.clone(),
                    ..GathererFile::default()
                };
                f.kalshi.rest_url = sim_rest.clone();
                f.kalshi.ws_url = sim_ws.clone();
                f.kalshi.key_id = Some("stack-key".into());
                f.kalshi.private_key_file = Some(key_dir.join("sim-private.pem"));
                f.kalshi.rest_rate_per_s = 100;
                f.kalshi.rest_burst = 100;
                f.ws.connections = 2;
                // Local timings: a half-open socket is caught by silence within 3 s, before
                // the simulator's longest stall (8 s) ends by closing it.
                f.ws.ping_interval = Duration::from_secs(1);
                f.ws.silence_timeout = Duration::from_secs(3);
                f.store.database_url = Secret(pg.url());
                f.store.spill_dir = dir.join("spill");
                f.api.listen = loopback(grpc_port);
                f.http.listen = loopback(http_port);
                f.http.metrics_listen = loopback(metrics_port);
                f.log.level = opts.log_level.clone();
                toml::to_string(&f).context("render the gatherer configuration")
            };
            let path = dir.join(format!("{id}.toml"));
            std::fs::write(&path, render(0, 0, 0)?)?;
            let (service, addrs) = start_reporting(
                &id,
                bin("gatherer"),
                vec!["--config".into(), path.display().to_string()],
                &dir,
                Duration::from_secs(90),
            )
            .await?;
            let (grpc_port, http_port, metrics_port) = (
                port_of(&addrs, "grpc")?,
                port_of(&addrs, "http")?,
                port_of(&addrs, "metrics")?,
            );
            std::fs::write(&path, render(grpc_port, http_port, metrics_port)?)?;
            let proxy = TcpProxy::start(loopback(0), loopback(grpc_port)).await?;
            gatherers.push(GathererSlot {
                id,
                service,
                grpc_port,
                http_port,
                metrics_port,
                proxy,
                pg,
            });
        }
        for g in &gatherers {
            wait_http(
                &format!("http://127.0.0.1:{}/health", g.http_port),
                Duration::from_secs(90),
                |c, v| c == 200 && v["status"] == "healthy",
            )
            .await
            .with_context(|| {
                format!(
                    "{} did not become healthy (see {})",
                    g.id,
                    g.service.log_path().display()
                )
            })?;
        }

        // The deduplicator, on ports 0 first (see the gatherers above).
        let render = |dh: u16, dm: u16| {
            let mut f = DeduplicatorFile {
                gatherers: gatherers
                    .iter()
                    .map(|g| GathererEndpoint {
                        id: g.id.clone(),
                        endpoint: format!("http://{}", g.proxy.addr()),
                    })
                    .collect(),
                ..DeduplicatorFile::default()
            };
            f.production.database_url = Secret(production_url.clone());
            f.production.op_timeout = Duration::from_secs(10);
            f.production.retry_max = Duration::from_secs(5);
            f.sources.silence_timeout = Duration::from_secs(10);
            f.sources.reconnect_max = Duration::from_secs(5);
            f.http.listen = loopback(dh);
            f.http.metrics_listen = loopback(dm);
            f.log.level = opts.log_level.clone();
            toml::to_string(&f).context("render the deduplicator configuration")
        };
        let dpath = dir.join("deduplicator.toml");
        std::fs::write(&dpath, render(0, 0)?)?;
        let (deduplicator, addrs) = start_reporting(
            "deduplicator",
            bin("deduplicator"),
            vec!["--config".into(), dpath.display().to_string()],
            &dir,
            Duration::from_secs(60),
        )
        .await?;
        let (dh, dm) = (port_of(&addrs, "http")?, port_of(&addrs, "metrics")?);
        std::fs::write(&dpath, render(dh, dm)?)?;
        wait_http(
            &format!("http://127.0.0.1:{dh}/health"),
            Duration::from_secs(60),
            |c, v| c == 200 && v["status"] == "healthy",
        )
        .await
        .with_context(|| {
            format!(
                "the deduplicator did not become healthy (see {})",
                deduplicator.log_path().display()
            )
        })?;

        let endpoints = Endpoints {
            control: String::new(),
            sim_rest,
            sim_ws,
            sim_control,
            production_url,
            gatherers: gatherers
                .iter()
                .map(|g| GathererEndpoints {
                    id: g.id.clone(),
                    grpc: format!("http://127.0.0.1:{}", g.grpc_port),
                    health: format!("http://127.0.0.1:{}/health", g.http_port),
                    metrics: format!("http://127.0.0.1:{}/metrics", g.metrics_port),
                    database_url: g.pg.url(),
                })
                .collect(),
            deduplicator_health: format!("http://127.0.0.1:{dh}/health"),
            deduplicator_metrics: format!("http://127.0.0.1:{dm}/metrics"),
            deduplicator_config: dpath,
            ha: opts.ha,
        };
        let stack = Stack {
            opts,
            endpoints,
            sim,
            gatherers,
            prod,
            standby,
            prod_proxy,
            deduplicator,
            failed_over: false,
        };
        stack.write_endpoints()?;
        stack.set_rate(stack.opts.rate).await?;
        Ok(stack)
    }

    pub fn write_endpoints(&self) -> anyhow::Result<()> {
        std::fs::write(
            self.opts.data_dir.join("stack.json"),
            serde_json::to_string_pretty(&self.endpoints)?,
        )?;
        Ok(())
    }

    pub async fn set_rate(&self, rate: u64) -> anyhow::Result<()> {
        post(
            &format!("{}/rate", self.endpoints.sim_control),
            json!({ "rate": rate }),
        )
        .await
        .map(|_| ())
    }

    pub async fn fault(&self, body: Value) -> anyhow::Result<Value> {
        post(&format!("{}/faults", self.endpoints.sim_control), body).await
    }

    fn slot(&mut self, n: usize) -> anyhow::Result<&mut GathererSlot> {
        let len = self.gatherers.len();
        self.gatherers
            .get_mut(n.wrapping_sub(1))
            .with_context(|| format!("there is no gatherer {n} (1..={len})"))
    }

    /// SIGKILL gatherer `n` (1-based).
    pub fn kill_gatherer(&mut self, n: usize) -> anyhow::Result<()> {
        self.slot(n)?.service.kill();
        Ok(())
    }

    /// SIGTERM gatherer `n`; its exit code.
    pub fn terminate_gatherer(&mut self, n: usize) -> anyhow::Result<Option<i32>> {
        Ok(self.slot(n)?.service.terminate(Duration::from_secs(30)))
    }

    pub async fn start_gatherer(&mut self, n: usize) -> anyhow::Result<()> {
        let g = self.slot(n)?;
        g.service.start()?;
        let url = format!("http://127.0.0.1:{}/health", g.http_port);
        wait_http(&url, Duration::from_secs(90), |c, v| {
            c == 200 && v["status"] == "healthy"
        })
        .await?;
        Ok(())
    }

    /// Restarts gatherer `n`'s local database (the gatherer keeps running and must buffer).
    pub async fn restart_gatherer_db(
        &mut self,
        n: usize,
        down_for: Duration,
    ) -> anyhow::Result<()> {
        let g = self.slot(n)?;
        g.pg.stop()?;
        tokio::time::sleep(down_for).await;
        self.slot(n)?.pg.restart()?;
        Ok(())
    }

    /// Cuts (or restores) the network between the deduplicator and gatherer `n`.
    pub fn partition_gatherer(&mut self, n: usize, cut: bool) -> anyhow::Result<()> {
        let g = self.slot(n)?;
        if cut {
            g.proxy.set_mode(Mode::Stall);
        } else {
            g.proxy.set_mode(Mode::Forward);
            g.proxy.drop_all();
        }
        Ok(())
    }

    pub fn kill_deduplicator(&mut self) {
        self.deduplicator.kill();
    }

    pub fn terminate_deduplicator(&mut self) -> Option<i32> {
        self.deduplicator.terminate(Duration::from_secs(30))
    }

    pub fn start_deduplicator(&mut self) -> anyhow::Result<()> {
        self.deduplicator.start()
    }

    /// Production down (fast shutdown) or back.
    pub fn production(&mut self, up: bool) -> anyhow::Result<()> {
        let pg = if self.failed_over {
            self.standby.as_mut().context("no standby")?
        } else {
            &mut self.prod
        };
        if up {
            pg.restart()?
        } else {
            pg.stop()?
        }
        Ok(())
    }

    /// Kills the production primary, promotes the standby and moves the endpoint (`--ha`).
    pub fn failover(&mut self) -> anyhow::Result<()> {
        if self.failed_over {
            bail!("already failed over (one standby only)");
        }
        let standby = self
            .standby
            .as_ref()
            .context("failover needs a stack started with --ha")?;
        self.prod.crash();
        standby.promote()?;
        self.prod_proxy.set_target(loopback(standby.port()));
        self.prod_proxy.drop_all();
        self.failed_over = true;
        self.endpoints.production_url =
            format!("postgres://postgres@{}/postgres", self.prod_proxy.addr());
        Ok(())
    }

    /// The production database URL to read (the current primary, directly).
    pub fn production_direct_url(&self) -> String {
        match (&self.standby, self.failed_over) {
            (Some(s), true) => s.url(),
            _ => self.prod.url(),
        }
    }

    /// One line per service and the totals, for the live view.
    pub async fn progress(&mut self, last: &mut Progress) -> String {
        progress(self, last).await
    }

    /// Stops everything: services (SIGTERM, graceful), then clusters; removes the data
    /// directory unless `keep`.
    pub fn down(mut self) -> Vec<(String, Option<i32>)> {
        let mut codes = Vec::new();
        codes.push((
            "deduplicator".to_owned(),
            self.deduplicator.terminate(Duration::from_secs(30)),
        ));
        // All gatherers at once: each flushes to its own database.
        for g in &mut self.gatherers {
            g.service.signal_term();
        }
        for g in &mut self.gatherers {
            codes.push((g.id.clone(), g.service.terminate(Duration::from_secs(30))));
        }
        codes.push((
            "kalshi-sim".to_owned(),
            self.sim.terminate(Duration::from_secs(10)),
        ));
        let keep = self.opts.keep;
        let dir = self.opts.data_dir.clone();
        drop(self);
        if !keep {
            let _ = std::fs::remove_dir_all(dir);
        }
        codes
    }

    /// Waits until the simulator stopped publishing, the gatherers' heads are still and the
    /// deduplicator has merged everything every running gatherer holds.
    pub async fn wait_settled(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.production_direct_url())
            .await?;
        let mut last = String::new();
        let mut stable = 0;
        loop {
            let mut heads = Vec::new();
            let mut live = Vec::new();
            for (i, g) in self.gatherers.iter_mut().enumerate() {
                if !g.service.running() {
                    continue;
                }
                let m = get_text(&format!("http://127.0.0.1:{}/metrics", g.metrics_port))
                    .await
                    .unwrap_or_default();
                heads.push(format!(
                    "{}:{}",
                    g.id,
                    metric_sum(&m, "writer_inserts_total")
                ));
                live.push(i);
            }
            let cursors: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT gatherer_id, stream, cursor FROM sync_cursors ORDER BY 1, 2",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            let mut synced = true;
            // Every running gatherer subscribed again (a reconnecting one has not yet declared
            // its gaps or backfilled), and the deduplicator healthy.
            for &i in &live {
                let url = format!("http://127.0.0.1:{}/health", self.gatherers[i].http_port);
                let healthy = async {
                    let r = reqwest::get(&url).await.ok()?;
                    let v: Value = r.json().await.ok()?;
                    Some(v["status"] == "healthy")
                };
                if healthy.await != Some(true) {
                    synced = false;
                }
            }
            let dedup_ok = async {
                let r = reqwest::get(&self.endpoints.deduplicator_health)
                    .await
                    .ok()?;
                let v: Value = r.json().await.ok()?;
                Some(v["status"] == "healthy")
            };
            if dedup_ok.await != Some(true) {
                synced = false;
            }
            for i in live {
                let g = &self.gatherers[i];
                let status = gatherer_heads(&format!("http://127.0.0.1:{}", g.grpc_port)).await;
                match status {
                    Ok(h) => {
                        for (stream, head) in h {
                            let c = cursors
                                .iter()
                                .find(|c| c.0 == g.id && c.1 == stream)
                                .map_or(0, |c| c.2);
                            if c < head {
                                synced = false;
                            }
                        }
                    }
                    Err(_) => synced = false,
                }
            }
            let key = heads.join(",");
            if synced && key == last {
                stable += 1;
                if stable >= 3 {
                    pool.close().await;
                    return Ok(());
                }
            } else {
                stable = 0;
            }
            last = key;
            if Instant::now() >= deadline {
                bail!("the stack did not settle within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `(stream table, head)` of a gatherer.
pub async fn gatherer_heads(endpoint: &str) -> anyhow::Result<Vec<(String, i64)>> {
    use kalshi_proto::gatherer::v1 as pb;
    let mut c = tokio::time::timeout(
        Duration::from_secs(3),
        kalshi_proto::GathererClient::connect(endpoint.to_owned()),
    )
    .await
    .context("connect timed out")??;
    let st = tokio::time::timeout(Duration::from_secs(3), c.status(pb::StatusRequest {}))
        .await
        .context("status timed out")??
        .into_inner();
    Ok(st
        .streams
        .iter()
        .filter_map(|s| {
            let name = pb::Stream::try_from(s.stream)
                .ok()?
                .as_str_name()
                .trim_start_matches("STREAM_")
                .to_ascii_lowercase();
            Some((name, s.head))
        })
        .collect())
}

pub async fn post(url: &str, body: Value) -> anyhow::Result<Value> {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let code = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !code.is_success() {
        bail!("POST {url}: {code} {v}");
    }
    Ok(v)
}

pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    Ok(c.get(url).send().await?.text().await?)
}

pub use kalshi_testkit::prom::metric_sum;

/// The value of `name{label="value"}` (summed over other labels).
pub fn metric_with(text: &str, name: &str, label: &str, value: &str) -> f64 {
    let needle = format!("{label}=\"{value}\"");
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counters remembered between two progress lines.
#[derive(Default)]
pub struct Progress {
    at: Option<Instant>,
    inserts: Vec<f64>,
    written: f64,
}

async fn progress(s: &mut Stack, last: &mut Progress) -> String {
    let now = Instant::now();
    let dt = last.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    let mut out = String::new();
    let dm = get_text(&s.endpoints.deduplicator_metrics)
        .await
        .unwrap_or_default();
    last.inserts.resize(s.gatherers.len(), 0.0);
    for (i, g) in s.gatherers.iter_mut().enumerate() {
        let up = g.service.running();
        let m = if up {
            get_text(&format!("http://127.0.0.1:{}/metrics", g.metrics_port))
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        let inserts = metric_sum(&m, "writer_inserts_total");
        let rate = if dt > 0.0 && inserts >= last.inserts[i] {
            (inserts - last.inserts[i]) / dt
        } else {
            0.0
        };
        last.inserts[i] = inserts;
        let lag = ["trades", "orderbook_deltas", "tickers"]
            .iter()
            .map(|st| {
                dm.lines()
                    .filter(|l| {
                        l.starts_with("dedup_sync_lag_seconds{")
                            && l.contains(&format!("gatherer=\"{}\"", g.id))
                            && l.contains(&format!("stream=\"{st}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        out.push_str(&format!(
            "  {:<4} {:<5} ingest {:>7.0} rec/s  ws {}/{}  gaps {:>4}  dedup lag {:>5.1} s\n",
            g.id,
            if up { "up" } else { "DOWN" },
            rate,
            metric_sum(&m, "ws_client_connected"),
            metric_sum(&m, "ws_client_connections_configured"),
            metric_sum(&m, "gaps_declared_total"),
            lag,
        ));
    }
    let written = metric_sum(&dm, "dedup_records_written_total");
    let wrate = if dt > 0.0 && written >= last.written {
        (written - last.written) / dt
    } else {
        0.0
    };
    last.written = written;
    let per = |t: &str| metric_with(&dm, "dedup_records_written_total", "stream", t);
    out.push_str(&format!(
        "  production {:>5}: {:>6.0} rows/s  trades {:.0}  deltas {:.0}  snapshots {:.0}  tickers {:.0}  lifecycle {:.0}  markets {:.0}  gaps {:.0}  quarantine {:.0}{}\n",
        if metric_sum(&dm, "dedup_rds_connected") == 1.0 { "ok" } else { "DOWN" },
        wrate,
        per("trades"),
        per("orderbook_deltas"),
        per("orderbook_snapshots"),
        per("tickers"),
        per("lifecycle"),
        per("markets"),
        per("gaps"),
        metric_sum(&dm, "dedup_quarantined_total"),
        if s.deduplicator.running() { "" } else { "  (deduplicator DOWN)" },
    ));
    last.at = Some(now);
    out
}

/// The simulator's test key pair: the stack's gatherers sign with it. Never used with Kalshi.
const TEST_KEY_PRIVATE: &[u8] = include_bytes!("../../shared/testdata/rsa-pkcs8.pem");
const TEST_KEY_PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");
