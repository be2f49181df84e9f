//! Cluster directories: a base per run, stale clusters of dead runs removed, and one initdb'd
//! template copied for every cluster (initdb once, not per test).
//!
//! It must never remove a directory whose owning process is still alive.

use super::*;

pub(super) fn base_dir(opts: &ClusterOptions) -> PathBuf {
    opts.base_dir
        .clone()
        .or_else(|| std::env::var_os("KALSHI_PG_TMP").map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join("kalshi-pg"))
}

pub(super) fn prepare_base(base: &Path, run_as: Option<RunAs>) -> Result<(), PgError> {
    fs::create_dir_all(base).map_err(io_err(format!("create {}", base.display())))?;
    if run_as.is_some() {
        // The server user must be able to traverse into its cluster directories.
        let _ = fs::set_permissions(base, fs::Permissions::from_mode(0o755));
    }
    Ok(())
}

/// Removes cluster directories left by processes that no longer exist.
pub(super) fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("c-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // A server may still run there if it outlived its parent; stop it first.
        if let Ok(text) = fs::read_to_string(entry.path().join("data/postmaster.pid"))
            && let Some(server) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(server, rustix::process::Signal::QUIT);
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// Returns the template data directory for this server version, creating it once.
pub(super) fn template_dir(
    bins: &PgBinaries,
    run_as: Option<RunAs>,
    base: &Path,
) -> Result<PathBuf, PgError> {
    let version = bins.major_version()?;
    let owner = run_as.map_or_else(
        || format!("u{}", rustix::process::geteuid().as_raw()),
        |r| format!("u{}", r.uid),
    );
    let template = base.join(format!("template-pg{version}-{owner}"));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    // Build it under a unique name and rename into place, so concurrent processes never see
    // a half-written template.
    let n = CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed);
    let staging_root = base.join(format!("c-{}-{n}-initdb", std::process::id()));
    let staging = staging_root.join("data");
    fs::create_dir_all(&staging_root).map_err(io_err("create initdb staging directory"))?;
    if let Some(r) = run_as {
        r.chown_tree(&staging_root)?;
    }
    let mut cmd = server_command(bins, "initdb", run_as);
    cmd.arg("-D").arg(&staging).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
    ]);
    let result = run_checked(cmd, "initdb");
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging_root);
        return Err(e);
    }
    match fs::rename(&staging, &template) {
        Ok(()) => {}
        // Another process won the race; use theirs.
        Err(_) if template.join("PG_VERSION").is_file() => {}
        Err(e) => {
            let _ = fs::remove_dir_all(&staging_root);
            return Err(io_err("install initdb template")(e));
        }
    }
    let _ = fs::remove_dir_all(&staging_root);
    Ok(template)
}

pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<(), PgError> {
    fs::create_dir_all(to).map_err(io_err(format!("create {}", to.display())))?;
    for entry in fs::read_dir(from).map_err(io_err(format!("read {}", from.display())))? {
        let entry = entry.map_err(io_err("read template"))?;
        let target = to.join(entry.file_name());
        let ty = entry.file_type().map_err(io_err("read template"))?;
        if ty.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if ty.is_file() {
            fs::copy(entry.path(), &target).map_err(io_err(format!(
                "copy {} to {}",
                entry.path().display(),
                target.display()
            )))?;
        }
    }
    Ok(())
}

/// A free loopback port that a stopped cluster can start on again ([`crate::ports::free_port`]).
pub(super) fn free_port() -> Result<u16, PgError> {
    crate::ports::free_port().map_err(io_err("find a free port"))
}

pub(super) fn port_in_use(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    text
}
