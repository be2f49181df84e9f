//! `kalshi-stack up`: the simulator, production (and its standby), one cluster and one
//! gatherer per slot, and the deduplicator, each configured from the services' typed file
//! formats (`kalshi_shared::config`) and started on ports it reports itself.
//!
//! It must never report the stack ready before every gatherer is subscribed and the
//! deduplicator is healthy.

use super::*;

/// Where the simulator listens (from its address file).
struct SimAddrs {
    rest: String,
    ws: String,
    control: String,
}

/// What the gatherers capture: the stack's simulator, or an exchange ([`Exchange`]).
struct Upstream {
    rest: String,
    ws: String,
    key_id: String,
    key_file: PathBuf,
    /// The local simulator: fast local timings. A real exchange gets the gatherers' defaults
    /// (Kalshi's rate limits, its ping cadence).
    simulator: bool,
}

/// Starts `kalshi-sim` with `args` (plus its truth file and its address file in `dir`) and waits
/// until its control endpoint answers.
async fn spawn_sim(
    program: PathBuf,
    dir: &Path,
    name: &str,
    mut args: Vec<String>,
    truth: &Path,
) -> anyhow::Result<(Service, SimAddrs)> {
    let _ = std::fs::remove_file(truth);
    args.push("--truth-file".into());
    args.push(truth.display().to_string());
    let (sim, addrs) =
        start_reporting(name, program, args, dir, Duration::from_secs(30), &[]).await?;
    let field = |k: &str| {
        addrs[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("sim address file without {k}"))
    };
    let addrs = SimAddrs {
        rest: field("rest")?,
        ws: field("ws")?,
        control: field("control")?,
    };
    wait_http(
        &format!("{}/health", addrs.control),
        Duration::from_secs(30),
        |c, _| c == 200,
    )
    .await?;
    Ok((sim, addrs))
}

/// The simulator's flags: ports 0 (an address file reports them: no race for a port between
/// choosing and binding it), rate 0 until told, one API key.
fn sim_args(
    (seed, markets, lifecycle_every): (u64, usize, u64),
    key_id: &str,
    public_key: &Path,
) -> Vec<String> {
    vec![
        "--listen".into(),
        loopback(0).to_string(),
        "--control-listen".into(),
        loopback(0).to_string(),
        "--seed".into(),
        seed.to_string(),
        "--markets".into(),
        markets.to_string(),
        "--rate".into(),
        "0".into(),
        "--lifecycle-every".into(),
        lifecycle_every.to_string(),
        "--public-key".into(),
        public_key.display().to_string(),
        "--key-id".into(),
        key_id.to_owned(),
        // Tickers and lifecycle messages carry a field no client models, as Kalshi adds fields
        // without notice: everything downstream keeps them as sent, and the oracle checks it.
        "--future-fields".into(),
        // Trading halts every 2 minutes for 30 s (every second one maintenance, the exchange
        // down): the gatherers poll the status every 10 s and the audit requires every state.
        // A message of a type no client models every 5,000: kept as sent, judged by the audit.
        "--unknown-every".into(),
        "4999".into(),
        "--halt-every-secs".into(),
        "120".into(),
        "--halt-secs".into(),
        "30".into(),
    ]
}

/// A simulator on its own, as a remote exchange for `--exchange` (tests, rehearsals): a stack
/// pointed at `rest` uses nothing of it but its public REST and WebSocket API. It starts at
/// rate 0; `control` sets the rate and serves the truth.
pub struct RemoteSim {
    pub service: Service,
    pub rest: String,
    pub ws: String,
    pub control: String,
}

/// Production's `shared_buffers` on the stack (see `Setup::pg_opts`).
const PRODUCTION_SHARED_BUFFERS: &str = "512MB";

impl RemoteSim {
    /// `kalshi-sim` from `bin_dir`, logging and keeping its files in `dir`, accepting the API
    /// key `key_id` whose public key (PEM) is `public_key`; `seed`, `markets` and
    /// `lifecycle_every` as the simulator's flags.
    pub async fn start(
        bin_dir: &Path,
        dir: &Path,
        (seed, markets, lifecycle_every): (u64, usize, u64),
        key_id: &str,
        public_key: &Path,
    ) -> anyhow::Result<RemoteSim> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let args = sim_args((seed, markets, lifecycle_every), key_id, public_key);
        let truth = dir.join("remote-sim.truth.jsonl");
        let (service, a) =
            spawn_sim(bin_dir.join("kalshi-sim"), dir, "remote-sim", args, &truth).await?;
        Ok(RemoteSim {
            service,
            rest: a.rest,
            ws: a.ws,
            control: a.control,
        })
    }
}

/// What every step of `up` needs: the (absolute) data and binary directories and the options.
struct Setup<'a> {
    opts: &'a Options,
    dir: PathBuf,
    key_dir: PathBuf,
    /// The throwaway CA's certificates, when the stack runs with mTLS.
    mtls: Option<kalshi_testkit::certs::MtlsFiles>,
    /// The local S3's endpoint, when the stack archives there.
    s3: Option<String>,
    /// The archive's local directory, when the stack archives there (exchange mode).
    archive_dir: Option<PathBuf>,
}

/// The archive's bucket on the stack's local S3.
pub const STACK_BUCKET: &str = "kalshi-archive";

impl Setup<'_> {
    fn bin(&self, name: &str) -> PathBuf {
        self.opts.bin_dir.join(name)
    }

    fn pg_opts(&self, name: &str) -> ClusterOptions {
        // Production's indexes lead with the market: every batch touches each live market's
        // rightmost leaf of two indexes per stream, about 8,000 pages (64 MiB) at 1,000
        // markets. In the test clusters' 32 MB the backends evicted and re-read about 2,000
        // pages a second, writing the dirty ones themselves, and its CPU grew with its
        // tables. RDS gives a quarter of the instance's memory; here, enough for that set.
        // A gatherer's tables are appended to in id order and keep the default.
        let settings = if name.starts_with("production") {
            vec![(
                "shared_buffers".to_owned(),
                PRODUCTION_SHARED_BUFFERS.to_owned(),
            )]
        } else {
            Vec::new()
        };
        ClusterOptions {
            base_dir: Some(self.dir.join("pg")),
            dir: Some(self.dir.join("pg").join(name)),
            keep: self.opts.keep,
            settings,
            ..Default::default()
        }
    }

    /// The simulator on port 0, at rate 0, signing with the stack's test key.
    async fn start_sim(&self) -> anyhow::Result<(Service, SimAddrs)> {
        let (dir, key_dir, opts) = (&self.dir, &self.key_dir, self.opts);
        std::fs::create_dir_all(key_dir)?;
        std::fs::write(key_dir.join("sim-private.pem"), TEST_KEY_PRIVATE)?;
        std::fs::write(key_dir.join("sim-public.pem"), TEST_KEY_PUBLIC)?;
        // Port 0 and an address file: no race for a port between choosing and binding it.
        let mut sim_args = sim_args(
            (opts.seed, opts.markets, opts.lifecycle_every),
            "stack-key",
            &key_dir.join("sim-public.pem"),
        );
        // The gatherers' local timings poll REST fast: the simulator's limit is raised to match.
        sim_args.extend(["--rest-rate", "1000", "--rest-burst", "1000"].map(String::from));
        if opts.history_hours > 0 {
            sim_args.extend(["--history-hours".to_owned(), opts.history_hours.to_string()]);
            sim_args.extend([
                "--history-markets".to_owned(),
                opts.history_markets.to_string(),
            ]);
        }
        let truth = dir.join("truth.jsonl");
        spawn_sim(self.bin("kalshi-sim"), dir, "kalshi-sim", sim_args, &truth).await
    }

    /// `https` with mTLS, `http` without.
    fn scheme(&self) -> &'static str {
        if self.mtls.is_some() { "https" } else { "http" }
    }

    /// How a client of gatherer `id` authenticates (the deduplicator's certificate).
    fn client_tls(&self, id: &str) -> Option<GrpcClientTls> {
        self.mtls.as_ref().map(|m| GrpcClientTls {
            ca_file: m.ca.clone(),
            cert_file: m.deduplicator.0.clone(),
            key_file: m.deduplicator.1.clone(),
            server_name: id.to_owned(),
        })
    }

    /// A gatherer's configuration, from the gatherer's own file format.
    fn gatherer_file(
        &self,
        id: &str,
        up: &Upstream,
        pg: &PgCluster,
        (grpc, http, metrics): (u16, u16, u16),
    ) -> GathererFile {
        let mut f = GathererFile {
            gatherer_id: id.to_owned(),
            ..GathererFile::default()
        };
        f.kalshi.rest_url = up.rest.clone();
        f.kalshi.ws_url = up.ws.clone();
        f.kalshi.key_id = Some(up.key_id.clone());
        f.kalshi.private_key_file = Some(up.key_file.clone());
        if up.simulator {
            f.kalshi.rest_rate_per_s = 100;
            f.kalshi.rest_burst = 100;
            f.ws.connections = 2;
            // Local timings: a half-open socket is caught by silence within 3 s, before the
            // simulator's longest stall (8 s) ends by closing it.
            f.ws.ping_interval = Duration::from_secs(1);
            f.ws.silence_timeout = Duration::from_secs(3);
            // No periodic snapshots against the simulator: a settled stack must stand still
            // for its audits, and a changed book would be stored again up to 5 minutes after
            // the traffic stopped. (The tests' worlds run them every 3 s; a real exchange
            // gets the 5-minute default.)
            f.ws.snapshot_every = Duration::ZERO;
        }
        f.store.database_url = Secret(pg.url());
        f.store.spill_dir = self.dir.join("spill");
        f.api.listen = loopback(grpc);
        match self
            .mtls
            .as_ref()
            .and_then(|m| m.gatherer(id).map(|g| (m, g)))
        {
            Some((m, (cert, key))) => {
                f.api.tls = Some(ApiTlsSection {
                    cert_file: cert.to_path_buf(),
                    key_file: key.to_path_buf(),
                    client_ca_file: m.ca.clone(),
                    allowed_clients: vec![kalshi_testkit::certs::DEDUPLICATOR_NAME.into()],
                    handshake_timeout: Duration::from_secs(10),
                    max_handshakes: 64,
                });
            }
            None => f.api.insecure = true,
        }
        f.http.listen = loopback(http);
        f.http.metrics_listen = loopback(metrics);
        f.log.level = self.opts.log_level.clone();
        f
    }

    /// One gatherer with its own cluster, behind a proxy the stack can cut. Ports 0 at first:
    /// the gatherer binds and reports what it got (--addr-file), so no port is guessed that
    /// another process could take first. The configuration then names those ports, so a
    /// restart of this gatherer keeps its endpoints.
    async fn start_gatherer(&self, id: String, up: &Upstream) -> anyhow::Result<GathererSlot> {
        let pg =
            PgCluster::start(self.pg_opts(&id)).with_context(|| format!("start {id}'s cluster"))?;
        let path = self.dir.join(format!("{id}.toml"));
        write_toml(&path, &self.gatherer_file(&id, up, &pg, (0, 0, 0)))?;
        let (service, addrs) = start_reporting(
            &id,
            self.bin("gatherer"),
            vec!["--config".into(), path.display().to_string()],
            &self.dir,
            Duration::from_secs(90),
            &[],
        )
        .await?;
        let ports = (
            port_of(&addrs, "grpc")?,
            port_of(&addrs, "http")?,
            port_of(&addrs, "metrics")?,
        );
        write_toml(&path, &self.gatherer_file(&id, up, &pg, ports))?;
        let proxy = TcpProxy::start(loopback(0), loopback(ports.0)).await?;
        Ok(GathererSlot {
            id,
            service,
            grpc_port: ports.0,
            http_port: ports.1,
            metrics_port: ports.2,
            proxy,
            pg,
        })
    }

    /// The deduplicator's configuration, from its own file format.
    fn deduplicator_file(
        &self,
        gatherers: &[GathererSlot],
        production_url: &str,
        (http, metrics): (u16, u16),
    ) -> DeduplicatorFile {
        let mut f = DeduplicatorFile {
            gatherers: gatherers
                .iter()
                .map(|g| GathererEndpoint {
                    id: g.id.clone(),
                    endpoint: format!("{}://{}", self.scheme(), g.proxy.addr()),
                    server_name: self.mtls.is_some().then(|| g.id.clone()),
                })
                .collect(),
            ..DeduplicatorFile::default()
        };
        match &self.mtls {
            Some(m) => {
                f.sources.tls = Some(SourcesTlsSection {
                    ca_file: m.ca.clone(),
                    cert_file: m.deduplicator.0.clone(),
                    key_file: m.deduplicator.1.clone(),
                });
            }
            None => f.sources.insecure = true,
        }
        f.production.database_url = Secret(production_url.to_owned());
        f.production.op_timeout = Duration::from_secs(10);
        f.production.retry_max = Duration::from_secs(5);
        f.sources.silence_timeout = Duration::from_secs(10);
        f.sources.reconnect_max = Duration::from_secs(5);
        f.http.listen = loopback(http);
        f.http.metrics_listen = loopback(metrics);
        f.log.level = self.opts.log_level.clone();
        if self.s3.is_some() || self.archive_dir.is_some() {
            // The archive on the local S3 or in a local directory: short periods (by default),
            // so files appear within minutes.
            let a = &mut f.archive;
            a.enabled = true;
            match (&self.s3, &self.archive_dir) {
                (Some(s3), _) => {
                    a.bucket = STACK_BUCKET.into();
                    a.endpoint_url = s3.clone();
                }
                (None, Some(d)) => a.directory = d.display().to_string(),
                (None, None) => {}
            }
            a.period = self.opts.archive_period;
            if self.opts.exchange.is_none() {
                // The simulator's traffic lands within a second: archive soon after a period
                // ends.
                a.settle = Duration::from_secs(5);
                a.check_interval = Duration::from_secs(2);
            } else {
                // A real exchange: wait as long as a period (at most the production default,
                // 5 min) so late arrivals rarely make a new version of a period.
                a.settle = a
                    .period
                    .clamp(Duration::from_secs(5), Duration::from_secs(300));
                a.check_interval =
                    (a.settle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
            }
            a.spool_dir = self.dir.join("archive-spool").display().to_string();
        }
        f
    }

    /// A deduplicator (`name`: `deduplicator`, or `deduplicator-standby` for the warm standby),
    /// on ports 0 first (as the gatherers), healthy (or a ready standby) before it returns.
    async fn start_deduplicator(
        &self,
        name: &str,
        gatherers: &[GathererSlot],
        production_url: &str,
    ) -> anyhow::Result<(Service, (u16, u16), PathBuf)> {
        let path = self.dir.join(format!("{name}.toml"));
        write_toml(
            &path,
            &self.deduplicator_file(gatherers, production_url, (0, 0)),
        )?;
        let (service, addrs) = start_reporting(
            name,
            self.bin("deduplicator"),
            vec!["--config".into(), path.display().to_string()],
            &self.dir,
            Duration::from_secs(60),
            &kalshi_testkit::s3::ENV,
        )
        .await?;
        let ports = (port_of(&addrs, "http")?, port_of(&addrs, "metrics")?);
        write_toml(
            &path,
            &self.deduplicator_file(gatherers, production_url, ports),
        )?;
        wait_http(
            &format!("http://127.0.0.1:{}/health", ports.0),
            Duration::from_secs(60),
            |c, v| c == 200 && (v["status"] == "healthy" || v["status"] == "standby"),
        )
        .await
        .with_context(|| {
            format!(
                "{name} did not become healthy (see {})",
                service.log_path().display()
            )
        })?;
        Ok((service, ports, path))
    }
}

/// Writes a service's configuration file from its typed format.
/// `stack-secret-` and 16 hex digits, different at every start.
fn throwaway_secret() -> String {
    format!("stack-secret-{:016x}", kalshi_shared::nonce())
}

fn write_toml<T: Serialize>(path: &Path, config: &T) -> anyhow::Result<()> {
    let text = toml::to_string(config).with_context(|| format!("render {}", path.display()))?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

impl Stack {
    /// Starts everything and waits until the gatherers are subscribed and the deduplicator is
    /// healthy. The simulator starts at rate 0 and is set to `opts.rate` once all are ready, so
    /// every gatherer sees the whole order flow. With `opts.exchange` there is no simulator,
    /// the data directory is kept (a second `up` on it resumes) and the archive is the
    /// directory `<data_dir>/archive`.
    pub async fn up(mut opts: Options) -> anyhow::Result<Stack> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // PostgreSQL and the services run with other working directories: every path they
        // are given must be absolute (the default data dir is relative to the checkout).
        opts.data_dir = std::path::absolute(&opts.data_dir)
            .with_context(|| format!("data directory {}", opts.data_dir.display()))?;
        opts.bin_dir = std::path::absolute(&opts.bin_dir)
            .with_context(|| format!("binary directory {}", opts.bin_dir.display()))?;
        if opts.exchange.is_some() {
            // What was captured is the point: never removed by `down`.
            opts.keep = true;
        }
        let dir = opts.data_dir.clone();
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("create {}", dir.display()))?;
        // mTLS between the deduplicator and the gatherers (the default): a throwaway CA and a
        // certificate per gatherer and for the deduplicator, made fresh at every start.
        let mtls = if opts.mtls {
            let ids: Vec<String> = (1..=opts.gatherers).map(|i| format!("g{i}")).collect();
            let (_ca, files) = kalshi_testkit::certs::write_mtls_set(&dir.join("tls"), &ids)
                .context("make the throwaway CA and certificates")?;
            Some(files)
        } else {
            None
        };
        // The local S3 (moto, from the pinned PyPI set) for the archive; with a real exchange,
        // a directory under the data directory instead (nothing to install, kept with it).
        let archive_dir = (opts.archive && opts.exchange.is_some()).then(|| dir.join("archive"));
        let s3 = if opts.archive && archive_dir.is_none() {
            Some(
                kalshi_testkit::s3::Moto::start(Some(&dir.join("logs/s3.log")))
                    .context("start the local S3 (moto; `./dev check --for up` installs it)")?,
            )
        } else {
            None
        };
        let setup = Setup {
            opts: &opts,
            key_dir: dir.join("keys"),
            dir: dir.clone(),
            mtls,
            s3: s3.as_ref().map(kalshi_testkit::s3::Moto::endpoint),
            archive_dir: archive_dir.clone(),
        };

        let (sim, sim_addrs, upstream) = match &opts.exchange {
            Some(x) => (
                None,
                None,
                Upstream {
                    rest: x.rest_url.clone(),
                    ws: x.ws_url.clone(),
                    key_id: x.key_id.clone(),
                    key_file: x.key_file.clone(),
                    simulator: false,
                },
            ),
            None => {
                let (sim, a) = setup.start_sim().await?;
                let up = Upstream {
                    rest: a.rest.clone(),
                    ws: a.ws.clone(),
                    key_id: "stack-key".into(),
                    key_file: setup.key_dir.join("sim-private.pem"),
                    simulator: true,
                };
                (Some(sim), Some(a), up)
            }
        };

        // Production (and its standby), behind an endpoint that can move.
        let prod = PgCluster::start(setup.pg_opts("production"))
            .context("start the production cluster")?;
        let standby = if opts.ha {
            let s = PgCluster::start_standby(&prod, setup.pg_opts("production-standby"))
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
        // A password in the URL, as production has one: the local clusters trust loopback and
        // ignore it, but it is a secret the services must never log or expose (the secrets
        // test searches every log and endpoint for it).
        let production_url = format!(
            "postgres://postgres:{}@{}/postgres?sslmode=disable",
            throwaway_secret(),
            prod_proxy.addr()
        );

        let mut gatherers = Vec::new();
        for i in 1..=opts.gatherers {
            gatherers.push(setup.start_gatherer(format!("g{i}"), &upstream).await?);
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

        let (deduplicator, (dh, dm), dpath) = setup
            .start_deduplicator("deduplicator", &gatherers, &production_url)
            .await?;
        let (standby_deduplicator, standby_health, standby_metrics) = if opts.standby {
            let (s, (h, m), _) = setup
                .start_deduplicator("deduplicator-standby", &gatherers, &production_url)
                .await?;
            (
                Some(s),
                Some(format!("http://127.0.0.1:{h}/health")),
                Some(format!("http://127.0.0.1:{m}/metrics")),
            )
        } else {
            (None, None, None)
        };

        let (sim_rest, sim_ws, sim_control) = match sim_addrs {
            Some(a) => (a.rest, a.ws, a.control),
            None => Default::default(),
        };
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
                    grpc: format!("{}://127.0.0.1:{}", setup.scheme(), g.grpc_port),
                    tls: setup.client_tls(&g.id),
                    health: format!("http://127.0.0.1:{}/health", g.http_port),
                    metrics: format!("http://127.0.0.1:{}/metrics", g.metrics_port),
                    database_url: g.pg.url(),
                })
                .collect(),
            deduplicator_health: format!("http://127.0.0.1:{dh}/health"),
            deduplicator_metrics: format!("http://127.0.0.1:{dm}/metrics"),
            deduplicator_config: dpath,
            deduplicator_standby_health: standby_health,
            deduplicator_standby_metrics: standby_metrics,
            ha: opts.ha,
            s3: setup.s3.clone(),
            exchange: opts.exchange.as_ref().map(|x| x.rest_url.clone()),
            archive_dir,
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
            standby_deduplicator,
            failed_over: false,
            s3,
        };
        stack.write_endpoints()?;
        if stack.sim.is_some() {
            stack.set_rate(stack.opts.rate).await?;
        }
        Ok(stack)
    }
}
