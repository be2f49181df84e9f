//! The `deduplicator` binary's `migrate`, `status` and `gaps` against a real gatherer and a
//! real production database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::Duration;

use kalshi_e2e::world::*;

fn bin() -> Command {
    Command::new(dedup_bin())
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dedup-bin-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_status_and_gaps() {
    let w = World::start(451, 10, 1).await;
    let mut file = w.dedup_file(&w.prod.url());
    // A second gatherer that is not running: status says so.
    file.gatherers.push(deduplicator::config::GathererEndpoint {
        id: "g2".into(),
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        server_name: None,
    });
    let cfg = write("dedup.toml", &toml::to_string(&file).unwrap());

    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<i32> = deduplicator::schema::MIGRATIONS
        .iter()
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("applied migrations {all:?}")
    );
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "production schema is up to date"
    );

    let d = start_dedup(file.clone()).await;
    traffic(&w, 200, 3.0).await;
    w.settle(Duration::from_millis(1000)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    d.stop().await.unwrap();
    let head = w.gatherers[0].status().await.streams[0].head;

    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "a gatherer is unreachable");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("g1") && l.contains(" trades "))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], head.to_string(), "cursor: {line}");
    assert_eq!(cols[3], head.to_string(), "head: {line}");
    assert_eq!(cols[4], "0", "behind: {line}");
    assert!(line.ends_with(" ok"), "{line}");
    let build = format!(
        "version {} ({})",
        kalshi_shared::build::VERSION,
        kalshi_shared::build::GIT_SHA
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("# g1 at ") && l.ends_with(&build)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("g2") && l.contains("unreachable")),
        "{text}"
    );

    // Coverage: g1 and g2 both missed M between 3000 and 5000 ms; only g1 missed 1000..3000.
    sqlx::query(
        "INSERT INTO gaps (gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms, reason, detail) VALUES \
         ('g1','i',1,'orderbook_deltas','M',1000,5000,'disconnect',''), \
         ('g2','j',1,'orderbook_deltas','M',3000,8000,'seq_gap',''), \
         ('g2','j',2,'trades','',100,200,'db_outage','')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["gaps", "--from", "0", "--to", "10000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().ends_with(": 1"), "{text}");
    let line = text.lines().nth(1).unwrap();
    assert!(line.starts_with("orderbook_deltas"), "{line}");
    assert!(
        line.contains(" M ")
            && line.contains("1970-01-01T00:00:03.000Z .. 1970-01-01T00:00:05.000Z"),
        "{line}"
    );
    assert!(
        line.contains("(2.000 s)") && line.ends_with("disconnect,seq_gap"),
        "{line}"
    );
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args([
            "gaps",
            "--from",
            "1970-01-01T00:00:06Z",
            "--to",
            "1970-01-01T00:00:09Z",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .ends_with(": 0")
    );
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["gaps", "--from", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A migration edited after it was applied (its checksum in production no longer matches the
/// binary), or a production migrated by a newer binary, is refused by `migrate` and by the
/// service itself, naming the migration; nothing is applied over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_unknown_applied_migration_is_refused() {
    let w = World::start(452, 4, 1).await;
    let file = w.dedup_file(&w.prod.url());
    let cfg = write("dedup-migrations.toml", &toml::to_string(&file).unwrap());
    let migrate = || {
        bin()
            .arg("--config")
            .arg(&cfg)
            .arg("migrate")
            .output()
            .unwrap()
    };
    // `migrate` exits non-zero, saying `why` on stderr.
    let refused = |why: &str| {
        let out = migrate();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(why), "{err}");
    };
    assert!(migrate().status.success());
    let pool = pool(&w.prod.url()).await;
    let stored: Vec<(i32, String)> =
        sqlx::query_as("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), deduplicator::schema::MIGRATIONS.len());
    assert!(stored.iter().all(|(_, c)| c.len() == 64), "{stored:?}");

    sqlx::query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
        .execute(&pool)
        .await
        .unwrap();
    refused("migration 2 was edited after it was applied");
    // The service refuses too, instead of retrying for ever.
    let d = start_dedup(file.clone()).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), d.wait())
        .await
        .expect("the deduplicator stops");
    let e = format!("{:#}", ended.expect_err("with an error"));
    assert!(e.contains("migration 2 was edited"), "{e}");

    // A checksum missing (applied before checksums existed) is recorded, not refused.
    sqlx::query("UPDATE schema_migrations SET checksum = NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert!(migrate().status.success());
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM schema_migrations WHERE checksum IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, deduplicator::schema::MIGRATIONS.len() as i64);

    // A version this binary does not know.
    sqlx::query("INSERT INTO schema_migrations (version, checksum) VALUES (99, 'x')")
        .execute(&pool)
        .await
        .unwrap();
    refused("migration 99 is applied in the database but unknown");
}
