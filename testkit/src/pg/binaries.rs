//! Finding and running the PostgreSQL server binaries (also as an unprivileged user when the
//! tests run as root), with errors that say which binary and what failed.
//!
//! It must never run a server binary as root.

use super::*;

/// What went wrong starting or controlling a cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries not found: looked for `postgres` and `initdb` in $KALSHI_PG_BIN, on PATH and under /usr/lib/postgresql/*/bin (on Debian: apt-get install postgresql)"
    )]
    BinariesNotFound,
    #[error(
        "running as root needs an unprivileged user for the server; neither `postgres` nor `nobody` is in /etc/passwd"
    )]
    NoServerUser,
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },
    #[error("postgres did not become ready within {0:?}; log tail:\n{1}")]
    StartTimeout(Duration, String),
    #[error("postgres exited during start-up; log tail:\n{0}")]
    StartFailed(String),
}

pub(super) fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let action = action.into();
    move |source| PgError::Io { action, source }
}

/// Where the PostgreSQL server binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds `postgres` and `initdb`: `$KALSHI_PG_BIN`, then `PATH`, then the newest
    /// `/usr/lib/postgresql/<version>/bin`.
    pub fn locate() -> Result<Self, PgError> {
        let has_both = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
        if let Some(dir) = std::env::var_os("KALSHI_PG_BIN").map(PathBuf::from) {
            return if has_both(&dir) {
                Ok(Self { bin_dir: dir })
            } else {
                Err(PgError::BinariesNotFound)
            };
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_both(&dir) {
                    // Resolve symlinks (Debian links /usr/local/bin/postgres into the versioned
                    // directory) so that pg_basebackup and friends are found beside it.
                    let real = fs::canonicalize(dir.join("postgres"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .filter(|d| has_both(d))
                        .unwrap_or(dir);
                    return Ok(Self { bin_dir: real });
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let v: u32 = e.file_name().to_str()?.parse().ok()?;
                        let bin = e.path().join("bin");
                        has_both(&bin).then_some((v, bin))
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        versions
            .pop()
            .map(|(_, bin_dir)| Self { bin_dir })
            .ok_or(PgError::BinariesNotFound)
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.bin_dir.join(program)
    }

    /// The server's major version (`postgres --version`).
    pub fn major_version(&self) -> Result<u32, PgError> {
        let out = Command::new(self.path("postgres"))
            .arg("--version")
            .output()
            .map_err(io_err("run postgres --version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.split('.').next()?.parse().ok())
            .ok_or_else(|| PgError::Command {
                program: "postgres --version".into(),
                status: out.status.to_string(),
                output: text.into_owned(),
            })
    }
}

/// The user server processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl RunAs {
    /// `None` when not root (servers run as the current user).
    pub(super) fn detect() -> Result<Option<Self>, PgError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("read /etc/passwd"))?;
        for wanted in ["postgres", "nobody"] {
            for line in passwd.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() >= 4
                    && f[0] == wanted
                    && let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse())
                {
                    return Ok(Some(Self { uid, gid }));
                }
            }
        }
        Err(PgError::NoServerUser)
    }

    pub(super) fn chown_tree(self, path: &Path) -> Result<(), PgError> {
        chown(path, Some(self.uid), Some(self.gid)).map_err(io_err(format!(
            "give {} to the server user",
            path.display()
        )))?;
        if path.is_dir() && !path.is_symlink() {
            for entry in fs::read_dir(path).map_err(io_err(format!("list {}", path.display())))? {
                let entry = entry.map_err(io_err("list directory"))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Builds a command for a server-side program, dropping to the server user as root and
/// asking the kernel to stop it if this thread dies.
pub(super) fn server_command(bins: &PgBinaries, program: &str, run_as: Option<RunAs>) -> Command {
    let mut cmd = Command::new("setpriv");
    if let Some(r) = run_as {
        cmd.arg(format!("--reuid={}", r.uid))
            .arg(format!("--regid={}", r.gid))
            .arg("--clear-groups");
    }
    cmd.arg("--pdeathsig=SIGQUIT")
        .arg("--")
        .arg(bins.path(program));
    cmd
}

pub(super) type SpawnRequest = (Command, std::sync::mpsc::Sender<io::Result<Child>>);

/// Forks `cmd` from a thread that lives as long as the process, so that the child's
/// parent-death signal fires when the process dies, not when the calling thread ends.
pub(crate) fn spawn_long_lived(cmd: Command) -> io::Result<Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the pg-spawner thread");
        }
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("pg-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("pg-spawner thread is gone"))?
}

pub(super) fn run_checked(mut cmd: Command, what: &str) -> Result<String, PgError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {what}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(PgError::Command {
            program: what.to_owned(),
            status: out.status.to_string(),
            output,
        })
    }
}
