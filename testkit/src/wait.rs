//! Waiting for a condition in a test, with a deadline that names what was awaited.

use std::time::{Duration, Instant};

/// Polls `probe` every 200 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
