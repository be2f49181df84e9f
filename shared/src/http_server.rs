//! The HTTP/1.1 server under `/health` and `/metrics` of both services, with the bounds
//! `axum::serve` lacks: at most `http.max_connections` open connections (more are closed at
//! once), a deadline for each request head (`http.header_read_timeout`, which also ends idle
//! keep-alive connections), a 16 KiB head buffer, and a whole-connection age limit
//! (`http.max_connection_age`), so neither a slowloris client nor one that never reads its
//! response can hold a slot for long. Every refusal is counted in
//! `http_server_rejections_total{server,reason}`; open connections are
//! `http_server_connections{server}`.
//!
//! It must never buffer a request body (the routes are GETs) nor wait for a connection past
//! the stop: connections still open at the stop get a graceful close, then are dropped.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpSection;

pub const CONNECTIONS: &str = "http_server_connections";
pub const REJECTIONS: &str = "http_server_rejections_total";

/// Why a connection was refused or cut.
pub const REASONS: &[&str] = &[
    "too_many_connections",
    "header_timeout",
    "connection_age",
    "bad_request",
];

/// The two servers every service runs.
pub const SERVERS: &[&str] = &["health", "metrics"];

/// How long a connection may take to finish its response once the stop or its age limit
/// asked it to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The smallest head buffer hyper accepts is 8 KiB; our routes need far less.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The bounds of one server, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_connection_age: Duration,
}

impl From<&HttpSection> for HttpLimits {
    fn from(h: &HttpSection) -> Self {
        HttpLimits {
            max_connections: h.max_connections,
            header_read_timeout: h.header_read_timeout,
            max_connection_age: h.max_connection_age,
        }
    }
}

/// Pre-registers the series at zero and describes them.
pub fn describe() {
    metrics::describe_gauge!(
        CONNECTIONS,
        "Open HTTP connections, by server (health, metrics)"
    );
    metrics::describe_counter!(
        REJECTIONS,
        "HTTP connections refused or cut, by server and reason (too_many_connections, header_timeout, connection_age, bad_request)"
    );
    for s in SERVERS {
        metrics::gauge!(CONNECTIONS, "server" => *s).set(0.0);
        for r in REASONS {
            metrics::counter!(REJECTIONS, "server" => *s, "reason" => *r).increment(0);
        }
    }
}

/// Spawns a service's two servers into `servers`: task `http` serves `health` (the `/health`
/// router) and task `metrics` serves `metrics`, both within `limits`, until the group stops.
pub fn spawn_both(
    servers: &crate::service::Group,
    health: (TcpListener, axum::Router),
    metrics: (TcpListener, axum::Router),
    limits: HttpLimits,
) {
    use anyhow::Context as _;
    for (task, server, (listener, router)) in
        [("http", "health", health), ("metrics", "metrics", metrics)]
    {
        let token = servers.token();
        servers.spawn(task, async move {
            serve(server, listener, router, limits, token)
                .await
                .with_context(|| format!("{server} HTTP server"))
        });
    }
}

/// Serves `router` on `listener` until `stop`, within `limits`. `server` names it in metrics
/// and logs (`health` or `metrics`).
pub async fn serve(
    server: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(server, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(REJECTIONS, "server" => server, "reason" => "too_many_connections")
                .increment(1);
            tracing::debug!(server, %peer, limit = limits.max_connections, "HTTP connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let open = metrics::gauge!(CONNECTIONS, "server" => server);
            open.increment(1.0);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            let reason = drive(conn, limits, &stop).await;
            if let Some(reason) = reason {
                metrics::counter!(REJECTIONS, "server" => server, "reason" => reason).increment(1);
                tracing::debug!(server, %peer, reason, "HTTP connection cut");
            }
            open.decrement(1.0);
        });
    }
    conns.close();
    // Connections were asked to close at the stop; none outlives CLOSE_GRACE after it.
    let _ = tokio::time::timeout(CLOSE_GRACE * 2, conns.wait()).await;
    Ok(())
}

type Conn = hyper::server::conn::http1::Connection<
    TokioIo<tokio::net::TcpStream>,
    TowerToHyperService<axum::Router>,
>;

/// Runs one connection to its end; the reason it was cut, if it was.
async fn drive(conn: Conn, limits: HttpLimits, stop: &CancellationToken) -> Option<&'static str> {
    let mut conn = std::pin::pin!(conn);
    let age = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(age);
    let mut closing: Option<&'static str> = None;
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = &mut age => {
            closing = Some("connection_age");
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return closing,
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return None,
            }
        }
    };
    match result {
        Ok(()) => closing,
        Err(e) if e.is_timeout() => Some("header_timeout"),
        Err(e) if e.is_parse() || e.is_parse_too_large() => Some("bad_request"),
        // The peer went away mid-request: nothing to count.
        Err(_) => closing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(2),
            max_connection_age: Duration::from_secs(2),
        }
    }

    async fn start() -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = axum::Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let s = stop.clone();
        let h = tokio::spawn(async move {
            serve("health", listener, router, limits(), s)
                .await
                .unwrap();
        });
        (addr, stop, h)
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Reads until the peer closes; how long that took.
    async fn closed_after(mut c: tokio::net::TcpStream) -> Duration {
        let t = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        while let Ok(n) = c.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        t.elapsed()
    }

    /// Slow heads and idle connections are closed at the head deadline; connections over the
    /// limit are closed at once; a real request is served throughout.
    #[tokio::test]
    async fn slow_heads_are_cut_and_extra_connections_refused() {
        let (addr, stop, h) = start().await;
        assert!(get(addr).await.ends_with("ok"));
        // Four slots: fill them with a slow head each.
        let mut slow = Vec::new();
        let t0 = std::time::Instant::now();
        for _ in 0..4 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\nhost").await.unwrap();
            slow.push(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The fifth is closed without an answer.
        let extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let took = closed_after(extra).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        // The slow ones are closed at the head deadline (2 s), not before.
        for c in slow {
            closed_after(c).await;
            let took = t0.elapsed();
            assert!(
                took > Duration::from_millis(1500) && took < Duration::from_secs(10),
                "{took:?}"
            );
        }
        // Slots are free again.
        assert!(get(addr).await.ends_with("ok"));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap();
    }

    /// A client that keeps sending requests in time but holds its connection is closed at the
    /// age limit, after a complete response.
    #[tokio::test]
    async fn a_connection_is_closed_at_its_age_limit() {
        let (addr, stop, h) = start().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t = std::time::Instant::now();
        let mut answered = 0;
        let mut buf = vec![0u8; 4096];
        loop {
            if c.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .is_err()
            {
                break;
            }
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if String::from_utf8_lossy(&buf[..n]).ends_with("ok") {
                        answered += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = t.elapsed();
        assert!(answered >= 5, "{answered}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{took:?}"
        );
        stop.cancel();
        h.await.unwrap();
    }

    /// A head larger than the buffer is refused, not buffered.
    #[tokio::test]
    async fn an_oversize_head_is_refused() {
        let (addr, stop, h) = start().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = b"GET /x HTTP/1.1\r\nx-pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 64 * 1024));
        let _ = c.write_all(&head).await;
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "{text}"
        );
        stop.cancel();
        h.await.unwrap();
    }
}
