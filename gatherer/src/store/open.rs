//! Opening the store: connect (bounded, retried until `store.startup_timeout`), take the
//! writer lock, apply the checksummed migrations, replay spilled rows, and read the heads.
//!
//! It must never let two gatherers write one database, nor start on a migration history that
//! does not match this binary.

use super::*;

impl Store {
    /// Connects (retrying until `startup_timeout`), migrates, and reads the current heads.
    pub async fn open(cfg: StoreConfig, cancel: &CancellationToken) -> anyhow::Result<Arc<Store>> {
        let opts: PgConnectOptions = cfg
            .database_url
            .expose()
            .parse::<PgConnectOptions>()
            .context("parse store.database_url")?
            .application_name("kalshi-gatherer")
            .log_statements(tracing::log::LevelFilter::Debug)
            .options([
                (
                    "statement_timeout",
                    format!("{}", cfg.op_timeout.as_millis()),
                ),
                ("lock_timeout", format!("{}", cfg.op_timeout.as_millis())),
                // Notices ("relation ... already exists, skipping" from each flush's
                // partition DDL) are not news: at the default level they were 99% of the log.
                ("client_min_messages", "warning".to_owned()),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}", cfg.op_timeout.as_millis() * 2),
                ),
            ]);
        // Connections are opened on first use, by the runtime that uses them.
        let lazy_pool = |max: u32, opts: PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(max)
                .min_connections(0)
                .acquire_timeout(cfg.connect_timeout)
                .idle_timeout(Some(Duration::from_secs(300)))
                .test_before_acquire(true)
                .connect_lazy_with(opts)
        };
        let pool = lazy_pool(cfg.pool_max, opts.clone());
        let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
        let mut backoff = Backoff::new(BackoffConfig::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        )?);
        loop {
            match sqlx::query("SELECT 1").execute(&pool).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "local database not reachable yet, retrying");
                    if !backoff.sleep(cancel).await {
                        anyhow::bail!("shutdown while waiting for the local database");
                    }
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "connect to the local database (store.database_url) within {:?}",
                        cfg.startup_timeout
                    )));
                }
            }
        }
        // One writer per database, for the process's lifetime: two gatherers on one database
        // would hand out the same cursor ids to different rows.
        let mut writer_lock =
            <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .context("open the writer-lock connection to the local database")?;
        // A predecessor killed a moment ago may still hold it until its backend notices.
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(WRITER_LOCK_KEY)
                .fetch_one(&mut writer_lock)
                .await
                .context("take the writer lock")?;
            if locked {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "another gatherer process is writing to this database (advisory lock {WRITER_LOCK_KEY} is held): run one gatherer per database"
                );
            }
            tracing::warn!(
                "the local database's writer lock is held by another session; waiting for it"
            );
            if !backoff.sleep(cancel).await {
                anyhow::bail!("shutdown while waiting for the writer lock");
            }
        }
        let timescale = migrate(&pool, cfg.timescaledb, &cfg.retention).await?;
        let instance_id: String = sqlx::query("SELECT value FROM meta WHERE key = 'instance_id'")
            .fetch_one(&pool)
            .await
            .context("read the instance id")?
            .try_get(0)?;
        let spill = cfg
            .spill_dir
            .as_deref()
            .map(|root| spill::Spill::new(root, &instance_id));
        if let Some(spill) = &spill {
            std::fs::create_dir_all(spill.dir())
                .with_context(|| format!("create the spill directory {}", spill.dir().display()))?;
            for s in Stream::ALL {
                spill
                    .replay(&pool, s)
                    .await
                    .with_context(|| format!("load the spilled rows of {}", s.table()))?;
            }
        }
        let mut heads = HashMap::new();
        let mut dropped = HashMap::new();
        let mut dropped_before = HashMap::new();
        for s in Stream::ALL {
            let (max_id, mark, before): (i64, i64, i64) = sqlx::query(AssertSqlSafe(format!(
                "SELECT COALESCE((SELECT max(id) FROM {}), 0), COALESCE((SELECT dropped_through FROM retention_marks WHERE stream = $1), 0), \
                        COALESCE((SELECT max(to_ms) + 1 FROM retention_drops WHERE stream = $1), 0)",
                s.table()
            )))
            .bind(s.table())
            .fetch_one(&pool)
            .await
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .with_context(|| format!("read the head of {}", s.table()))?;
            heads.insert(s, watch::Sender::new(max_id.max(mark)));
            dropped.insert(s, AtomicI64::new(mark));
            dropped_before.insert(s, AtomicI64::new(before));
        }
        tracing::info!(instance_id = %instance_id, timescaledb = timescale, "local database ready");
        // The writers' own connections, one each: opened by the writers themselves on their
        // runtime (see [`Store::start_writers`]), and never waited for behind API reads.
        let writer_pool = lazy_pool(
            Stream::ALL.len() as u32,
            opts.clone().application_name("kalshi-gatherer-writer"),
        );
        Ok(Arc::new(Store {
            pool,
            writer_pool,
            writer_lock: tokio::sync::Mutex::new(writer_lock),
            lock_opts: opts,
            instance_id,
            timescale,
            heads,
            dropped,
            dropped_before,
            retention: tokio::sync::RwLock::new(()),
            spill,
            cfg,
        }))
    }
}

/// Applies the embedded migrations; returns whether TimescaleDB is in use.
async fn migrate(
    pool: &PgPool,
    mode: TimescaleMode,
    retention: &HashMap<Stream, Duration>,
) -> anyhow::Result<bool> {
    let mut conn = pool
        .acquire()
        .await
        .context("acquire a connection for migrations")?;
    // One gatherer per database; the lock guards against an accidental second one.
    sqlx::query("SELECT pg_advisory_lock(7207001)")
        .execute(&mut *conn)
        .await?;
    let result = async {
        let applied = kalshi_shared::pg::migrate::verify(&mut conn, schema::MIGRATIONS)
            .await
            .context("check the applied migrations")?;
        let available: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
        )
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
        let want_timescale = match mode {
            TimescaleMode::Off => false,
            TimescaleMode::Auto => available,
            TimescaleMode::Require if available => true,
            TimescaleMode::Require => anyhow::bail!(
                "store.timescaledb = \"require\" but the timescaledb extension is not installed"
            ),
        };
        // A database made before this start keeps the storage it was made with.
        let mut timescale = applied.contains(&1)
            && sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'storage'")
                .fetch_optional(&mut *conn)
                .await?
                .as_deref()
                == Some("timescaledb");
        for (version, sql) in schema::MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            if *version == 1 && want_timescale {
                tx.execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await?;
            }
            // Hypertables with compression take a column's new type only decompressed.
            let sql = match *version {
                6 if timescale => schema::MIGRATION_6_TIMESCALE,
                _ => *sql,
            };
            sqlx::raw_sql(sql).execute(&mut *tx).await.with_context(|| format!("apply migration {version}"))?;
            if let Some(s) = schema::stream_added_by(*version).filter(|_| timescale) {
                // A stream added later becomes a hypertable like those of migration 1.
                let days = retention.get(&s).map(|d| (d.as_secs() / 86_400).max(1) as u32);
                for stmt in schema::timescale_sql(s, days) {
                    tx.execute(AssertSqlSafe(stmt)).await?;
                }
            }
            if *version == 1 && want_timescale {
                for s in Stream::ALL {
                    let days = retention.get(&s).map(|d| (d.as_secs() / 86_400).max(1) as u32);
                    for stmt in schema::timescale_sql(s, days) {
                        tx.execute(AssertSqlSafe(stmt)).await?;
                    }
                }
                tx.execute("INSERT INTO meta (key, value) VALUES ('storage', 'timescaledb') ON CONFLICT DO NOTHING").await?;
                timescale = true;
            }
            kalshi_shared::pg::migrate::record(&mut tx, *version, sql).await?;
            tx.commit().await?;
            tracing::info!(version, "applied migration");
        }
        let storage: Option<String> = sqlx::query("SELECT value FROM meta WHERE key = 'storage'")
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(storage.as_deref() == Some("timescaledb"))
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(7207001)")
        .execute(&mut *conn)
        .await;
    result
}
