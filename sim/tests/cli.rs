//! The `kalshi-sim` binary: starts from the documented command line, reports where it listens,
//! serves a client subscribed to everything, rejects bad configuration with exit code 64 and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kalshi_shared::wire::ws::FrameBody;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kalshi-sim");

#[test]
fn help_documents_every_documented_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--seed",
        "--series",
        "--markets",
        "--rate",
        "--public-key",
        "--legacy-fields",
        "--require-auth",
        "--auth-max-skew",
        "--control-listen",
        "--ping-interval",
        "--truth-file",
        "--addr-file",
        "--rest-rate",
        "--fanout-buffer",
        "--ws-max-frame-bytes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(
        help.contains("401"),
        "--help explains the authentication modes"
    );
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    for (args, needle) in [
        (vec!["--markets", "0"], "--markets"),
        (
            vec!["--public-key", "/nonexistent/key.pem"],
            "/nonexistent/key.pem",
        ),
        (vec!["--key-id", "k"], "--key-id needs --public-key"),
        (vec!["--fanout-buffer", "0"], "--fanout-buffer"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // clap's own usage errors are also non-zero and name the flag.
    let out = Command::new(BIN).args(["--rate", "fast"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_until_sigterm_and_serves_everything() {
    let dir = std::env::temp_dir().join(format!("kalshi-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr.json");
    let truth_file = dir.join("truth.jsonl");
    let mut child = Command::new(BIN)
        .args(["--seed", "1", "--markets", "50", "--rate", "2000"])
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--truth-file")
        .arg(&truth_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "no address file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addrs: Value = serde_json::from_slice(&std::fs::read(&addr_file).unwrap()).unwrap();
    let rest = addrs["rest"].as_str().unwrap();
    let (status, v) = get_json(&format!("{rest}/markets?limit=1000&mve_filter=exclude")).await;
    assert_eq!(status, 200);
    let tickers: Vec<String> = v["markets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ticker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tickers.len(), 50);
    let mut c = Client::connect_url(addrs["ws"].as_str().unwrap(), None)
        .await
        .unwrap();
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": tickers}),
    )
    .await;
    c.cmd(
        "subscribe",
        json!({"channels": ["trade", "ticker", "market_lifecycle_v2"]}),
    )
    .await;
    let frames = c.read_for(Duration::from_millis(1500)).await;
    let count = |pred: fn(&FrameBody) -> bool| frames.iter().filter(|f| pred(&f.body)).count();
    assert_eq!(count(|b| matches!(b, FrameBody::OrderbookSnapshot(_))), 50);
    assert!(count(|b| matches!(b, FrameBody::OrderbookDelta(_))) > 100);
    assert!(count(|b| matches!(b, FrameBody::Trade(_))) > 10);
    assert!(count(|b| matches!(b, FrameBody::Ticker(_))) > 10);
    assert!(truth_file.exists());

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    let mut stdout = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    for line in ["rest     http://", "ws       ws://", "control  http://"] {
        assert!(stdout.contains(line), "stdout lacks {line:?}: {stdout}");
    }
    assert!(truth_file.exists(), "an explicit truth file is kept");
    std::fs::remove_dir_all(dir).unwrap();
}
