//! End-to-end suites: DESIGN.md's failure matrix run on `kalshi-stack` (real binaries as child
//! processes, real PostgreSQL clusters, the simulator), each finished with the audit of
//! production against the simulator's ground truth. The helpers live here; [`world`] is the
//! finer-grained rig (in-process gatherers and deduplicator) of the `dedup_*` suites.
//!
//! It must never take expected values from the system's own stores: only the oracle.

pub mod archive;
pub mod metric_names;
pub mod world;

use std::time::Duration;

use kalshi_stack::{Options, Stack};
use kalshi_testkit::oracle::{StreamVerdict, Verdict};

/// A fresh stack in its own directory under the system temp dir.
pub async fn stack(seed: u64, ha: bool) -> anyhow::Result<Stack> {
    stack_with(seed, ha, false).await
}

/// [`stack`], with a warm standby deduplicator when `standby`.
pub async fn stack_with(seed: u64, ha: bool, standby: bool) -> anyhow::Result<Stack> {
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(dir, kalshi_stack::default_bin_dir());
    o.markets = 24;
    o.seed = seed;
    o.rate = 250;
    o.ha = ha;
    o.standby = standby;
    o.log_level = "info".into();
    Stack::up(o).await
}

/// Stops traffic, waits for production to catch up, audits, stops the stack.
/// `subscription_latency`: the bound after which a new market's records must be in production.
pub async fn settle_and_audit(
    mut s: Stack,
    subscription_latency: Duration,
) -> anyhow::Result<Verdict> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.set_rate(0).await?;
    s.wait_settled(Duration::from_secs(240)).await?;
    let audit = kalshi_stack::audit::run(
        &s.endpoints.sim_control,
        &s.production_direct_url(),
        &s.endpoints.gatherers,
        &kalshi_stack::audit::AuditOptions {
            settled: true,
            subscription_latency,
            ..kalshi_stack::audit::AuditOptions::default()
        },
    )
    .await?;
    eprintln!("{}", audit.table());
    let codes = tokio::task::spawn_blocking(move || s.down()).await?;
    for (name, code) in codes {
        anyhow::ensure!(
            code == Some(0),
            "{name} did not exit 0 after SIGTERM: {code:?}"
        );
    }
    Ok(audit)
}

/// Runs `scenario` on a fresh stack with traffic and returns the audit (`dedup-kill` runs with
/// a warm standby deduplicator: each kill is of whichever is active).
pub async fn scenario(name: &str, seed: u64) -> anyhow::Result<Verdict> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = stack_with(seed, name == "failover", name == "dedup-kill").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    kalshi_stack::scenarios::run_one(&mut s, name).await?;
    settle_and_audit(s, kalshi_stack::scenarios::subscription_bound(name)).await
}

pub fn stream<'a>(a: &'a Verdict, name: &str) -> &'a StreamVerdict {
    a.stream(name)
        .unwrap_or_else(|| panic!("no {name} in the audit"))
}
