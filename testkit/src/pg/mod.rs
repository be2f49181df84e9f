//! Ephemeral PostgreSQL clusters for tests and for the local stack.
//!
//! [`PgCluster::start`] creates a fresh cluster in a private directory under the system temp
//! dir, starts `postgres` on a free loopback port and hands out a connection URL; dropping the
//! cluster stops the server and deletes the directory. It owns the server process, so it can
//! also stop and restart it, crash it, or make it the primary of a streaming standby.
//!
//! Speed: `initdb` runs once per machine and PostgreSQL version; its output is kept as a
//! template (`<tmp>/kalshi-pg/template-*`) and copied for each cluster, which takes a fraction of
//! a second. Durability is traded for speed (`fsync=off`), which is safe for process crashes,
//! not for machine crashes: this is a harness, not a deployment.
//!
//! Root: `initdb` refuses to run as root, so as root every server process runs as the
//! `postgres` system user (or `nobody`) through `setpriv`, and the directories are given to it.
//!
//! Leftovers: every server is started with a parent-death signal (`setpriv --pdeathsig`), so
//! it stops if the process that started it dies without dropping the cluster. The kernel ties
//! that signal to the *thread* that forked, so servers are forked by one spawner thread that
//! lives as long as the process, whatever thread asks for a cluster. Directories of processes
//! that died are removed by the next [`PgCluster::start`].
//!
//! It must never: leave a server running after drop, or bind anything but loopback.

use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod binaries;
pub mod plan;
mod template;

pub use binaries::*;
use template::*;

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Parent of the cluster directory (default: `$KALSHI_PG_TMP` or `<tmp>/kalshi-pg`).
    pub base_dir: Option<PathBuf>,
    /// A fixed directory for the cluster instead of a fresh one (reused if it already holds a
    /// cluster). Implies `keep`.
    pub dir: Option<PathBuf>,
    /// A fixed port instead of a free one.
    pub port: Option<u16>,
    /// Keep the directory when the cluster is dropped (the server is still stopped).
    pub keep: bool,
    /// `fsync` setting; off by default (safe against process crashes, fast).
    pub fsync: bool,
    pub max_connections: u32,
    /// Extra `name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// How long start-up may take.
    pub start_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            base_dir: None,
            dir: None,
            port: None,
            keep: false,
            fsync: false,
            max_connections: 100,
            settings: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

static CLUSTER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A running (or stopped) PostgreSQL cluster owned by this process.
#[derive(Debug)]
pub struct PgCluster {
    bins: PgBinaries,
    run_as: Option<RunAs>,
    root: PathBuf,
    port: u16,
    opts: ClusterOptions,
    child: Option<Child>,
    remove_on_drop: bool,
}

impl PgCluster {
    /// Creates and starts a fresh cluster with default options.
    pub fn start_default() -> Result<Self, PgError> {
        Self::start(ClusterOptions::default())
    }

    /// Creates and starts a cluster.
    pub fn start(opts: ClusterOptions) -> Result<Self, PgError> {
        let bins = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;
        let base = base_dir(&opts);
        prepare_base(&base, run_as)?;
        remove_stale(&base);
        let (root, fresh) = match &opts.dir {
            Some(dir) => {
                let exists = dir.join("data").join("PG_VERSION").is_file();
                (dir.clone(), !exists)
            }
            None => {
                let n = CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed);
                (base.join(format!("c-{}-{n}", std::process::id())), true)
            }
        };
        if fresh {
            let template = template_dir(&bins, run_as, &base)?;
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).map_err(io_err(format!("create {}", root.display())))?;
            copy_tree(&template, &root.join("data"))?;
            fs::set_permissions(root.join("data"), fs::Permissions::from_mode(0o700))
                .map_err(io_err("set data directory mode"))?;
        }
        fs::create_dir_all(root.join("sock")).map_err(io_err("create socket directory"))?;
        if let Some(r) = run_as {
            r.chown_tree(&root)?;
        }
        let remove_on_drop = !opts.keep && opts.dir.is_none();
        let mut cluster = Self {
            bins,
            run_as,
            root,
            port: 0,
            opts,
            child: None,
            remove_on_drop,
        };
        cluster.launch_with_port_retry()?;
        Ok(cluster)
    }

    /// Creates a streaming standby of `primary` (`pg_basebackup -R -X stream`) and starts it.
    pub fn start_standby(primary: &PgCluster, opts: ClusterOptions) -> Result<Self, PgError> {
        let bins = primary.bins.clone();
        let run_as = primary.run_as;
        let base = base_dir(&opts);
        prepare_base(&base, run_as)?;
        let n = CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = opts
            .dir
            .clone()
            .unwrap_or_else(|| base.join(format!("c-{}-{n}", std::process::id())));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sock")).map_err(io_err("create standby directory"))?;
        if let Some(r) = run_as {
            r.chown_tree(&root)?;
        }
        let mut cmd = server_command(&bins, "pg_basebackup", run_as);
        cmd.arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(primary.port.to_string())
            .arg("-U")
            .arg("postgres")
            .arg("-D")
            .arg(root.join("data"))
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run_checked(cmd, "pg_basebackup")?;
        let remove_on_drop = !opts.keep && opts.dir.is_none();
        let mut standby = Self {
            bins,
            run_as,
            root,
            port: 0,
            opts,
            child: None,
            remove_on_drop,
        };
        standby.launch_with_port_retry()?;
        Ok(standby)
    }

    fn launch_with_port_retry(&mut self) -> Result<(), PgError> {
        let mut last = None;
        for _ in 0..5 {
            let port = match self.opts.port {
                Some(p) => p,
                None => free_port()?,
            };
            match self.launch(port) {
                Ok(()) => return Ok(()),
                Err(PgError::StartFailed(log)) if self.opts.port.is_none() && port_in_use(&log) => {
                    last = Some(PgError::StartFailed(log));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(PgError::StartFailed("no port could be bound".into())))
    }

    fn launch(&mut self, port: u16) -> Result<(), PgError> {
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open postgres log"))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io_err("open postgres log"))?;
        let mut cmd = server_command(&self.bins, "postgres", self.run_as);
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.root.join("sock").display()
            ))
            .arg("-c")
            .arg(format!(
                "fsync={}",
                if self.opts.fsync { "on" } else { "off" }
            ))
            .arg("-c")
            .arg(format!("max_connections={}", self.opts.max_connections))
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=32MB"])
            .args(["-c", "max_wal_senders=10", "-c", "wal_level=replica"])
            .args([
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_line_prefix=%m [%p] ",
            ]);
        for (k, v) in &self.opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = spawn_long_lived(cmd).map_err(io_err("start postgres (via setpriv)"))?;
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + self.opts.start_timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return Err(PgError::StartFailed(read_from(&log_path, log_start)));
            }
            if matches!(
                self.postmaster_status().as_deref(),
                Some("ready" | "standby")
            ) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.signal_and_wait(rustix::process::Signal::KILL, Duration::from_secs(5));
                return Err(PgError::StartTimeout(
                    self.opts.start_timeout,
                    read_from(&log_path, log_start),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn postmaster_status(&self) -> Option<String> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().nth(7).map(|l| l.trim().to_owned())
    }

    /// Turns TLS on (reload, no restart) with this certificate and key, written into the data
    /// directory and owned by the server's user (PostgreSQL refuses a key anyone else can read).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), PgError> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let data = self.data_dir();
        let meta = fs::metadata(&data).map_err(io_err("stat the data directory"))?;
        for (name, body, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let p = data.join(name);
            fs::write(&p, body).map_err(io_err(format!("write {name}")))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {name}")))?;
            std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid()))
                .map_err(io_err(format!("chown {name}")))?;
        }
        // One statement per call: ALTER SYSTEM refuses to run in a (multi-statement) transaction.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
        ] {
            self.psql("postgres", sql)?;
        }
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Connection URL for database `postgres` as superuser `postgres` (trust auth on loopback).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// The last few KiB of the server log.
    pub fn log_tail(&self) -> String {
        let len = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
        read_from(&self.log_path(), len.saturating_sub(4096))
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let mut cmd = Command::new(self.bins.path("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql);
        run_checked(cmd, "psql")
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        self.psql("postgres", &format!("CREATE DATABASE {quoted}"))?;
        Ok(self.url_for(name))
    }

    /// Fast shutdown (clients disconnected, data kept). The cluster can be started again.
    pub fn stop(&mut self) -> Result<(), PgError> {
        if self.child.is_none() {
            return Ok(());
        }
        if !self.signal_and_wait(rustix::process::Signal::INT, Duration::from_secs(30)) {
            self.signal_and_wait(rustix::process::Signal::KILL, Duration::from_secs(10));
        }
        Ok(())
    }

    /// Kills the postmaster with SIGKILL, as a crash would; the next start runs recovery.
    pub fn crash(&mut self) {
        self.signal_and_wait(rustix::process::Signal::KILL, Duration::from_secs(10));
        // Orphaned backends notice the postmaster's death and exit; wait for the lock to clear.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.backends_alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn backends_alive(&self) -> bool {
        // Any process whose cwd is our data directory is a leftover backend.
        let data = self.data_dir();
        fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(Result::ok).any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                        && fs::read_link(e.path().join("cwd")).is_ok_and(|p| p == data)
                })
            })
            .unwrap_or(false)
    }

    /// Starts the server again on the same port and data after [`stop`](Self::stop) or
    /// [`crash`](Self::crash).
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop()?;
        let _ = fs::remove_file(self.data_dir().join("postmaster.pid"));
        self.launch(self.port)
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), PgError> {
        let mut cmd = server_command(&self.bins, "pg_ctl", self.run_as);
        cmd.arg("promote")
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("-D")
            .arg(self.data_dir());
        run_checked(cmd, "pg_ctl promote")?;
        Ok(())
    }

    /// Sends `sig` and waits up to `wait` for the server to exit; true if it exited.
    fn signal_and_wait(&mut self, sig: rustix::process::Signal, wait: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            self.child = None;
            return true;
        }
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, sig);
        }
        let deadline = Instant::now() + wait;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    return true;
                }
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate shutdown when nothing is kept; a clean one when the data stays.
        let sig = if self.remove_on_drop {
            rustix::process::Signal::QUIT
        } else {
            rustix::process::Signal::INT
        };
        if !self.signal_and_wait(sig, Duration::from_secs(30)) {
            self.signal_and_wait(rustix::process::Signal::KILL, Duration::from_secs(5));
        }
        if self.remove_on_drop {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
