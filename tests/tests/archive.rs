//! The S3 archive over the real S3 protocol (moto on HTTP), with the real `deduplicator`
//! binary: archive while traffic runs, read the files with DuckDB and pyarrow, re-archive after
//! a crash without a second copy, wipe production, restore, and judge production against the
//! simulator's ground truth through the one oracle, before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deduplicator::archive::format::{self, ARCHIVED};
use kalshi_e2e::world::*;
use kalshi_testkit::s3::{ENV, Moto, oracle_python};
use sqlx::PgPool;

const BUCKET: &str = "kalshi-archive";
const PREFIX: &str = "v1/";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kalshi-archive-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn archive_file(w: &World, moto: &Moto, spool: &Path) -> deduplicator::config::FileConfig {
    let mut f = w.dedup_file(&w.prod.url());
    let a = &mut f.archive;
    a.enabled = true;
    a.bucket = BUCKET.into();
    a.prefix = PREFIX.into();
    a.endpoint_url = moto.endpoint();
    a.period = Duration::from_secs(2);
    a.settle = Duration::from_secs(1);
    a.check_interval = Duration::from_millis(250);
    a.spool_dir = spool.display().to_string();
    // Several row groups per file, as an hour in production has.
    a.row_group_rows = 400;
    a.retry_initial = Duration::from_millis(50);
    a.retry_max = Duration::from_millis(500);
    f
}

fn dedup(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(dedup_bin());
    c.arg("--config").arg(cfg).args(args).envs(ENV);
    c
}

/// The deduplicator service as its own process (credentials come from its environment).
fn spawn_service(cfg: &Path, log: &Path) -> Child {
    dedup(cfg, &["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&c),
        rustix::process::Signal::TERM,
    );
    let st = c.wait().unwrap();
    assert!(st.success(), "the deduplicator stops cleanly: {st}");
}

/// The newest time of any archived stream's row in production.
async fn newest(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT max(t) FROM (
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint AS t FROM trades UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM orderbook_deltas UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM orderbook_snapshots UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM tickers UNION ALL
           SELECT max(received_ms) FROM lifecycle) x",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until every period up to the newest row is archived, verified and not late.
async fn wait_archived(pool: &PgPool, within: Duration) -> i64 {
    wait_archived_by(pool, 2000, within).await
}

async fn wait_archived_by(pool: &PgPool, period_ms: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    let last = newest(pool).await.div_euclid(period_ms) * period_ms;
    loop {
        let (archived, unverified, late): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE period_start_ms = $1),
                    count(*) FILTER (WHERE verified_at IS NULL),
                    count(*) FILTER (WHERE coalesce((SELECT sum(touches) FROM archive_touch t
                                      WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches)
             FROM archive_periods p",
        )
        .bind(last)
        .fetch_one(pool)
        .await
        .unwrap();
        if archived == 1 && unverified == 0 && late == 0 {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "archive not complete: last period archived {archived}, unverified {unverified}, late {late}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every archived row production holds, per stream, as JSON lists (the readers' form).
async fn production_rows(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for s in ARCHIVED {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format::select_sql(s)))
            .bind(0i64)
            // 2100-01-01
            .bind(4_102_444_800_000i64)
            .fetch_all(pool)
            .await
            .unwrap();
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| {
                let row = format::from_pg(s, r).unwrap();
                let j: Vec<serde_json::Value> = row
                    .into_iter()
                    .map(|v| match v {
                        format::Value::Text(t) => serde_json::json!(t),
                        format::Value::I64(x) => serde_json::json!(x),
                        format::Value::I16(x) => serde_json::json!(x),
                        format::Value::Bool(b) => serde_json::json!(b),
                        format::Value::Null => serde_json::Value::Null,
                        format::Value::Levels(l) => serde_json::json!(
                            l.iter().map(|(p, q)| vec![*p, *q]).collect::<Vec<_>>()
                        ),
                    })
                    .collect();
                serde_json::to_string(&j).unwrap()
            })
            .collect();
        v.sort();
        out.insert(s.table().to_owned(), v);
    }
    out
}

fn canonical(rows: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let parsed: serde_json::Value = serde_json::from_str(s.as_str().unwrap()).unwrap();
            serde_json::to_string(&parsed).unwrap()
        })
        .collect();
    v.sort();
    v
}

/// Every object under the prefix with its size and checksum metadata, via the readers' boto3.
fn objects(moto: &Moto) -> BTreeMap<String, String> {
    let script = r#"
import boto3, sys, json
s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test',
                  aws_secret_access_key='test', region_name='us-east-1')
out = {}
for o in s3.list_objects_v2(Bucket=sys.argv[2]).get('Contents', []):
    h = s3.head_object(Bucket=sys.argv[2], Key=o['Key'])
    out[o['Key']] = '%d %s %s' % (o['Size'], h['Metadata'].get('sha256'), h['LastModified'].isoformat())
print(json.dumps(out))
"#;
    let out = Command::new(oracle_python())
        .args(["-c", script, &moto.endpoint(), BUCKET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn restore(cfg: &Path) -> (u64, u64) {
    let out = dedup(cfg, &["restore", "--from", "0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().find(|l| l.starts_with("restored: ")).unwrap();
    let nums: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_is_read_by_duckdb_and_pyarrow_and_restores_exactly() {
    let moto = Moto::start(None).unwrap();
    let w = World::start(471, 16, 2).await;
    let work = dir("main");
    let file = archive_file(&w, &moto, &work.join("spool"));
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();

    let svc = spawn_service(&cfg, &work.join("dedup.log"));
    traffic(&w, 400, 6.0).await;
    w.settle(Duration::from_millis(1000)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let last = wait_archived(&pool, Duration::from_secs(60)).await;
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
    let out = Command::new(oracle_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/archive_read.py"))
        .args([&moto.endpoint(), BUCKET, PREFIX])
        .arg(work.join("read"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in ARCHIVED {
        let want = &prod_rows[s.table()];
        let got = &read[s.table()];
        assert!(!want.is_empty(), "{}: traffic made rows", s.table());
        assert_eq!(&canonical(&got["duckdb"]), want, "{}: DuckDB", s.table());
        assert_eq!(&canonical(&got["pyarrow"]), want, "{}: pyarrow", s.table());
        assert_eq!(got["compression"], "ZSTD", "{}", s.table());
        eprintln!(
            "{}: {} rows in {} files, {} row groups",
            s.table(),
            want.len(),
            got["files"],
            got["row_groups"]
        );
    }

    // A crash after the uploads, before the bookkeeping: the periods are redone, and the same
    // keys get the same bytes, so nothing is uploaded twice.
    stop(svc);
    let before_objects = objects(&moto);
    sqlx::query("DELETE FROM archive_periods")
        .execute(&pool)
        .await
        .unwrap();
    let svc = spawn_service(&cfg, &work.join("dedup2.log"));
    assert_eq!(wait_archived(&pool, Duration::from_secs(60)).await, last);
    stop(svc);
    let after_objects = objects(&moto);
    for (k, v) in &before_objects {
        let new = after_objects.get(k).unwrap_or_else(|| panic!("{k} lost"));
        let (old_sum, new_sum) = (
            v.rsplit_once(' ').unwrap().0,
            new.rsplit_once(' ').unwrap().0,
        );
        assert_eq!(old_sum, new_sum, "{k}: same size and checksum");
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
    for s in ARCHIVED {
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {}", s.table())))
            .execute(&pool)
            .await
            .unwrap();
    }
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
    let _ = std::fs::remove_dir_all(&work);
}

/// Multipart uploads in progress, via boto3.
fn multipart_uploads(moto: &Moto) -> Vec<String> {
    let script = r#"
import boto3, sys, json
s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test',
                  aws_secret_access_key='test', region_name='us-east-1')
print(json.dumps([u['Key'] for u in s3.list_multipart_uploads(Bucket=sys.argv[2]).get('Uploads', [])]))
"#;
    let out = Command::new(oracle_python())
        .args(["-c", script, &moto.endpoint(), BUCKET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn metrics_of(addr_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(addr_file)
            && let Ok(v) = serde_json::from_str(&t)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no {}", addr_file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let url = format!("http://{}/metrics", doc["metrics"].as_str().unwrap());
    reqwest::get(url).await.unwrap().text().await.unwrap()
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
    let mut svc = dedup(&cfg, &["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("dedup1.log")).unwrap())
        .spawn()
        .unwrap();
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
    let addr = work.join("dedup2.addr.json");
    let svc = dedup(&cfg, &["--addr-file", addr.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("dedup2.log")).unwrap())
        .spawn()
        .unwrap();
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

/// (period start, version, history length, declared gaps, rows) of every archived period.
async fn versions(pool: &PgPool) -> Vec<(i64, i32, usize, usize, u64)> {
    let rows: Vec<(i64, i32, serde_json::Value)> =
        sqlx::query_as("SELECT period_start_ms, version, manifest FROM archive_periods ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(p, v, m)| {
            let rows = m["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["rows"].as_u64().unwrap())
                .sum();
            (
                p,
                v,
                m["history"].as_array().unwrap().len(),
                m["declared_gaps"].as_u64().unwrap() as usize,
                rows,
            )
        })
        .collect()
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
    let addr = work.join("dedup.addr.json");
    let svc = dedup(&cfg, &["--addr-file", addr.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("dedup.log")).unwrap())
        .spawn()
        .unwrap();

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
        if b.4 > a.4 {
            rewritten += 1;
            // One version per look that found more rows, each kept in the history.
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
    stop(svc);
    let out = dedup(&cfg, &["archive", "verify", "--from", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_exact(&w, &pool).await;
    let _ = std::fs::remove_dir_all(&work);
}

/// Copies today's rows of the partitioned streams `days` back (new keys), into that month's
/// partitions.
async fn copy_back(pool: &PgPool, days: i64) {
    let now = kalshi_shared::time::now_ms();
    let month = deduplicator::schema::month_of(now - days * 86_400_000);
    for t in deduplicator::schema::PARTITIONED {
        sqlx::query(sqlx::AssertSqlSafe(
            deduplicator::schema::create_partition_sql(t, month),
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    let shift = format!("interval '{days} days'");
    let ms = days * 86_400_000;
    for sql in [
        format!("INSERT INTO trades (trade_id, ts, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id)
                 SELECT trade_id || '-{days}', ts - {shift}, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms - {ms}, source, gatherer_id
                 FROM trades WHERE ts > now() - interval '1 day'"),
        format!("INSERT INTO orderbook_deltas (market_ticker, ts, ts_ms, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms)
                 SELECT market_ticker, ts - {shift}, CASE WHEN ts_ms = 0 THEN 0 ELSE ts_ms - {ms} END, side, price, delta, occurrence, gatherer_key, gatherer_id, received_ms - {ms}
                 FROM orderbook_deltas WHERE ts > now() - interval '1 day'"),
        format!("INSERT INTO tickers (market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key, body, gatherer_id)
                 SELECT market_ticker, ts - {shift}, CASE WHEN ts_ms = 0 THEN 0 ELSE ts_ms - {ms} END, content_hash, occurrence, gatherer_key, body, gatherer_id
                 FROM tickers WHERE ts > now() - interval '1 day'"),
        format!("INSERT INTO orderbook_snapshots (market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms, yes, no, last_delta_ts_ms)
                 SELECT market_ticker, ts - {shift}, gatherer_id, source, conn_epoch, sid, seq, received_ms - {ms}, yes, no, last_delta_ts_ms
                 FROM orderbook_snapshots WHERE ts > now() - interval '1 day'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.unwrap();
    }
}

async fn partition_names(pool: &PgPool) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'trades'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Rows of the four partitioned streams in `[from, to)`, in the readers' canonical form.
async fn rows_between(pool: &PgPool, from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    for s in &ARCHIVED[..4] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format::select_sql(*s)))
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .unwrap();
        for r in &rows {
            out.push(format!(
                "{} {:?}",
                s.table(),
                format::from_pg(*s, r).unwrap()
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_partitions_the_verified_archive_holds() {
    let moto = Moto::start(None).unwrap();
    let w = World::start(477, 8, 1).await;
    let pool = pool(&w.prod.url()).await;
    let work = dir("retention");
    let mut file = archive_file(&w, &moto, &work.join("spool"));
    file.archive.period = Duration::from_secs(86_400);
    file.archive.max_periods_per_check = 400;
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();

    // Rows 100 and 70 days old, and today's.
    let svc = spawn_service(&cfg, &work.join("dedup1.log"));
    traffic(&w, 300, 3.0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    copy_back(&pool, 100).await;
    copy_back(&pool, 70).await;
    let now = kalshi_shared::time::now_ms();
    let (old, mid) = (
        deduplicator::schema::month_of(now - 100 * 86_400_000),
        deduplicator::schema::month_of(now - 70 * 86_400_000),
    );
    assert_ne!(old, mid);
    let name = |(y, m): (i32, u8)| format!("trades_p{y:04}{m:02}");
    // Every day up to yesterday archived (today is not closed yet).
    let yesterday = now.div_euclid(86_400_000) * 86_400_000 - 86_400_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM archive_periods WHERE period_start_ms = $1 AND verified_at IS NOT NULL",
        )
        .bind(yesterday)
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "days not archived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop(svc);
    let old_from = deduplicator::archive::retention::partitions_month_start(old);
    let old_to = deduplicator::archive::retention::partitions_month_start(
        deduplicator::schema::next_month(old),
    );
    let old_rows = rows_between(&pool, old_from, old_to).await;
    assert!(old_rows.len() > 100, "{}", old_rows.len());

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
    let out = Command::new(oracle_python())
        .args([
            "-c",
            "import boto3,sys\nboto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='test',aws_secret_access_key='test',region_name='us-east-1').delete_object(Bucket=sys.argv[2],Key=sys.argv[3])",
            &moto.endpoint(),
            BUCKET,
            &lost,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Retention of 35 days: the old month goes, the middle one stays, this month stays.
    let mut file = file.clone();
    file.archive.retention = Duration::from_secs(35 * 86_400);
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let addr = work.join("dedup2.addr.json");
    let svc = dedup(&cfg, &["--addr-file", addr.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("dedup2.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while partition_names(&pool).await.contains(&name(old)) {
        assert!(Instant::now() < deadline, "the old month was not dropped");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    // Every archived day of that month (from the oldest row on) is marked retired.
    let (retired, all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE retired_at IS NOT NULL), count(*) FROM archive_periods
         WHERE period_start_ms >= $1 AND period_start_ms < $2",
    )
    .bind(old_from)
    .bind(old_to)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(all >= 10 && retired == all, "{retired} of {all}");

    // What was dropped comes back from the archive, row for row.
    assert!(rows_between(&pool, old_from, old_to).await.is_empty());
    let out = dedup(
        &cfg,
        &[
            "restore",
            "--from",
            &old_from.to_string(),
            "--to",
            &old_to.to_string(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows_between(&pool, old_from, old_to).await, old_rows);
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
