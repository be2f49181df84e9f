//! Property-based fuzzing (proptest: random mutations from a fixed generator, no coverage
//! feedback; the coverage-guided libFuzzer targets are under fuzz/, run with `./dev fuzz`, too
//! long for CI) of every parser that takes input from outside:
//!
//! | target | input | property |
//! |---|---|---|
//! | `ws_frames` | WebSocket text frames | never panics; an error has a bounded label |
//! | `rest_bodies` | REST response bodies | never panics |
//! | `grpc_records` | gRPC records from a gatherer | validation never panics; what passes encodes |
//! | `config_files` | `gatherer.toml`, `deduplicator.toml` | never panics; errors are one line and never show a secret |
//! | `copy_round_trip` | rows for binary COPY | what PostgreSQL reads back is what was encoded |
//!
//! Inputs are mutated (bit flips, deletions, insertions of bytes and of JSON/TOML tokens,
//! truncations, splices of two seeds) from the committed corpus: shared/testdata/corpus (the
//! simulator's frames and REST replies, kalshi-api.md's examples) and deploy/*.toml.
//! CI runs `KALSHI_FUZZ_CASES` cases per target (default 2000; `copy_round_trip` a tenth, it
//! talks to a real PostgreSQL); run longer with e.g. `KALSHI_FUZZ_CASES=1000000 cargo nextest
//! run -p kalshi-e2e --test fuzz`. A failure is saved in tests/proptest-regressions/fuzz.txt and
//! replayed first on every later run: commit it with the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases(divisor: u32) -> u32 {
    let n: u32 = std::env::var("KALSHI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    (n / divisor).max(1)
}

fn config(divisor: u32) -> Config {
    Config {
        cases: cases(divisor),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz.txt"
        )))),
        ..Config::default()
    }
}

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no corpus in {dir}");
    seeds
}

/// One edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Token(usize, &'static str),
    Truncate(usize),
    Splice(usize, usize),
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "1e308",
    "0.000000001",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é\"",
    "\"💥\"",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\"",
    "=",
    "\n[",
    "\"\"\"",
    "'",
    "\\",
    "NaN",
    "\"0.5\"",
    "\"-0.00\"",
    "\"1.2345\"",
    // Long non-ASCII values: serde quotes them in its errors, which are cut to a length.
    LONG_UNICODE,
];

const LONG_UNICODE: &str = "\"ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\"";

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(i, t)| Edit::Token(i, t)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Splice(i, j)),
    ]
}

/// Applies `edits` to seed `pick` (a splice takes the tail of another seed).
fn mutate(seeds: &[Vec<u8>], pick: usize, edits: &[Edit]) -> Vec<u8> {
    let mut b = seeds[pick % seeds.len()].clone();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, x) if !b.is_empty() => {
                let n = b.len();
                b[i % n] ^= x;
            }
            Edit::Flip(..) => {}
            Edit::Delete(i, n) => {
                let s = at(*i, b.len()).min(b.len());
                let e = (s + n).min(b.len());
                b.drain(s..e);
            }
            Edit::Insert(i, bytes) => {
                let s = at(*i, b.len());
                b.splice(s..s, bytes.iter().copied());
            }
            Edit::Token(i, t) => {
                let s = at(*i, b.len());
                b.splice(s..s, t.bytes());
            }
            Edit::Truncate(i) => {
                let n = at(*i, b.len());
                b.truncate(n);
            }
            Edit::Splice(i, j) => {
                let other = &seeds[j % seeds.len()];
                let s = at(*i, b.len());
                let t = at(*j, other.len());
                b.truncate(s);
                b.extend_from_slice(&other[t..]);
            }
        }
    }
    b
}

const FRAME_LABELS: &[&str] = &[
    "malformed",
    "missing_type",
    "subscribed",
    "unsubscribed",
    "ok",
    "error",
    "orderbook_snapshot",
    "orderbook_delta",
    "trade",
    "ticker",
    "market_lifecycle_v2",
    "event_lifecycle",
    "other",
];

#[test]
fn every_seed_is_what_it_claims() {
    for s in corpus("shared/testdata/corpus/ws") {
        let text = String::from_utf8(s).unwrap();
        kalshi_shared::wire::ws::parse_frame(text.trim())
            .unwrap_or_else(|e| panic!("seed {text}: {e}"));
    }
    for s in corpus("shared/testdata/corpus/rest") {
        serde_json::from_slice::<serde_json::Value>(&s).unwrap();
    }
}

proptest! {
    #![proptest_config(config(1))]

    #[test]
    fn ws_frames(pick in any::<usize>(), edits in proptest::collection::vec(edit(), 0..6)) {
        let seeds = corpus("shared/testdata/corpus/ws");
        let bytes = mutate(&seeds, pick, &edits);
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = kalshi_shared::wire::ws::parse_frame(&text) {
            prop_assert!(FRAME_LABELS.contains(&e.label()), "label {}", e.label());
            prop_assert!(e.to_string().len() < 600, "unbounded error: {}", e.to_string().len());
        }
    }

    #[test]
    fn rest_bodies(pick in any::<usize>(), edits in proptest::collection::vec(edit(), 0..6)) {
        use kalshi_shared::wire::rest as r;
        let seeds = corpus("shared/testdata/corpus/rest");
        let b = mutate(&seeds, pick, &edits);
        let _ = serde_json::from_slice::<r::GetMarketsResponse>(&b);
        let _ = serde_json::from_slice::<r::GetTradesResponse>(&b);
        let _ = serde_json::from_slice::<r::GetEventsResponse>(&b);
        let _ = serde_json::from_slice::<r::GetSeriesListResponse>(&b);
        let _ = serde_json::from_slice::<r::GetMarketOrderbookResponse>(&b);
        let _ = serde_json::from_slice::<r::ErrorResponse>(&b);
    }
}

/// Valid records of every body, encoded as a gatherer sends them: the seeds of `grpc_records`.
fn record_seeds() -> Vec<Vec<u8>> {
    use kalshi_proto::gatherer::v1 as pb;
    use prost::Message as _;
    let origin = Some(pb::Origin {
        received_ms: 1_795_000_000_000,
        conn_epoch: 1,
        sid: 1,
        seq: 7,
    });
    let bodies = vec![
        pb::record::Body::Trade(pb::Trade {
            trade_id: "3592c9ff-388e-4497-9d0b-52267f7d2db0".into(),
            market_ticker: "KXFED-26JAN08-T3.00".into(),
            yes_price_micros: 520_000,
            no_price_micros: 480_000,
            count_centi: 19_800,
            taker_outcome_side: 2,
            taker_book_side: "ask".into(),
            ts_ms: 1_795_814_238_993,
            source: "ws".into(),
            origin,
            ..Default::default()
        }),
        pb::record::Body::Delta(pb::OrderbookDelta {
            market_ticker: "KXFED-26JAN08-T3.00".into(),
            price_micros: 520_000,
            delta_centi: -19_800,
            side: 1,
            ts_ms: 1_795_814_238_993,
            occurrence: 0,
            origin,
        }),
        pb::record::Body::Snapshot(pb::OrderbookSnapshot {
            market_ticker: "KXFED-26JAN08-T3.00".into(),
            source: "ws".into(),
            yes: vec![pb::Level {
                price_micros: 10_000,
                quantity_centi: 100,
            }],
            ..Default::default()
        }),
        pb::record::Body::Ticker(pb::Ticker {
            market_ticker: "KXFED-26JAN08-T3.00".into(),
            ts_ms: 1_795_814_238_993,
            body_json: "{\"price_dollars\":\"0.52\"}".into(),
            content_hash: "ab".repeat(16),
            ..Default::default()
        }),
        pb::record::Body::Lifecycle(pb::Lifecycle {
            kind: "market".into(),
            ticker: "KXFED-26JAN08-T3.00".into(),
            event_type: "activated".into(),
            body_json: "{}".into(),
            content_hash: "cd".repeat(16),
            ..Default::default()
        }),
        pb::record::Body::Registry(pb::RegistryVersion {
            kind: "market".into(),
            ticker: "KXFED-26JAN08-T3.00".into(),
            updated_ms: 1_795_814_238_000,
            observed_ms: 1_795_814_238_100,
            body_json: "{\"ticker\":\"KXFED-26JAN08-T3.00\"}".into(),
        }),
        pb::record::Body::Registry(pb::RegistryVersion {
            kind: "exchange".into(),
            ticker: "status".into(),
            updated_ms: 0,
            observed_ms: 1_795_814_238_100,
            body_json: "{\"exchange_active\":true,\"trading_active\":false}".into(),
        }),
        pb::record::Body::Gap(pb::Gap {
            id: 3,
            stream: 2,
            market_ticker: String::new(),
            from_ms: 1_795_814_238_000,
            to_ms: 1_795_814_239_000,
            reason: "seq_gap".into(),
            detail: "sid 1 seq 7 -> 9".into(),
        }),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            pb::Record {
                cursor: i as i64 + 1,
                body: Some(b),
            }
            .encode_to_vec()
        })
        .collect()
}

const GRPC_SEEDS: usize = 7;

proptest! {
    #![proptest_config(config(1))]

    /// What a hostile or broken gatherer could send: any bytes, decoded as a Record, then the
    /// deduplicator's validation for every stream; what passes must key, summarise and encode.
    #[test]
    fn grpc_records(pick in 0..GRPC_SEEDS, edits in proptest::collection::vec(edit(), 0..6)) {
        use deduplicator::records::{self as rec, Stream};
        use kalshi_proto::gatherer::v1 as pb;
        use prost::Message as _;
        let bytes = mutate(&record_seeds(), pick, &edits);
        let Ok(r) = pb::Record::decode(bytes.as_slice()) else {
            return Ok(());
        };
        let src = rec::Source { gatherer_id: "g1", instance_id: "i" };
        let _ = rec::summary(&r);
        for s in Stream::ALL {
            if rec::validate(s, &r).is_ok() {
                let _ = rec::key(s, &src, &r);
                let _ = rec::event_ms(&r);
                let mut e = rec::Encoder::new(s);
                e.push(&src, &r);
                prop_assert!(e.rows() <= 1);
                let _ = e.finish();
            }
        }
    }
}

/// The deploy/ examples, with a password in every database URL: the seeds of `config_files`.
fn config_seeds(prefix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for kind in ["reference", "sim", "production"] {
        let text =
            std::fs::read_to_string(root().join(format!("deploy/{prefix}.{kind}.toml"))).unwrap();
        let text = text
            .replace("postgres://postgres@", "postgres://postgres:hunter2secret@")
            .replace(
                "postgres://deduplicator@",
                "postgres://deduplicator:hunter2secret@",
            )
            .replace("postgres://kalshi@", "postgres://kalshi:hunter2secret@");
        out.push(text.into_bytes());
    }
    out
}

/// Whether every line holding the test password is a `database_url = ` line.
fn secret_only_in_urls(text: &[u8]) -> bool {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.contains("hunter2secret"))
        .all(|l| l.trim_start().starts_with("database_url = \"postgres"))
}

/// Loads `text` as a `T` file at `path` and validates it: a loaded config's Debug hides a
/// password that stayed in a database URL (a mutation can move it into a field that is not a
/// secret), and every error is one line without it.
fn check_config_file<T>(
    path: &Path,
    text: &[u8],
    validate: impl FnOnce(T) -> Result<(), kalshi_shared::config::ConfigError>,
) -> Result<(), TestCaseError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + Default + std::fmt::Debug,
{
    let only_in_urls = secret_only_in_urls(text);
    std::fs::write(path, text).unwrap();
    match kalshi_shared::config::load::<T>(Some(path), "FUZZ", Vec::new()) {
        Ok(f) => {
            let dbg = format!("{f:?}");
            prop_assert!(
                !only_in_urls || !dbg.contains("hunter2secret"),
                "Debug shows a password"
            );
            if let Err(e) = validate(f) {
                check_config_error(&e)?;
            }
        }
        Err(e) => check_config_error(&e)?,
    }
    Ok(())
}

fn check_config_error(e: &kalshi_shared::config::ConfigError) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.0.lines().count(), 1, "one line: {}", e.0);
    prop_assert!(
        !e.0.contains("hunter2secret"),
        "a password in an error: {}",
        e.0
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(1))]

    #[test]
    fn config_files(pick in 0..6usize, edits in proptest::collection::vec(edit(), 0..6)) {
        let dir = std::env::temp_dir().join(format!("kalshi-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        if pick < 3 {
            use gatherer::config::Validate as _;
            let text = mutate(&config_seeds("gatherer"), pick, &edits);
            check_config_file::<gatherer::config::FileConfig>(&path, &text, |f| f.validate().map(drop))?;
        } else {
            use deduplicator::config::Validate as _;
            let text = mutate(&config_seeds("deduplicator"), pick - 3, &edits);
            check_config_file::<deduplicator::config::FileConfig>(&path, &text, |f| f.validate().map(drop))?;
        }
    }
}

/// One row of every type the COPY encoder writes.
#[derive(Debug, Clone)]
struct Row {
    a: i16,
    b: i32,
    c: i64,
    d: Option<i64>,
    e: bool,
    f: String,
    g: Option<String>,
    h: Vec<u8>,
    i: serde_json::Value,
    j: i64,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Z0-9.-]{0,30}",
        "\\PC{0,200}",
        Just(String::new()),
        Just("é💥\u{fffd}\u{10ffff}".to_owned()),
        Just("a\u{0}b".to_owned()),
    ]
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as V;
    let leaf = prop_oneof![
        Just(V::Null),
        any::<bool>().prop_map(V::Bool),
        any::<i64>().prop_map(V::from),
        text().prop_map(V::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            proptest::collection::btree_map(
                prop_oneof!["[a-z_]{1,8}", Just("k\u{0}".to_owned())],
                inner,
                0..4
            )
            .prop_map(|m| V::Object(m.into_iter().collect())),
        ]
    })
}

fn row() -> impl Strategy<Value = Row> {
    (
        (
            any::<i16>(),
            any::<i32>(),
            any::<i64>(),
            any::<Option<i64>>(),
            any::<bool>(),
        ),
        (
            text(),
            proptest::option::of(text()),
            proptest::collection::vec(any::<u8>(), 0..64),
            json(),
            // timestamptz's range in ms from 4713 BC, up to where microseconds fit an i64
            // (year 294247; PostgreSQL's own limit, 294276, is beyond it).
            -210_866_803_200_000i64..9_223_372_036_854_775i64,
        ),
    )
        .prop_map(|((a, b, c, d, e), (f, g, h, i, j))| Row {
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
            j,
        })
}

/// `v` with U+0000 replaced by U+FFFD in every string and key.
fn without_nul(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as V;
    let t = |s: &str| s.replace('\0', "\u{fffd}");
    match v {
        V::String(s) => V::String(t(s)),
        V::Array(a) => V::Array(a.iter().map(without_nul).collect()),
        V::Object(m) => V::Object(m.iter().map(|(k, v)| (t(k), without_nul(v))).collect()),
        other => other.clone(),
    }
}

/// A row as PostgreSQL returns it (the timestamp as Unix milliseconds).
type ReadBack = (
    i16,
    i32,
    i64,
    Option<i64>,
    bool,
    String,
    Option<String>,
    Vec<u8>,
    serde_json::Value,
    i64,
);

/// Encodes `rows` with the project's COPY encoder, copies them into PostgreSQL and reads them
/// back: every value must come back as it went in.
#[test]
fn copy_round_trip() {
    use proptest::test_runner::TestRunner;
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt
        .block_on(sqlx::postgres::PgPool::connect(&pg.url()))
        .unwrap();
    rt.block_on(
        sqlx::query(
            "CREATE TABLE r (n int, a int2, b int4, c int8, d int8, e bool, f text, g text, \
         h bytea, i jsonb, j timestamptz)",
        )
        .execute(&pool),
    )
    .unwrap();
    let mut runner = TestRunner::new(config(10));
    let result = runner.run(&proptest::collection::vec(row(), 1..20), |rows| {
        let mut enc = kalshi_shared::pg::copy::CopyEncoder::new(11);
        for (n, r) in rows.iter().enumerate() {
            enc.row()
                .i32(n as i32)
                .i16(r.a)
                .i32(r.b)
                .i64(r.c)
                .opt_i64(r.d)
                .bool(r.e)
                .text(&r.f)
                .opt_text(r.g.as_deref())
                .bytes(&r.h)
                .jsonb(&r.i.to_string())
                .timestamptz_ms(r.j);
        }
        let payload = enc.finish();
        let back = rt.block_on(async {
            let mut c = pool.acquire().await.unwrap();
            sqlx::query("TRUNCATE r").execute(&mut *c).await.unwrap();
            let mut copy = c
                .copy_in_raw("COPY r FROM STDIN (FORMAT binary)")
                .await
                .unwrap();
            copy.send(payload.as_ref()).await.unwrap();
            copy.finish().await.map_err(|e| e.to_string())?;
            let rows: Vec<ReadBack> = sqlx::query_as(
                "SELECT a, b, c, d, e, f, g, h, i, \
                     (extract(epoch FROM j) * 1000)::int8 FROM r ORDER BY n",
            )
            .fetch_all(&mut *c)
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(rows)
        });
        let back = back.map_err(|e| TestCaseError::fail(format!("PostgreSQL refused: {e}")))?;
        prop_assert_eq!(back.len(), rows.len());
        // U+0000, which PostgreSQL cannot store in text or jsonb, comes back as U+FFFD.
        let t = |s: &str| s.replace('\0', "\u{fffd}");
        for (r, b) in rows.iter().zip(back) {
            prop_assert_eq!((r.a, r.b, r.c, r.d, r.e), (b.0, b.1, b.2, b.3, b.4));
            prop_assert_eq!(t(&r.f), b.5);
            prop_assert_eq!(r.g.as_deref().map(t), b.6);
            prop_assert_eq!(&r.h, &b.7);
            prop_assert_eq!(without_nul(&r.i), b.8);
            prop_assert_eq!(r.j, b.9);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The seed corpora of the coverage-guided targets under fuzz/ (`./dev fuzz`) that take binary
/// formats this code writes: gRPC pages, archive Parquet files and manifests, spill files. They
/// are made here by the writers themselves, so they stay in the real format as the code
/// changes: `KALSHI_FUZZ_WRITE_SEEDS=1` rewrites them; otherwise this checks that every
/// committed seed of every target still reads, so the fuzzers start from deep inside each
/// parser rather than at its first error.
#[test]
fn fuzz_seed_corpora_are_current() {
    let dir = root().join("fuzz/seeds");
    if std::env::var_os("KALSHI_FUZZ_WRITE_SEEDS").is_some() {
        write_binary_seeds(&dir);
    }
    let seeds = |target: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join(target))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        assert!(!v.is_empty(), "no seeds for {target}");
        v
    };
    use deduplicator::archive::{file, format, manifest};
    use kalshi_proto::gatherer::v1 as pb;
    use prost::Message as _;
    let mut pages = 0;
    for (name, s) in seeds("grpc_message") {
        let (which, bytes) = s.split_first().unwrap();
        if which & 1 == 1 {
            pb::StatusResponse::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            continue;
        }
        let page = pb::ReadResponse::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stream = deduplicator::records::Stream::ALL
            .into_iter()
            .find(|s| s.to_pb() as i32 == page.stream)
            .unwrap();
        for r in &page.records {
            deduplicator::records::validate(stream, r).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        pages += 1;
    }
    assert!(pages >= 6, "a page per record body");
    let scratch = std::env::temp_dir().join(format!("kalshi-seeds-{}.parquet", std::process::id()));
    let mut streams = std::collections::BTreeSet::new();
    for (name, s) in seeds("parquet_file") {
        let (which, bytes) = s.split_first().unwrap();
        let stream = format::ARCHIVED[usize::from(which & 0x0f) % format::ARCHIVED.len()];
        let version = u32::from(which >> 4) % format::SCHEMA_VERSION + 1;
        std::fs::write(&scratch, bytes).unwrap();
        let (rows, _) = file::read_groups(stream, version, &scratch, |_| Ok(()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(rows > 0, "{name}");
        streams.insert(stream.table());
    }
    let _ = std::fs::remove_file(&scratch);
    assert_eq!(
        streams.len(),
        format::ARCHIVED.len(),
        "a file of every archived stream"
    );
    for (name, s) in seeds("manifest") {
        let m: manifest::Manifest =
            serde_json::from_slice(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.total_rows() > 0, "{name}");
    }
    for (name, s) in seeds("spill_file") {
        let ids = gatherer::store::spill::cursors(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!ids.is_empty(), "{name}");
    }
    for (name, s) in seeds("pem_der") {
        let text = String::from_utf8_lossy(&s);
        if name.starts_with("rsa") {
            kalshi_shared::auth::Signer::from_pem("k", &s)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if text.contains("PRIVATE KEY") {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&s)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if text.contains("CERTIFICATE") {
            use rustls::pki_types::pem::PemObject as _;
            let cert = rustls::pki_types::CertificateDer::pem_slice_iter(&s)
                .next()
                .unwrap()
                .unwrap();
            kalshi_shared::x509::validity(&cert).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            kalshi_shared::x509::validity(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    for (name, s) in seeds("config_file") {
        let (which, text) = s.split_first().unwrap();
        let path = std::env::temp_dir().join(format!("kalshi-seeds-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        if which & 1 == 0 {
            // It loads (validation reads the files it names, relative to the repository).
            kalshi_shared::config::load::<gatherer::config::FileConfig>(
                Some(&path),
                "SEED",
                Vec::new(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            // It loads (validation reads the files it names, relative to the repository).
            kalshi_shared::config::load::<deduplicator::config::FileConfig>(
                Some(&path),
                "SEED",
                Vec::new(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Writes the binary seeds (see [`fuzz_seed_corpora_are_current`]).
fn write_binary_seeds(dir: &Path) {
    use deduplicator::archive::format::{self, Value};
    use deduplicator::archive::{file, manifest};
    use deduplicator::records::Stream;
    use kalshi_proto::gatherer::v1 as pb;
    use prost::Message as _;
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        std::fs::write(dir.join(target).join(name), bytes).unwrap();
    };
    // gRPC: one page per record body (its stream's), and a status.
    for (i, bytes) in record_seeds().iter().enumerate() {
        let r = pb::Record::decode(bytes.as_slice()).unwrap();
        let stream = Stream::ALL
            .into_iter()
            .find(|s| deduplicator::records::validate(*s, &r).is_ok())
            .unwrap();
        let page = pb::ReadResponse {
            stream: stream.to_pb() as i32,
            records: vec![r.clone(), r],
            head: 9,
            through: 9,
        };
        let mut out = vec![0u8];
        out.extend(page.encode_to_vec());
        put(
            "grpc_message",
            &format!("page-{i}-{}", stream.table()),
            &out,
        );
    }
    let status = pb::StatusResponse {
        gatherer_id: "g1".into(),
        instance_id: "5b1a".into(),
        streams: vec![pb::StreamStatus {
            stream: Stream::Trades.to_pb() as i32,
            head: 10,
            oldest: 1,
            retained_from_ms: 1_795_000_000_000,
            retention_ms: 86_400_000,
        }],
        ws_connections: 4,
        ws_connections_configured: 4,
        gaps_declared: 1,
        started_ms: 1_795_000_000_000,
        version: "0.1.0 (abc)".into(),
        ..Default::default()
    };
    let mut out = vec![1u8];
    out.extend(status.encode_to_vec());
    put("grpc_message", "status", &out);
    // Parquet: a small file of every archived stream at the current schema version, each
    // column given a value of its kind.
    for (i, stream) in format::ARCHIVED.into_iter().enumerate() {
        let cols = format::columns(stream);
        let props = format::properties(3, 2).unwrap();
        let mut w = file::FileWriter::new(stream, Vec::new(), props).unwrap();
        for n in 0..3i64 {
            let row = cols
                .iter()
                .map(|c| match c.kind {
                    format::Kind::Text => Value::Text(format!("KXFED-26JAN08-T3.0{n}")),
                    format::Kind::Json | format::Kind::Jsonb => {
                        Value::Text(format!("{{\"n\":{n},\"ticker\":\"KXFED\"}}"))
                    }
                    format::Kind::TsMs => Value::I64(1_795_814_238_993 + n),
                    format::Kind::I16 => Value::I16(1),
                    format::Kind::Bool => Value::Bool(n % 2 == 0),
                    format::Kind::Levels => Value::Levels(vec![(520_000, 19_800), (530_000, 100)]),
                    format::Kind::OptI64 | format::Kind::OptMicros | format::Kind::OptCenti
                        if n == 1 =>
                    {
                        Value::Null
                    }
                    _ => Value::I64(480_000 + n),
                })
                .collect();
            w.push(row);
            if w.group_full() {
                w.flush_group().unwrap();
            }
        }
        let bytes = w.finish().unwrap();
        let which = ((format::SCHEMA_VERSION as u8 - 1) << 4) | i as u8;
        let mut out = vec![which];
        out.extend(bytes);
        put("parquet_file", &format!("{}.parquet", stream.table()), &out);
    }
    // A manifest of a period with every stream, an uncovered window and a history.
    let mut m = manifest::new_manifest(1_795_814_220_000, 60_000);
    m.version = 2;
    m.streams = format::ARCHIVED
        .iter()
        .map(|s| manifest::StreamEntry {
            stream: s.table().to_owned(),
            key: Some(manifest::data_key(s.table(), 1_795_814_220_000)),
            rows: 3,
            bytes: 2048,
            min_time_ms: Some(1_795_814_220_001),
            max_time_ms: Some(1_795_814_279_999),
            file_sha256: Some("ab".repeat(32)),
            content_sha256: "cd".repeat(32),
        })
        .collect();
    m.uncovered = vec![manifest::UncoveredWindow {
        stream: "orderbook_deltas".into(),
        market: "KXFED-26JAN08-T3.00".into(),
        from_ms: 1_795_814_230_000,
        to_ms: 1_795_814_231_000,
        reasons: vec!["seq_gap".into()],
    }];
    m.declared_gaps = 1;
    m.history = vec![manifest::Previous {
        version: 1,
        streams: vec![("trades".into(), 2, "ef".repeat(32))],
    }];
    put(
        "manifest",
        "manifest.json",
        &serde_json::to_vec_pretty(&m).unwrap(),
    );
    // A spill file of trades as the writer spills them (binary COPY, the cursor first).
    use gatherer::store::rows::Row as _;
    let body = std::fs::read(root().join("shared/testdata/corpus/rest/trades.json")).unwrap();
    let trades: kalshi_shared::wire::rest::GetTradesResponse =
        serde_json::from_slice(&body).unwrap();
    let mut enc = kalshi_shared::pg::CopyEncoder::new(gatherer::store::rows::TradeRow::FIELDS);
    for (i, t) in trades.trades.iter().enumerate() {
        let row = gatherer::store::rows::TradeRow::from_rest(t, 1_795_814_238_993).unwrap();
        row.encode(&mut enc, 100 + i as i64, 1_795_814_238_993);
    }
    put("spill_file", "trades.copy", &enc.finish());
}
