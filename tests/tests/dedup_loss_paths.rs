//! Loss paths found in review, each proven closed against real gatherers, a real production
//! database and the oracle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use kalshi_e2e::world::*;

/// A gatherer's head can name ids that hold no row (rows its database skipped as duplicates
/// or refused). Readers are moved past them: production's cursors reach the head, the Tail
/// does not spin or fall silent, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_ids_below_the_head_do_not_stall_the_cursors() {
    let w = World::start(441, 10, 2).await;
    traffic(&w, 300, 3.0).await;
    w.settle(Duration::from_millis(800)).await;
    // The top ids of g1's tickers and trades stop existing (g2 still holds the records).
    let g1 = pool(&w.gatherers[0].file.store.database_url.0).await;
    for table in ["tickers", "trades"] {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id > (SELECT max(id) - 3 FROM {table})"
        )))
        .execute(&g1)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 3, "{table}");
    }
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    let prod = pool(&w.prod.url()).await;
    w.wait_synced(&prod, Duration::from_secs(60)).await;
    let m = dedup_metrics(&d).await;
    assert_eq!(
        metric_line(
            &m,
            "dedup_source_errors_total{gatherer=\"g1\",kind=\"silence\"}"
        ),
        0.0,
        "the Tail never fell silent"
    );
    assert_exact(&w, &prod).await;
    d.stop().await.unwrap();
}
