//! Test helpers: a simulator in-process on port 0, a plain WebSocket client over a real socket,
//! and readers for the ground truth and the control API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test binaries

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use kalshi_shared::auth::Signer;
use kalshi_shared::wire::Side;
use kalshi_shared::wire::ws::{Frame, FrameBody, parse_frame};
use kalshi_shared::{Price, Quantity};
use kalshi_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY_PKCS8: &[u8] = include_bytes!("../../../shared/testdata/rsa-pkcs8.pem");
pub const KEY_PUBLIC: &[u8] = include_bytes!("../../../shared/testdata/rsa-public.pem");

pub async fn start(cfg: SimConfig) -> SimHandle {
    kalshi_sim::start(cfg).await.unwrap()
}

pub fn http() -> reqwest::Client {
    // The workspace builds reqwest without a default TLS provider (to avoid a C build);
    // every process that makes a client installs ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub async fn control(sim: &SimHandle, path: &str, body: Value) -> Value {
    let r = http()
        .post(format!("{}{path}", sim.control_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "control {path} failed: {}",
        r.status()
    );
    r.json().await.unwrap()
}

pub async fn fault(sim: &SimHandle, body: Value) -> Value {
    control(sim, "/faults", body).await
}

/// Every ground-truth record after `after`, optionally of some types.
pub async fn truth(sim: &SimHandle, after: u64, types: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let mut url = format!("{}/truth?after={after}&limit=50000", sim.control_url());
        if let Some(t) = types {
            url.push_str(&format!("&types={t}"));
        }
        let (status, page) = get_json(&url).await;
        assert_eq!(status, 200, "{page}");
        let next = page["next"].as_u64().unwrap();
        let records = page["records"].as_array().unwrap().clone();
        let head = page["head"].as_u64().unwrap();
        out.extend(records);
        if next >= head || next == after {
            break;
        }
        after = next;
    }
    out
}

/// The simulator's book of a market: (position, yes, no).
pub async fn sim_book(sim: &SimHandle, ticker: &str) -> (u64, Book) {
    let (status, v) = get_json(&format!("{}/truth/books/{ticker}", sim.control_url())).await;
    assert_eq!(status, 200);
    let side = |k: &str| -> BTreeMap<Price, Quantity> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    Price::parse(l[0].as_str().unwrap()).unwrap(),
                    Quantity::parse(l[1].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    };
    (
        v["pos"].as_u64().unwrap(),
        Book {
            yes: side("yes"),
            no: side("no"),
        },
    )
}

pub async fn market_tickers(sim: &SimHandle, extra: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, v) = get_json(&format!(
            "{}/markets?limit=1000&cursor={cursor}{extra}",
            sim.rest_url()
        ))
        .await;
        assert_eq!(status, 200, "{v}");
        out.extend(
            v["markets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["ticker"].as_str().unwrap().to_owned()),
        );
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
}

/// A client-side book, applying snapshots and deltas exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub yes: BTreeMap<Price, Quantity>,
    pub no: BTreeMap<Price, Quantity>,
}

impl Book {
    pub fn apply(&mut self, side: Side, price: Price, delta: Quantity) {
        let levels = match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        };
        let next = levels
            .get(&price)
            .copied()
            .unwrap_or(Quantity::ZERO)
            .checked_add(delta)
            .unwrap();
        assert!(!next.is_negative(), "delta drove {side:?} {price} negative");
        if next.is_zero() {
            levels.remove(&price);
        } else {
            levels.insert(price, next);
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A bare WebSocket client: sends commands, reads frames, counts pings.
pub struct Client {
    pub ws: Ws,
    next_id: u64,
    pub pings: u32,
}

impl Client {
    pub async fn connect(sim: &SimHandle) -> Client {
        Self::connect_url(&sim.ws_url(), None).await.unwrap()
    }

    pub async fn connect_signed(sim: &SimHandle, signer: &Signer) -> Client {
        Self::connect_url(&sim.ws_url(), Some(signer))
            .await
            .unwrap()
    }

    pub async fn connect_url(
        url: &str,
        signer: Option<&Signer>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        if let Some(s) = signer {
            let h = s.sign("GET", kalshi_shared::wire::ws::WS_PATH).unwrap();
            for (k, v) in h.pairs() {
                req.headers_mut().insert(k, v.parse().unwrap());
            }
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Client {
            ws,
            next_id: 1,
            pings: 0,
        })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// Sends `{"id":N,"cmd":cmd,"params":params}` and returns N.
    pub async fn cmd(&mut self, cmd: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let body = if params.is_null() {
            json!({"id": id, "cmd": cmd})
        } else {
            json!({"id": id, "cmd": cmd, "params": params})
        };
        self.send_text(&body.to_string()).await;
        id
    }

    /// The next text frame as raw text, within `wait`; pings are counted and skipped.
    pub async fn next_text(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(t.to_string()),
                Message::Ping(_) => self.pings += 1,
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let text = self.next_text(wait).await?;
        Some(parse_frame(&text).unwrap_or_else(|e| panic!("unparseable frame {text}: {e}")))
    }

    /// Reads frames until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next_frame(quiet).await {
            out.push(f);
        }
        out
    }

    /// Reads every frame that arrives within `window` (for streams that never go quiet).
    pub async fn read_for(&mut self, window: Duration) -> Vec<Frame> {
        let end = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(tokio::time::Instant::now()) {
            match self.next_frame(left).await {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    /// Reads until a frame matches, returning every frame read (the match last).
    pub async fn until(&mut self, wait: Duration, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self
                .next_frame(wait)
                .await
                .unwrap_or_else(|| panic!("no matching frame; got {out:#?}"));
            let done = pred(&f);
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// The error code of the next frame, which must be an error.
    pub async fn expect_error(&mut self, wait: Duration) -> (Option<u64>, u32, Option<String>) {
        let f = self.next_frame(wait).await.expect("an error frame");
        match f.body {
            FrameBody::Error(e) => (f.id, e.code, e.market_ticker),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

/// Checks that every frame with a seq is dense per sid from 1; returns the last seq per sid.
pub fn assert_dense_seq(frames: &[Frame]) -> BTreeMap<u64, u64> {
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for f in frames {
        if let (Some(sid), Some(seq)) = (f.sid, f.seq) {
            let expected = last.get(&sid).map_or(1, |s| s + 1);
            assert_eq!(
                seq,
                expected,
                "sid {sid}: seq {seq} after {:?}",
                last.get(&sid)
            );
            last.insert(sid, seq);
        }
    }
    last
}

pub const WAIT: Duration = Duration::from_secs(5);
pub const QUIET: Duration = Duration::from_millis(300);
