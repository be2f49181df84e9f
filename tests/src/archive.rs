//! Helpers of the archive suites (`tests/archive*.rs`): the deduplicator binary with an archive
//! on moto, S3 listings through boto3 (the readers' own client), production's rows in the
//! readers' canonical form, and waiting for periods to be archived.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deduplicator::archive::format::{self, ARCHIVED};
use kalshi_testkit::s3::{ENV, Moto, oracle_python};
use sqlx::PgPool;

use crate::world::*;

pub const BUCKET: &str = "kalshi-archive";
pub const PREFIX: &str = "v1/";

pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kalshi-archive-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn archive_file(w: &World, moto: &Moto, spool: &Path) -> deduplicator::config::FileConfig {
    let mut f = archive_settings(w, spool);
    f.archive.bucket = BUCKET.into();
    f.archive.endpoint_url = moto.endpoint();
    f
}

/// The archive in a local directory (`archive.directory`) instead of S3.
pub fn archive_dir_file(w: &World, root: &Path, spool: &Path) -> deduplicator::config::FileConfig {
    let mut f = archive_settings(w, spool);
    f.archive.directory = root.display().to_string();
    f
}

/// The test archive's settings, wherever it is kept.
fn archive_settings(w: &World, spool: &Path) -> deduplicator::config::FileConfig {
    let mut f = w.dedup_file(&w.prod.url());
    let a = &mut f.archive;
    a.enabled = true;
    a.prefix = PREFIX.into();
    a.period = Duration::from_secs(2);
    // A snapshot is stored up to the gatherers' ws.snapshot_hold (1 s here) plus a tick after
    // the time it is the book of (`ts`): periods are archived once those have landed.
    a.settle = Duration::from_secs(3);
    a.check_interval = Duration::from_millis(250);
    a.spool_dir = spool.display().to_string();
    // Several row groups per file, as an hour in production has.
    a.row_group_rows = 400;
    a.retry_initial = Duration::from_millis(50);
    a.retry_max = Duration::from_millis(500);
    f
}

pub fn dedup(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(dedup_bin());
    c.arg("--config").arg(cfg).args(args).envs(ENV);
    c
}

/// The deduplicator service as its own process (credentials come from its environment).
/// Logs to `<dir>/<name>.log`; its address file (for /metrics) is `<dir>/<name>.addr.json`.
pub fn spawn_service(cfg: &Path, dir: &Path, name: &str) -> (Child, PathBuf) {
    let addr = dir.join(format!("{name}.addr.json"));
    let child = dedup(cfg, &["--addr-file", addr.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap();
    (child, addr)
}

pub fn stop(mut c: Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&c),
        rustix::process::Signal::TERM,
    );
    let st = c.wait().unwrap();
    assert!(st.success(), "the deduplicator stops cleanly: {st}");
}

/// The newest time of any archived stream's row in production.
pub async fn newest(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT max(t) FROM (
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint AS t FROM trades UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM orderbook_deltas UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM orderbook_snapshots UNION ALL
           SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM tickers UNION ALL
           SELECT max(received_ms) FROM lifecycle UNION ALL
           SELECT max(received_ms) FROM unknown_messages UNION ALL
           SELECT max(observed_ms) FROM registry_versions UNION ALL
           SELECT max(received_ms) FROM exchange) x",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until every period up to the newest row is archived, verified and not late.
pub async fn wait_archived(pool: &PgPool, within: Duration) -> i64 {
    wait_archived_by(pool, 2000, within).await
}

pub async fn wait_archived_by(pool: &PgPool, period_ms: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    let last = newest(pool).await.div_euclid(period_ms) * period_ms;
    loop {
        let (archived, unverified, late) = archive_state(pool, last).await;
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

/// Whether the period starting at `last` is archived (1 or 0), and how many periods are
/// unverified or late (rows or gaps touched after their manifest was written).
async fn archive_state(pool: &PgPool, last: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE period_start_ms = $1),
                count(*) FILTER (WHERE verified_at IS NULL),
                count(*) FILTER (WHERE coalesce((SELECT sum(touches) FROM archive_touch t
                                  WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches)
         FROM archive_periods p",
    )
    .bind(last)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Empties every archived stream of production: the tables, and the registry's and the
/// exchange's histories.
pub async fn wipe_archived(pool: &PgPool) {
    for s in ARCHIVED {
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {}", s.table())))
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query("TRUNCATE registry_versions")
        .execute(pool)
        .await
        .unwrap();
}

/// Every archived row production holds, per stream, as JSON lists (the readers' form).
pub async fn production_rows(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
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

pub fn canonical(rows: &serde_json::Value) -> Vec<String> {
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
pub fn objects(moto: &Moto) -> BTreeMap<String, String> {
    let out = boto3(
        moto,
        r#"
out = {}
for o in s3.list_objects_v2(Bucket=bucket).get('Contents', []):
    h = s3.head_object(Bucket=bucket, Key=o['Key'])
    out[o['Key']] = '%d %s %s' % (o['Size'], h['Metadata'].get('sha256'), h['LastModified'].isoformat())
print(json.dumps(out))
"#,
        &[],
    );
    serde_json::from_value(out).unwrap()
}

/// Runs a command that must succeed; its stdout (stderr in the failure message).
pub fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `deduplicator export ... --json` for `market`'s trades of `[from, to)`, as CSV and as
/// Parquet, into `dir`: the two summaries and the files' paths.
pub fn export_trades(
    cfg: &Path,
    dir: &Path,
    tag: &str,
    filter: (&str, &str),
    from: i64,
    to: i64,
) -> Vec<(serde_json::Value, PathBuf)> {
    ["csv", "parquet"]
        .iter()
        .map(|fmt| {
            let out = dir.join(format!("export-{tag}.{fmt}"));
            let text = succeeds(&mut dedup(
                cfg,
                &[
                    "export",
                    "--stream",
                    "trades",
                    filter.0,
                    filter.1,
                    "--from",
                    &from.to_string(),
                    "--to",
                    &to.to_string(),
                    "--format",
                    fmt,
                    "--out",
                    out.to_str().unwrap(),
                    "--json",
                ],
            ));
            (serde_json::from_str(text.trim()).unwrap(), out)
        })
        .collect()
}

/// Production's trades of `market` in `[from, to)` as the direct query gives them: (trade_id,
/// ts ms, yes_price, no_price, count), in time order.
pub async fn trades_of(
    pool: &PgPool,
    market: &str,
    from: i64,
    to: i64,
) -> Vec<(String, i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT trade_id, (extract(epoch FROM ts) * 1000)::bigint, yes_price, no_price, count
           FROM trades WHERE market_ticker = $1
            AND ts >= 'epoch'::timestamptz + $2 * interval '1 millisecond'
            AND ts < 'epoch'::timestamptz + $3 * interval '1 millisecond'
          ORDER BY ts, trade_id",
    )
    .bind(market)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An export's files against the direct query's trades: the CSV in dollars and contracts, the
/// Parquet's typed rows, row for row.
pub fn assert_export_is(
    files: &[(serde_json::Value, PathBuf)],
    want: &[(String, i64, i64, i64, i64)],
) {
    use deduplicator::archive::format;
    let (csv, parquet) = (&files[0], &files[1]);
    for (summary, _) in files {
        assert_eq!(
            summary["rows"].as_u64(),
            Some(want.len() as u64),
            "{summary}"
        );
    }
    let text = std::fs::read_to_string(&csv.1).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let got: Vec<(String, i64, String, String, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[at("trade_id")].to_owned(),
                kalshi_shared::time::parse_rfc3339_ms(f[at("ts")]).unwrap(),
                f[at("yes_price")].to_owned(),
                f[at("no_price")].to_owned(),
                f[at("count")].to_owned(),
            )
        })
        .collect();
    let dollars = |x: i64| format!("{}.{:06}", x / 1_000_000, x % 1_000_000);
    let contracts = |x: i64| format!("{}.{:02}", x / 100, x % 100);
    let expected: Vec<(String, i64, String, String, String)> = want
        .iter()
        .map(|(id, ts, y, n, c)| (id.clone(), *ts, dollars(*y), dollars(*n), contracts(*c)))
        .collect();
    assert_eq!(got, expected, "the CSV, in dollars and contracts");
    let mut rows = Vec::new();
    format::read_groups(
        deduplicator::records::Stream::Trades,
        format::SCHEMA_VERSION,
        &parquet.1,
        |g| {
            rows.extend(g);
            Ok(())
        },
    )
    .unwrap();
    let cols = format::columns(deduplicator::records::Stream::Trades);
    let idx = |name: &str| cols.iter().position(|c| c.name == name).unwrap();
    let got: Vec<(String, i64, i64, i64, i64)> = rows
        .iter()
        .map(|r| {
            let int = |i: usize| match &r[i] {
                format::Value::I64(x) => *x,
                v => panic!("{v:?}"),
            };
            let format::Value::Text(id) = &r[idx("trade_id")] else {
                panic!("{r:?}")
            };
            (
                id.clone(),
                int(idx("ts")),
                int(idx("yes_price")),
                int(idx("no_price")),
                int(idx("count")),
            )
        })
        .collect();
    assert_eq!(got, want, "the Parquet, typed");
}

/// Runs `body` with `s3` (boto3, the readers' own S3 client, on moto), `bucket` and `args`
/// (`sys.argv[3:]`) defined; `body` prints one JSON document, returned.
pub fn boto3(moto: &Moto, body: &str, args: &[&str]) -> serde_json::Value {
    let script = format!(
        "import boto3, sys, json\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', \
         aws_secret_access_key='test', region_name='us-east-1')\n\
         bucket = sys.argv[2]\nargs = sys.argv[3:]\n{body}\n"
    );
    let text = succeeds(
        Command::new(oracle_python())
            .args(["-c", &script, &moto.endpoint(), BUCKET])
            .args(args),
    );
    serde_json::from_str(&text).unwrap()
}

pub fn restore(cfg: &Path) -> (u64, u64) {
    let doc = json_of(&mut dedup(cfg, &["restore", "--from", "0", "--json"]));
    let per: u64 = doc["streams"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["read"].as_u64().unwrap())
        .sum();
    assert_eq!(doc["read"].as_u64(), Some(per), "{doc}");
    (
        doc["read"].as_u64().unwrap(),
        doc["inserted"].as_u64().unwrap(),
    )
}

/// The books docs/archive.md's DuckDB macros rebuild from the archive under `root` (its
/// prefix directory), for `(market, at_ms)` queries, with their levels as
/// `(price micros, quantity centi)` pairs: `(unknown reason, (yes, no))`, in query order.
pub fn archive_books(
    root: &Path,
    work: &Path,
    queries: &[(String, i64)],
) -> Vec<(Option<String>, kalshi_testkit::sim::Levels)> {
    let qfile = work.join("book-queries.json");
    let q: Vec<serde_json::Value> = queries
        .iter()
        .map(|(m, t)| serde_json::json!({"market": m, "at_ms": t}))
        .collect();
    std::fs::write(&qfile, serde_json::to_string(&q).unwrap()).unwrap();
    let text = succeeds(
        Command::new(oracle_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/archive_books.py"))
            .arg(root)
            .arg(&qfile),
    );
    let books: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(books.len(), queries.len());
    let pairs = |v: &serde_json::Value| -> Vec<(i64, i64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| (l[0].as_i64().unwrap(), l[1].as_i64().unwrap()))
            .collect()
    };
    books
        .iter()
        .map(|b| {
            (
                b["unknown"].as_str().map(str::to_owned),
                (pairs(&b["yes"]), pairs(&b["no"])),
            )
        })
        .collect()
}

/// Every gap production holds, as the coverage rule reads them.
pub async fn gap_rows(pool: &PgPool) -> Vec<kalshi_shared::identity::coverage::GapRow> {
    sqlx::query_as::<_, (String, String, String, i64, i64, String)>(
        "SELECT gatherer_id, stream, market_ticker, from_ms, to_ms, reason FROM gaps",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(gatherer_id, stream, market, from_ms, to_ms, reason)| {
        kalshi_shared::identity::coverage::GapRow {
            gatherer_id,
            stream,
            market,
            from_ms,
            to_ms,
            reason,
        }
    })
    .collect()
}

/// A command's `--json` document (it must succeed and print exactly one).
pub fn json_of(cmd: &mut Command) -> serde_json::Value {
    let text = succeeds(cmd);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{cmd:?}: not one JSON document ({e}): {text}"))
}

/// Multipart uploads in progress, via boto3.
pub fn multipart_uploads(moto: &Moto) -> Vec<String> {
    let out = boto3(
        moto,
        "print(json.dumps([u['Key'] for u in s3.list_multipart_uploads(Bucket=bucket).get('Uploads', [])]))",
        &[],
    );
    serde_json::from_value(out).unwrap()
}

pub async fn metrics_of(addr_file: &Path) -> String {
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

/// (period start, version, history length, declared gaps, rows) of every archived period.
/// Per archived period: start, version, history length, declared gaps, and its content (each
/// stream's rows and content checksum, the uncovered windows).
pub async fn versions(pool: &PgPool) -> Vec<(i64, i32, usize, usize, String)> {
    let rows: Vec<(i64, i32, serde_json::Value)> =
        sqlx::query_as("SELECT period_start_ms, version, manifest FROM archive_periods ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(p, v, m)| {
            let mut content: String = m["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| format!("{} {} {}; ", s["stream"], s["rows"], s["content_sha256"]))
                .collect();
            content.push_str(&m["uncovered"].to_string());
            (
                p,
                v,
                m["history"].as_array().unwrap().len(),
                m["declared_gaps"].as_u64().unwrap() as usize,
                content,
            )
        })
        .collect()
}

/// A deduplicator configuration archiving by day to `moto`, written to `<work>/dedup.toml`:
/// the file and its path.
pub fn daily_archive(
    w: &World,
    moto: &Moto,
    work: &Path,
) -> (deduplicator::config::FileConfig, PathBuf) {
    let mut file = archive_file(w, moto, &work.join("spool"));
    file.archive.period = Duration::from_secs(86_400);
    file.archive.max_periods_per_check = 400;
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    (file, cfg)
}

/// Waits until every day up to yesterday is archived and verified (today is not closed yet)
/// with no late data waiting.
pub async fn wait_days_archived(pool: &PgPool, now_ms: i64) {
    let yesterday = now_ms.div_euclid(86_400_000) * 86_400_000 - 86_400_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, open): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE period_start_ms = $1 AND verified_at IS NOT NULL),
                    count(*) FILTER (WHERE verified_at IS NULL
                        OR coalesce((SELECT sum(touches) FROM archive_touch t
                                     WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches)
             FROM archive_periods p",
        )
        .bind(yesterday)
        .fetch_one(pool)
        .await
        .unwrap();
        if n == 1 && open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "days not archived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whole days from `now` back to the `day`-th of the month `months` before `now`'s month: rows
/// copied that many days back land on that day of that month whatever today's date is, so a
/// test of month partitions does not depend on the calendar (a fixed 100 days back put them on
/// the 28th of a month on some days and on the 3rd on others).
pub fn days_back_to(now_ms: i64, months: u32, day: u8) -> i64 {
    let (mut y, mut m) = deduplicator::schema::month_of(now_ms);
    for _ in 0..months {
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    }
    let target = deduplicator::archive::retention::partitions_month_start((y, m))
        + i64::from(day - 1) * 86_400_000;
    (now_ms.div_euclid(86_400_000) * 86_400_000 - target) / 86_400_000
}

/// Copies today's rows of the partitioned streams `days` back (new keys), into that month's
/// partitions: in one transaction that counts itself in `archive_touch` for every archive
/// period (`period_ms`) it writes rows of, as the deduplicator's writers do. Without that, an
/// archiver look between the statements could archive a day with part of its rows and never
/// learn of the rest (nothing would mark it late).
pub async fn copy_back(pool: &PgPool, days: i64, period_ms: i64) {
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
    let mut tx = pool.begin().await.unwrap();
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
                 SELECT market_ticker, ts - {shift}, gatherer_id, source, conn_epoch, sid, seq, received_ms - {ms}, yes, no, last_delta_ts_ms - {ms}
                 FROM orderbook_snapshots WHERE ts > now() - interval '1 day'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for t in deduplicator::schema::PARTITIONED {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO archive_touch (period_start_ms, stream, touches)
             SELECT DISTINCT floor(extract(epoch FROM ts) * 1000 / {period_ms})::bigint * {period_ms}, '{t}', 1
             FROM {t} WHERE ts > now() - {shift} - interval '1 day' AND ts <= now() - {shift}
             ON CONFLICT (period_start_ms, stream) DO UPDATE SET touches = archive_touch.touches + 1"
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

pub async fn partition_names(pool: &PgPool) -> std::collections::BTreeSet<String> {
    partition_names_of(pool, "trades").await
}

pub async fn partition_names_of(pool: &PgPool, table: &str) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Rows of the four partitioned streams in `[from, to)`, in the readers' canonical form.
pub async fn rows_between(pool: &PgPool, from: i64, to: i64) -> Vec<String> {
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

/// Writes `file` as the deduplicator's configuration under `work`, starts it, sends traffic
/// (400 msg/s for 6 s), waits until production is synced, and stops it with production
/// exactly archived ([`stop_archived`]). Returns production's pool, the configuration's path
/// and the last archived period.
pub async fn archive_live_traffic(
    w: &World,
    file: &deduplicator::config::FileConfig,
    work: &Path,
) -> (PgPool, PathBuf, i64) {
    let cfg = work.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(file).unwrap()).unwrap();
    let (svc, _) = spawn_service(&cfg, work, "dedup");
    traffic(w, 400, 6.0).await;
    w.settle(Duration::from_millis(1000)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let last = stop_archived(w, &pool, &cfg, work, svc).await;
    (pool, cfg, last)
}

/// Waits until every period is archived and verified, and stops the deduplicator `svc` (its
/// configuration `cfg`) with production exactly archived: the gatherers run on (registry
/// polls, the exchange's halts), so a row can reach production after the archive looked
/// complete; it is checked again with the deduplicator stopped, when production no longer
/// changes, and the deduplicator runs again until nothing is left to archive. Returns the last
/// archived period.
pub async fn stop_archived(
    w: &World,
    pool: &PgPool,
    cfg: &Path,
    work: &Path,
    mut svc: Child,
) -> i64 {
    let mut again = 0;
    loop {
        w.wait_synced(pool, Duration::from_secs(60)).await;
        let last = wait_archived(pool, Duration::from_secs(60)).await;
        stop(svc);
        // Nothing a gatherer holds is missing (a snapshot stored after its hold can belong to
        // an archived period), and everything production holds is archived.
        let newest = newest(pool).await.div_euclid(2000) * 2000;
        if w.behind(pool).await.is_empty()
            && newest <= last
            && archive_state(pool, last).await == (1, 0, 0)
        {
            return last;
        }
        again += 1;
        assert!(
            again < 10,
            "production kept changing after its archive was complete"
        );
        eprintln!("rows reached production after the archive looked complete: archiving again");
        svc = spawn_service(cfg, work, &format!("dedup-again{again}")).0;
    }
}

/// Runs testdata/archive_read.py with `args` (the S3 or the directory form) and requires
/// DuckDB and pyarrow each to read exactly production's rows of every archived stream.
/// Returns what the script printed.
pub fn assert_readers_read(
    prod_rows: &BTreeMap<String, Vec<String>>,
    args: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let text = succeeds(
        Command::new(oracle_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/archive_read.py"))
            .args(args),
    );
    let read: serde_json::Value = serde_json::from_str(&text).unwrap();
    for s in ARCHIVED {
        let want = &prod_rows[s.table()];
        let got = &read[s.table()];
        // Messages of unknown types come only when a test makes the exchange send some.
        if s == deduplicator::records::Stream::UnknownMessages && want.is_empty() {
            assert!(got.is_null(), "{}: no rows, no files: {got}", s.table());
            continue;
        }
        assert!(!want.is_empty(), "{}: traffic made rows", s.table());
        assert_eq!(&canonical(&got["duckdb"]), want, "{}: DuckDB", s.table());
        assert_eq!(&canonical(&got["pyarrow"]), want, "{}: pyarrow", s.table());
    }
    // Prices and quantities are read as decimals: dollars and contracts, by both readers.
    for (stream, col, want) in [
        ("trades", "yes_price", "(18, 6)"),
        ("trades", "count", "(18, 2)"),
        ("orderbook_deltas", "price", "(18, 6)"),
        ("orderbook_deltas", "delta", "(18, 2)"),
        ("tickers", "yes_bid", "(18, 6)"),
        ("tickers", "volume", "(18, 2)"),
    ] {
        let types = &read[stream]["types"];
        let duck = types["duckdb"][col]
            .as_str()
            .unwrap_or_default()
            .replace(' ', "");
        let arrow = types["pyarrow"][col]
            .as_str()
            .unwrap_or_default()
            .replace(' ', "");
        let want = want.replace(' ', "");
        assert_eq!(duck, format!("DECIMAL{want}"), "{stream}.{col}: {types}");
        assert_eq!(
            arrow,
            format!("decimal128{want}"),
            "{stream}.{col}: {types}"
        );
    }
    let snapshot_types = read["orderbook_snapshots"]["types"]["pyarrow"]["yes"].to_string();
    assert!(
        snapshot_types.contains("price: decimal128(18, 6)")
            && snapshot_types.contains("quantity: decimal128(18, 2)"),
        "{snapshot_types}"
    );
    // A trade's YES and NO prices add up to $1 as DuckDB reads them, and the contracts are
    // production's centi-contracts over 100, exactly.
    let trades_n = prod_rows["trades"].len() as u64;
    assert_eq!(read["dollars"]["trades"].as_u64(), Some(trades_n));
    assert_eq!(
        read["dollars"]["yes_plus_no_is_one"].as_u64(),
        Some(trades_n),
        "{}",
        read["dollars"]
    );
    let count_at = deduplicator::archive::format::columns(deduplicator::records::Stream::Trades)
        .iter()
        .position(|c| c.name == "count")
        .unwrap();
    let centi: i64 = prod_rows["trades"]
        .iter()
        .map(|r| {
            let v: Vec<serde_json::Value> = serde_json::from_str(r).unwrap();
            v[count_at].as_i64().unwrap()
        })
        .sum();
    assert_eq!(
        read["dollars"]["contracts"].as_str(),
        Some(format!("{}.{:02}", centi / 100, centi % 100).as_str()),
        "{}",
        read["dollars"]
    );
    // docs/archive.md's as-of join finds, for every trade, the market as it was then.
    let trades = prod_rows["trades"].len() as u64;
    assert_eq!(
        read["asof"]["trades"].as_u64(),
        Some(trades),
        "as-of join: {}",
        read["asof"]
    );
    assert_eq!(
        read["asof"]["titled"].as_u64(),
        Some(trades),
        "as-of join: {}",
        read["asof"]
    );
    read
}

#[cfg(test)]
mod tests {
    use super::days_back_to;

    fn ms(y: i32, m: u8, d: u8, hour: u8) -> i64 {
        deduplicator::archive::retention::partitions_month_start((y, m))
            + i64::from(d - 1) * 86_400_000
            + i64::from(hour) * 3_600_000
    }

    #[test]
    fn days_back_land_on_the_same_day_of_the_month_whatever_today_is() {
        for (now, months, want) in [
            (ms(2026, 12, 6, 23), 4, ms(2026, 8, 3, 23)),
            (ms(2026, 12, 31, 0), 4, ms(2026, 8, 3, 0)),
            (ms(2026, 3, 31, 12), 1, ms(2026, 2, 3, 12)),
            (ms(2026, 1, 1, 5), 3, ms(2025, 10, 3, 5)),
        ] {
            assert_eq!(now - days_back_to(now, months, 3) * 86_400_000, want);
        }
    }
}
