//! Production over TLS with verify-full, as on RDS: against a local PostgreSQL serving a
//! certificate from a throwaway CA, a deduplicator trusting another CA is refused (counted, not
//! ready, nothing written), and one trusting the right CA writes exactly the ground truth over
//! connections PostgreSQL itself reports as encrypted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use kalshi_e2e::world::*;
use kalshi_testkit::certs::{Ca, Validity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_over_verify_full_tls_is_exact_and_a_wrong_ca_is_refused() {
    let w = World::start(614, 10, 2).await;
    let dir = std::env::temp_dir().join(format!("kalshi-prod-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("production CA").unwrap();
    let other = Ca::new("someone else's CA").unwrap();
    let leaf = ca.issue(&["localhost"], Validity::Days(30)).unwrap();
    w.prod.enable_tls(&leaf.cert_pem, &leaf.key_pem).unwrap();
    let (right, wrong) = (dir.join("right-ca.pem"), dir.join("wrong-ca.pem"));
    std::fs::write(&right, ca.pem()).unwrap();
    std::fs::write(&wrong, other.pem()).unwrap();
    let url = |ca: &std::path::Path| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            w.prod.port(),
            ca.display()
        )
    };

    // The wrong CA: refused at every attempt, counted, not ready, nothing written.
    let d = start_dedup(w.dedup_file(&url(&wrong))).await;
    w.rate(200).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = dedup_metrics(&d).await;
        if metric_sum(&m, "dedup_rds_errors_total") >= 2.0 {
            assert_eq!(metric_sum(&m, "dedup_rds_connected"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no production error counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 503, "{h}");
    assert_ne!(h["rds"], "connected", "{h}");
    d.stop().await.unwrap();
    let written = w
        .prod
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'sync_cursors'",
        )
        .unwrap();
    assert_eq!(written.trim(), "0", "a refused deduplicator wrote nothing");

    // The right CA: everything, exactly once, over encrypted connections.
    let d = start_dedup(w.dedup_file(&url(&right))).await;
    let encrypted = || {
        w.prod
            .psql(
                "postgres",
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'kalshi-deduplicator%'",
            )
            .unwrap()
    };
    // Wait for the deduplicator's connections to exist, then check every one is TLS.
    kalshi_testkit::wait::wait_for(
        "deduplicator connections",
        Duration::from_secs(30),
        async || {
            encrypted()
                .trim()
                .split_once('|')
                .is_some_and(|(_, all)| all != "0")
        },
    )
    .await;
    let e = encrypted();
    let (tls, all) = e.trim().split_once('|').unwrap();
    assert_eq!(tls, all, "every deduplicator connection is TLS: {e}");
    // Enough traffic to judge: at least 100 trades captured (a condition, not a duration).
    kalshi_testkit::wait::wait_for("100 trades captured", Duration::from_secs(60), async || {
        w.gatherers[0]
            .status()
            .await
            .streams
            .iter()
            .any(|s| s.stream == kalshi_proto::gatherer::v1::Stream::Trades as i32 && s.head >= 100)
    })
    .await;
    w.rate(0).await;
    w.settle(Duration::from_millis(800)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    d.stop().await.unwrap();
    let e = assert_exact(&w, &pool).await;
    assert!(e.trades > 50, "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
