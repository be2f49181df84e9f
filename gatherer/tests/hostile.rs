//! Hostile peers against the `gatherer` binary, each bounded, counted, survived, with the
//! process's peak RSS measured (`VmHWM`, reset before each case through `clear_refs`):
//! - an exchange (REST and WebSocket, one front in place of the simulator) that sends bodies
//!   over the limit, endless chunked bodies, slow bodies, compressed bodies, frames of 1 GiB,
//!   endless fragments, slow fragments, a compression bomb and invalid UTF-8; afterwards the
//!   gatherer takes the real simulator's data exactly;
//! - gRPC clients opening hundreds of Tail streams that never read, and absurd limits;
//! - slowloris clients on `/health` and `/metrics`.
//!
//! Each case prints its figures (`--no-capture` shows them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gatherer::config::FileConfig;
use kalshi_proto::gatherer::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_gatherer");
const MIB: f64 = 1024.0 * 1024.0;
/// What a hostile server sends at most, were the gatherer to take it all.
const GIB: u64 = 1 << 30;

/// The gatherer binary in its own process, so its memory is its own.
struct Bin {
    child: Child,
    pid: i32,
    health: u16,
    metrics: u16,
    api: u16,
    log: PathBuf,
}

impl Bin {
    fn start(name: &str, mut file: FileConfig) -> Bin {
        let (health, metrics, api) = (free_port(), free_port(), free_port());
        file.http.listen = format!("127.0.0.1:{health}").parse().unwrap();
        file.http.metrics_listen = format!("127.0.0.1:{metrics}").parse().unwrap();
        file.api.listen = format!("127.0.0.1:{api}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!("gatherer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("gatherer.toml");
        std::fs::write(&cfg, toml::to_string(&file).unwrap()).unwrap();
        let log = dir.join("stderr.log");
        let err = std::fs::File::create(&log).unwrap();
        let child = kalshi_testkit::process::spawn_tied(std::path::Path::new(BIN), |c| {
            c.arg("--config")
                .arg(&cfg)
                .env("GATHERER__LOG__LEVEL", "info")
                .stdout(Stdio::null())
                .stderr(err);
        })
        .unwrap();
        let pid = child.id() as i32;
        Bin {
            child,
            pid,
            health,
            metrics,
            api,
            log,
        }
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The sum of `name`'s series carrying every one of `labels`, in any order.
    async fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let page = self.metrics().await;
        page.lines()
            .filter_map(|l| {
                let (series, v) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
                let set = rest.strip_suffix('}')?;
                (n == name
                    && labels
                        .iter()
                        .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\""))))
                .then(|| v.parse::<f64>().ok())?
            })
            .sum()
    }

    async fn healthy(&self) -> bool {
        match reqwest::get(format!("http://127.0.0.1:{}/health", self.health)).await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|h| h["status"] == "healthy"),
            Err(_) => false,
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the gatherer exited:\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A `/proc/<pid>/status` figure in MiB (`VmRSS:`, `VmHWM:`).
    fn mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").unwrap();
    }

    async fn client(&self) -> kalshi_proto::GathererClient<tonic::transport::Channel> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.api))
            .unwrap()
            .connect()
            .await
            .unwrap();
        kalshi_proto::GathererClient::new(ch).max_decoding_message_size(64 << 20)
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the hostile exchange --------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    Honest,
    /// `content-length: 1 GiB`, then bytes as fast as the socket takes them.
    HugeDeclared,
    /// Chunked, never ending.
    EndlessChunked,
    /// One byte every 100 ms.
    SlowBody,
    /// A deflate body that would inflate to 64 MiB, labelled `content-encoding: deflate`.
    Compressed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ws {
    Honest,
    /// A text frame declaring 1 GiB, then its bytes.
    HugeFrame,
    /// 64 KiB continuation fragments, never final.
    EndlessFragments,
    /// One-byte fragments every 100 ms, never final.
    SlowFragments,
    /// permessage-deflate claimed in the handshake (never offered), then a compressed frame
    /// inflating to 64 MiB.
    CompressionBomb,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
}

/// How a hostile connection ended: the bytes the gatherer's socket took before it cut.
#[derive(Debug)]
struct Done {
    case: String,
    sent: u64,
    lasted: Duration,
}

/// In place of the exchange: REST and WebSocket on one port, hostile by mode, otherwise a
/// byte pipe to the simulator.
struct Front {
    addr: SocketAddr,
    rest: Arc<Mutex<Rest>>,
    ws: Arc<Mutex<Ws>>,
    /// Honest WebSocket pipes, to cut when a hostile case begins.
    honest_ws: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    done: tokio::sync::Mutex<mpsc::UnboundedReceiver<Done>>,
}

impl Front {
    async fn start(sim: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rest = Arc::new(Mutex::new(Rest::Honest));
        let ws = Arc::new(Mutex::new(Ws::Honest));
        let honest_ws = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (r, w, h) = (rest.clone(), ws.clone(), honest_ws.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (r, w, h, tx) = (r.clone(), w.clone(), h.clone(), tx.clone());
                let task = tokio::spawn(async move {
                    let _ = serve(conn, sim, r, w, h, tx).await;
                });
                drop(task);
            }
        });
        Front {
            addr,
            rest,
            ws,
            honest_ws,
            done: tokio::sync::Mutex::new(rx),
        }
    }

    fn set_rest(&self, m: Rest) {
        *self.rest.lock().unwrap() = m;
    }

    fn set_ws(&self, m: Ws) {
        *self.ws.lock().unwrap() = m;
        for h in self.honest_ws.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// The first connection of `case` that ended.
    async fn ended(&self, case: &str) -> Done {
        let mut rx = self.done.lock().await;
        loop {
            let d = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {case} connection ended within 60 s"))
                .unwrap();
            if d.case == case {
                return d;
            }
        }
    }
}

async fn serve(
    mut conn: TcpStream,
    sim: SocketAddr,
    rest: Arc<Mutex<Rest>>,
    ws: Arc<Mutex<Ws>>,
    honest_ws: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    done: mpsc::UnboundedSender<Done>,
) -> std::io::Result<()> {
    let head = read_head(&mut conn).await?;
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-key:"))
        .map(|k| {
            // The key as sent (case matters).
            let raw = String::from_utf8_lossy(&head);
            raw.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("sec-websocket-key"))
                        .map(|(_, v)| v.trim().to_owned())
                })
                .unwrap_or_else(|| k.trim().to_owned())
        });
    match key {
        Some(key) => {
            let mode = *ws.lock().unwrap();
            if mode == Ws::Honest {
                let pipe = tokio::spawn(pipe(conn, sim, head));
                honest_ws.lock().unwrap().push(pipe.abort_handle());
                return Ok(());
            }
            let d = hostile_ws(conn, mode, &key).await;
            let _ = done.send(d);
        }
        None => {
            let mode = *rest.lock().unwrap();
            if mode == Rest::Honest {
                return pipe(conn, sim, head).await;
            }
            let d = hostile_rest(conn, mode).await;
            let _ = done.send(d);
        }
    }
    Ok(())
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

async fn pipe(mut conn: TcpStream, sim: SocketAddr, head: Vec<u8>) -> std::io::Result<()> {
    let mut up = TcpStream::connect(sim).await?;
    up.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    Ok(())
}

/// Writes `chunks()` until the peer is gone or `cap` bytes went; reads and drops what the
/// peer sends meanwhile.
async fn flood(
    conn: TcpStream,
    preamble: Vec<u8>,
    cap: u64,
    pace: Option<Duration>,
    mut chunk: impl FnMut() -> Vec<u8>,
) -> u64 {
    let (mut rd, mut wr) = conn.into_split();
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = gone_tx.send(());
    });
    if wr.write_all(&preamble).await.is_err() {
        return 0;
    }
    let mut sent = 0u64;
    while sent < cap {
        let c = chunk();
        tokio::select! {
            r = wr.write_all(&c) => if r.is_err() { break },
            _ = &mut gone => break,
        }
        sent += c.len() as u64;
        if let Some(p) = pace {
            tokio::select! {
                _ = tokio::time::sleep(p) => {}
                _ = &mut gone => break,
            }
        }
    }
    sent
}

/// Sends `preamble`, then waits (at most 30 s) for the peer to close.
async fn say_and_wait(conn: TcpStream, preamble: Vec<u8>) -> u64 {
    let (mut rd, mut wr) = conn.into_split();
    let _ = wr.write_all(&preamble).await;
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    preamble.len() as u64
}

async fn hostile_rest(conn: TcpStream, mode: Rest) -> Done {
    let t = Instant::now();
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    let sent = match mode {
        Rest::HugeDeclared => {
            let head = format!("{ok}content-length: {GIB}\r\n\r\n").into_bytes();
            flood(conn, head, GIB, None, || vec![b' '; 64 * 1024]).await
        }
        Rest::EndlessChunked => {
            let head = format!("{ok}transfer-encoding: chunked\r\n\r\n").into_bytes();
            flood(conn, head, GIB, None, || {
                let mut c = b"10000\r\n".to_vec();
                c.extend(std::iter::repeat_n(b' ', 0x10000));
                c.extend_from_slice(b"\r\n");
                c
            })
            .await
        }
        Rest::SlowBody => {
            let head = format!("{ok}content-length: 100000\r\n\r\n[").into_bytes();
            flood(conn, head, 600, Some(Duration::from_millis(100)), || {
                b" ".to_vec()
            })
            .await
        }
        Rest::Compressed => {
            let body = deflate_zeros(64 << 20);
            let mut out = format!(
                "{ok}content-encoding: deflate\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            say_and_wait(conn, out).await
        }
        Rest::Honest => unreachable!(),
    };
    Done {
        case: format!("{mode:?}"),
        sent,
        lasted: t.elapsed(),
    }
}

/// A server frame header (unmasked).
fn frame_header(fin: bool, rsv1: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    if len < 126 {
        h.push(len as u8);
    } else if len <= 0xFFFF {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h
}

async fn hostile_ws(conn: TcpStream, mode: Ws, key: &str) -> Done {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let t = Instant::now();
    let ext = if mode == Ws::CompressionBomb {
        "sec-websocket-extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let mut pre = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n{ext}\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    let sent = match mode {
        Ws::HugeFrame => {
            pre.extend(frame_header(true, false, 1, GIB));
            flood(conn, pre, GIB, None, || vec![b'a'; 64 * 1024]).await
        }
        Ws::EndlessFragments => {
            let mut first = true;
            flood(conn, pre, GIB, None, || {
                let op = if std::mem::take(&mut first) { 1 } else { 0 };
                let mut c = frame_header(false, false, op, 64 * 1024);
                c.extend(std::iter::repeat_n(b'a', 64 * 1024));
                c
            })
            .await
        }
        Ws::SlowFragments => {
            pre.extend(frame_header(false, false, 1, 1));
            pre.push(b'[');
            flood(conn, pre, 600, Some(Duration::from_millis(100)), || {
                let mut c = frame_header(false, false, 0, 1);
                c.push(b' ');
                c
            })
            .await
        }
        Ws::CompressionBomb => {
            let bomb = deflate_zeros(64 << 20);
            pre.extend(frame_header(true, true, 1, bomb.len() as u64));
            pre.extend(bomb);
            say_and_wait(conn, pre).await
        }
        Ws::InvalidUtf8 => {
            let payload =
                b"{\"type\":\"trade\",\"sid\":1,\"seq\":1,\"msg\":{\"market_ticker\":\"\xff\xfe\xfd\"}}";
            pre.extend(frame_header(true, false, 1, payload.len() as u64));
            pre.extend_from_slice(payload);
            say_and_wait(conn, pre).await
        }
        Ws::Honest => unreachable!(),
    };
    Done {
        case: format!("{mode:?}"),
        sent,
        lasted: t.elapsed(),
    }
}

/// Raw DEFLATE (one fixed-Huffman block) that inflates to about `bytes` zero bytes: a zero
/// literal, then copies of 258 bytes at distance 1 (13 bits each, a ratio of about 1:160).
fn deflate_zeros(bytes: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }
    impl Bits {
        /// `n` bits of `v`, least significant first (header fields).
        fn put(&mut self, v: u32, n: u32) {
            for i in 0..n {
                self.acc |= ((v >> i) & 1) << self.n;
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc as u8);
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }
        /// A Huffman code of `n` bits, most significant first.
        fn code(&mut self, c: u32, n: u32) {
            for i in (0..n).rev() {
                self.put((c >> i) & 1, 1);
            }
        }
    }
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // last block
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..bytes / 258 {
        b.code(0xC5, 8); // length 258 (symbol 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    b.out
}

/// The bomb's bits, checked by hand (no inflater among our dependencies; Python's
/// `zlib.decompress(bomb, -15)` gives 67,108,639 zero bytes for `deflate_zeros(64 << 20)`, 1,033 for
/// the small one).
#[test]
fn the_deflate_bomb_is_what_it_says() {
    let small = deflate_zeros(258 * 4);
    // 3 header bits, a literal (8), 4 copies (13 each), end of block (7): 70 bits.
    assert_eq!(small.len(), 9);
    // BFINAL=1, BTYPE=01, then literal 0 = 00110000 sent most significant bit first.
    assert_eq!(small[0] & 0b111, 0b011);
    let big = deflate_zeros(64 << 20);
    assert!(
        big.len() < 500_000 && (64 << 20) / big.len() > 150,
        "{}",
        big.len()
    );
}

/// One line of the note's table.
fn report(case: &str, d: Option<&Done>, baseline: f64, peak: f64) {
    match d {
        Some(d) => eprintln!(
            "HOSTILE {case:<40} sent {:>12} bytes, cut after {:>8.2?}, peak RSS {peak:6.1} MiB (baseline {baseline:6.1} MiB)",
            d.sent, d.lasted
        ),
        None => {
            eprintln!("HOSTILE {case:<40} peak RSS {peak:6.1} MiB (baseline {baseline:6.1} MiB)")
        }
    }
}

/// The allowance over the baseline RSS for any one case: the largest buffer a case may fill
/// (a 16 MiB message, a 32 MiB REST body, the 64 MiB read budget) with room for the
/// allocator. Accepting any of the floods would take it to a GiB.
const ALLOWANCE_MIB: f64 = 128.0;

/// What loopback socket buffers take in after the gatherer stopped reading.
const SLACK: u64 = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_exchange_is_refused_counted_and_survived() {
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(907, 10)).await.unwrap();
    let front = Front::start(sim.addr).await;
    front.set_rest(Rest::HugeDeclared);
    let mut file = gatherer_config("g1", &sim, &pg.url());
    file.kalshi.rest_url = format!("http://{}/trade-api/v2", front.addr);
    file.kalshi.ws_url = format!("ws://{}/trade-api/ws/v2", front.addr);
    file.kalshi.rest_timeout = Duration::from_secs(2);
    file.ws.connections = 1;
    // The limits are the shipped defaults: 32 MiB REST bodies, 16 MiB frames.
    assert_eq!(file.kalshi.rest_max_body_bytes, 32 << 20);
    assert_eq!(file.ws.max_frame_bytes, 16 << 20);
    let mut g = Bin::start("hostile-exchange", file);

    // REST: each case until a connection of it ended and the refusal was counted.
    let rest_cases = [
        (Rest::HugeDeclared, "too_large", SLACK),
        (Rest::EndlessChunked, "too_large", (32 << 20) + SLACK),
        (Rest::SlowBody, "transport", 600),
        (Rest::Compressed, "decode", SLACK),
    ];
    kalshi_testkit::wait::wait_for("metrics served", Duration::from_secs(60), async || {
        !g.metrics().await.is_empty()
    })
    .await;
    for (mode, reason, max_sent) in rest_cases {
        let baseline = g.mib("VmRSS:");
        let before = g
            .value("market_registry_rest_errors_total", &[("reason", reason)])
            .await;
        g.reset_peak();
        front.set_rest(mode);
        let d = front.ended(&format!("{mode:?}")).await;
        kalshi_testkit::wait::wait_for(
            &format!("{mode:?} counted as {reason}"),
            Duration::from_secs(30),
            async || {
                g.value("market_registry_rest_errors_total", &[("reason", reason)])
                    .await
                    > before
            },
        )
        .await;
        let peak = g.mib("VmHWM:");
        report(&format!("REST {mode:?}"), Some(&d), baseline, peak);
        assert!(
            d.sent <= max_sent,
            "{mode:?}: the gatherer took {} bytes",
            d.sent
        );
        if mode == Rest::SlowBody {
            assert!(d.lasted < Duration::from_secs(10), "{d:?}");
        }
        assert!(peak < baseline + ALLOWANCE_MIB, "{mode:?}: peak {peak} MiB");
        g.assert_alive();
    }
    front.set_rest(Rest::Honest);
    kalshi_testkit::wait::wait_for("healthy", Duration::from_secs(60), async || {
        g.healthy().await
    })
    .await;

    // WebSocket: the same, against connection 0.
    let ws_cases = [
        (Ws::HugeFrame, "oversize", SLACK),
        (Ws::EndlessFragments, "oversize", (16 << 20) + SLACK),
        (Ws::SlowFragments, "stall", 600),
        (Ws::CompressionBomb, "protocol", SLACK),
        (Ws::InvalidUtf8, "invalid_utf8", SLACK),
    ];
    for (mode, kind, max_sent) in ws_cases {
        let baseline = g.mib("VmRSS:");
        let before = g.value("ws_client_errors_total", &[("type", kind)]).await;
        g.reset_peak();
        front.set_ws(mode);
        let d = front.ended(&format!("{mode:?}")).await;
        kalshi_testkit::wait::wait_for(
            &format!("{mode:?} counted as {kind}"),
            Duration::from_secs(30),
            async || g.value("ws_client_errors_total", &[("type", kind)]).await > before,
        )
        .await;
        let peak = g.mib("VmHWM:");
        report(&format!("WebSocket {mode:?}"), Some(&d), baseline, peak);
        assert!(
            d.sent <= max_sent,
            "{mode:?}: the gatherer took {} bytes",
            d.sent
        );
        assert!(peak < baseline + ALLOWANCE_MIB, "{mode:?}: peak {peak} MiB");
        g.assert_alive();
    }
    let log = std::fs::read_to_string(&g.log).unwrap();
    for said in [
        "response larger than",
        "Reserved bits are non-zero",
        "UTF-8",
        "Space limit exceeded",
    ] {
        assert!(log.contains(said), "the log never says {said:?}");
    }

    // The real exchange again: healthy, and every trade published from now on is stored once.
    front.set_ws(Ws::Honest);
    kalshi_testkit::wait::wait_for("healthy again", Duration::from_secs(60), async || {
        g.healthy().await
    })
    .await;
    let expected = publish_trades(&sim, 500, 3.0).await;
    assert!(expected.len() > 50, "only {} trades", expected.len());
    wait_trades_stored(&pg, &expected).await;
    g.assert_alive();
}

/// Hundreds of Tail streams that never read, absurd limits, and slowloris clients on both
/// HTTP servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_api_and_http_clients_are_bounded_and_counted() {
    init();
    let pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(911, 20)).await.unwrap();
    let mut file = gatherer_config("g1", &sim, &pg.url());
    // A small read budget, so a handful of non-reading streams could exceed it many times.
    file.api.read_buffer_bytes = 2 << 20;
    file.http.header_read_timeout = Duration::from_secs(2);
    let max_tails = file.api.max_tail_streams;
    let max_conns = file.http.max_connections;
    let mut g = Bin::start("hostile-api", file.clone());
    kalshi_testkit::wait::wait_for("healthy", Duration::from_secs(60), async || {
        g.healthy().await
    })
    .await;

    // Data to serve: a few MiB of deltas and trades.
    let trades = publish_trades(&sim, 3000, 8.0).await;
    wait_trades_stored(&pg, &trades).await;
    let q = |sql: &str| pg.psql("postgres", sql).unwrap();
    let deltas: u64 = q("SELECT count(*) FROM orderbook_deltas")
        .trim()
        .parse()
        .unwrap();
    let delta_bytes: u64 = q("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) + pg_total_relation_size('orderbook_deltas') FROM pg_inherits WHERE inhparent = 'orderbook_deltas'::regclass")
        .trim()
        .parse()
        .unwrap();

    // 300 Tail streams with an absurd limit over 3 connections, none of them reading.
    let baseline = g.mib("VmRSS:");
    g.reset_peak();
    let rejected_before = g
        .value(
            "api_requests_total",
            &[("method", "tail"), ("code", "resource_exhausted")],
        )
        .await;
    let mut held = Vec::new();
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..3 {
        let mut client = g.client().await;
        for i in 0..100 {
            let stream = if i % 4 == 0 {
                pb::Stream::Trades
            } else {
                pb::Stream::OrderbookDeltas
            };
            match client
                .tail(pb::TailRequest {
                    stream: stream as i32,
                    after: 0,
                    limit: u32::MAX,
                })
                .await
            {
                Ok(s) => {
                    opened += 1;
                    held.push(s.into_inner());
                }
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                    assert!(s.message().contains("api.max_tail_streams"), "{s:?}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(opened, max_tails, "Tail streams opened");
    assert_eq!(refused, 300 - max_tails);
    kalshi_testkit::wait::wait_for("refusals counted", Duration::from_secs(10), async || {
        g.value(
            "api_requests_total",
            &[("method", "tail"), ("code", "resource_exhausted")],
        )
        .await
            - rejected_before
            == (300 - max_tails) as f64
    })
    .await;
    // Let them fill whatever they can.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let buffered = g.value("api_read_buffer_bytes", &[]).await;
    assert!(
        buffered <= file.api.read_buffer_bytes as f64,
        "{buffered} bytes held"
    );
    let peak = g.mib("VmHWM:");
    eprintln!(
        "HOSTILE gRPC {opened} Tails held unread + {refused} refused: {buffered} bytes of pages held (budget {}), store {deltas} deltas ({:.1} MiB on disk)",
        file.api.read_buffer_bytes,
        delta_bytes as f64 / MIB
    );
    report("gRPC 300 Tail streams never read", None, baseline, peak);
    assert!(peak < baseline + ALLOWANCE_MIB, "peak {peak} MiB");
    // A Read meanwhile gets a page within the budget or, the budget being held, a clear
    // RESOURCE_EXHAUSTED within seconds: it never waits unbounded.
    let mut client = g.client().await;
    let t = Instant::now();
    match client
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: 0,
            limit: 10,
        })
        .await
    {
        Ok(p) => assert_eq!(p.into_inner().records.len(), 10),
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("api.read_buffer_bytes"), "{s:?}");
            eprintln!(
                "HOSTILE gRPC a Read while the budget is held: {s:?} after {:.1?}",
                t.elapsed()
            );
        }
    }
    assert!(t.elapsed() < Duration::from_secs(15));

    // Absurd limits on Read: clamped to api.max_page and the message size.
    drop(held);
    kalshi_testkit::wait::wait_for("Tails closed", Duration::from_secs(20), async || {
        g.value("api_tail_streams", &[]).await == 0.0
    })
    .await;
    let page = client
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: 0,
            limit: u32::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.records.len() <= file.api.max_page as usize);
    assert!(!page.records.is_empty());
    assert!(
        prost::Message::encoded_len(&page) <= file.api.read_buffer_bytes,
        "a page over the read budget"
    );
    let far = client
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: i64::MAX,
            limit: u32::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(far.records.is_empty());
    let negative = client
        .read(pb::ReadRequest {
            stream: pb::Stream::OrderbookDeltas as i32,
            after: -1,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
    let unknown = client
        .read(pb::ReadRequest {
            stream: 9999,
            after: 0,
            limit: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);

    // With the hostile streams gone, a real reader gets every trade, once.
    let records = read_all(&mut client, pb::Stream::Trades).await;
    let got: Vec<String> = trades_of(&records);
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "a trade twice");
    assert!(trades.is_subset(&unique), "a trade missing from Read");
    g.assert_alive();

    // Slowloris: 300 connections on each HTTP server, sending a head one byte a second.
    for (server, port) in [("health", g.health), ("metrics", g.metrics)] {
        let before_refused = g
            .value(
                "http_server_rejections_total",
                &[("reason", "too_many_connections"), ("server", server)],
            )
            .await;
        let before_timeout = g
            .value(
                "http_server_rejections_total",
                &[("reason", "header_timeout"), ("server", server)],
            )
            .await;
        let baseline = g.mib("VmRSS:");
        g.reset_peak();
        let t = Instant::now();
        let mut slow = Vec::new();
        for _ in 0..300 {
            slow.push(tokio::spawn(async move {
                let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                for b in b"GET /health HTTP/1.1\r\nhost: x\r\n" {
                    if c.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
            // Accepted in order, so exactly the first max_conns are admitted.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for s in slow {
            s.await.unwrap();
        }
        let took = t.elapsed();
        // Every slow client was cut long before its head was done (30 s at one byte a second).
        assert!(
            took < Duration::from_secs(20),
            "slowloris held on for {took:?}"
        );
        let peak = g.mib("VmHWM:");
        let refused = g
            .value(
                "http_server_rejections_total",
                &[("reason", "too_many_connections"), ("server", server)],
            )
            .await
            - before_refused;
        let timed_out = g
            .value(
                "http_server_rejections_total",
                &[("reason", "header_timeout"), ("server", server)],
            )
            .await
            - before_timeout;
        eprintln!(
            "HOSTILE slowloris on /{server}: 300 connections, {timed_out} cut at the head deadline, {refused} refused at once, all gone after {took:.1?}"
        );
        report(&format!("slowloris 300 on {server}"), None, baseline, peak);
        assert_eq!(
            timed_out, max_conns as f64,
            "{server}: cut at the head deadline"
        );
        assert_eq!(refused, (300 - max_conns) as f64, "{server}: refused");
        assert!(peak < baseline + ALLOWANCE_MIB, "peak {peak} MiB");
        // Served again at once.
        assert!(g.healthy().await);
    }
    g.assert_alive();
}

fn trades_of(records: &[pb::Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r.body.as_ref()? {
            pb::record::Body::Trade(t) => Some(t.trade_id.clone()),
            _ => None,
        })
        .collect()
}
