//! The archive's operations: retention drops only what the verified archive holds, and the
//! local stack archives to its own S3 with `kalshi-stack audit --archive` checking it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use kalshi_e2e::archive::*;
use kalshi_e2e::world::*;
use kalshi_testkit::s3::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_partitions_the_verified_archive_holds() {
    let moto = Moto::start(None).unwrap();
    let w = World::start(477, 8, 1).await;
    let pool = pool(&w.prod.url()).await;
    let work = dir("retention");
    let (file, cfg) = daily_archive(&w, &moto, &work);

    // Today's rows, and copies of them on the 3rd of the month four months back (the old
    // month) and of the month three months back (the middle one): the same layout whatever
    // today's date (STYLE.md 21), with both months wholly past the 35-day retention below.
    let (svc, _) = spawn_service(&cfg, &work, "dedup1");
    traffic(&w, 300, 3.0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let now = kalshi_shared::time::now_ms();
    let (old_days, mid_days) = (days_back_to(now, 4, 3), days_back_to(now, 3, 3));
    copy_back(&pool, old_days, 86_400_000).await;
    copy_back(&pool, mid_days, 86_400_000).await;
    let (old, mid) = (
        deduplicator::schema::month_of(now - old_days * 86_400_000),
        deduplicator::schema::month_of(now - mid_days * 86_400_000),
    );
    assert_ne!(old, mid);
    let name = |(y, m): (i32, u8)| format!("trades_p{y:04}{m:02}");
    // Every day up to yesterday archived and verified, with no late data waiting: the second
    // copy can land in a day the archiver has already written.
    wait_days_archived(&pool, now).await;
    stop(svc);
    let old_from = deduplicator::archive::retention::partitions_month_start(old);
    let old_to = deduplicator::archive::retention::partitions_month_start(
        deduplicator::schema::next_month(old),
    );
    let old_rows = rows_between(&pool, old_from, old_to).await;
    let oldest_day: i64 = sqlx::query_scalar(
        "SELECT min(d) FROM (SELECT (extract(epoch FROM min(ts)) * 1000)::bigint / 86400000 * 86400000 AS d FROM trades WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)
         UNION ALL SELECT (extract(epoch FROM min(ts)) * 1000)::bigint / 86400000 * 86400000 FROM orderbook_deltas WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)
         UNION ALL SELECT (extract(epoch FROM min(ts)) * 1000)::bigint / 86400000 * 86400000 FROM tickers WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)
         UNION ALL SELECT (extract(epoch FROM min(ts)) * 1000)::bigint / 86400000 * 86400000 FROM orderbook_snapshots WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)) x",
    )
    .bind(old_from)
    .bind(old_to)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(old_rows.len() > 100, "{}", old_rows.len());

    // An export of one market's week (the copies of the old month lie in its first week),
    // from production: the direct query's rows; the event and series filters take its
    // neighbours too.
    let week = (old_from, old_from + 7 * 86_400_000);
    let market: String = sqlx::query_scalar(
        "SELECT market_ticker FROM trades WHERE ts >= to_timestamp($1 / 1000.0)
          AND ts < to_timestamp($2 / 1000.0) GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    .bind(week.0)
    .bind(week.1)
    .fetch_one(&pool)
    .await
    .unwrap();
    let want = trades_of(&pool, &market, week.0, week.1).await;
    assert!(want.len() > 5, "{want:?}");
    let live = export_trades(&cfg, &work, "live", ("--market", &market), week.0, week.1);
    assert_export_is(&live, &want);
    for s in live.iter().map(|f| &f.0) {
        assert_eq!(s["from_production"], s["rows"], "{s}");
    }
    let event = market.rsplit_once('-').unwrap().0.to_owned();
    let series = market.split('-').next().unwrap().to_owned();
    for (flag, value, like) in [
        ("--event", &event, format!("{event}-%")),
        ("--series", &series, format!("{series}-%")),
    ] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM trades WHERE market_ticker LIKE $1
              AND ts >= to_timestamp($2 / 1000.0) AND ts < to_timestamp($3 / 1000.0)",
        )
        .bind(&like)
        .bind(week.0)
        .bind(week.1)
        .fetch_one(&pool)
        .await
        .unwrap();
        let out = export_trades(
            &cfg,
            &work,
            flag.trim_start_matches('-'),
            (flag, value),
            week.0,
            week.1,
        );
        assert_eq!(out[0].0["rows"].as_i64(), Some(n), "{flag} {value}");
    }

    // S3 loses one file of the middle month: that month must stay.
    let lost: String = sqlx::query_scalar(
        "SELECT s->>'key' FROM archive_periods, jsonb_array_elements(manifest->'streams') s
         WHERE s->>'stream' = 'trades' AND s->>'key' IS NOT NULL AND period_start_ms >= $1 AND period_start_ms < $2 LIMIT 1",
    )
    .bind(deduplicator::archive::retention::partitions_month_start(mid))
    .bind(deduplicator::archive::retention::partitions_month_start(
        deduplicator::schema::next_month(mid),
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    boto3(
        &moto,
        "s3.delete_object(Bucket=bucket, Key=args[0]); print('null')",
        &[&lost],
    );

    // Retention of 35 days: the old month goes, the middle one stays, this month stays.
    let mut file = file.clone();
    file.archive.retention = Duration::from_secs(35 * 86_400);
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let (svc, addr) = spawn_service(&cfg, &work, "dedup2");
    // One retention pass: the old month dropped, and the middle month's trades partition
    // (the last one a pass looks at) kept, with the reason logged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = |log: &str| {
        log.lines()
            .any(|l| l.contains("retention keeps") && l.contains(&name(mid)))
    };
    while partition_names(&pool).await.contains(&name(old))
        || !kept(&std::fs::read_to_string(work.join("dedup2.log")).unwrap_or_default())
    {
        assert!(Instant::now() < deadline, "no retention pass");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = partition_names(&pool).await;
    assert!(
        left.contains(&name(mid)),
        "a file of it is gone from S3: {left:?}"
    );
    assert!(
        left.contains(&name(deduplicator::schema::month_of(now))),
        "{left:?}"
    );
    let m = metrics_of(&addr).await;
    assert_eq!(
        metric_sum(&m, "archive_partitions_dropped_total"),
        4.0,
        "four streams"
    );
    stop(svc);
    let log = std::fs::read_to_string(work.join("dedup2.log")).unwrap();
    assert!(
        log.contains("is not in S3 as recorded"),
        "the kept month is explained"
    );
    // Every archived day of that month (from the oldest row on: the 3rd, or the 2nd when the
    // traffic crossed midnight) is marked retired.
    let days = (old_to - oldest_day) / 86_400_000;
    let (retired, all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE retired_at IS NOT NULL), count(*) FROM archive_periods
         WHERE period_start_ms >= $1 AND period_start_ms < $2",
    )
    .bind(old_from)
    .bind(old_to)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((retired, all), (days, days), "retired and archived days");

    // Verify over a retired month checks the files, and expects production to lack the rows.
    assert!(rows_between(&pool, old_from, old_to).await.is_empty());
    let (from, to) = (old_from.to_string(), old_to.to_string());
    let text = succeeds(&mut dedup(
        &cfg,
        &["archive", "verify", "--from", &from, "--to", &to],
    ));
    assert!(
        text.contains("ok (retired") && text.contains("archive verified"),
        "{text}"
    );

    // The same export, now that production no longer holds the week: read from the archive,
    // the same rows, the CSV byte for byte.
    let retired = export_trades(
        &cfg,
        &work,
        "retired",
        ("--market", &market),
        week.0,
        week.1,
    );
    assert_export_is(&retired, &want);
    for s in retired.iter().map(|f| &f.0) {
        assert_eq!(s["from_archive"], s["rows"], "{s}");
        assert_eq!(s["from_production"], 0, "{s}");
    }
    assert_eq!(
        std::fs::read(&retired[0].1).unwrap(),
        std::fs::read(&live[0].1).unwrap(),
        "the same CSV from production and from the archive"
    );

    // What was dropped comes back from the archive, row for row.
    succeeds(&mut dedup(&cfg, &["restore", "--from", &from, "--to", &to]));
    assert_eq!(rows_between(&pool, old_from, old_to).await, old_rows);

    // Late data for a retired period (a row and its writer's touch): the archiver restores
    // the period first, so the new version holds every row, not just the late one.
    let day: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM min(ts)) * 1000)::bigint / 86400000 * 86400000 FROM trades WHERE ts < to_timestamp($1 / 1000.0)",
    )
    .bind(old_to)
    .fetch_one(&pool)
    .await
    .unwrap();
    let before: i64 = sqlx::query_scalar(
        "SELECT (s->>'rows')::bigint FROM archive_periods, jsonb_array_elements(manifest->'streams') s
         WHERE period_start_ms = $1 AND s->>'stream' = 'trades'",
    )
    .bind(day)
    .fetch_one(&pool)
    .await
    .unwrap();
    // Production loses the period's rows again (as after a second retention), then the late
    // row arrives: only the restore can make the new version whole.
    sqlx::query("DELETE FROM trades WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($1 / 1000.0 + 86400)")
        .bind(day)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO trades (trade_id, ts, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id)
         VALUES ('late-1', to_timestamp($1 / 1000.0 + 60), 'LATE-MKT', 560000, 440000, 100, 1, 'yes', false, $1 + 60000, 'rest', 'g1')",
    )
    .bind(day)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO archive_touch VALUES ($1, 'trades', 1) ON CONFLICT (period_start_ms, stream) DO UPDATE SET touches = archive_touch.touches + 1",
    )
    .bind(day)
    .execute(&pool)
    .await
    .unwrap();
    file.archive.retention = Duration::ZERO;
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let (svc, _) = spawn_service(&cfg, &work, "dedup3");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (version, rows, retired) = loop {
        let r: (i32, i64, bool) = sqlx::query_as(
            "SELECT version, (SELECT (s->>'rows')::bigint FROM jsonb_array_elements(manifest->'streams') s WHERE s->>'stream' = 'trades'),
                    retired_at IS NOT NULL
             FROM archive_periods WHERE period_start_ms = $1",
        )
        .bind(day)
        .fetch_one(&pool)
        .await
        .unwrap();
        if r.0 > 1 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no new version of the retired period"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop(svc);
    assert_eq!((version, rows, retired), (2, before + 1, false));
    let text = succeeds(&mut dedup(
        &cfg,
        &["archive", "verify", "--from", &from, "--to", &to],
    ));
    assert!(text.contains("archive verified"), "{text}");
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_archives_to_its_local_s3_and_the_audit_checks_the_archive() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-archive-stack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = kalshi_stack::Options::new(dir.clone(), kalshi_stack::default_bin_dir());
    o.markets = 16;
    o.seed = 479;
    o.rate = 300;
    o.archive_period = Duration::from_secs(5);
    let mut s = kalshi_stack::Stack::up(o).await.unwrap();
    assert!(s.endpoints.s3.is_some(), "the stack archives by default");
    tokio::time::sleep(Duration::from_secs(8)).await;
    s.set_rate(0).await.unwrap();
    s.wait_settled(Duration::from_secs(120)).await.unwrap();
    let pool = pool(&s.production_direct_url()).await;
    wait_archived_by(&pool, 5000, Duration::from_secs(60)).await;
    let out = Command::new(kalshi_stack::default_bin_dir().join("kalshi-stack"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["audit", "--archive"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("AUDIT PASSED"), "{text}");
    assert!(text.contains("archive: archive verified"), "{text}");
    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    for (name, code) in codes {
        assert_eq!(code, Some(0), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Late data committed into an old month between retention's checks and its drop (a
/// failpoint holds the pass there) is never dropped unarchived: the checks are made again in
/// the drop's own transaction, under the partition's exclusive lock, and the partition stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_drops_late_data_committed_between_its_checks_and_the_drop() {
    let moto = Moto::start(None).unwrap();
    let w = World::start(478, 6, 1).await;
    let pool = pool(&w.prod.url()).await;
    let work = dir("retention-race");
    let (mut file, cfg) = daily_archive(&w, &moto, &work);
    let (svc, _) = spawn_service(&cfg, &work, "dedup1");
    traffic(&w, 300, 2.0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let now = kalshi_shared::time::now_ms();
    let days = days_back_to(now, 4, 3);
    copy_back(&pool, days, 86_400_000).await;
    let (y, m) = deduplicator::schema::month_of(now - days * 86_400_000);
    wait_days_archived(&pool, now).await;
    stop(svc);

    // Retention of 35 days; the pass is held between its checks and the drop of the old
    // month's first partition (by name: orderbook_deltas) while a writer commits a late delta
    // into it.
    let part = format!("orderbook_deltas_p{y:04}{m:02}");
    let late_ts: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT max(ts_ms) FROM {part}"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    file.archive.retention = Duration::from_secs(35 * 86_400);
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let point = "deduplicator::retention::before_drop";
    let addr = work.join("dedup2.addr.json");
    let svc = dedup(&cfg, &["--addr-file", addr.to_str().unwrap(), "run"])
        .env("KALSHI_FAILPOINTS", point)
        .env("KALSHI_FAILPOINT_DIR", &work)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.join("dedup2.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !work.join(format!("{point}.reached")).exists() {
        assert!(
            Instant::now() < deadline,
            "retention never reached its drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // As a writer commits it: the row and its period's touch in one transaction.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO orderbook_deltas (market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms) \
         VALUES ('LATE-MKT', to_timestamp($1 / 1000.0), $1, 1, 500000, 100, 0, '', 'g1', $1)",
    )
    .bind(late_ts)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO archive_touch VALUES ($1, 'orderbook_deltas', 1) ON CONFLICT (period_start_ms, stream) DO UPDATE SET touches = archive_touch.touches + 1",
    )
    .bind(late_ts.div_euclid(86_400_000) * 86_400_000)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    std::fs::write(work.join(format!("{point}.release")), b"").unwrap();
    // The pass goes on, sees the late row under the partition's lock, and keeps it.
    let log = work.join("dedup2.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("rows were written to it while it was checked")
    {
        assert!(
            Instant::now() < deadline,
            "no retention decision after the release"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop(svc);
    assert!(
        partition_names_of(&pool, "orderbook_deltas")
            .await
            .contains(&part),
        "the partition with late data was dropped"
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orderbook_deltas WHERE market_ticker = 'LATE-MKT'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 1, "the late row is still in production");
    let _ = std::fs::remove_dir_all(&work);
}

/// An hour of a busy day is millions of deltas: the archive's long statements (a period's
/// build and verify, retention's count, a restore's row groups) run under
/// `archive.statement_timeout`, never production.op_timeout. Here production's deadline is one
/// second and one period holds 1.2 million deltas: it is archived, verified, counted for
/// retention and restored, none of it cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_of_a_million_deltas_is_archived_verified_and_restored_under_a_one_second_op_timeout()
 {
    const ROWS: i64 = 1_200_000;
    let moto = Moto::start(None).unwrap();
    let w = World::start(479, 4, 1).await;
    let pool = pool(&w.prod.url()).await;
    let work = dir("volume");
    let mut file = archive_file(&w, &moto, &work.join("spool"));
    file.archive.period = Duration::from_secs(86_400);
    file.archive.max_periods_per_check = 400;
    file.archive.row_group_rows = 200_000;
    file.archive.settle = Duration::from_secs(1);
    file.production.op_timeout = Duration::from_secs(1);
    // Production migrated, then the busy day: three days ago, one write with its touch.
    start_dedup(w.dedup_file(&w.prod.url()))
        .await
        .stop()
        .await
        .unwrap();
    let day = (kalshi_shared::time::now_ms().div_euclid(86_400_000) - 3) * 86_400_000;
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(
        deduplicator::schema::create_partition_sql(
            "orderbook_deltas",
            deduplicator::schema::month_of(day),
        ),
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO orderbook_deltas (market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms) \
         SELECT 'BUSY-' || (i % 50), to_timestamp(($1 + i * 60) / 1000.0), $1 + i * 60, 1 + (i % 2), 10000 * (1 + i % 99), 100 * (1 + i % 7) * (CASE WHEN i % 3 = 0 THEN -1 ELSE 1 END), i / 50000, '', 'g1', $1 + i * 60 \
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(day)
    .bind(ROWS)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO archive_touch VALUES ($1, 'orderbook_deltas', 1)")
        .bind(day)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eprintln!("{ROWS} deltas written in {:?}", started.elapsed());
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let (svc, _) = spawn_service(&cfg, &work, "dedup");
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(240);
    let rows = loop {
        let r: Option<(i64, bool)> = sqlx::query_as(
            "SELECT (SELECT (s->>'rows')::bigint FROM jsonb_array_elements(manifest->'streams') s WHERE s->>'stream' = 'orderbook_deltas'), verified_at IS NOT NULL \
             FROM archive_periods WHERE period_start_ms = $1",
        )
        .bind(day)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some((rows, true)) = r {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the busy day was not archived and verified:\n{}",
            std::fs::read_to_string(work.join("dedup.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("archived and verified in {:?}", started.elapsed());
    stop(svc);
    assert_eq!(rows, ROWS);
    let log = std::fs::read_to_string(work.join("dedup.log")).unwrap();
    assert!(!log.contains("57014"), "a statement was cancelled:\n{log}");
    // A full verify of the day, by the operator's command.
    let (from, to) = (day.to_string(), (day + 86_400_000).to_string());
    let text = succeeds(&mut dedup(
        &cfg,
        &["archive", "verify", "--from", &from, "--to", &to],
    ));
    assert!(text.contains("archive verified"), "{text}");
    // Retention's checks count the whole partition under the same deadline.
    let config = deduplicator::config::Validate::validate(file.clone()).unwrap();
    let prod = deduplicator::db::Prod::new(config.production.clone()).unwrap();
    let part = deduplicator::archive::retention::Partition {
        table: "orderbook_deltas".into(),
        name: {
            let (y, m) = deduplicator::schema::month_of(day);
            format!("orderbook_deltas_p{y:04}{m:02}")
        },
        month: deduplicator::schema::month_of(day),
        from_ms: deduplicator::archive::retention::partitions_month_start(
            deduplicator::schema::month_of(day),
        ),
        to_ms: deduplicator::archive::retention::partitions_month_start(
            deduplicator::schema::next_month(deduplicator::schema::month_of(day)),
        ),
    };
    let checked =
        deduplicator::archive::retention::db_check(&prod, config.archive.as_ref().unwrap(), &part)
            .await
            .unwrap();
    assert!(
        matches!(
            checked,
            deduplicator::archive::retention::Checked::Archived(_)
        ),
        "the month's checks: {checked:?}"
    );
    // Wiped and restored, row groups of 200,000 each in its own transaction.
    sqlx::query("DELETE FROM orderbook_deltas WHERE market_ticker LIKE 'BUSY-%'")
        .execute(&pool)
        .await
        .unwrap();
    let started = Instant::now();
    let text = succeeds(&mut dedup(
        &cfg,
        &[
            "restore",
            "--from",
            &from,
            "--to",
            &to,
            "--streams",
            "orderbook_deltas",
        ],
    ));
    eprintln!("restored in {:?}: {text}", started.elapsed());
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orderbook_deltas WHERE market_ticker LIKE 'BUSY-%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, ROWS);
    let _ = std::fs::remove_dir_all(&work);
}
