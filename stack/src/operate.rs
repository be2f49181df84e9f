//! Operating a running stack: rates and faults on the simulator, kills, restarts and network
//! partitions of each service, production failover, and waiting until everything settled.
//!
//! It must never act on a slot that does not exist (a clear error names the slots there are).

use super::*;

impl Stack {
    /// `stack.json`, readable by its owner only (the production URL has a password).
    pub fn write_endpoints(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.opts.data_dir.join("stack.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.endpoints)?)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let env = self.opts.data_dir.join("env");
        std::fs::write(&env, self.shell_env())?;
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// `env`: what a second terminal sources to run the operator commands and the runbooks'
    /// against this stack (`source <data-dir>/env`): the binaries on `PATH`, the runbooks'
    /// variables (runbooks/README.md), and the local S3's credentials the deduplicator has.
    pub fn shell_env(&self) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
        let e = &self.endpoints;
        let mut vars = vec![
            ("DEDUP_CONFIG", e.deduplicator_config.display().to_string()),
            ("DEDUP_HEALTH", e.deduplicator_health.clone()),
            ("DEDUP_METRICS", e.deduplicator_metrics.clone()),
            ("PRODUCTION_URL", self.production_direct_url()),
        ];
        if let Some(g) = e.gatherers.first() {
            vars.push(("GATHERER_HEALTH", g.health.clone()));
            vars.push(("GATHERER_METRICS", g.metrics.clone()));
            vars.push(("GATHERER_DB_URL", g.database_url.clone()));
        }
        if self.s3.is_some() {
            vars.extend(
                kalshi_testkit::s3::ENV
                    .iter()
                    .map(|(k, v)| (*k, (*v).to_owned())),
            );
        }
        let mut out = String::from(
            "# Written by kalshi-stack up: `source` it in another terminal to run the operator\n\
             # commands (deduplicator --config \"$DEDUP_CONFIG\" status) and the runbooks' commands.\n",
        );
        out.push_str(&format!(
            "export PATH={}:\"$PATH\"\n",
            q(&self.opts.bin_dir.display().to_string())
        ));
        for (k, v) in vars {
            out.push_str(&format!("export {k}={}\n", q(&v)));
        }
        out
    }

    pub async fn set_rate(&self, rate: u64) -> anyhow::Result<()> {
        self.need_simulator()?;
        post(
            &format!("{}/rate", self.endpoints.sim_control),
            json!({ "rate": rate }),
        )
        .await
        .map(|_| ())
    }

    pub async fn fault(&self, body: Value) -> anyhow::Result<Value> {
        self.need_simulator()?;
        post(&format!("{}/faults", self.endpoints.sim_control), body).await
    }

    /// Rates and faults are the simulator's: a stack on a real exchange has none.
    fn need_simulator(&self) -> anyhow::Result<()> {
        match &self.endpoints.exchange {
            Some(x) if self.endpoints.sim_control.is_empty() => {
                bail!(
                    "this stack captures {x}: there is no simulator to set a rate or inject a fault in"
                )
            }
            _ => Ok(()),
        }
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

    /// The deduplicator that holds the lease: with `--standby`, whichever of the two answers
    /// `/health/active` (the first when neither does: between two holders).
    async fn active_deduplicator(&mut self) -> &mut Service {
        let active_is_standby = match &self.endpoints.deduplicator_standby_health {
            Some(h) => {
                let url = format!("{h}/active");
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build();
                match c {
                    Ok(c) => c
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    Err(_) => false,
                }
            }
            None => false,
        };
        match (&mut self.standby_deduplicator, active_is_standby) {
            (Some(s), true) => s,
            _ => &mut self.deduplicator,
        }
    }

    /// SIGKILL to the active deduplicator (with `--standby`, the standby takes over). Returns
    /// the killed one's name.
    pub async fn kill_deduplicator(&mut self) -> String {
        let d = self.active_deduplicator().await;
        d.kill();
        d.name.clone()
    }

    /// SIGTERM to the active deduplicator; its exit code.
    pub async fn terminate_deduplicator(&mut self) -> Option<i32> {
        self.active_deduplicator()
            .await
            .terminate(Duration::from_secs(30))
    }

    /// Starts every deduplicator that is not running (a killed active comes back as the
    /// standby).
    pub fn start_deduplicator(&mut self) -> anyhow::Result<()> {
        if !self.deduplicator.running() {
            self.deduplicator.start()?;
        }
        if let Some(s) = &mut self.standby_deduplicator
            && !s.running()
        {
            s.start()?;
        }
        Ok(())
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
        // The endpoint (and so production_url) stays: the proxy now leads to the new primary.
        self.failed_over = true;
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
        if let Some(s) = &mut self.standby_deduplicator {
            codes.push((
                "deduplicator-standby".to_owned(),
                s.terminate(Duration::from_secs(30)),
            ));
        }
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
        if let Some(sim) = self.sim.as_mut() {
            codes.push((
                "kalshi-sim".to_owned(),
                sim.terminate(Duration::from_secs(10)),
            ));
        }
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
            let mut registry_behind = false;
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
                // A lifecycle change the registry could not fetch yet (REST was refusing)
                // leaves the catalogue behind the exchange until its retry applies.
                if metric_sum(&m, "market_registry_pending_changes") > 0.0 {
                    heads.push(format!("{}:registry-pending", g.id));
                    registry_behind = true;
                }
                live.push(i);
            }
            let cursors: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT gatherer_id, stream, cursor FROM sync_cursors ORDER BY 1, 2",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            let mut synced = !registry_behind;
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
            // The active deduplicator healthy (with --standby, either may be the active one).
            let mut dedup_ok = false;
            let urls = std::iter::once(&self.endpoints.deduplicator_health)
                .chain(self.endpoints.deduplicator_standby_health.as_ref());
            for url in urls {
                let healthy = async {
                    let r = reqwest::get(url).await.ok()?;
                    let v: Value = r.json().await.ok()?;
                    Some(v["status"] == "healthy")
                };
                dedup_ok |= healthy.await == Some(true);
            }
            if !dedup_ok {
                synced = false;
            }
            for i in live {
                let g = &self.gatherers[i];
                let e = &self.endpoints.gatherers[i];
                let status = gatherer_heads(&e.grpc, e.tls.as_ref()).await;
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
