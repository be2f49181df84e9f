//! Service processes of the stack: start one with `--addr-file`, read what it bound, signal,
//! stop within a bound, and the tail of its log for errors.
//!
//! It must never leave a process running when its handle is dropped.

use super::*;

/// Starts a service that reports its bound addresses: `--addr-file <dir>/<name>.addr.json` is
/// appended to `args`, the log goes to `<dir>/logs/<name>.log`. Returns the running service and
/// what it reported (see [`read_addr_file`]).
pub(crate) async fn start_reporting(
    name: &str,
    program: PathBuf,
    mut args: Vec<String>,
    dir: &Path,
    within: Duration,
    env: &[(&str, &str)],
) -> anyhow::Result<(Service, Value)> {
    let addr_file = dir.join(format!("{name}.addr.json"));
    let _ = std::fs::remove_file(&addr_file);
    args.push("--addr-file".into());
    args.push(addr_file.display().to_string());
    let mut service = Service::new(name, program, args, dir.join(format!("logs/{name}.log")));
    service.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    service.start()?;
    let addrs = read_addr_file(&addr_file, &mut service, within).await?;
    Ok((service, addrs))
}

/// Waits for a service's `--addr-file` (written once it listens), or fails with the end of
/// its log if it exits first or takes longer than `within`.
pub(crate) async fn read_addr_file(
    path: &Path,
    service: &mut Service,
    within: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return Ok(v);
        }
        if !service.running() {
            bail!(
                "{} exited at start-up:\n{}",
                service.name,
                log_tail(service.log_path())
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not report its addresses within {within:?}:\n{}",
                service.name,
                log_tail(service.log_path())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The port of one address in an address file.
pub(crate) fn port_of(addrs: &Value, key: &str) -> anyhow::Result<u16> {
    let text = addrs[key]
        .as_str()
        .with_context(|| format!("address file without {key}: {addrs}"))?;
    Ok(text
        .parse::<SocketAddr>()
        .with_context(|| format!("address file: {key} = {text:?}"))?
        .port())
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One service process.
pub struct Service {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Added to the inherited environment.
    env: Vec<(String, String)>,
}

impl Service {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Service {
        Service {
            name: name.into(),
            program,
            args,
            log,
            child: None,
            env: Vec::new(),
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        if !self.program.exists() {
            bail!(
                "{} not found: build it first (cargo build --release --workspace) or set KALSHI_BIN_DIR",
                self.program.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let err = log.try_clone()?;
        let args = self.args.clone();
        let env = self.env.clone();
        let child = kalshi_testkit::process::spawn_tied(&self.program, move |c| {
            c.args(&args)
                .envs(env)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err);
        })
        .with_context(|| format!("start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (the setpriv wrapper execs the service, so the pid is the service's).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        if let Some(c) = self.child.as_ref() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::TERM,
            );
        }
    }

    /// SIGTERM, then wait up to `within` (SIGKILL after). Returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(15));
    }
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `url` until `ok(status, json body)` holds, or fails after `within`.
pub(crate) async fn wait_http(
    url: &str,
    within: Duration,
    healthy: impl Fn(u16, &Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        if let Ok(r) = client.get(url).send().await {
            let code = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if healthy(code, &v) {
                return Ok(v);
            }
        }
        if Instant::now() >= deadline {
            bail!("{url} not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
