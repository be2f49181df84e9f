//! DESIGN.md's failure matrix on the local stack (three gatherers, the deduplicator, production,
//! the simulator; real processes). Every row ends with the audit: no silent loss, no duplicate,
//! and every service exits 0 on SIGTERM. Rows proven elsewhere at a finer grain are noted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use kalshi_e2e::{scenario, stream};

use kalshi_testkit::oracle::Verdict;

/// Every delta is in production, except those published before a market created while running
/// was subscribed (its first snapshot carries them): within the subscription bound, or inside
/// the `late_subscription` windows every gatherer declared.
fn assert_no_delta_lost(a: &Verdict) {
    let d = stream(a, "orderbook_deltas");
    assert_eq!(
        d.missing(),
        d.before_subscription + d.declared,
        "deltas lost: {d:?}"
    );
}

fn assert_clean(a: &Verdict) {
    assert!(a.ok, "audit failed:\n{}", a.table());
    let t = stream(a, "trades");
    assert_eq!(t.missing(), 0, "every trade reaches production");
    assert!(t.expected > 100, "traffic ran: {}", t.expected);
    assert_eq!(
        a.audited_through_ms, None,
        "a settled stack is judged whole"
    );
    assert!(
        a.books.snapshots > 0 && a.books.rebuilds > 0,
        "{:?}",
        a.books
    );
    assert!(a.registry_totals().is_some_and(|(n, _)| n > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatherer_sigkilled_then_restarted() {
    let a = scenario("gatherer-kill", 601).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_gatherers_down() {
    let a = scenario("two-down", 602).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_gatherers_cut_from_the_exchange() {
    let a = scenario("exchange-cut", 603).await.unwrap();
    assert_clean(&a);
    let d = stream(&a, "orderbook_deltas");
    assert!(
        d.declared > 0,
        "the outage's deltas are declared by every gatherer: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_between_deduplicator_and_a_gatherer() {
    let a = scenario("partition", 604).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_each_service_is_graceful() {
    // The scenario asserts exit 0 for a gatherer and the deduplicator mid-traffic; the final
    // stop asserts it for every service.
    let a = scenario("sigterm", 605).await.unwrap();
    assert_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplicator_sigkilled_repeatedly() {
    let a = scenario("dedup-kill", 606).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_primary_killed_standby_promoted() {
    let a = scenario("failover", 607).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_websockets_and_seq_gaps() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = kalshi_e2e::stack(608, false).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    kalshi_stack::scenarios::run_one(&mut s, "ws-stall")
        .await
        .unwrap();
    // Each gatherer caught the half-open socket itself, by silence, before the simulator ended
    // the stall by closing it.
    for g in &s.endpoints.gatherers {
        let m = kalshi_stack::get_text(&g.metrics).await.unwrap();
        assert!(
            kalshi_stack::metric_with(&m, "ws_client_errors_total", "type", "stall") >= 1.0,
            "gatherer {} did not detect the stalled socket by silence",
            g.id
        );
    }
    let a =
        kalshi_e2e::settle_and_audit(s, kalshi_stack::scenarios::subscription_bound("ws-stall"))
            .await
            .unwrap();
    assert_clean(&a);
    let a = scenario("seq-gap", 609).await.unwrap();
    assert_clean(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_rest_429_and_local_database_restart() {
    for (name, seed) in [
        ("malformed", 610),
        ("rest-429", 611),
        ("gatherer-db-restart", 612),
    ] {
        let a = scenario(name, seed).await.unwrap();
        assert_clean(&a);
        assert_eq!(stream(&a, "orderbook_deltas").silent, 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_down_for_a_minute() {
    let a = scenario("production-down", 613).await.unwrap();
    assert_clean(&a);
    assert_no_delta_lost(&a);
}
