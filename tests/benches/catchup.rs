//! Catch-up benchmark: three gatherers hold a backlog the deduplicator has never seen; how fast
//! does it merge them into production (unique rows written per second, records consumed per
//! second), against a baseline measured in the same run (raw binary COPY of one copy of the
//! same rows, every append-only stream, straight into production's tables: the ceiling), and
//! how much memory does it use meanwhile.
//!
//! Run: `cargo bench -p kalshi-e2e --bench catchup` (release build; a few minutes), or
//! `./dev bench` with the others. The backlog is `CATCHUP_RATE` msg/s (10,000) for
//! `CATCHUP_SECS` (55): about 550,000 records per gatherer. An hour of 2,000 msg/s is
//! `CATCHUP_RATE=20000 CATCHUP_SECS=360` (7.2 million per gatherer, about 15 minutes). Memory
//! is sampled through the catch-up and printed by quarter of its time: flat means bounded.
//! The deduplicator runs as its own process (the release binary) so its RSS is its own; the
//! gatherers, the simulator and both PostgreSQL clusters share the same two cores, which a
//! production deployment would not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    dead_code
)] // a benchmark binary

use deduplicator::config::Validate as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deduplicator::records::{Encoder, ProdTable as _, Source, Stream};
use kalshi_e2e::world::*;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_testkit::bench::{Row, mem_mib, report};

/// Raw binary COPY of one gatherer's records of every append-only stream (what the merge
/// leaves, one copy of each record) into a migrated production schema, 10,000 rows per
/// transaction, encoding included: the ceiling. The registry streams (a few hundred rows,
/// several versions of one ticker) are left out: their key refuses a plain COPY.
async fn copy_baseline(url: &str, streams: &[(Stream, Vec<pb::Record>)]) -> (usize, f64) {
    let file = {
        let mut f = deduplicator::config::FileConfig::default();
        f.sources.insecure = true;
        f.gatherers[0].endpoint = "http://127.0.0.1:50051".into();
        f.production.database_url = deduplicator::config::Secret(format!("{url}?sslmode=disable"));
        f.validate().unwrap()
    };
    let prod = deduplicator::db::Prod::new(file.production).unwrap();
    prod.migrate().await.unwrap();
    let pool = prod.pool();
    let src = Source {
        gatherer_id: "g1",
        instance_id: "i",
    };
    let t0 = Instant::now();
    let mut rows = 0;
    for (stream, records) in streams {
        for chunk in records.chunks(10_000) {
            let mut enc = Encoder::new(*stream);
            for r in chunk {
                enc.push(&src, r);
            }
            rows += enc.rows();
            let mut tx = pool.begin().await.unwrap();
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY {} ({}) FROM STDIN (FORMAT binary)",
                    stream.table(),
                    stream.columns()
                ))
                .await
                .unwrap();
            copy.send(enc.finish()).await.unwrap();
            copy.finish().await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    (rows, rows as f64 / t0.elapsed().as_secs_f64())
}

/// Drops a baseline database and checkpoints, so its rows and dirty pages do not weigh on what
/// is measured next.
async fn drop_and_checkpoint(w: &World, db: &str) {
    let admin = pool(&w.prod.url()).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("CHECKPOINT").execute(&admin).await.unwrap();
    admin.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate: u64 = std::env::var("CATCHUP_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let secs: u64 = std::env::var("CATCHUP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(55);
    let w = World::start(501, 200, 3).await;
    println!(
        "building the backlog: {rate} msg/s for {secs} s into 3 gatherers, no deduplicator running"
    );
    traffic(&w, rate, secs as f64).await;
    w.settle(Duration::from_millis(2000)).await;
    let mut backlog = 0i64;
    for g in &w.gatherers {
        backlog += g.status().await.streams.iter().map(|s| s.head).sum::<i64>();
    }
    let mut one_copy = Vec::new();
    for stream in Stream::ALL.into_iter().filter(|s| !s.is_registry()) {
        let records =
            kalshi_testkit::held::read_all(&mut w.gatherers[0].client().await, stream.to_pb())
                .await
                .unwrap();
        one_copy.push((stream, records));
    }
    let base_url = w.prod.create_database("baseline").unwrap();
    let (base_rows, before) = copy_baseline(&base_url, &one_copy).await;
    drop_and_checkpoint(&w, "baseline").await;

    let mut file = w.dedup_file(&w.prod.url());
    let (hp, mp) = (free_port(), free_port());
    file.http.listen = format!("127.0.0.1:{hp}").parse().unwrap();
    file.http.metrics_listen = format!("127.0.0.1:{mp}").parse().unwrap();
    file.sink = deduplicator::config::FileConfig::default().sink;
    file.log.level = "warn".into();
    let dir = std::env::temp_dir().join(format!("dedup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("deduplicator.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let pool = pool(&w.prod.url()).await;
    // Production's schema is created first, as the baseline's is: the clock starts with the
    // process, but not with the migrations.
    {
        let prod =
            deduplicator::db::Prod::new(file.clone().validate().unwrap().production).unwrap();
        prod.migrate().await.unwrap();
    }

    let t0 = Instant::now();
    let mut child = Command::new(dedup_bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let sync = async {
        loop {
            samples.push((t0.elapsed().as_secs_f64(), mem_mib(pid, "VmRSS:")));
            let cursors = prod_cursors(&pool).await;
            let mut done = true;
            for g in &w.gatherers {
                for s in g.status().await.streams {
                    let name = Stream::from_pb(s.stream).unwrap().table();
                    if cursors
                        .get(&(g.file.gatherer_id.clone(), name.to_owned()))
                        .map_or(s.head > 0, |c| c.0 < s.head)
                    {
                        done = false;
                    }
                }
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    sync.await;
    let took = t0.elapsed().as_secs_f64();
    let hwm = mem_mib(pid, "VmHWM:");
    let peak_rss = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let quarters: Vec<String> = (1..=4)
        .map(|q| {
            let upto = took * f64::from(q) / 4.0;
            let from = upto - took / 4.0;
            let max = samples
                .iter()
                .filter(|s| s.0 > from && s.0 <= upto)
                .map(|s| s.1)
                .fold(0.0, f64::max);
            format!("{max:.0}")
        })
        .collect();
    let mut unique = 0i64;
    for t in Stream::ALL.map(Stream::table) {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        unique += n;
    }
    let _ = child.kill();
    let _ = child.wait();
    // The baseline again, now that the catch-up is over: the machine is noisy, and the mean of
    // one run on each side of the measured one is fairer than either.
    let url = w.prod.create_database("baseline2").unwrap();
    let (_, after) = copy_baseline(&url, &one_copy).await;
    drop_and_checkpoint(&w, "baseline2").await;
    let baseline = (before + after) / 2.0;
    let written = unique as f64 / took;
    println!(
        "catch-up: {backlog} records held by 3 gatherers ({unique} unique rows) merged in {took:.1} s (from process start; the schema was there)"
    );
    println!("  unique rows written to production: {written:.0} rows/s");
    println!(
        "  gatherer records consumed:         {:.0} records/s",
        backlog as f64 / took
    );
    println!(
        "  baseline, raw COPY of g1's {base_rows} rows of every append-only stream into production's tables: {baseline:.0} rows/s (mean of {before:.0} before and {after:.0} after)"
    );
    println!("  ratio written / baseline: {:.2}", written / baseline);
    println!(
        "  deduplicator memory: peak RSS sampled {peak_rss:.1} MiB, VmHWM {hwm:.1} MiB; peak by quarter of the catch-up: {} MiB",
        quarters.join(" / ")
    );
    let per_gatherer = backlog / 3;
    report(Row {
        figure: &format!(
            "deduplicator catch-up, unique rows/s (3 gatherers x {per_gatherer} records)"
        ),
        value: format!("{written:.0}"),
        baseline: format!("raw COPY {baseline:.0}"),
        ratio: format!("{:.2}", written / baseline),
        rss: format!("dedup {hwm:.0} MiB (by quarter {})", quarters.join("/")),
    });
    let _ = std::fs::remove_dir_all(dir);
}
