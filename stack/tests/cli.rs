//! `kalshi-stack` as a user runs it: `up` prints the endpoints and live progress, `kill`/`start`
//! and `rate` act on it, `audit` passes; and when the supervisor is SIGKILLed nothing it started
//! is left running.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> std::path::PathBuf {
    // Cargo builds this package's binary for its integration tests; the services it starts
    // are the workspace's other binaries next to it.
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_kalshi-stack"))
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{pid}: {cmd}"));
            }
        }
    }
    out
}

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn up_control_audit_and_nothing_left_behind() {
    let dir = std::env::temp_dir().join(format!("kalshi-e2e-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut up = Command::new(bin())
        .current_dir(dir.parent().unwrap())
        .arg("--data-dir")
        .arg(dir.file_name().unwrap())
        .args(["up", "--markets", "20", "--rate", "200", "--every", "1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(format!("{}.stderr", dir.display())).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut seen = Vec::new();
    // Endpoints, then progress lines with every gatherer ingesting.
    loop {
        let Some(Ok(l)) = lines.next() else {
            panic!(
                "up ended early:\n{}\n{}",
                seen.join("\n"),
                std::fs::read_to_string(format!("{}.stderr", dir.display())).unwrap_or_default()
            );
        };
        seen.push(l.clone());
        if l.trim_start().starts_with("g3")
            && l.contains(" up ")
            && !l.contains("ingest       0 rec/s")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress: {seen:#?}"
        );
    }
    let text = seen.join("\n");
    for word in [
        "simulator",
        "gRPC",
        "deduplicator",
        "production",
        "postgres://",
        "production    ok",
    ] {
        assert!(text.contains(word), "{word} not shown:\n{text}");
    }
    std::thread::spawn(move || for _ in lines {}); // keep draining

    let (code, out) = run(&dir, &["kill", "gatherer", "2"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "gatherer 2 killed");
    let (code, out) = run(&dir, &["start", "gatherer", "2"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&dir, &["kill", "gatherer", "9"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("there is no gatherer 9"), "{out}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(run(&dir, &["rate", "0"]).0, 0);
    // The audit passes once production has caught up.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, out) = run(&dir, &["audit", "--json"]);
        if code == 0 {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["ok"], true);
            assert!(v["streams"][0]["expected"].as_u64().unwrap() > 0);
            // `status --json` from another terminal: every service up, and what the
            // deduplicator wrote is what the audit found in production.
            let (code, out) = run(&dir, &["status", "--json"]);
            assert_eq!(code, 0, "{out}");
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            let gs = s["gatherers"].as_array().unwrap();
            assert_eq!(gs.len(), 3, "{s}");
            assert!(
                gs.iter()
                    .all(|g| g["up"] == true && g["inserts"].as_f64() > Some(0.0)),
                "{s}"
            );
            assert_eq!(s["deduplicator"]["up"], true, "{s}");
            assert_eq!(s["simulated"], true, "{s}");
            let trades = v["streams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["stream"] == "trades")
                .unwrap();
            assert_eq!(
                s["deduplicator"]["written"]["trades"].as_f64(),
                trades["present"].as_f64(),
                "{s}\n{trades}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "audit never passed:\n{out}");
        std::thread::sleep(Duration::from_secs(2));
    }

    // SIGKILL the supervisor: every child it started dies with it.
    let needle = dir.display().to_string();
    assert!(
        processes_mentioning(&needle).len() >= 8,
        "services running: {:?}",
        processes_mentioning(&needle)
    );
    up.kill().unwrap();
    up.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(format!("{}.stderr", dir.display()));
}

/// `up --exchange` refuses what it cannot start on, before starting anything: an unknown
/// exchange name, a key file that is not there or not a private key, a WebSocket URL it cannot
/// derive; its flags need --exchange; chaos needs the simulator.
#[test]
fn exchange_mode_refuses_what_it_cannot_start_on_before_starting_anything() {
    let dir =
        std::env::temp_dir().join(format!("kalshi-stack-exchange-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.pem");
    let key_s = key.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "up",
                "--exchange",
                "production",
                "--key-id",
                "k",
                "--key-file",
                key_s,
            ],
            "prod, demo, or a REST base URL",
        ),
        (
            vec![
                "up",
                "--exchange",
                "prod",
                "--key-id",
                "k",
                "--key-file",
                missing.to_str().unwrap(),
            ],
            "cannot read it",
        ),
        (
            vec!["up", "--exchange", "prod", "--key-id", "k"],
            "--key-file is required",
        ),
        (
            vec![
                "up",
                "--exchange",
                "https://host/api",
                "--key-id",
                "k",
                "--key-file",
                key_s,
            ],
            "give --ws-url",
        ),
        (vec!["up", "--ws-url", "wss://x"], "--exchange"),
        (
            vec![
                "chaos",
                "--scenario",
                "seq-gap",
                "--exchange",
                "prod",
                "--key-id",
                "k",
                "--key-file",
                key_s,
            ],
            "cannot run against --exchange",
        ),
    ] {
        let (code, text) = run(&dir.join("data"), &args);
        assert_ne!(code, 0, "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(!dir.join("data/pg").exists(), "{args:?}: nothing started");
    }
    let (code, text) = run(&dir.join("data"), &["up", "--help"]);
    assert_eq!(code, 0);
    for flag in ["--exchange", "--ws-url", "--key-id", "--key-file"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
