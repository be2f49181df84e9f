//! A local S3 for the archive: moto's server (PyPI, pinned in `prerequisites.txt`, installed by
//! `./dev`) on a free loopback port, real S3 protocol over HTTP. Started by the tests and by
//! `kalshi-stack up`; tied to its parent, so it never outlives it.
//!
//! It must never stand for anything but S3's wire protocol: no test reaches into it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The interpreter of the pinned PyPI oracles: `$KALSHI_PYTHON` (set by `./dev`), else the
/// workspace's `target/venv`.
pub fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("KALSHI_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python3")
}

/// A running moto S3 server.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port, logging to `log` (or nowhere), and waits until it answers.
    pub fn start(log: Option<&Path>) -> anyhow::Result<Moto> {
        let python = oracle_python();
        if !python.is_file() {
            anyhow::bail!(
                "{} not found: `./dev check --for test` installs the pinned moto",
                python.display()
            );
        }
        let port = crate::ports::free_port()?;
        let out = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let child = crate::process::spawn_tied(&python, |c| {
            c.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(out)
                // Credentials moto accepts; nothing real.
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                // Parts as small as 4 KiB (S3's minimum is 5 MiB), so small test files still go
                // up in several parts.
                .env("S3_UPLOAD_PART_MIN_SIZE", "4096");
        })?;
        let mut m = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                anyhow::bail!("moto exited at start-up: {status}");
            }
            if Instant::now() > deadline {
                m.stop();
                anyhow::bail!("moto did not listen on {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The environment an S3 client needs to talk to moto (static test credentials).
pub const ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

/// What the fault proxy does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers with this status and S3 error code (the request is read, never forwarded).
    Error(u16, &'static str),
    /// Forwards after this long.
    Delay(Duration),
    /// Reads the request and then holds it without ever answering (a process killed
    /// mid-upload is killed here).
    Hang,
}

/// An HTTP proxy in front of moto that injects S3 faults: requests matching a rule (method and
/// a substring of the request line) take that rule's next fault, in order; everything else is
/// forwarded as is, one request per connection.
pub struct FaultProxy {
    pub port: u16,
    rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>>,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Rule {
    method: &'static str,
    contains: &'static str,
    faults: std::collections::VecDeque<Fault>,
}

impl FaultProxy {
    pub async fn start(upstream: u16) -> std::io::Result<FaultProxy> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>> = Default::default();
        let hits: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (r, h) = (rules.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = serve(c, upstream, r, h).await;
                });
            }
        });
        Ok(FaultProxy {
            port,
            rules,
            hits,
            task,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next requests with `method` whose request line contains `contains` take `faults`.
    pub fn on(&self, method: &'static str, contains: &'static str, faults: Vec<Fault>) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Rule {
                method,
                contains,
                faults: faults.into(),
            });
    }

    /// Drops every rule left.
    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// The faults injected so far, as "METHOD path -> fault".
    pub fn injected(&self) -> Vec<String> {
        self.hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut c: tokio::net::TcpStream,
    upstream: u16,
    rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>>,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The head, then the body by Content-Length.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let line = head.lines().next().unwrap_or_default().to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let expect_continue = head.to_ascii_lowercase().contains("expect: 100-continue");
    let fault = {
        let mut r = rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.iter_mut()
            .find(|r| {
                line.starts_with(r.method) && line.contains(r.contains) && !r.faults.is_empty()
            })
            .and_then(|r| r.faults.pop_front())
    };
    if let Some(f) = &fault {
        hits.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{line} -> {f:?}"));
    }
    match fault {
        Some(Fault::Error(status, code)) => {
            if !expect_continue {
                read_body(&mut c, &mut buf, head_end + len).await?;
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test</Message><RequestId>test</RequestId></Error>"
            );
            let reason = if status == 503 {
                "Slow Down"
            } else {
                "Internal Server Error"
            };
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            c.write_all(resp.as_bytes()).await?;
            c.shutdown().await?;
            return Ok(());
        }
        Some(Fault::Hang) => {
            read_body(&mut c, &mut buf, head_end + len).await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    // Forward: one request per upstream connection, then both ways until either side ends.
    let mut u = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    u.write_all(&buf).await?;
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    Ok(())
}

async fn read_body(
    c: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    while buf.len() < want {
        let mut chunk = vec![0u8; 65536];
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
