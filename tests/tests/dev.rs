//! The README's two commands check their prerequisites (`prerequisites.txt`) before anything
//! else: a missing one is named, with the exact line to install it by hand, and the command
//! exits 1; when nothing is missing they print nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kalshi-dev-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory of links to every program on this PATH except `leave_out`.
fn path_without(leave_out: &str) -> PathBuf {
    let dir = scratch(&format!("path-{leave_out}"));
    let path = std::env::var_os("PATH").unwrap();
    for p in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == leave_out || dir.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&name));
        }
    }
    assert!(
        dir.join("bash").exists(),
        "bash is on PATH, so it must be linked"
    );
    dir
}

fn dev(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(root().join("dev"));
    cmd.args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_program_missing_from_path_is_named_with_the_line_that_installs_it() {
    let path = path_without("promtool");
    let out = dev(
        &["check", "--for", "test", "--no-install"],
        &[("PATH", &path)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missing: prometheus (Debian package; provides promtool)"),
        "{err}"
    );
    assert!(
        err.contains("sudo apt-get install -y prometheus\n"),
        "{err}"
    );
    // Only what is missing is named.
    assert!(!err.contains("postgresql"), "{err}");
    assert!(!err.contains("curl"), "{err}");
    // The system itself does not need promtool.
    let out = dev(
        &["check", "--for", "up", "--no-install"],
        &[("PATH", &path)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let _ = std::fs::remove_dir_all(&path);
}

#[test]
fn missing_pinned_pypi_packages_are_named_with_their_versions() {
    let target = scratch("target");
    let out = dev(
        &["check", "--for", "test", "--no-install"],
        &[("CARGO_TARGET_DIR", &target)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let pins: Vec<String> = std::fs::read_to_string(root().join("prerequisites.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("pypi"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    assert!(pins.len() >= 3, "{pins:?}");
    for pin in &pins {
        assert!(
            err.contains(&format!("missing: {pin} (PyPI")),
            "{pin}: {err}"
        );
    }
    let venv = target.join("venv");
    assert!(
        err.contains(&format!(
            "python3 -m venv {0} && {0}/bin/pip install --no-deps {1}",
            venv.display(),
            pins.join(" ")
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&target);
}

#[test]
fn nothing_missing_means_nothing_printed() {
    // The suite runs through `./dev test`, which has just installed everything.
    let out = dev(&["check", "--no-install"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(out.stdout.is_empty());
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(last.trim(), "./dev test");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("\n./dev test\n"),
        "README lost its test command"
    );
    assert!(
        readme.contains("\n./dev up\n"),
        "README lost its run command"
    );
}

/// `a/{b,c}.rs` -> `a/b.rs`, `a/c.rs`.
fn expand_braces(t: &str) -> Vec<String> {
    match (t.find('{'), t.find('}')) {
        (Some(a), Some(b)) if a < b => t[a + 1..b]
            .split(',')
            .flat_map(|alt| expand_braces(&format!("{}{alt}{}", &t[..a], &t[b + 1..])))
            .collect(),
        _ => vec![t.to_owned()],
    }
}

/// Every file and directory under `dir`, relative to the repository, with a leading `/`.
fn tree(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "target" || name == ".git" {
            continue;
        }
        let r = format!("{rel}/{name}");
        out.push(r.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tree(&e.path(), &r, out);
        }
    }
}

#[test]
fn every_path_the_readme_names_exists() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target" && n != ".git")
        .collect();
    let mut all = Vec::new();
    tree(&root, "", &mut all);
    let (mut checked, mut missing) = (0, Vec::new());
    // Links: `[text](path)`, other than web addresses and anchors.
    for part in readme.split("](").skip(1) {
        let target = part.split(')').next().unwrap_or_default();
        let path = target.split('#').next().unwrap_or_default();
        if path.is_empty() || path.starts_with("http") {
            continue;
        }
        checked += 1;
        if !root.join(path).exists() {
            missing.push(format!("link {target}"));
        }
    }
    for line in readme.lines() {
        // The repository map: `| \`folder/\` | ... |` names files within its folder.
        let folder = line
            .strip_prefix("| `")
            .and_then(|r| r.split_once("` |"))
            .map(|(f, _)| f)
            .filter(|f| f.ends_with('/') && top.iter().any(|t| f.starts_with(t.as_str())));
        for (i, token) in line.split('`').enumerate() {
            if i % 2 == 0
                || token.contains(char::is_whitespace)
                || token.contains(['<', '>', '$', '*', '~', '='])
                || token.starts_with('-')
            {
                continue;
            }
            let first = token.split('/').next().unwrap_or_default();
            let pathlike = token.contains('/') || token.contains('.');
            for t in expand_braces(token) {
                if top.iter().any(|d| d == first) && pathlike {
                    checked += 1;
                    if !root.join(t.trim_end_matches('/')).exists() {
                        missing.push(t);
                    }
                } else if let Some(f) = folder {
                    let file = [".rs", ".proto", ".py", ".sh", ".toml"]
                        .iter()
                        .any(|e| t.ends_with(e));
                    if !(t.contains('/') || file) {
                        continue;
                    }
                    // Within the folder, at any depth (the map names `conn/mod.rs` of
                    // `connections/` in the gatherer's `src/`).
                    checked += 1;
                    let within = format!("/{}", f.trim_end_matches('/'));
                    let suffix = format!("/{}", t.trim_end_matches('/'));
                    if !all
                        .iter()
                        .any(|p| p.starts_with(&within) && p.ends_with(&suffix))
                    {
                        missing.push(format!("{f}: {t}"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 60,
        "only {checked} paths found: the parser lost them"
    );
    assert!(
        missing.is_empty(),
        "the README names paths that do not exist: {missing:?}"
    );
}
