//! `kalshi-stack audit` itself: it passes on a live stack at 2,000 msg/s (records after its
//! cut reported as in flight, never as lost); on the settled stack, every deletion, duplication
//! or alteration of a production row, in every stream (a market's first delta, one copy of
//! identical deltas, snapshots' splice points and books, the registry, a loss behind a window
//! every gatherer declared), makes it fail and name the record; and a gatherer that cannot be
//! read makes it INCONCLUSIVE (exit 3), never PASSED.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::Duration;

use kalshi_stack::audit::{self, AuditOptions};
use kalshi_stack::{Options, Stack};
use kalshi_testkit::oracle::{Outcome, Verdict};

async fn production(s: &Stack) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&s.production_direct_url())
        .await
        .unwrap()
}

/// The CLI's audit on the stack's data dir: (exit code, stdout).
fn cli_audit(s: &Stack) -> (Option<i32>, String) {
    let out = Command::new(kalshi_stack::default_bin_dir().join("kalshi-stack"))
        .arg("--data-dir")
        .arg(&s.opts.data_dir)
        .arg("audit")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Deletes one row of `table` (the first by `order` among those `cond` matches) and keeps a
/// copy: (apply, undo). The row is picked once by its physical address, so ties in `order`
/// cannot make the copy, the deletion and the restore address different rows.
fn delete_one(table: &str, cond: &str, order: &str) -> (String, String) {
    (
        format!(
            "CREATE TEMP TABLE pick AS SELECT tableoid AS t, ctid AS c FROM {table} WHERE {cond} ORDER BY {order} LIMIT 1; \
             CREATE TEMP TABLE saved AS SELECT * FROM {table} WHERE (tableoid, ctid) IN (SELECT t, c FROM pick); \
             DELETE FROM {table} WHERE (tableoid, ctid) IN (SELECT t, c FROM pick); DROP TABLE pick"
        ),
        format!("INSERT INTO {table} SELECT * FROM saved; DROP TABLE saved"),
    )
}

/// Changes one row of `table` by `set` and back by `unset`: (apply, undo). The row is picked
/// once, and the undo addresses the changed row by the address its update returned.
fn alter_one(table: &str, cond: &str, order: &str, set: &str, unset: &str) -> (String, String) {
    (
        format!(
            "CREATE TEMP TABLE pick AS SELECT tableoid AS t, ctid AS c FROM {table} WHERE {cond} ORDER BY {order} LIMIT 1; \
             CREATE TEMP TABLE moved (t oid, c tid); \
             WITH u AS (UPDATE {table} SET {set} WHERE (tableoid, ctid) IN (SELECT t, c FROM pick) RETURNING tableoid, ctid) \
             INSERT INTO moved SELECT * FROM u; DROP TABLE pick"
        ),
        format!(
            "UPDATE {table} SET {unset} WHERE (tableoid, ctid) IN (SELECT t, c FROM moved); DROP TABLE moved"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_passes_live_and_fails_for_each_injected_loss() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::new(dir, kalshi_stack::default_bin_dir());
    o.markets = 60;
    o.seed = 701;
    o.rate = 2000;
    o.log_level = "info".into();
    let mut s = Stack::up(o).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The exchange clock stands still for a moment: many records share one millisecond, some
    // of them identical deltas (their copies are what the audit must count exactly).
    s.fault(serde_json::json!({"fault": "clock_freeze", "duration_ms": 1500}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Live: traffic keeps flowing while the audit runs.
    let live = audit::run(
        &s.endpoints.sim_control,
        &s.production_direct_url(),
        &s.endpoints.gatherers,
        &AuditOptions::default(),
    )
    .await
    .unwrap();
    eprintln!("live:\n{}", live.table());
    assert!(live.ok, "a live, healthy stack passes:\n{}", live.table());
    assert!(
        live.audited_through_ms.is_some(),
        "a live audit states its cut"
    );
    let in_flight: u64 = live.streams.iter().map(|s| s.in_flight).sum();
    assert!(in_flight > 0, "records after the cut are in flight");
    let deltas = live.stream("orderbook_deltas").unwrap();
    assert!(deltas.present > 5_000, "traffic ran: {deltas:?}");
    assert_eq!(deltas.silent + deltas.duplicated + deltas.unexpected, 0);

    // Settled: the same stack judged whole.
    s.set_rate(0).await.unwrap();
    s.wait_settled(Duration::from_secs(240)).await.unwrap();
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("AUDIT PASSED"), "{out}");

    let pool = production(&s).await;
    let mut conn = pool.acquire().await.unwrap();
    let settled = AuditOptions {
        settled: true,
        ..AuditOptions::default()
    };
    let audit = |s: &Stack| {
        let (sim, url, g) = (
            s.endpoints.sim_control.clone(),
            s.production_direct_url(),
            s.endpoints.gatherers.clone(),
        );
        let opts = settled.clone();
        async move { audit::run(&sim, &url, &g, &opts).await.unwrap() }
    };
    let one = |q: &str| {
        let q = q.to_owned();
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Each change to a settled production, in every stream, makes the audit fail and name the
    // record; each is undone before the next. (`apply`, `undo`, the check, what the table must
    // name.)
    let market: String = one(
        "SELECT market_ticker FROM orderbook_deltas GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .await;
    let trade = one("SELECT trade_id FROM trades WHERE yes_price BETWEEN 100000 AND 900000 ORDER BY trade_id LIMIT 1").await;
    // The very first delta of the busiest market (published in its first seconds).
    let first_ts = one(&format!(
        "SELECT min(ts_ms)::text FROM orderbook_deltas WHERE market_ticker = '{market}'"
    ))
    .await;
    // A copy of identical deltas of one millisecond (the frozen clock made some).
    let pair: String = one(
        "SELECT coalesce(min(format('%s|%s|%s|%s|%s', market_ticker, ts_ms, side, price, delta)), '') FROM \
         (SELECT market_ticker, ts_ms, side, price, delta FROM orderbook_deltas GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) x",
    )
    .await;
    assert!(
        !pair.is_empty(),
        "no identical deltas in one millisecond to remove a copy of"
    );
    let p: Vec<&str> = pair.split('|').collect();
    let pair_where = format!(
        "market_ticker = '{}' AND ts_ms = {} AND side = {} AND price = {} AND delta = {}",
        p[0], p[1], p[2], p[3], p[4]
    );
    // A ticker by its key (a row's ctid changes when the undo inserts it back).
    let ticker_key = one("SELECT format('%s|%s|%s|%s', market_ticker, ts_ms, content_hash, occurrence) FROM tickers ORDER BY committed_at, ctid LIMIT 1 OFFSET 5").await;
    let k: Vec<&str> = ticker_key.split('|').collect();
    let ticker_market = k[0].to_owned();
    let ticker_row = format!(
        "market_ticker = '{}' AND ts_ms = {} AND content_hash = '{}' AND occurrence = {}",
        k[0], k[1], k[2], k[3]
    );
    let lifecycle_ticker =
        one("SELECT ticker FROM lifecycle WHERE kind = 'market' ORDER BY received_ms LIMIT 1")
            .await;
    let event = one("SELECT ticker FROM events ORDER BY ticker LIMIT 1").await;
    let series = one("SELECT ticker FROM series ORDER BY ticker LIMIT 1").await;
    let registry_market = one("SELECT ticker FROM markets ORDER BY ticker LIMIT 1").await;
    // The market with the longest history (its newest version is what the oracle checks).
    let versioned = one(
        "SELECT ticker FROM registry_versions WHERE kind = 'market' GROUP BY ticker ORDER BY count(*) DESC, ticker LIMIT 1",
    )
    .await;
    let market_cond = format!("market_ticker = '{market}'");
    let pair_copy = delete_one("orderbook_deltas", &pair_where, "occurrence DESC");
    let delta_altered = alter_one(
        "orderbook_deltas",
        &market_cond,
        "ts_ms DESC",
        "delta = delta + 100",
        "delta = delta - 100",
    );
    let lifecycle_deleted = delete_one(
        "lifecycle",
        &format!("ticker = '{lifecycle_ticker}' AND kind = 'market'"),
        "received_ms",
    );
    let snapshot_altered = alter_one(
        "orderbook_snapshots",
        &market_cond,
        "ts DESC",
        "yes = yes || '[[1000, 100]]'::jsonb",
        "yes = yes - (jsonb_array_length(yes) - 1)",
    );
    let last_delta_deleted = delete_one("orderbook_deltas", &market_cond, "ts_ms DESC");
    type Check = fn(&Verdict) -> bool;
    let cases: Vec<(&str, String, String, Check, String)> = vec![
        (
            "a trade deleted",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM trades WHERE trade_id = '{trade}'; DELETE FROM trades WHERE trade_id = '{trade}'"),
            "INSERT INTO trades SELECT * FROM saved; DROP TABLE saved".into(),
            |v| v.stream("trades").unwrap().silent == 1,
            trade.clone(),
        ),
        (
            "a trade re-priced",
            format!("UPDATE trades SET yes_price = yes_price + 10000, no_price = no_price - 10000 WHERE trade_id = '{trade}'"),
            format!("UPDATE trades SET yes_price = yes_price - 10000, no_price = no_price + 10000 WHERE trade_id = '{trade}'"),
            |v| {
                let t = v.stream("trades").unwrap();
                t.silent == 1 && t.unexpected == 1
            },
            trade.clone(),
        ),
        (
            "a trade duplicated",
            format!("INSERT INTO trades (trade_id, ts, market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id) \
                     SELECT trade_id, ts + interval '1 millisecond', market_ticker, yes_price, no_price, count, taker_outcome_side, taker_book_side, is_block_trade, ts_ms, source, gatherer_id FROM trades WHERE trade_id = '{trade}'"),
            format!("DELETE FROM trades WHERE trade_id = '{trade}' AND ts = (SELECT max(ts) FROM trades WHERE trade_id = '{trade}')"),
            |v| v.stream("trades").unwrap().duplicated == 1,
            trade.clone(),
        ),
        (
            "the first delta of a market deleted",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM orderbook_deltas WHERE market_ticker = '{market}' AND ts_ms = {first_ts}; \
                     DELETE FROM orderbook_deltas WHERE market_ticker = '{market}' AND ts_ms = {first_ts}"),
            "INSERT INTO orderbook_deltas SELECT * FROM saved; DROP TABLE saved".into(),
            |v| v.stream("orderbook_deltas").unwrap().silent >= 1,
            format!("{market}\", {first_ts}"),
        ),
        (
            "one copy of identical deltas deleted",
            pair_copy.0.clone(),
            pair_copy.1.clone(),
            |v| {
                let d = v.stream("orderbook_deltas").unwrap();
                d.silent == 1 && d.short_multiplicity == 1
            },
            format!("{}\", {}", p[0], p[1]),
        ),
        (
            "a delta altered",
            delta_altered.0.clone(),
            delta_altered.1.clone(),
            |v| {
                let d = v.stream("orderbook_deltas").unwrap();
                d.silent == 1 && d.unexpected == 1 && v.books.rebuilds_wrong >= 1
            },
            market.clone(),
        ),
        (
            "a ticker deleted",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM tickers WHERE {ticker_row}; DELETE FROM tickers WHERE {ticker_row}"),
            "INSERT INTO tickers SELECT * FROM saved; DROP TABLE saved".into(),
            |v| v.stream("tickers").unwrap().silent == 1,
            ticker_market.clone(),
        ),
        (
            "a ticker duplicated",
            format!("INSERT INTO tickers (market_ticker, ts, ts_ms, content_hash, occurrence, gatherer_key, body, gatherer_id) \
                     SELECT market_ticker, ts, ts_ms, content_hash, occurrence + 1000, gatherer_key, body, gatherer_id FROM tickers WHERE {ticker_row}"),
            "DELETE FROM tickers WHERE occurrence >= 1000".into(),
            |v| v.stream("tickers").unwrap().duplicated == 1,
            "held 2 times, published 1".into(),
        ),
        (
            "a lifecycle event deleted",
            lifecycle_deleted.0.clone(),
            lifecycle_deleted.1.clone(),
            |v| v.stream("lifecycle").unwrap().silent == 1,
            lifecycle_ticker.clone(),
        ),
        (
            "every snapshot's splice point shifted back 2 s",
            "UPDATE orderbook_snapshots SET last_delta_ts_ms = last_delta_ts_ms - 2000 WHERE last_delta_ts_ms IS NOT NULL".into(),
            "UPDATE orderbook_snapshots SET last_delta_ts_ms = last_delta_ts_ms + 2000 WHERE last_delta_ts_ms IS NOT NULL".into(),
            |v| v.books.snapshots_wrong > 0,
            "is not the exchange's book at its splice point".into(),
        ),
        (
            "a snapshot's book altered",
            snapshot_altered.0.clone(),
            snapshot_altered.1.clone(),
            |v| v.books.snapshots_wrong == 1,
            market.clone(),
        ),
        (
            "an empty REST snapshot of a book that is not",
            format!("INSERT INTO orderbook_snapshots (market_ticker, ts, gatherer_id, source, conn_epoch, sid, seq, received_ms, yes, no, last_delta_ts_ms) \
                     SELECT market_ticker, ts, gatherer_id, 'rest', 0, 0, 0, received_ms, '[]', '[]', NULL FROM orderbook_snapshots \
                     WHERE market_ticker = '{market}' ORDER BY ts DESC LIMIT 1"),
            "DELETE FROM orderbook_snapshots WHERE source = 'rest'".into(),
            |v| v.books.rest_wrong == 1,
            format!("REST snapshot of {market}"),
        ),
        (
            "a market's field changed",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM markets WHERE ticker = '{registry_market}'; UPDATE markets SET body = jsonb_set(body, '{{rules_primary}}', '\"changed\"') WHERE ticker = '{registry_market}'"),
            format!("DELETE FROM markets WHERE ticker = '{registry_market}'; INSERT INTO markets SELECT * FROM saved; DROP TABLE saved"),
            |v| v.registry.iter().any(|r| r.kind == "market" && r.wrong == 1),
            format!("market {registry_market}: rules_primary"),
        ),
        (
            "a market's newest version deleted from the history",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM registry_versions WHERE kind = 'market' AND ticker = '{versioned}' ORDER BY observed_ms DESC LIMIT 1; \
                     DELETE FROM registry_versions WHERE (kind, ticker, content_hash) IN (SELECT kind, ticker, content_hash FROM saved)"),
            "INSERT INTO registry_versions SELECT * FROM saved; DROP TABLE saved".into(),
            |v| v.registry.iter().any(|r| r.kind == "market" && r.wrong == 1),
            format!("market {versioned}"),
        ),
        (
            "an event's title changed",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM events WHERE ticker = '{event}'; UPDATE events SET body = jsonb_set(body, '{{title}}', '\"changed\"') WHERE ticker = '{event}'"),
            format!("DELETE FROM events WHERE ticker = '{event}'; INSERT INTO events SELECT * FROM saved; DROP TABLE saved"),
            |v| v.registry.iter().any(|r| r.kind == "event" && r.wrong == 1),
            format!("event {event}: title"),
        ),
        (
            "a series deleted",
            format!("CREATE TEMP TABLE saved AS SELECT * FROM series WHERE ticker = '{series}'; DELETE FROM series WHERE ticker = '{series}'"),
            "INSERT INTO series SELECT * FROM saved; DROP TABLE saved".into(),
            |v| v.registry.iter().any(|r| r.kind == "series" && r.wrong == 1),
            format!("series {series} is not in the registry"),
        ),
        (
            "a delta deleted behind a window every gatherer declared",
            format!("INSERT INTO gaps (gatherer_id, instance_id, gap_id, stream, market_ticker, from_ms, to_ms, reason, detail) \
                     SELECT g, 'injected', -1, 'orderbook_deltas', '', 0, 9000000000000, 'disconnect', 'injected' FROM UNNEST(ARRAY['g1','g2','g3']) g; \
                     {}", last_delta_deleted.0),
            format!("DELETE FROM gaps WHERE instance_id = 'injected'; {}", last_delta_deleted.1),
            |v| {
                let d = v.stream("orderbook_deltas").unwrap();
                d.silent == 1 && d.silent_behind_gap == 1
            },
            "lost downstream (a gatherer holds it, inside a declared window)".into(),
        ),
        (
            "a row in quarantine",
            "INSERT INTO quarantine (gatherer_id, stream, cursor, instance_id, record, summary, error, sqlstate) VALUES ('g1', 'trades', -7, 'injected', '\\x00', 'injected', 'injected', '23514')".into(),
            "DELETE FROM quarantine WHERE instance_id = 'injected'".into(),
            |v| v.quarantined == 1,
            "1 rows quarantined".into(),
        ),
    ];
    let clean = audit(&s).await;
    assert!(clean.ok, "before the injections:\n{}", clean.table());
    // The truth and the gatherers do not change from here on (settled, and only production is
    // changed): read once, they judge every change.
    let url = s.production_direct_url();
    let witnesses = audit::witnesses(
        &s.endpoints.sim_control,
        &url,
        &s.endpoints.gatherers,
        &settled,
    )
    .await
    .unwrap();
    let again = witnesses.judge(&url).await.unwrap();
    assert_eq!(
        (again.ok, again.table()),
        (clean.ok, clean.table()),
        "the same verdict from the witnesses taken once"
    );
    for (name, apply, undo, check, named) in &cases {
        sqlx::raw_sql(sqlx::AssertSqlSafe(apply.clone()))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = witnesses.judge(&url).await.unwrap();
        let table = v.table();
        eprintln!("{name}:\n{table}");
        assert_eq!(v.outcome, Outcome::Failed, "{name}:\n{table}");
        assert!(check(&v), "{name}:\n{table}");
        assert!(
            table.contains(named.as_str()),
            "{name} names {named:?}:\n{table}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(undo.clone()))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("undo {name}: {e}"));
    }
    // Everything undone: the audit passes again (the CLI, exit 0).
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(0), "after the undos:\n{out}");

    // The CLI on one loss: exit 1 and the stream's silent count.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE saved AS SELECT * FROM trades WHERE trade_id = '{trade}'; DELETE FROM trades WHERE trade_id = '{trade}'"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("AUDIT FAILED") && out.contains(&trade),
        "{out}"
    );
    sqlx::raw_sql("INSERT INTO trades SELECT * FROM saved; DROP TABLE saved")
        .execute(&mut *conn)
        .await
        .unwrap();

    // A configured gatherer that cannot be read: INCONCLUSIVE, exit 3, never PASSED.
    assert_eq!(s.terminate_gatherer(2).unwrap(), Some(0));
    let (code, out) = cli_audit(&s);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("AUDIT INCONCLUSIVE") && out.contains("gatherer g2"),
        "{out}"
    );
    drop(conn);
    pool.close().await;
    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    for (name, code) in codes {
        // g2 was stopped (exit 0) above.
        if name != "g2" {
            assert_eq!(code, Some(0), "{name} exits 0 on SIGTERM");
        }
    }
}
