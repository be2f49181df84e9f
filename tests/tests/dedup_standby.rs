//! The warm standby: two deduplicator binaries against one production, exactly one active (the
//! lease), the other taking over when the active dies, hangs or is cut off from production,
//! and the fencing epoch refusing every commit of a writer that lost the lease. Every test ends
//! with production judged exactly against the simulator's ground truth.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use kalshi_e2e::world::*;
use kalshi_testkit::pg::PgCluster;
use kalshi_testkit::proxy::{Mode, TcpProxy};

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dedup-standby-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn addr(pg: &PgCluster) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", pg.port()).parse().unwrap()
}

fn via(proxy: &TcpProxy) -> String {
    format!("postgres://postgres@{}/postgres", proxy.addr())
}

/// Traffic off, the gatherers settled, production caught up and exact; no panic in any log.
async fn finish(w: &World, url: &str, logs: &[&DedupProc]) -> Exact {
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    let pool = pool(url).await;
    w.wait_synced(&pool, Duration::from_secs(90)).await;
    let got = assert_exact(w, &pool).await;
    eprintln!("production: {got:?}");
    assert!(got.trades > 200, "traffic ran: {got:?}");
    for p in logs {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
    got
}

/// `a` started and active, then `b` started and a standby.
async fn pair(
    dir: &std::path::Path,
    a: deduplicator::config::FileConfig,
    b: deduplicator::config::FileConfig,
) -> (DedupProc, DedupProc) {
    let a = DedupProc::spawn(dir, "a", a);
    a.wait_role("active", Duration::from_secs(60)).await;
    let b = DedupProc::spawn(dir, "b", b);
    b.wait_role("standby", Duration::from_secs(60)).await;
    (a, b)
}

fn p50_max(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

/// Started at the same moment, one takes the lease (epoch 1) and the other waits. Then the
/// active one is SIGKILLed ten times at 2,000 msg/s; each time the standby takes over, the
/// killed one comes back as the standby, and the time from the kill to the new active's first
/// commit is measured. Production is exact after all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_active_ten_times_at_2000_per_second() {
    let w = World::start(451, 40, 3).await;
    let dir = tempdir("kill");
    let file = w.dedup_file(&w.prod.url());
    let mut pair = [
        DedupProc::spawn(&dir, "a", file.clone()),
        DedupProc::spawn(&dir, "b", file),
    ];
    let pool = pool(&w.prod.url()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut active = loop {
        let roles = [pair[0].role().await, pair[1].role().await];
        match (roles[0].as_deref(), roles[1].as_deref()) {
            (Some("active"), Some("standby")) => break 0,
            (Some("standby"), Some("active")) => break 1,
            _ => {}
        }
        assert!(Instant::now() < deadline, "roles: {roles:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        lease_of(&pool).await.0,
        1,
        "started together, the lease was taken once"
    );
    // The standby stays a standby while the active lives, ready (200) and reading the
    // gatherers' status.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = dedup_health(pair[1 - active].http).await;
        assert_eq!(body["role"], "standby", "{body}");
        let seen = w.ids().iter().all(|g| body["gatherers"][*g] == "connected");
        if code == 200 && body["status"] == "standby" && seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "standby not ready: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, want) in [(active, 200), (1 - active, 503)] {
        let r = reqwest::get(format!("http://{}/health/active", pair[i].http))
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            want,
            "/health/active of {}",
            pair[i].name
        );
    }

    w.rate(2000).await;
    more_trades(&pool, 500, Duration::from_secs(60)).await;
    let mut times = Vec::new();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..10 {
        let (epoch, holder) = lease_of(&pool).await;
        let t0 = Instant::now();
        pair[active].kill();
        let e = first_commit_after(&pool, epoch, Duration::from_secs(30)).await;
        let took = t0.elapsed();
        times.push(took);
        let standby = 1 - active;
        pair[standby]
            .wait_role("active", Duration::from_secs(5))
            .await;
        eprintln!(
            "takeover {i}: {} killed (epoch {epoch}, {holder}), {} committed at epoch {e} after {took:?}",
            pair[active].name, pair[standby].name
        );
        assert_eq!(e, epoch + 1, "one takeover, one epoch");
        pair[active].respawn();
        pair[active]
            .wait_role("standby", Duration::from_secs(30))
            .await;
        active = standby;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // The next kill at a random moment of the traffic (the fault's timing, not a wait).
        tokio::time::sleep(Duration::from_millis(500 + rng % 1500)).await;
    }
    let (p50, max) = p50_max(&mut times);
    eprintln!(
        "takeover at 2,000 msg/s, kill to first commit over {} takeovers: p50 {p50:?}, max {max:?}",
        times.len()
    );
    finish(&w, &w.prod.url(), &[&pair[0], &pair[1]]).await;
}

/// The active one hangs (SIGSTOP: alive, its sessions and its lock held, a transaction
/// possibly open). The standby sees its heartbeat age past `lease.takeover_after`, ends its
/// sessions and takes over. Woken (SIGCONT), the old one finds the epoch moved and steps down:
/// nothing it held is committed twice, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_active_is_fenced_off_and_steps_down_when_it_wakes() {
    let w = World::start(452, 30, 3).await;
    let dir = tempdir("hung");
    let file = w.dedup_file(&w.prod.url());
    let (mut a, b) = pair(&dir, file.clone(), file).await;
    let pool = pool(&w.prod.url()).await;
    w.rate(1000).await;
    more_trades(&pool, 300, Duration::from_secs(60)).await;
    let (epoch, _) = lease_of(&pool).await;
    let t0 = Instant::now();
    a.stop();
    let e = first_commit_after(&pool, epoch, Duration::from_secs(40)).await;
    eprintln!(
        "hung active: the standby committed at epoch {e} {:?} after SIGSTOP",
        t0.elapsed()
    );
    b.wait_role("active", Duration::from_secs(5)).await;
    assert!(
        b.log_text().contains("stopped renewing its lease"),
        "the standby said why it took over"
    );
    more_trades(&pool, 200, Duration::from_secs(30)).await;
    a.cont();
    let status = a.wait_exit(Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "a stepped-down deduplicator exits non-zero: {status}"
    );
    let log = a.log_text();
    assert!(log.contains("stepped down"), "it said so:\n{log}");
    assert_eq!(
        lease_of(&pool).await.0,
        e,
        "the old one never took the lease back"
    );
    finish(&w, &w.prod.url(), &[&a, &b]).await;
}

/// Alive, renewing, but not committing: one transaction never returns (a failpoint outside
/// its deadline). Past `lease.hung_after` the active gives the lease up and exits; the standby
/// takes over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_that_cannot_commit_gives_up_its_lease() {
    let w = World::start(456, 30, 3).await;
    let dir = tempdir("stuck");
    let mut file = w.dedup_file(&w.prod.url());
    file.lease.hung_after = Duration::from_secs(6);
    let mut a = DedupProc::spawn(&dir, "a", file.clone());
    a.kill();
    a.respawn_with(&[("KALSHI_FAILPOINTS", "deduplicator::sink::transaction")]);
    a.wait_role("active", Duration::from_secs(60)).await;
    let b = DedupProc::spawn(&dir, "b", file);
    b.wait_role("standby", Duration::from_secs(60)).await;
    w.rate(500).await;
    // It gives the lease up at once (its stop then waits out the stuck task's drain, which
    // the test does not need to watch: it kills it once the standby holds the lease).
    let t0 = Instant::now();
    b.wait_role("active", Duration::from_secs(40)).await;
    eprintln!(
        "not committing: the standby took over {:?} after traffic began",
        t0.elapsed()
    );
    let log = a.log_text();
    assert!(
        log.contains("not committing: giving up the lease"),
        "it said why:\n{log}"
    );
    a.kill();
    finish(&w, &w.prod.url(), &[&a, &b]).await;
}

/// The epoch alone stops a writer that lost the lease without noticing: the lease is moved
/// behind a running deduplicator's back (its lock session and its heartbeat untouched), and
/// its next commit is refused: no transaction of it commits after the move, it steps down, and
/// a successor makes production exact. "After the move" is from when the UPDATE holds the
/// row (`clock_timestamp()` in its RETURNING), not from when it started (`now()`): it may wait
/// for a commit that fenced before it, and another can take its share lock meanwhile, start
/// after the UPDATE did, and commit first, rightly (seen twice in the suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_at_an_old_epoch_is_refused() {
    let w = World::start(453, 30, 3).await;
    let pool = pool(&w.prod.url()).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    w.rate(800).await;
    more_trades(&pool, 300, Duration::from_secs(60)).await;
    let moved_at: i64 = sqlx::query_scalar(
        "UPDATE dedup_leader SET epoch = epoch + 1, holder_id = 'intruder', holder = 'the test', taken_at = now() \
         WHERE id = 1 RETURNING (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), d.wait())
        .await
        .expect("it stepped down");
    let err = format!("{:#}", ended.expect_err("stepping down is an error exit"));
    assert!(err.contains("another deduplicator took the lease"), "{err}");
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM max(updated_at)) * 1000000)::bigint FROM sync_cursors",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        last.unwrap() < moved_at,
        "a transaction committed after the epoch moved: {last:?} >= {moved_at}"
    );
    // A successor takes the lease (the intruder holds no lock) and catches up.
    let d2 = start_dedup(w.dedup_file(&w.prod.url())).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(90)).await;
    let got = assert_exact(&w, &pool).await;
    eprintln!("production: {got:?}");
    let m = dedup_metrics(&d2).await;
    assert_eq!(metric_sum(&m, "dedup_leader"), 1.0);
    assert_eq!(metric_sum(&m, "dedup_fenced_commits_total"), 1.0, "{m}");
    d2.stop().await.unwrap();
}

/// The active one is cut off from production (its link black-holed) while it still reads the
/// gatherers. The standby takes over; when the link comes back the old one finds the epoch
/// moved and steps down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_cut_off_from_production_only_is_replaced() {
    let w = World::start(454, 30, 3).await;
    let dir = tempdir("partition");
    let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), addr(&w.prod))
        .await
        .unwrap();
    let (mut a, b) = pair(
        &dir,
        w.dedup_file(&via(&proxy)),
        w.dedup_file(&w.prod.url()),
    )
    .await;
    let pool = pool(&w.prod.url()).await;
    w.rate(1000).await;
    more_trades(&pool, 300, Duration::from_secs(60)).await;
    let (epoch, _) = lease_of(&pool).await;
    let t0 = Instant::now();
    proxy.set_mode(Mode::Stall);
    let e = first_commit_after(&pool, epoch, Duration::from_secs(40)).await;
    eprintln!(
        "partition: the standby committed at epoch {e} {:?} after the cut",
        t0.elapsed()
    );
    more_trades(&pool, 200, Duration::from_secs(30)).await;
    proxy.set_mode(Mode::Forward);
    let status = a.wait_exit(Duration::from_secs(40)).await;
    assert!(!status.success(), "{status}");
    assert!(a.log_text().contains("stepped down"));
    finish(&w, &w.prod.url(), &[&a, &b]).await;
}

/// Production fails over (primary killed, synchronous standby promoted, the endpoint moved)
/// just as the active deduplicator is killed: the standby deduplicator takes the lease on the
/// new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_fails_over_during_a_takeover() {
    let mut w = World::start(455, 30, 3).await;
    let standby = sync_standby(&w);
    let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), addr(&w.prod))
        .await
        .unwrap();
    let dir = tempdir("failover");
    let file = w.dedup_file(&via(&proxy));
    let (mut a, b) = pair(&dir, file.clone(), file).await;
    w.rate(800).await;
    let old = pool(&w.prod.url()).await;
    more_trades(&old, 300, Duration::from_secs(60)).await;
    let (epoch, _) = lease_of(&old).await;
    old.close().await;
    a.kill();
    w.prod.crash();
    standby.promote().unwrap();
    proxy.set_target(addr(&standby));
    proxy.drop_all();
    let new = pool(&standby.url()).await;
    let e = first_commit_after(&new, epoch, Duration::from_secs(60)).await;
    eprintln!("failover during takeover: committed at epoch {e} on the promoted standby");
    b.wait_role("active", Duration::from_secs(5)).await;
    finish(&w, &standby.url(), &[&a, &b]).await;
}
