//! The stack's processes as /proc shows them: every descendant of this process, named by what
//! it runs (a service by its config file, a PostgreSQL cluster by its data directory, all of a
//! cluster's processes summed into its postmaster's entry).
//!
//! It must never count a process twice, nor one that is not the stack's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::report::Proc;

/// `(ppid, RSS bytes, anonymous RSS bytes)` of a process.
fn status(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let ppid = u32::try_from(field("PPid:")?).ok()?;
    Some((
        ppid,
        field("VmRSS:").unwrap_or(0) * 1024,
        field("RssAnon:").unwrap_or(0) * 1024,
    ))
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds (user + system) a process used so far: fields 14 and 15 of `/proc/<pid>/stat`,
/// counted after the command name's closing parenthesis (the name may hold spaces).
fn cpu_s(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / TICKS_PER_S
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (the kernel's USER_HZ).
const TICKS_PER_S: f64 = 100.0;

/// The machine's CPU time so far, `(busy, total)` in ticks, from the first line of
/// `/proc/stat` (busy: everything but idle and iowait).
pub fn machine_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn stem(arg: &str) -> String {
    Path::new(arg)
        .file_stem()
        .map_or_else(|| arg.to_owned(), |s| s.to_string_lossy().into_owned())
}

/// What a process is, from its command line: `Some((name, is_postmaster))`.
pub(super) fn classify(args: &[String]) -> Option<(String, bool)> {
    let program = args.first().map(|a| stem(a))?;
    let config = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .map(|c| stem(c));
    match program.as_str() {
        "gatherer" | "deduplicator" => Some((config.unwrap_or(program), false)),
        "kalshi-sim" => Some(("kalshi-sim".into(), false)),
        "postgres" => {
            // `<data-dir>/pg/<cluster>/data`: named by its cluster.
            let dir = Path::new(args.iter().skip_while(|a| *a != "-D").nth(1)?);
            let name = match dir.file_name().and_then(|n| n.to_str()) {
                Some("data") => dir.parent().and_then(Path::file_name),
                _ => dir.file_name(),
            };
            Some((format!("pg:{}", name?.to_string_lossy()), true))
        }
        _ if args.iter().any(|a| a.contains("moto")) => Some(("moto (S3)".into(), false)),
        _ => None,
    }
}

/// Every process of the stack under `me`, by name.
pub fn snapshot(me: u32) -> BTreeMap<String, Proc> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut rss: HashMap<u32, (u64, u64)> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, vm, anon)) = status(pid) {
                parent.insert(pid, ppid);
                rss.insert(pid, (vm, anon));
            }
        }
    }
    // Descendants of `me`, each with the nearest postmaster above it (its cluster).
    let mut out: BTreeMap<String, Proc> = BTreeMap::new();
    let mut names: HashMap<u32, Option<(String, bool)>> = HashMap::new();
    let mut pids: Vec<u32> = parent.keys().copied().collect();
    pids.sort_unstable();
    for pid in pids {
        // Walk up to `me`; not ours if it never gets there.
        let mut chain = vec![pid];
        let mut at = pid;
        let mut ours = false;
        while let Some(&p) = parent.get(&at) {
            if p == me {
                ours = true;
                break;
            }
            if p <= 1 || chain.len() > 64 {
                break;
            }
            chain.push(p);
            at = p;
        }
        if !ours {
            continue;
        }
        let own = names
            .entry(pid)
            .or_insert_with(|| classify(&cmdline(pid)))
            .clone();
        // A PostgreSQL backend counts toward its postmaster.
        let cluster = chain[1..].iter().find_map(|a| {
            names
                .entry(*a)
                .or_insert_with(|| classify(&cmdline(*a)))
                .clone()
                .filter(|(_, postmaster)| *postmaster)
                .map(|(n, _)| (n, *a))
        });
        let (vm, anon) = rss.get(&pid).copied().unwrap_or_default();
        match (own, cluster) {
            (Some((name, true)), _) => {
                let e = out.entry(name).or_insert(Proc {
                    pid,
                    rss_bytes: 0,
                    fds: 0,
                    cpu_s: 0.0,
                });
                e.pid = pid;
                e.rss_bytes += anon;
                e.fds += fds(pid);
                e.cpu_s += cpu_s(pid);
            }
            (_, Some((name, postmaster))) => {
                let e = out.entry(name).or_insert(Proc {
                    pid: postmaster,
                    rss_bytes: 0,
                    fds: 0,
                    cpu_s: 0.0,
                });
                e.rss_bytes += anon;
                e.fds += fds(pid);
                e.cpu_s += cpu_s(pid);
            }
            (Some((name, false)), None) => {
                out.insert(
                    name,
                    Proc {
                        pid,
                        rss_bytes: vm,
                        fds: fds(pid),
                        cpu_s: cpu_s(pid),
                    },
                );
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn processes_are_named_by_what_they_run() {
        assert_eq!(
            classify(&args(
                "/w/target/release/gatherer --config /tmp/soak/gatherer-2.toml run"
            )),
            Some(("gatherer-2".into(), false))
        );
        assert_eq!(
            classify(&args(
                "/w/target/release/deduplicator --config /tmp/soak/deduplicator.toml"
            )),
            Some(("deduplicator".into(), false))
        );
        assert_eq!(
            classify(&args(
                "/usr/lib/postgresql/15/bin/postgres -D /tmp/soak/pg/production -p 5"
            )),
            Some(("pg:production".into(), true))
        );
        assert_eq!(classify(&args("postgres: checkpointer")), None);
        assert_eq!(classify(&args("/bin/sh -c true")), None);
    }

    #[test]
    fn this_process_has_no_stack_under_it_but_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        // `sleep` is not a service: nothing is named.
        let s = snapshot(std::process::id());
        assert!(s.is_empty(), "{s:?}");
        let _ = child.kill();
        let _ = child.wait();
        assert!(status(std::process::id()).is_some_and(|(_, vm, _)| vm > 0));
        assert!(fds(std::process::id()) >= 3);
    }
}
