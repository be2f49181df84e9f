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
                .env("AWS_SECRET_ACCESS_KEY", "test");
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
