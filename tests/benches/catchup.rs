//! Catch-up benchmark: three gatherers hold a backlog the deduplicator has never seen; how fast
//! does it merge them into production (unique rows written per second, records consumed per
//! second), against a baseline measured in the same run (raw binary COPY of the same deltas
//! straight into production's table: the ceiling), and how much memory does it use meanwhile.
//!
//! Run: `cargo bench -p kalshi-e2e --bench catchup` (release build; a few minutes).
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

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raw COPY of `records` (deltas) into a migrated production schema, batches of 10,000.
async fn copy_baseline(url: &str, records: &[pb::Record]) -> f64 {
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
    for chunk in records.chunks(10_000) {
        let mut enc = Encoder::new(Stream::OrderbookDeltas);
        for r in chunk {
            enc.push(&src, r);
        }
        let mut tx = pool.begin().await.unwrap();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY orderbook_deltas ({}) FROM STDIN (FORMAT binary)",
                Stream::OrderbookDeltas.columns()
            ))
            .await
            .unwrap();
        copy.send(enc.finish()).await.unwrap();
        copy.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    records.len() as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate: u64 = std::env::var("CATCHUP_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let secs: u64 = std::env::var("CATCHUP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
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
    let deltas = kalshi_testkit::held::read_all(
        &mut w.gatherers[0].client().await,
        pb::Stream::OrderbookDeltas,
    )
    .await
    .unwrap();
    let base_url = w.prod.create_database("baseline").unwrap();
    let baseline = copy_baseline(&base_url, &deltas).await;

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

    let t0 = Instant::now();
    let mut child = Command::new(dedup_bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_rss = 0;
    let sync = async {
        loop {
            peak_rss = peak_rss.max(rss_kib(pid, "VmRSS:"));
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
    let hwm = rss_kib(pid, "VmHWM:");
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
    let written = unique as f64 / took;
    println!(
        "catch-up: {backlog} records held by 3 gatherers ({unique} unique rows) merged in {took:.1} s (from process start, migrations included)"
    );
    println!("  unique rows written to production: {written:.0} rows/s");
    println!(
        "  gatherer records consumed:         {:.0} records/s",
        backlog as f64 / took
    );
    println!(
        "  baseline, raw COPY of {} deltas into production's table: {baseline:.0} rows/s",
        deltas.len()
    );
    println!("  ratio written / baseline: {:.2}", written / baseline);
    println!(
        "  deduplicator memory: peak RSS sampled {:.1} MiB, VmHWM {:.1} MiB",
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(dir);
}
