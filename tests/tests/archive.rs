//! The S3 archive over the real S3 protocol (moto on HTTP), with the real `deduplicator`
//! binary: archive while traffic runs, read the files with DuckDB and pyarrow, re-archive after
//! a crash without a second copy, wipe production, restore, and judge production against the
//! simulator's ground truth through the one oracle, before and after; S3 faults and a kill
//! mid-upload; late data from a gatherer that comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use deduplicator::archive::format::ARCHIVED;
use kalshi_e2e::archive::*;
use kalshi_e2e::world::*;
use kalshi_testkit::s3::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_is_read_by_duckdb_and_pyarrow_and_restores_exactly() {
    let moto = Moto::start(None).unwrap();
    let w = World::start(471, 16, 2).await;
    let work = dir("main");
    let file = archive_file(&w, &moto, &work.join("spool"));
    // Messages of a type no one models too: every archived stream has rows.
    kalshi_testkit::sim::SimControl::new(w.sim.control_url())
        .fault(serde_json::json!({"fault": "malformed", "kind": "unknown_type", "count": 3}))
        .await
        .unwrap();
    let (pool, cfg, last) = archive_live_traffic(&w, &file, &work).await;
    let before = assert_exact(&w, &pool).await;
    assert!(before.trades > 200 && before.deltas > 1000, "{before:?}");

    // verify: every period, every stream, S3 against production.
    let out = dedup(&cfg, &["archive", "verify", "--from", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("archive verified"), "{text}");
    assert!(
        !text.contains("MISMATCH") && !text.contains("BAD"),
        "{text}"
    );
    let out = dedup(&cfg, &["archive", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 late"), "{text}");

    // The readers: exactly production's rows, by DuckDB and by pyarrow.
    let prod_rows = production_rows(&pool).await;
    let endpoint = moto.endpoint();
    let read_dir = work.join("read");
    let read = assert_readers_read(
        &prod_rows,
        &[
            endpoint.as_ref(),
            BUCKET.as_ref(),
            PREFIX.as_ref(),
            read_dir.as_os_str(),
        ],
    );
    for s in ARCHIVED {
        let (want, got) = (&prod_rows[s.table()], &read[s.table()]);
        assert_eq!(got["compression"], "ZSTD", "{}", s.table());
        eprintln!(
            "{}: {} rows in {} files, {} row groups",
            s.table(),
            want.len(),
            got["files"],
            got["row_groups"]
        );
    }

    // Books rebuilt from the archive exactly as docs/archive.md tells users to (DuckDB, the
    // latest snapshot plus the deltas after its splice point) equal the exchange's, for every
    // market, at the end and in the middle of its traffic.
    let truth = w.control().truth().await.unwrap();
    let end = kalshi_shared::time::now_ms();
    // Every market with a book in the archive, those created while running included.
    let markets: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT market_ticker FROM orderbook_snapshots ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        markets.len() > w.initial.len(),
        "markets were created while running"
    );
    // A book is known from its first snapshot on (before it, a market created while running
    // is "before subscription"): the middle of its traffic is taken after that. Only the time
    // asked comes from production; the book expected is the exchange's.
    let first_book: std::collections::HashMap<String, i64> = sqlx::query_as(
        "SELECT market_ticker, (extract(epoch FROM min(ts)) * 1000)::bigint FROM orderbook_snapshots GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut queries = Vec::new();
    for m in &markets {
        let ts: Vec<i64> = truth
            .deltas
            .iter()
            .filter(|d| &d.market == m)
            .map(|d| d.ts_ms)
            .collect();
        queries.push((m.clone(), end));
        if let (Some(a), Some(b)) = (ts.first(), ts.last()) {
            let a = (*a).max(first_book.get(m).copied().unwrap_or(*a));
            if a <= *b {
                queries.push((m.clone(), (a + b) / 2));
            }
        }
    }
    let books = archive_books(&work.join("read").join(PREFIX), &work, &queries);
    for ((m, at), (unknown, book)) in queries.iter().zip(&books) {
        assert!(
            unknown.is_none(),
            "{m} at {at}: nothing was lost, so the book is known: {unknown:?}"
        );
        let want = kalshi_testkit::oracle::exchange_book(&truth, m, *at).unwrap();
        assert_eq!(
            book, &want,
            "the book of {m} at {at} rebuilt from the archive as docs/archive.md says"
        );
    }
    eprintln!(
        "{} books rebuilt from the archive equal the exchange's ({} markets)",
        books.len(),
        markets.len()
    );

    // A crash after the uploads, before the bookkeeping: the periods are redone, and the same
    // keys get the same bytes, so nothing is uploaded twice.
    // (The deduplicator stopped with production exactly archived: nothing is pending.)
    let before_objects = objects(&moto);
    // Every gap with its window (a window a gatherer widened since counts as a change).
    let gaps_before: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(concat_ws(' ', gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms), ',' ORDER BY gatherer_id, instance_id, gap_id) FROM gaps",
    )
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM archive_periods")
        .execute(&pool)
        .await
        .unwrap();
    let (svc, _) = spawn_service(&cfg, &work, "dedup2");
    assert_eq!(wait_archived(&pool, Duration::from_secs(60)).await, last);
    stop(svc);
    let after_objects = objects(&moto);
    // Every gap with its window (a window a gatherer widened since counts as a change).
    let gaps_after: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(concat_ws(' ', gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms), ',' ORDER BY gatherer_id, instance_id, gap_id) FROM gaps",
    )
        .fetch_one(&pool)
        .await
        .unwrap();
    for (k, v) in &before_objects {
        let new = after_objects.get(k).unwrap_or_else(|| panic!("{k} lost"));
        let (old_sum, new_sum) = (
            v.rsplit_once(' ').unwrap().0,
            new.rsplit_once(' ').unwrap().0,
        );
        // A manifest lists the gaps of its period: one declared or widened since (the
        // gatherers run on: a window merged by the second deduplicator) changes it, rightly.
        if k.contains("manifests/") && gaps_after != gaps_before {
            continue;
        }
        if old_sum != new_sum {
            let versions: Vec<String> = sqlx::query_scalar(
                "SELECT manifest::text FROM archive_periods WHERE version > 1 ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            panic!(
                "{k}: same size and checksum: {old_sum} before, {new_sum} after; the new versions: {versions:#?}"
            );
        }
        if !k.contains("manifests/") {
            assert_eq!(v, new, "{k}: a data file is not written again");
        }
    }
    // Time went on: only manifests of empty periods (after the traffic) are new.
    for k in after_objects
        .keys()
        .filter(|k| !before_objects.contains_key(*k))
    {
        assert!(k.contains("manifests/"), "{k}: no data file is new");
    }

    // Wipe the archived streams from production and restore them from S3.
    wipe_archived(&pool).await;
    let (read_rows, inserted) = restore(&cfg);
    let total: u64 = prod_rows.values().map(|v| v.len() as u64).sum();
    assert_eq!((read_rows, inserted), (total, total));
    let after = assert_exact(&w, &pool).await;
    assert_eq!(
        (
            after.trades,
            after.deltas,
            after.tickers,
            after.lifecycle,
            after.snapshots
        ),
        (
            before.trades,
            before.deltas,
            before.tickers,
            before.lifecycle,
            before.snapshots
        )
    );
    assert_eq!(
        production_rows(&pool).await,
        prod_rows,
        "restored row for row"
    );
    // Twice changes nothing.
    assert_eq!(restore(&cfg), (total, 0));

    // The readers' side of production: numeric views that agree with the integers, a role
    // that reads and cannot write, per-market time indexes on every stream.
    let (all, same): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE v.yes_price_dollars * 1000000 = t.yes_price
                                             AND v.contracts * 100 = t.count
                                             AND v.taker_outcome_side IN ('yes', 'no'))
         FROM trades t JOIN trades_dollars v USING (trade_id, ts)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((all, same), (before.trades as i64, before.trades as i64));
    let levels: i64 = sqlx::query_scalar("SELECT count(*) FROM orderbook_snapshot_levels WHERE price_dollars > 0 AND price_dollars < 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(levels > 0);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE kalshi_reader")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orderbook_deltas_dollars")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n as u64, before.deltas);
    let e = sqlx::query("DELETE FROM trades")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    drop(tx);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE indexname LIKE '%market_ts' OR indexname = 'lifecycle_ticker_received' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for i in [
        "trades_market_ts",
        "orderbook_deltas_market_ts",
        "orderbook_snapshots_market_ts",
        "tickers_market_ts",
        "lifecycle_ticker_received",
    ] {
        assert!(indexes.iter().any(|x| x == i), "{i}: {indexes:?}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_and_a_kill_mid_upload_leave_no_partial_or_duplicate_object() {
    let moto = Moto::start(None).unwrap();
    let proxy = kalshi_testkit::s3::FaultProxy::start(moto.port)
        .await
        .unwrap();
    let w = World::start(473, 12, 1).await;
    let work = dir("faults");
    let mut file = archive_file(&w, &moto, &work.join("spool"));
    let a = &mut file.archive;
    a.endpoint_url = proxy.endpoint();
    // Every file of more than 4 KiB goes up in 4 KiB parts.
    a.part_size = 4096;
    a.multipart_threshold = 4096;
    a.max_attempts = 2;
    a.attempt_timeout = Duration::from_millis(1000);
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let pool = pool(&w.prod.url()).await;

    // 1. Killed mid-upload: the second part of the first multipart upload never gets an
    //    answer, and the deduplicator is killed while it waits.
    proxy.on("PUT", "partNumber=2", vec![kalshi_testkit::s3::Fault::Hang]);
    let (mut svc, _) = spawn_service(&cfg, &work, "dedup1");
    w.rate(400).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.injected().is_empty() {
        assert!(Instant::now() < deadline, "no multipart upload started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.kill().unwrap();
    svc.wait().unwrap();
    let hung = proxy.injected()[0].clone();
    let in_progress = multipart_uploads(&moto);
    assert_eq!(in_progress.len(), 1, "{hung}: {in_progress:?}");
    let visible = objects(&moto);
    assert!(
        !visible.contains_key(&in_progress[0]),
        "{}: nothing of an unfinished upload is visible",
        in_progress[0]
    );

    // 2. Restarted behind S3 faults: SlowDown twice (one operation's every attempt), 500
    //    twice, then two attempts slower than the attempt deadline. Each failed operation is
    //    counted under its class and its period retried.
    use kalshi_testkit::s3::Fault::*;
    proxy.clear();
    proxy.on(
        "PUT",
        "/trades-",
        vec![
            Error(503, "SlowDown"),
            Error(503, "SlowDown"),
            Error(500, "InternalError"),
            Error(500, "InternalError"),
            Delay(Duration::from_millis(1500)),
            Delay(Duration::from_millis(1500)),
        ],
    );
    let (svc, addr) = spawn_service(&cfg, &work, "dedup2");
    tokio::time::sleep(Duration::from_secs(4)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    wait_archived(&pool, Duration::from_secs(90)).await;
    let m = metrics_of(&addr).await;
    for class in ["s3_throttled", "s3_server", "s3_timeout"] {
        let n = metric_line(&m, &format!("archive_errors_total{{class=\"{class}\"}}"));
        assert!(n >= 1.0, "{class} counted: {n}\n{:?}", proxy.injected());
    }
    assert_eq!(proxy.injected().len(), 7, "{:?}", proxy.injected());
    stop(svc);

    // Nothing partial, nothing twice: no upload left open, every data object is exactly the
    // one its period's manifest names (verify checks bytes and rows), and production is the
    // truth.
    assert_eq!(multipart_uploads(&moto), Vec::<String>::new());
    let out = dedup(&cfg, &["archive", "verify", "--from", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let listed = objects(&moto);
    let mut named = std::collections::BTreeSet::new();
    let manifests: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT manifest FROM archive_periods")
            .fetch_all(&pool)
            .await
            .unwrap();
    for m in &manifests {
        for s in m["streams"].as_array().unwrap() {
            if let Some(k) = s["key"].as_str() {
                named.insert(k.to_owned());
            }
        }
    }
    let data: std::collections::BTreeSet<String> = listed
        .keys()
        .filter(|k| !k.contains("manifests/"))
        .cloned()
        .collect();
    assert_eq!(
        data, named,
        "every data object is a manifest's, and only those"
    );
    assert!(named.iter().any(|k| k.contains("orderbook_deltas")));
    assert_exact(&w, &pool).await;
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_from_a_returning_gatherer_makes_new_versions() {
    use kalshi_testkit::proxy::{Mode, TcpProxy};
    let moto = Moto::start(None).unwrap();
    let mut w = World::start(475, 12, 2).await;
    // g2 is reached through a proxy that refuses, until it comes back.
    let g2: std::net::SocketAddr = w.gatherers[1].file.api.listen;
    let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), g2)
        .await
        .unwrap();
    proxy.set_mode(Mode::Refuse);
    let work = dir("late");
    let mut file = archive_file(&w, &moto, &work.join("spool"));
    file.gatherers[1].endpoint = format!("http://{}", proxy.addr());
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let pool = pool(&w.prod.url()).await;
    let (svc, addr) = spawn_service(&cfg, &work, "dedup");

    // g1 is down for a while during traffic: only g2, out of reach, has those records.
    w.rate(400).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.gatherers[0].kill();
    w.disturbed.insert("g1".into());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let f = w.gatherers[0].file.clone();
    w.gatherers[0] = GProc::start(f).await;
    w.gatherers[0].wait_healthy(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1000)).await;
    wait_archived(&pool, Duration::from_secs(60)).await;
    let first = versions(&pool).await;
    // (g1's own REST backfill after its restart may already have made a second version.)
    assert!(
        first.iter().any(|v| v.3 > 0),
        "g1's outage is declared in the manifests: {first:?}"
    );

    // g2 is reachable again: its records of the archived periods are late data.
    proxy.set_mode(Mode::Forward);
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    wait_archived(&pool, Duration::from_secs(60)).await;
    let second = versions(&pool).await;
    let mut rewritten = 0;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.0, b.0);
        if b.4 != a.4 || b.3 != a.3 {
            rewritten += 1;
            // One version per look that found new content (more rows; a version of the
            // registry or the exchange first observed earlier by g2), each kept in the history.
            assert!(b.1 > a.1, "a new version: {a:?} {b:?}");
            assert_eq!(
                b.2,
                b.1 as usize - 1,
                "every earlier version in the history: {b:?}"
            );
        } else {
            assert_eq!(a.1, b.1, "unchanged content keeps its version: {a:?} {b:?}");
        }
    }
    assert!(rewritten >= 1, "{first:?}\n{second:?}");
    let m = metrics_of(&addr).await;
    assert_eq!(
        metric_sum(&m, "archive_late_versions_total"),
        second.iter().map(|v| f64::from(v.1 - 1)).sum::<f64>(),
        "one count per version after the first"
    );
    // Stopped with everything the gatherers hold merged and archived (the exchange's halts go
    // on: a state polled just before the stop would otherwise be judged missing).
    stop_archived(&w, &pool, &cfg, &work, svc).await;
    let out = dedup(&cfg, &["archive", "verify", "--from", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_exact(&w, &pool).await;
    let _ = std::fs::remove_dir_all(&work);
}

/// One machine without S3: the archive in a local directory (`archive.directory`), same
/// layout. Read in place by DuckDB and pyarrow, verified, and restored into an emptied
/// production exactly as the simulator's ground truth says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_archive_is_read_in_place_verified_and_restored_exactly() {
    let w = World::start(474, 16, 2).await;
    let work = dir("local");
    let root = work.join("archive");
    let file = archive_dir_file(&w, &root, &work.join("spool"));
    // Five messages of a type no one models, on every connection of every gatherer.
    kalshi_testkit::sim::SimControl::new(w.sim.control_url())
        .fault(serde_json::json!({"fault": "malformed", "kind": "unknown_type", "count": 5}))
        .await
        .unwrap();
    let (pool, cfg, _) = archive_live_traffic(&w, &file, &work).await;
    let before = assert_exact(&w, &pool).await;
    assert!(before.trades > 100 && before.deltas > 500, "{before:?}");

    // The layout a reader expects, and nothing half written.
    let files: Vec<String> = walk(&root);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{PREFIX}stream=trades/date="))
                && f.ends_with(".parquet")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{PREFIX}manifests/date=")))
    );
    assert!(!files.iter().any(|f| f.contains(".tmp-")), "{files:?}");

    let out = dedup(&cfg, &["archive", "verify", "--from", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("archive verified"), "{text}");
    let text = succeeds(&mut dedup(&cfg, &["archive", "status"]));
    assert!(
        text.contains(&format!("archive file://{}/{PREFIX}", root.display()))
            && text.contains(" 0 late"),
        "{text}"
    );

    // The same, for scripts: every document parsed, its figures checked.
    let st = json_of(&mut dedup(&cfg, &["archive", "status", "--json"]));
    let periods = st["periods"].as_array().unwrap();
    assert!(!periods.is_empty(), "{st}");
    assert_eq!(st["archived"].as_u64(), Some(periods.len() as u64), "{st}");
    assert_eq!(
        (st["late"].as_u64(), st["unverified"].as_u64()),
        (Some(0), Some(0)),
        "{st}"
    );
    assert!(
        periods
            .iter()
            .all(|p| p["state"] == "verified" && p["version"].as_i64() >= Some(1)),
        "{st}"
    );
    assert!(
        st["location"]
            .as_str()
            .unwrap()
            .contains(&root.display().to_string()),
        "{st}"
    );
    let v = json_of(&mut dedup(
        &cfg,
        &["archive", "verify", "--from", "0", "--json"],
    ));
    assert_eq!(v["ok"], true, "{v}");
    let checked = v["checked"].as_array().unwrap();
    assert!(
        !checked.is_empty()
            && checked
                .iter()
                .all(|c| c["verdict"] == "ok" && c["archive_rows"] == c["production_rows"]),
        "{v}"
    );
    let archived_rows: u64 = periods.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    let checked_rows: u64 = checked
        .iter()
        .map(|c| c["archive_rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        archived_rows, checked_rows,
        "status and verify count the same rows"
    );
    let g = json_of(&mut dedup(&cfg, &["gaps", "--from", "0", "--json"]));
    let gap_rows = gap_rows(&pool).await;
    let ids: Vec<String> = w.ids().iter().map(|s| (*s).to_owned()).collect();
    let want: Vec<serde_json::Value> = kalshi_shared::identity::coverage::uncovered(
        &gap_rows,
        &ids,
        0,
        g["to_ms"].as_i64().unwrap(),
    )
    .iter()
    .map(|u| serde_json::json!({"stream": u.stream, "market": u.market, "from_ms": u.from_ms, "to_ms": u.to_ms, "reasons": u.reasons}))
    .collect();
    assert_eq!(g["windows"].as_array().unwrap(), &want, "{g}");
    assert_eq!(g["gatherers"], serde_json::json!(ids));
    let s = json_of(&mut dedup(&cfg, &["status", "--json"]));
    assert_eq!(s["ok"], true, "{s}");
    let gs = s["gatherers"].as_array().unwrap();
    assert_eq!(gs.len(), w.gatherers.len(), "{s}");
    for g in gs {
        assert_eq!(g["reachable"], true, "{g}");
        let streams = g["streams"].as_array().unwrap();
        assert_eq!(
            streams.len(),
            deduplicator::records::Stream::ALL.len(),
            "{g}"
        );
        assert!(
            streams
                .iter()
                .all(|x| x["health"] == "ok" && x["head"].as_i64() >= x["cursor"].as_i64()),
            "{g}"
        );
    }

    // Read in place, by DuckDB and by pyarrow: exactly production's rows.
    let prod_rows = production_rows(&pool).await;
    let read = assert_readers_read(
        &prod_rows,
        &["--dir".as_ref(), root.as_os_str(), PREFIX.as_ref()],
    );
    assert_kept_as_sent(&w, &pool, &read).await;
    // The unknown messages: once each in production, as sent, and in the archive.
    let unknown: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, channel, body::text FROM unknown_messages WHERE type = 'mystery_update' ORDER BY body::text",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let want: Vec<(String, String, String)> = (0..5)
        .map(|i| {
            (
                "mystery_update".to_owned(),
                String::new(),
                format!(r#"{{"n":{i},"nested":{{"a":[1,2,3]}}}}"#),
            )
        })
        .collect();
    assert_eq!(unknown, want, "every gatherer's copies are one row each");
    for reader in ["duckdb", "pyarrow"] {
        let mystery = read["unknown_messages"][reader]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r.as_str()
                    .is_some_and(|r| r.starts_with("[\"mystery_update\""))
            })
            .count();
        assert_eq!(mystery, 5, "{reader}");
    }

    // Wipe production's archived streams and restore them from the directory.
    wipe_archived(&pool).await;
    let total: u64 = prod_rows.values().map(|v| v.len() as u64).sum();
    assert_eq!(restore(&cfg), (total, total));
    assert_exact(&w, &pool).await;
    assert_eq!(
        production_rows(&pool).await,
        prod_rows,
        "restored row for row"
    );
    assert_eq!(restore(&cfg), (total, 0), "twice changes nothing");
    let _ = std::fs::remove_dir_all(&work);
}

/// Tickers and lifecycle messages, which carry a field no one models, come back from production
/// and from the archive (as pyarrow and DuckDB read it) byte for byte as the simulator sent
/// them; every trade and ticker has its receipt time; every ticker's typed columns are its
/// sent values.
async fn assert_kept_as_sent(w: &World, pool: &sqlx::PgPool, read: &serde_json::Value) {
    use deduplicator::archive::format::columns;
    use deduplicator::records::Stream;
    use sqlx::Row as _;
    let truth = kalshi_testkit::sim::SimControl::new(w.sim.control_url())
        .truth_records("ticker,market_lifecycle_v2,event_lifecycle")
        .await
        .unwrap();
    let sent: std::collections::HashMap<String, serde_json::Value> = truth
        .iter()
        .map(|r| (r["msg_text"].as_str().unwrap().to_owned(), r["msg"].clone()))
        .collect();
    assert!(
        sent.keys().all(
            |t| t.starts_with(r#"{"x_unmodelled": {"z": 1, "a": [1, "two", 3.50, "\u00e9"]},"#)
        ),
        "the simulator sends a field no one models"
    );
    let body_at = |s: Stream| columns(s).iter().position(|c| c.name == "body").unwrap();
    for (stream, table) in [
        (Stream::Tickers, "tickers"),
        (Stream::Lifecycle, "lifecycle"),
    ] {
        let bodies: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT body::text FROM {table}"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        // Lifecycle steps come every 2,000 messages: a few of them, and many tickers.
        let least = if stream == Stream::Tickers { 100 } else { 1 };
        assert!(bodies.len() >= least, "{table}: {}", bodies.len());
        for b in &bodies {
            assert!(
                sent.contains_key(b),
                "{table}: production holds a body not as sent: {b}"
            );
        }
        for reader in ["duckdb", "pyarrow"] {
            let rows = read[table][reader].as_array().unwrap();
            assert_eq!(rows.len(), bodies.len(), "{table} {reader}");
            for row in rows {
                let row: Vec<serde_json::Value> =
                    serde_json::from_str(row.as_str().unwrap()).unwrap();
                let b = row[body_at(stream)].as_str().unwrap();
                assert!(sent.contains_key(b), "{table} {reader}: not as sent: {b}");
            }
        }
    }
    let none: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM trades WHERE received_ms IS NULL) + (SELECT count(*) FROM tickers WHERE received_ms IS NULL)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(none, 0, "every trade and ticker keeps its receipt time");
    let micros = |m: &serde_json::Value, k: &str| {
        kalshi_shared::Price::parse(m[k].as_str().unwrap())
            .unwrap()
            .raw()
    };
    let centi = |m: &serde_json::Value, k: &str| {
        kalshi_shared::Quantity::parse(m[k].as_str().unwrap())
            .unwrap()
            .raw()
    };
    for r in sqlx::query(
        "SELECT body::text, price, yes_bid, yes_ask, yes_bid_size, yes_ask_size, volume, open_interest FROM tickers",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        let m = &sent[&r.get::<String, _>(0)];
        let typed: Vec<Option<i64>> = (1..8).map(|i| r.get(i)).collect();
        let want = vec![
            Some(micros(m, "price_dollars")),
            Some(micros(m, "yes_bid_dollars")),
            Some(micros(m, "yes_ask_dollars")),
            Some(centi(m, "yes_bid_size_fp")),
            Some(centi(m, "yes_ask_size_fp")),
            Some(centi(m, "volume_fp")),
            Some(centi(m, "open_interest_fp")),
        ];
        assert_eq!(typed, want, "typed columns of {m}");
    }
}

/// Every file under `root`, as a key (relative, '/'-separated), sorted.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace(std::path::MAIN_SEPARATOR, "/"),
                );
            }
        }
    }
    out.sort();
    out
}

/// The book at any time. Production's `book_at` and docs/archive.md's DuckDB macros over the
/// archive, asked at many random times of every market, give the exchange's book at that
/// time: across resubscriptions (an error 25 on every connection) and an outage of the
/// exchange (windows no gatherer captured: there the book is unknown, never guessed, until the
/// next snapshot). Periodic snapshots (every 3 s here) keep each rebuild short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_at_any_time_from_production_and_the_archive_is_the_exchanges() {
    use kalshi_shared::identity::coverage::uncovered;
    // Periodic snapshots every 3 s (the other worlds have none: a world whose books are still
    // due to be stored again after the traffic is not a settled one).
    let mut w = World::start_tuned(475, 12, 2, None, |f| {
        f.ws.snapshot_every = Duration::from_secs(3)
    })
    .await;
    let work = dir("books");
    let root = work.join("archive");
    let file = archive_dir_file(&w, &root, &work.join("spool"));
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let (svc, _) = spawn_service(&cfg, &work, "dedup");
    let control = w.control();
    w.rate(300).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    control
        .fault(serde_json::json!({"fault": "ws_error", "code": 25}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    control
        .fault(serde_json::json!({"fault": "outage", "duration_ms": 2_000}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    w.rate(0).await;
    // The exchange's outage: windows other than late subscriptions, declared by every gatherer.
    w.disturbed.insert("exchange".into());
    w.settle(Duration::from_millis(1000)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    stop_archived(&w, &pool, &cfg, &work, svc).await;
    assert_exact(&w, &pool).await;

    // Periodic snapshots: beyond the three a connection's book gets anyway (subscription,
    // resubscription after the error, reconnection after the outage).
    // (The gatherers run in this process: their metrics render together.)
    let periodic = {
        let addr = w.gatherers[0].g.as_ref().unwrap().metrics_addr;
        let m = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_line(&m, "conn_manager_periodic_snapshots_total")
    };
    let per_book: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT market_ticker, gatherer_id, count(*) FROM orderbook_snapshots
          WHERE source = 'ws' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let initial: Vec<&(String, String, i64)> = per_book
        .iter()
        .filter(|(m, _, _)| w.initial.contains(m))
        .collect();
    // (A market the exchange closed early in the run has fewer.)
    let periodically = initial.iter().filter(|(_, _, n)| *n >= 5).count();
    assert!(
        !initial.is_empty() && periodically * 5 >= initial.len() * 4,
        "books stored periodically too ({periodic} periodic): {per_book:?}"
    );

    // The windows no gatherer captured, by the coverage rule (from the declared gaps).
    let gaps = gap_rows(&pool).await;
    let ids: Vec<String> = w.ids().iter().map(|s| (*s).to_owned()).collect();
    let holes: Vec<_> = uncovered(&gaps, &ids, 0, i64::MAX)
        .into_iter()
        .filter(|u| u.stream == "orderbook_deltas")
        .collect();
    assert!(
        holes
            .iter()
            .any(|u| u.market.is_empty() || w.initial.contains(&u.market)),
        "the outage left a window no gatherer captured: {holes:?}"
    );
    // (`after`: the splice point of the snapshot a rebuild starts from; a new market's window
    // before its subscription that holds it is over.)
    let hole_after = |m: &str, after: i64, from: i64, to: i64| {
        holes.iter().any(|u| {
            (u.market.is_empty() || u.market == m)
                && u.from_ms <= to
                && u.to_ms >= from
                && !(u.reasons == ["late_subscription"] && after != i64::MIN)
        })
    };
    let hole_of = |m: &str, from: i64, to: i64| hole_after(m, i64::MIN, from, to);

    // Random times of every market over its traffic, and times inside every window.
    let truth = w.control().truth().await.unwrap();
    let mut span: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for d in &truth.deltas {
        let e = span.entry(d.market.clone()).or_insert((d.ts_ms, d.ts_ms));
        e.0 = e.0.min(d.ts_ms);
        e.1 = e.1.max(d.ts_ms);
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: i64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as i64
    };
    let mut queries: Vec<(String, i64)> = Vec::new();
    for (m, (a, b)) in &span {
        for _ in 0..14 {
            queries.push((m.clone(), a - 500 + next(b - a + 1000)));
        }
        for u in holes
            .iter()
            .filter(|u| u.market.is_empty() || &u.market == m)
        {
            queries.push((m.clone(), u.from_ms + next(u.to_ms - u.from_ms + 1)));
        }
    }

    // Production.
    let mut answers = Vec::new();
    let (mut known, mut unknown, mut levels, mut furthest) = (0, 0, 0usize, 0i64);
    // Unknown because no snapshot precedes the time (a market created while running, asked
    // about before its subscription).
    let mut before_first = 0;
    for (m, t) in &queries {
        let at = "'epoch'::timestamptz + $2 * interval '1 millisecond'";
        let why: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT book_unknown($1, {at})"
        )))
        .bind(m)
        .bind(t)
        .fetch_one(&pool)
        .await
        .unwrap();
        // The snapshot a rebuild starts from: its time and splice point.
        let snap: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint, last_delta_ts_ms FROM orderbook_snapshots
              WHERE market_ticker = $1 AND source = 'ws' AND ts <= {at}
                AND last_delta_ts_ms IS NOT NULL
              ORDER BY ts DESC, last_delta_ts_ms DESC LIMIT 1"
        )))
        .bind(m)
        .bind(t)
        .fetch_optional(&pool)
        .await
        .unwrap();
        let inside = hole_of(m, *t, *t);
        match why {
            Some(why) => {
                // Never without a reason the coverage rule gives.
                let justified = match snap {
                    None => true,
                    Some((_, splice)) => *t > splice && hole_after(m, splice, splice + 1, *t),
                };
                assert!(
                    justified,
                    "{m} at {t}: unknown ({why}) with no window to say so"
                );
                if snap.is_none() {
                    before_first += 1;
                }
                unknown += 1;
                answers.push((m.clone(), *t, None));
            }
            None => {
                let inside = inside && snap.is_none_or(|(_, splice)| hole_after(m, splice, *t, *t));
                assert!(
                    !inside,
                    "{m} at {t}: inside a window no one captured, yet known"
                );
                let rows: Vec<(i16, i64, i64, String, String)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT side, price, quantity, price_dollars::text, contracts::text
                           FROM book_at($1, {at})"
                    )))
                    .bind(m)
                    .bind(t)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                let side = |s: i16| {
                    let mut v: Vec<(i64, i64)> = rows
                        .iter()
                        .filter(|r| r.0 == s)
                        .map(|r| (r.1, r.2))
                        .collect();
                    v.sort_unstable();
                    v
                };
                let got = (side(1), side(2));
                let want = kalshi_testkit::oracle::exchange_book(&truth, m, *t).unwrap();
                assert_eq!(got, want, "book_at({m}, {t}) against the exchange's book");
                for r in &rows {
                    assert_eq!(
                        r.3,
                        format!("{}.{:06}", r.1 / 1_000_000, r.1 % 1_000_000),
                        "price_dollars"
                    );
                    assert_eq!(r.4, format!("{}.{:02}", r.2 / 100, r.2 % 100), "contracts");
                }
                if let Some((ts, _)) = snap {
                    furthest = furthest.max(t - ts);
                }
                levels += rows.len();
                known += 1;
                answers.push((m.clone(), *t, Some(got)));
            }
        }
    }
    // An unknown book is an error that says why.
    let (m, t) = queries
        .iter()
        .zip(&answers)
        .find(|(_, a)| a.2.is_none())
        .map(|(q, _)| q.clone())
        .unwrap();
    let e = sqlx::query(
        "SELECT * FROM book_at($1, 'epoch'::timestamptz + $2 * interval '1 millisecond')",
    )
    .bind(&m)
    .bind(t)
    .fetch_all(&pool)
    .await
    .unwrap_err();
    let db = e.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("KD001"), "{db}");
    assert!(db.message().contains("is unknown"), "{db}");
    eprintln!(
        "book_at: {known} known (every one the exchange's, {levels} levels; the furthest \
         snapshot {furthest} ms back), {unknown} unknown ({before_first} before any snapshot), \
         of {} queries over {} markets; {periodic} periodic snapshots",
        queries.len(),
        span.len()
    );
    assert!(unknown >= 1 && known >= 100, "{known} {unknown}");

    // The archive, through the macros users copy from docs/archive.md: the same answers.
    let books = archive_books(&root.join(PREFIX), &work, &queries);
    for ((unknown, book), (m, t, want)) in books.iter().zip(&answers) {
        match want {
            None => assert!(
                unknown.is_some(),
                "{m} at {t}: unknown in production, known in the archive: {book:?}"
            ),
            Some(want) => {
                assert!(unknown.is_none(), "{m} at {t}: {unknown:?}");
                assert_eq!(book, want, "{m} at {t}: the archive's book");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}
