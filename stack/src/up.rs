//! `kalshi-stack up`: the simulator, production (and its standby), one cluster and one
//! gatherer per slot, and the deduplicator, each configured from the services' typed file
//! formats (`kalshi_shared::config`) and started on ports it reports itself.
//!
//! It must never report the stack ready before every gatherer is subscribed and the
//! deduplicator is healthy.

use super::*;

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
}
