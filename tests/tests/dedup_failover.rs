//! Production failures, each during traffic from three gatherers, each ending with production
//! exactly equal to the ground truth: the primary killed and a synchronous standby promoted
//! behind an endpoint that moves; a demoted primary answering read-only (25006); backends
//! terminated (57P01); a stalled socket that never resets; production down for two minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use kalshi_e2e::world::*;
use kalshi_testkit::pg::PgCluster;
use kalshi_testkit::proxy::{Mode, TcpProxy};

fn via(proxy: &TcpProxy) -> String {
    format!("postgres://postgres@{}/postgres", proxy.addr())
}

fn addr(pg: &PgCluster) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", pg.port()).parse().unwrap()
}

/// After the fault: traffic stops, the gatherers settle, production catches up and is exact.
async fn finish(w: &World, d: deduplicator::Deduplicator, url: &str, within: Duration) -> String {
    w.rate(0).await;
    w.settle(Duration::from_millis(1500)).await;
    let pool = pool(url).await;
    w.wait_synced(&pool, within).await;
    let got = assert_exact(w, &pool).await;
    eprintln!("production: {got:?}");
    assert!(got.trades > 200, "traffic ran: {got:?}");
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_sum(&m, "dedup_rds_connected"),
        1.0,
        "connected again"
    );
    d.stop().await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_standby_promoted_endpoint_moved() {
    let mut w = World::start(411, 30, 3).await;
    let standby = sync_standby(&w);
    let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), addr(&w.prod))
        .await
        .unwrap();
    let d = start_dedup(w.dedup_file(&via(&proxy))).await;
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    w.prod.crash();
    standby.promote().unwrap();
    proxy.set_target(addr(&standby));
    proxy.drop_all();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let m = finish(&w, d, &standby.url(), Duration::from_secs(90)).await;
    assert!(
        metric_sum(&m, "dedup_rds_errors_total") > 0.0,
        "the failover was seen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demoted_primary_answering_read_only_rebuilds_the_pool() {
    let w = World::start(412, 30, 3).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.prod
        .psql(
            "postgres",
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .unwrap();
    w.prod.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(
        code, 503,
        "production refuses writes for longer than unhealthy_after: {h}"
    );
    assert_eq!(h["rds"], "unreachable");
    w.prod
        .psql(
            "postgres",
            "ALTER SYSTEM RESET default_transaction_read_only",
        )
        .unwrap();
    w.prod.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = finish(&w, d, &w.prod.url(), Duration::from_secs(60)).await;
    assert!(
        m.lines().any(
            |l| l.starts_with("dedup_rds_errors_total{class=\"read_only\"}") && !l.ends_with(" 0")
        ),
        "25006 seen"
    );
    assert!(
        metric_sum(&m, "dedup_pool_rebuilds_total") > 0.0,
        "pool rebuilt on 25006"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_retried() {
    let w = World::start(413, 30, 3).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    w.rate(500).await;
    let admin = pool(&w.prod.url()).await;
    let mut terminated = 0i64;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'kalshi-deduplicator%') t",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        terminated += n;
    }
    assert!(terminated >= 10, "backends terminated: {terminated}");
    let m = finish(&w, d, &w.prod.url(), Duration::from_secs(60)).await;
    assert!(
        m.lines().any(
            |l| l.starts_with("dedup_rds_errors_total{class=\"connection\"}") && !l.ends_with(" 0")
        ),
        "57P01 counted as connection errors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_socket_times_out_and_resumes() {
    let w = World::start(414, 30, 3).await;
    let proxy = TcpProxy::start("127.0.0.1:0".parse().unwrap(), addr(&w.prod))
        .await
        .unwrap();
    let d = start_dedup(w.dedup_file(&via(&proxy))).await;
    w.rate(500).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Every byte held, no RST: only the deadlines can notice.
    proxy.set_mode(Mode::Stall);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 503, "{h}");
    proxy.set_mode(Mode::Forward);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = finish(&w, d, &w.prod.url(), Duration::from_secs(60)).await;
    assert!(
        m.lines().any(
            |l| l.starts_with("dedup_rds_errors_total{class=\"timeout\"}") && !l.ends_with(" 0")
        ),
        "the stall ended in timeouts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_down_for_two_minutes_then_back() {
    let mut w = World::start(415, 30, 3).await;
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    w.rate(300).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.prod.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["rds"], "unreachable");
    // Not ready, but alive: production being down must never get the only writer replaced.
    let (ready, r) = dedup_health_at(d.http_addr, "/health/ready").await;
    assert_eq!(
        (ready, r["rds"].as_str()),
        (503, Some("unreachable")),
        "{r}"
    );
    let (live, l) = dedup_health_at(d.http_addr, "/health/live").await;
    assert_eq!((live, l["status"].as_str()), (200, Some("alive")), "{l}");
    // The sources and sinks started before the outage and are still running: one source per
    // gatherer, one sink per stream, and the HTTP and metrics servers.
    assert_eq!(l["tasks"]["sources"], 3, "{l}");
    assert_eq!(l["tasks"]["sinks"], kalshi_proto::Stream::ALL.len(), "{l}");
    assert_eq!(l["tasks"]["servers"], 2, "{l}");
    w.prod.restart().unwrap();
    let m = finish(&w, d, &w.prod.url(), Duration::from_secs(120)).await;
    assert!(
        m.lines().any(
            |l| l.starts_with("dedup_rds_errors_total{class=\"connection\"}") && !l.ends_with(" 0")
        ),
        "the outage was counted"
    );
}
