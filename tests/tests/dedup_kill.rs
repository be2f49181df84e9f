//! The exactly-once oracle: the deduplicator binary SIGKILLed at random moments during heavy
//! traffic, most of them between COPY and COMMIT (a transaction open and paused), restarted
//! each time; production still equals the ground truth with no duplicate. Then SIGTERM ends it
//! gracefully with exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kalshi_e2e::world::*;

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(dedup_bin())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn open_transactions(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'kalshi-deduplicator%' AND state = 'idle in transaction'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let w = World::start(402, 40, 3).await;
    let dir = tempdir();
    let mut file = w.dedup_file(&w.prod.url());
    let http_port = free_port();
    file.http.listen = format!("127.0.0.1:{http_port}").parse().unwrap();
    // A pause inside every transaction, after COPY and INSERT, before COMMIT: the window the
    // kills aim at.
    file.testing.pause_before_commit = Duration::from_millis(250);
    let config = dir.join("deduplicator.toml");
    std::fs::write(&config, toml::to_string(&file).unwrap()).unwrap();
    let log = dir.join("deduplicator.log");
    let pool = pool(&w.prod.url()).await;

    let mut child = spawn(&config, &log);
    w.rate(700).await;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mid_transaction = 0;
    let kills = 7;
    for i in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = Duration::from_millis(1500 + rng % 3000);
        tokio::time::sleep(wait).await;
        // Aim at an open transaction (COPY done, COMMIT pending) when there is one soon.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut open = 0;
        while Instant::now() < deadline {
            open = open_transactions(&pool).await;
            if open > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if open > 0 {
            mid_transaction += 1;
        }
        eprintln!("kill {i}: after {wait:?}, {open} transactions open");
        child = spawn(&config, &log);
    }
    assert!(
        mid_transaction >= 5,
        "only {mid_transaction} of {kills} kills hit an open transaction"
    );
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(90)).await;
    let got = assert_exact(&w, &pool).await;
    eprintln!("production after {kills} kills: {got:?}");
    assert!(got.trades > 500, "traffic ran: {got:?}");

    // SIGTERM: graceful, exit 0.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("deduplicator stopped"),
        "graceful stop logged"
    );
    assert!(!text.contains("panicked"), "no panic in the log");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dedup-kill-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
