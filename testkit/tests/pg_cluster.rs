//! The ephemeral PostgreSQL harness, exercised for real: start, query, restart, crash and
//! recover, stream to a standby and promote it, clean up after itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Instant;

use kalshi_testkit::pg::{ClusterOptions, PgCluster};

fn count(c: &PgCluster, sql: &str) -> i64 {
    c.psql("postgres", sql).unwrap().trim().parse().unwrap()
}

#[test]
fn starts_answers_and_cleans_up() {
    let t0 = Instant::now();
    let mut c = PgCluster::start_default().unwrap();
    eprintln!("cluster up in {:?} on port {}", t0.elapsed(), c.port());
    assert!(c.url().starts_with("postgres://postgres@127.0.0.1:"));
    assert_eq!(c.psql("postgres", "SELECT 1 + 1").unwrap().trim(), "2");
    // Only loopback.
    assert_eq!(
        c.psql("postgres", "SHOW listen_addresses").unwrap().trim(),
        "127.0.0.1"
    );
    let url = c.create_database("kalshi test").unwrap();
    assert!(url.ends_with("/kalshi test"));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_database WHERE datname = 'kalshi test'"
        ),
        1
    );
    let root = c.root_dir().to_owned();
    let pid = c.pid().unwrap();
    assert!(c.is_running());
    drop(c);
    assert!(!root.exists(), "the cluster directory is removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server process is gone after drop"
    );
}

#[test]
fn restart_keeps_committed_data_and_the_port() {
    let mut c = PgCluster::start_default().unwrap();
    let port = c.port();
    c.psql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000)",
    )
    .unwrap();
    c.stop().unwrap();
    assert!(!c.is_running());
    assert!(
        c.psql("postgres", "SELECT 1").is_err(),
        "a stopped server refuses connections"
    );
    c.restart().unwrap();
    assert_eq!(c.port(), port);
    assert_eq!(count(&c, "SELECT count(*) FROM t"), 1000);
}

#[test]
fn crash_recovery_keeps_committed_data() {
    let mut c = PgCluster::start_default().unwrap();
    c.psql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 500)",
    )
    .unwrap();
    c.crash();
    assert!(!c.is_running());
    c.restart().unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM t"), 500);
    assert!(
        c.log_tail().contains("database system was interrupted")
            || c.log_tail().contains("recovery"),
        "the restart ran crash recovery:\n{}",
        c.log_tail()
    );
}

#[test]
fn standby_streams_and_promotes() {
    let mut primary = PgCluster::start_default().unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)",
        )
        .unwrap();
    let t0 = Instant::now();
    let standby = PgCluster::start_standby(&primary, ClusterOptions::default()).unwrap();
    eprintln!("standby up in {:?}", t0.elapsed());
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap()
            .trim(),
        "t"
    );
    primary
        .psql("postgres", "INSERT INTO t VALUES (3)")
        .unwrap();
    // Streaming: the new row reaches the standby.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while count(&standby, "SELECT count(*) FROM t") != 3 {
        assert!(Instant::now() < deadline, "row did not replicate");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        standby
            .psql("postgres", "INSERT INTO t VALUES (4)")
            .is_err(),
        "a standby is read-only"
    );
    primary.crash();
    let t0 = Instant::now();
    standby.promote().unwrap();
    eprintln!("promoted in {:?}", t0.elapsed());
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap()
            .trim(),
        "f"
    );
    standby
        .psql("postgres", "INSERT INTO t VALUES (4)")
        .unwrap();
    assert_eq!(count(&standby, "SELECT count(*) FROM t"), 4);
}

#[test]
fn several_clusters_at_once_get_distinct_ports() {
    let t0 = Instant::now();
    let clusters: Vec<PgCluster> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(PgCluster::start_default)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    eprintln!("4 clusters up in {:?}", t0.elapsed());
    let mut ports: Vec<u16> = clusters.iter().map(PgCluster::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for c in &clusters {
        assert_eq!(c.psql("postgres", "SELECT 42").unwrap().trim(), "42");
    }
}

#[test]
fn kept_clusters_survive_drop_and_are_reused() {
    let base = std::env::temp_dir().join(format!("kalshi-pg-keep-{}", std::process::id()));
    let dir = base.join("prod");
    let opts = ClusterOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    {
        let c = PgCluster::start(opts.clone()).unwrap();
        c.psql(
            "postgres",
            "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)",
        )
        .unwrap();
    }
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "a fixed directory is kept"
    );
    {
        let c = PgCluster::start(opts).unwrap();
        assert_eq!(
            c.psql("postgres", "SELECT v FROM kept").unwrap().trim(),
            "7"
        );
    }
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn stale_directories_of_dead_processes_are_removed() {
    let base = std::env::temp_dir().join(format!("kalshi-pg-stale-{}", std::process::id()));
    // A process id that cannot exist (above pid_max).
    let stale = base.join("c-4194305-0");
    std::fs::create_dir_all(stale.join("data")).unwrap();
    let c = PgCluster::start(ClusterOptions {
        base_dir: Some(base.clone()),
        ..Default::default()
    })
    .unwrap();
    assert!(
        !stale.exists(),
        "the next start removes what dead processes left"
    );
    drop(c);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn server_dies_with_the_process_that_started_it() {
    const HELPER: &str = "KALSHI_PG_TEST_HELPER";
    if std::env::var_os(HELPER).is_some() {
        // Child mode: start a cluster from a short-lived thread, report the server pid, and
        // wait to be killed without any chance to drop the cluster.
        let c = std::thread::spawn(|| PgCluster::start_default().unwrap())
            .join()
            .unwrap();
        println!("SERVER_PID={}", c.pid().unwrap());
        std::thread::sleep(std::time::Duration::from_secs(600));
        return;
    }
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_dies_with_the_process_that_started_it",
            "--nocapture",
        ])
        .env(HELPER, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("SERVER_PID=").map(|p| p.parse().unwrap()))
        .expect("helper reports the server pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        proc_dir.exists(),
        "the server outlives the thread that asked for it"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while proc_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "server {pid} survived its parent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
