//! A misbehaving gatherer next to a real one: a poison row (a price production's CHECK refuses)
//! lands in quarantine while its batch-mates commit; a malformed record is quarantined; a
//! record out of cursor order is skipped and counted; replies over the message limit shrink
//! the page size instead of crashing anything; an endpoint that answers as another gatherer is
//! not read. The real gatherer's data is complete throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::pin::Pin;
use std::time::Duration;

use deduplicator::config::GathererEndpoint;
use kalshi_e2e::world::*;
use kalshi_proto::gatherer::v1 as pb;
use sqlx::Row as _;
use tonic::{Request, Response, Status};

struct Fake {
    id: String,
    instance: String,
    trades: Vec<pb::Record>,
    tickers: Vec<pb::Record>,
    /// How long a Tail waits before sending what it holds.
    delay: Duration,
}

fn trade(cursor: i64, id: &str, yes: i64) -> pb::Record {
    trade_at(cursor, id, yes, 1_795_000_000_000 + cursor)
}

fn trade_at(cursor: i64, id: &str, yes: i64, ts_ms: i64) -> pb::Record {
    pb::Record {
        cursor,
        body: Some(pb::record::Body::Trade(pb::Trade {
            trade_id: id.into(),
            market_ticker: "FAKE-MKT".into(),
            yes_price_micros: yes,
            no_price_micros: 1_000_000 - yes.min(1_000_000),
            count_centi: 100,
            taker_outcome_side: pb::Side::Yes as i32,
            taker_book_side: "ask".into(),
            is_block_trade: false,
            ts_ms,
            source: "ws".into(),
            origin: None,
        })),
    }
}

type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl kalshi_proto::Gatherer for Fake {
    async fn read(
        &self,
        _r: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type TailStream = Stream;

    async fn tail(&self, r: Request<pb::TailRequest>) -> Result<Response<Stream>, Status> {
        let r = r.into_inner();
        let recs = if r.stream == pb::Stream::Trades as i32 {
            self.trades.clone()
        } else if r.stream == pb::Stream::Tickers as i32 {
            self.tickers.clone()
        } else {
            Vec::new()
        };
        let head = recs.iter().map(|x| x.cursor).max().unwrap_or(0);
        // The trades page is sent as the gatherer "stored" it, disorder included; tickers are
        // paged by the requested limit.
        let pending: Vec<pb::Record> = if r.stream == pb::Stream::Trades as i32 {
            if r.after == 0 { recs } else { Vec::new() }
        } else {
            recs.into_iter().filter(|x| x.cursor > r.after).collect()
        };
        let limit = r.limit.max(1) as usize;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = r.stream;
        let delay = self.delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for chunk in pending.chunks(limit) {
                let msg = pb::ReadResponse {
                    stream,
                    records: chunk.to_vec(),
                    head,
                    through: 0,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if tx
                    .send(Ok(pb::ReadResponse {
                        stream,
                        records: vec![],
                        head,
                        through: 0,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let heads = [
            (pb::Stream::Trades, self.trades.len() as i64),
            (pb::Stream::Tickers, self.tickers.len() as i64),
        ];
        Ok(Response::new(pb::StatusResponse {
            gatherer_id: self.id.clone(),
            instance_id: self.instance.clone(),
            streams: heads
                .iter()
                .map(|(s, h)| pb::StreamStatus {
                    stream: *s as i32,
                    head: *h,
                    oldest: 1,
                    retained_from_ms: 0,
                    retention_ms: 0,
                })
                .collect(),
            ..Default::default()
        }))
    }
}

async fn serve(fake: Fake) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let svc = kalshi_proto::GathererServer::new(fake).max_encoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_gatherer_cannot_stall_crash_or_corrupt_production() {
    let w = World::start(431, 20, 1).await;
    let bad_trade_body = pb::Record {
        cursor: 6,
        body: Some(pb::record::Body::Delta(pb::OrderbookDelta {
            market_ticker: "FAKE-MKT".into(),
            ts_ms: 5,
            side: pb::Side::Yes as i32,
            price_micros: 10_000,
            delta_centi: 100,
            occurrence: 0,
            origin: None,
        })),
    };
    let big = "x".repeat(100_000);
    let fake = Fake {
        id: "gbad".into(),
        instance: "bad-instance-1".into(),
        trades: vec![
            trade(1, "fake-1", 500_000),
            trade(2, "fake-2", 510_000),
            trade(3, "fake-poison", 2_000_000), // $2.00: production's CHECK refuses it
            trade(4, "fake-4", 520_000),
            trade(5, "fake-5", 530_000),
            bad_trade_body,                    // a delta in the trades stream
            trade(4, "fake-4-again", 520_000), // backwards cursor
            trade(7, "fake-7", 540_000),
        ],
        tickers: (1..=10)
            .map(|i| pb::Record {
                cursor: i,
                body: Some(pb::record::Body::Ticker(pb::Ticker {
                    market_ticker: "FAKE-MKT".into(),
                    ts_ms: 1_795_000_000_000 + i,
                    body_json: format!("{{\"pad\":\"{big}\",\"i\":{i}}}"),
                    content_hash: format!("h{i}"),
                    occurrence: 0,
                    origin: None,
                })),
            })
            .collect(),
        delay: Duration::ZERO,
    };
    let bad = serve(fake).await;
    let impostor = serve(Fake {
        id: "g-someone-else".into(),
        instance: "x".into(),
        trades: vec![trade(1, "impostor-1", 500_000)],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let mut file = w.dedup_file(&w.prod.url());
    file.gatherers.push(GathererEndpoint {
        id: "gbad".into(),
        endpoint: bad,
        server_name: None,
    });
    file.gatherers.push(GathererEndpoint {
        id: "g9".into(),
        endpoint: impostor,
        server_name: None,
    });
    // 4 tickers of ~100 kB do not fit in one message; one does.
    file.sources.max_message_bytes = 256 * 1024;
    let d = start_dedup(file).await;
    let pool = pool(&w.prod.url()).await;

    traffic(&w, 300, 10.0).await;
    w.settle(Duration::from_millis(1500)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = prod_cursors(&pool).await;
        if c.get(&("gbad".into(), "trades".into()))
            .is_some_and(|x| x.0 == 7)
            && c.get(&("gbad".into(), "tickers".into()))
                .is_some_and(|x| x.0 == 10)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fake gatherer's cursors never reached its heads: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Batch-mates of the poison row committed; the poison and the malformed record are in
    // quarantine with their errors; the backwards record was skipped.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT trade_id FROM trades WHERE gatherer_id = 'gbad' ORDER BY trade_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ids, vec!["fake-1", "fake-2", "fake-4", "fake-5", "fake-7"]);
    let q = sqlx::query("SELECT gatherer_id, stream, cursor, summary, error, sqlstate FROM quarantine ORDER BY cursor")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(q.len(), 2, "two quarantined rows");
    assert_eq!(
        (
            q[0].get::<String, _>(0),
            q[0].get::<String, _>(1),
            q[0].get::<i64, _>(2)
        ),
        ("gbad".into(), "trades".into(), 3)
    );
    assert!(q[0].get::<String, _>(3).contains("fake-poison"));
    assert_eq!(
        q[0].get::<Option<String>, _>(5).as_deref(),
        Some("23514"),
        "check violation"
    );
    assert_eq!(q[1].get::<i64, _>(2), 6);
    assert!(
        q[1].get::<String, _>(4)
            .contains("a delta record in the trades stream"),
        "{}",
        q[1].get::<String, _>(4)
    );
    // The quarantined record is kept whole: it decodes back to what the gatherer sent.
    let raw: Vec<u8> = sqlx::query_scalar("SELECT record FROM quarantine WHERE cursor = 3")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rec = <pb::Record as prost::Message>::decode(raw.as_slice()).unwrap();
    assert!(
        matches!(rec.body, Some(pb::record::Body::Trade(t)) if t.yes_price_micros == 2_000_000)
    );

    // Every oversized ticker arrived through smaller pages.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tickers WHERE gatherer_id = 'gbad'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 10);
    // The impostor was never read.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM trades WHERE trade_id LIKE 'impostor%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    let m = dedup_metrics(&d).await;
    assert_eq!(metric_sum(&m, "dedup_quarantined_total"), 2.0);
    assert_eq!(
        metric_line(&m, "dedup_invalid_records_total{gatherer=\"gbad\"}"),
        2.0,
        "malformed + out of order"
    );
    assert!(
        metric_line(
            &m,
            "dedup_source_errors_total{gatherer=\"gbad\",kind=\"oversize\"}"
        ) >= 1.0
    );
    assert!(
        metric_line(
            &m,
            "dedup_source_errors_total{gatherer=\"g9\",kind=\"identity\"}"
        ) >= 1.0
    );
    let (code, h) = dedup_health(d.http_addr).await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["gatherers"]["g9"], "wrong_identity");
    assert_eq!(h["gatherers"]["g1"], "connected");

    // The real gatherer's data is exact; the fake's rows are the only extra ones.
    sqlx::query("DELETE FROM trades WHERE gatherer_id = 'gbad'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tickers WHERE gatherer_id = 'gbad'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM quarantine")
        .execute(&pool)
        .await
        .unwrap();
    assert_exact(&w, &pool).await;
    d.stop().await.unwrap();
}

/// One gatherer's copy of a record is refused (a corrupt price), another's is valid: the valid
/// copy is committed, whether it arrives in the same batch as the refused one or later, and
/// the refused copy is quarantined. A record is committed if any copy of it is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_twin_of_a_quarantined_record_is_committed() {
    let w = World::start(433, 6, 1).await;
    let ts = 1_795_000_000_000;
    // ga: corrupt copies of both; gb: valid copies, twin-b at once (same batch as ga's),
    // twin-a 1.5 s later (after ga's copy was quarantined).
    let ga = serve(Fake {
        id: "ga".into(),
        instance: "ga-1".into(),
        trades: vec![
            trade_at(1, "twin-a", 2_000_000, ts + 1),
            trade_at(2, "twin-b", 2_000_000, ts + 2),
        ],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let gb_now = serve(Fake {
        id: "gb".into(),
        instance: "gb-1".into(),
        trades: vec![trade_at(1, "twin-b", 500_000, ts + 2)],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let gc_later = serve(Fake {
        id: "gc".into(),
        instance: "gc-1".into(),
        trades: vec![trade_at(1, "twin-a", 500_000, ts + 1)],
        tickers: vec![],
        delay: Duration::from_millis(1500),
    })
    .await;
    let mut file = w.dedup_file(&w.prod.url());
    for (id, endpoint) in [("ga", ga), ("gb", gb_now), ("gc", gc_later)] {
        file.gatherers.push(GathererEndpoint {
            id: id.into(),
            endpoint,
            server_name: None,
        });
    }
    let d = start_dedup(file).await;
    let pool = pool(&w.prod.url()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = prod_cursors(&pool).await;
        let at = |g: &str, n: i64| {
            c.get(&(g.into(), "trades".into()))
                .is_some_and(|x| x.0 == n)
        };
        if at("ga", 2) && at("gb", 1) && at("gc", 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cursors never reached the fakes' heads: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT trade_id, yes_price, gatherer_id FROM trades WHERE trade_id LIKE 'twin-%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("twin-a".to_owned(), 500_000, "gc".to_owned()),
            ("twin-b".to_owned(), 500_000, "gb".to_owned()),
        ],
        "the valid copies are committed"
    );
    let q: Vec<(String, i64)> =
        sqlx::query_as("SELECT gatherer_id, cursor FROM quarantine ORDER BY cursor")
            .fetch_all(&pool)
            .await
            .unwrap();
    // ga's twin-a was refused before gc's copy existed; ga's twin-b is quarantined too unless
    // gb's valid copy was first in the batch (then ga's is a duplicate, never tried).
    assert!(q.contains(&("ga".to_owned(), 1)), "{q:?}");
    assert!(q.iter().all(|(g, _)| g == "ga"), "{q:?}");
    d.stop().await.unwrap();
}

/// A fake gatherer `id` holding six trades `<prefix>-1..=6`, beside the world's real one: the
/// deduplicator's configuration reading both.
async fn with_six_trades(w: &World, id: &str, prefix: &str) -> deduplicator::config::FileConfig {
    let fake = serve(Fake {
        id: id.into(),
        instance: format!("{id}-1"),
        trades: (1..=6)
            .map(|i| trade(i, &format!("{prefix}-{i}"), 500_000))
            .collect(),
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let mut file = w.dedup_file(&w.prod.url());
    file.gatherers.push(GathererEndpoint {
        id: id.into(),
        endpoint: fake,
        server_name: None,
    });
    file
}

/// Errors that are not a row's fault never quarantine anything, even when only one row meets
/// them: an internal error, a refused privilege, a broken disk, a lock not available (XX000,
/// 42501, 58030, 55P03, each raised here by a trigger for one trade). The stream stalls with
/// its cursor unmoved, `dedup_sink_stalled` says so and the stall is counted by SQLSTATE
/// class; once the cause is gone every row commits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_are_not_the_rows_fault_stall_the_stream_and_never_quarantine() {
    let w = World::start(434, 4, 1).await;
    let file = with_six_trades(&w, "gx", "odd").await;
    let gx_trades = |c: &std::collections::HashMap<(String, String), (i64, String)>| {
        c.get(&("gx".into(), "trades".into())).map(|x| x.0)
    };
    // Production exists (migrated) before the fault is armed.
    let d = start_dedup(file.clone()).await;
    let pool = pool(&w.prod.url()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gx_trades(&prod_cursors(&pool).await) != Some(6) {
        assert!(std::time::Instant::now() < deadline, "first merge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop().await.unwrap();
    // Counters live as long as the process: each stall adds one to its class.
    let mut stalls: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for (code, class) in [
        ("XX000", "server"),
        ("42501", "refused"),
        ("58030", "server"),
        ("55P03", "server"),
    ] {
        sqlx::query("DELETE FROM trades WHERE gatherer_id = 'gx'")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM sync_cursors WHERE gatherer_id = 'gx'")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION refuse_odd_3() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.trade_id = 'odd-3' THEN RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = '{code}'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_odd_3 BEFORE INSERT ON trades FOR EACH ROW EXECUTE FUNCTION refuse_odd_3();"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let d = start_dedup(file.clone()).await;
        // Stalled: long past the old bisect-after-three-tries, nothing of gx's batch is in,
        // its cursor has not moved, nothing is quarantined, and the gauge says so.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = dedup_metrics(&d).await;
            if metric_line(&m, "dedup_sink_stalled{stream=\"trades\"}") == 1.0 {
                let want = stalls.entry(class).or_default();
                *want += 1.0;
                assert_eq!(
                    metric_line(
                        &m,
                        &format!("dedup_sink_stalls_total{{stream=\"trades\",class=\"{class}\"}}")
                    ),
                    *want,
                    "{code}: {m}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{code}: no stall shown"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(gx_trades(&prod_cursors(&pool).await), None, "{code}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM trades WHERE gatherer_id = 'gx'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{code}: the batch is one transaction");
        let q: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(q, 0, "{code}: nothing quarantined");
        // The cause fixed: everything commits by itself. (The DDL takes the table's partitions
        // and the table in an order that can deadlock with a merge in flight; it is retried.)
        let mut tries = 0;
        while let Err(e) =
            sqlx::raw_sql("DROP TRIGGER refuse_odd_3 ON trades; DROP FUNCTION refuse_odd_3();")
                .execute(&pool)
                .await
        {
            tries += 1;
            assert!(
                tries < 5 && kalshi_shared::pg::sqlstate(&e).as_deref() == Some("40P01"),
                "{e}"
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while gx_trades(&prod_cursors(&pool).await) != Some(6) {
            assert!(
                std::time::Instant::now() < deadline,
                "{code}: no resume after the fix"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT trade_id FROM trades WHERE gatherer_id = 'gx' ORDER BY trade_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            ids,
            (1..=6).map(|i| format!("odd-{i}")).collect::<Vec<_>>(),
            "{code}"
        );
        let m = dedup_metrics(&d).await;
        assert_eq!(
            metric_line(&m, "dedup_sink_stalled{stream=\"trades\"}"),
            0.0
        );
        assert_eq!(metric_sum(&m, "dedup_quarantined_total"), 0.0);
        d.stop().await.unwrap();
    }
}

/// `deduplicator quarantine list|replay`: a row refused for its data (a CHECK violation
/// raised here for one trade) is listed with its SQLSTATE; replayed while the cause is still
/// there it is refused again (exit 3) and stays; once the cause is fixed a replay inserts it
/// (exit 0) and a second replay changes nothing. A quarantined copy of a row production
/// already holds is marked `already_present`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_list_and_replay_put_refused_rows_back_once_the_cause_is_fixed() {
    let w = World::start(435, 4, 1).await;
    let file = with_six_trades(&w, "gq", "q").await;
    let pool = pool(&w.prod.url()).await;
    // Production migrated first (the fault needs the table), with nothing of gq yet.
    let mut bare = file.clone();
    bare.gatherers.retain(|g| g.id != "gq");
    start_dedup(bare).await.stop().await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_q_3() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.trade_id = 'q-3' THEN RAISE EXCEPTION 'count too large' USING ERRCODE = '23514'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_q_3 BEFORE INSERT ON trades FOR EACH ROW EXECUTE FUNCTION refuse_q_3();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let d = start_dedup(file.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while prod_cursors(&pool)
        .await
        .get(&("gq".into(), "trades".into()))
        .is_none_or(|x| x.0 != 6)
    {
        assert!(std::time::Instant::now() < deadline, "merge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop().await.unwrap();
    // A second quarantined copy: of q-1, which production holds.
    sqlx::query(
        "INSERT INTO quarantine (gatherer_id, stream, cursor, instance_id, record, summary, error, sqlstate) \
         SELECT gatherer_id, stream, 1, instance_id, $1, 'a copy of q-1', 'test', '23514' FROM quarantine LIMIT 1",
    )
    .bind(prost::Message::encode_to_vec(&trade(1, "q-1", 500_000)))
    .execute(&pool)
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("kalshi-quarantine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("dedup.toml");
    std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(dedup_bin())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&["quarantine", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("2 quarantined rows"), "{text}");
    assert!(
        text.contains("gq trades cursor 3 sqlstate 23514") && text.contains("count too large"),
        "{text}"
    );
    // Replayed before the fix: refused again, kept, exit 3.
    let (code, text) = run(&["quarantine", "replay", "--stream", "trades"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("1 already present, 1 refused again"),
        "{text}"
    );
    // Fixed: one replay inserts it; a second has nothing left to do.
    sqlx::raw_sql("DROP TRIGGER refuse_q_3 ON trades; DROP FUNCTION refuse_q_3();")
        .execute(&pool)
        .await
        .unwrap();
    let (code, text) = run(&["quarantine", "replay"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("replayed 1 rows: 1 inserted"), "{text}");
    let (code, text) = run(&["quarantine", "replay"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("replayed 0 rows"), "{text}");
    let (_, text) = run(&["quarantine", "list"]);
    assert!(text.starts_with("0 quarantined rows"), "{text}");
    let (_, text) = run(&["quarantine", "list", "--all"]);
    assert!(
        text.contains("(replayed: inserted)") && text.contains("(replayed: already_present)"),
        "{text}"
    );
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT trade_id FROM trades WHERE gatherer_id = 'gq' ORDER BY trade_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ids, (1..=6).map(|i| format!("q-{i}")).collect::<Vec<_>>());
    // The oracle counts only what is still refused.
    let held = kalshi_testkit::held::Held::from_production(&pool)
        .await
        .unwrap();
    assert!(held.quarantined.is_empty(), "{:?}", held.quarantined);
    // A bad stream name is a usage error.
    let (code, _) = run(&["quarantine", "list", "--stream", "nope"]);
    assert_eq!(code, Some(64));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A legacy WebSocket trade carries whole seconds (`ts`), REST milliseconds: one trade seen
/// both ways by two gatherers is one production row, whether the copies meet in one run
/// (the key cache) or across a restart of the deduplicator (the merge itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_in_seconds_and_in_milliseconds_is_one_production_row() {
    let w = World::start(434, 4, 1).await;
    let s = 1_795_000_123_000;
    let ga = serve(Fake {
        id: "ga".into(),
        instance: "ga-1".into(),
        trades: vec![
            trade_at(1, "legacy-1", 400_000, s),
            trade_at(2, "legacy-2", 400_000, s + 1000),
        ],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let gb = serve(Fake {
        id: "gb".into(),
        instance: "gb-1".into(),
        trades: vec![trade_at(1, "legacy-1", 400_000, s + 437)],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let gc = serve(Fake {
        id: "gc".into(),
        instance: "gc-1".into(),
        trades: vec![
            trade_at(1, "legacy-2", 400_000, s + 1000 + 999),
            trade_at(2, "other-id", 400_000, s + 1000),
        ],
        tickers: vec![],
        delay: Duration::ZERO,
    })
    .await;
    let pool = pool(&w.prod.url()).await;
    let wait_cursor = |g: &'static str, n: i64| {
        let pool = pool.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let c = prod_cursors(&pool).await;
                if c.get(&(g.into(), "trades".into()))
                    .is_some_and(|x| x.0 == n)
                {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{g} never reached {n}: {c:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // One run: ga and gb.
    let mut file = w.dedup_file(&w.prod.url());
    for (id, endpoint) in [("ga", ga.clone()), ("gb", gb)] {
        file.gatherers.push(GathererEndpoint {
            id: id.into(),
            endpoint,
            server_name: None,
        });
    }
    let d = start_dedup(file).await;
    wait_cursor("ga", 2).await;
    wait_cursor("gb", 1).await;
    d.stop().await.unwrap();
    // A fresh deduplicator (empty key cache) reads gc's millisecond copy of legacy-2.
    let mut file = w.dedup_file(&w.prod.url());
    for (id, endpoint) in [("ga", ga), ("gc", gc)] {
        file.gatherers.push(GathererEndpoint {
            id: id.into(),
            endpoint,
            server_name: None,
        });
    }
    let d = start_dedup(file).await;
    wait_cursor("gc", 2).await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT trade_id, ts_ms FROM trades WHERE market_ticker = 'FAKE-MKT' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0].0, "legacy-1");
    assert!(rows[0].1 == s || rows[0].1 == s + 437, "{rows:?}");
    assert_eq!(
        rows[1],
        ("legacy-2".to_owned(), s + 1000),
        "the first copy stays"
    );
    assert_eq!(
        rows[2],
        ("other-id".to_owned(), s + 1000),
        "another id is another trade"
    );
    d.stop().await.unwrap();
}
