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
