//! The `deduplicator` binary's operator surface: --help and configuration errors (`migrate`,
//! `status` and `gaps` against real gatherers are in `tests/tests/dedup_binary.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deduplicator"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dedup-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_documents_commands_and_every_key() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "migrate",
        "status",
        "gaps",
        "--config",
        "--check-config",
        "[production]",
        "database_url",
        "iam_auth",
        "pause_before_commit",
        "DEDUPLICATOR__SECTION__KEY",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let out = bin().args(["gaps", "--help"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("--from"));
}

#[test]
fn bad_configuration_is_one_clear_line_and_exit_64() {
    let cases = [
        ("[sink]\nbatch_rows = 0\n", "sink.batch_rows"),
        (
            "[production]\ndatabase_url = \"mysql://u:hunter2@h/db\"\n",
            "production.database_url",
        ),
        ("[sink]\nbatch_rowz = 5\n", "batch_rowz"),
        (
            "[[gatherers]]\nid = \"a b\"\nendpoint = \"http://x:1\"\n",
            "gatherers[0].id",
        ),
        ("", "sources.tls"),
    ];
    for (text, key) in cases {
        // Plaintext asked for, so each case fails on its own key (the last one on mTLS).
        let text = if key == "sources.tls" {
            text.to_owned()
        } else {
            // With plaintext asked for, the endpoints are http:// too.
            let gatherers = if text.contains("[[gatherers]]") {
                ""
            } else {
                "[[gatherers]]\nid = \"g1\"\nendpoint = \"http://127.0.0.1:50051\"\n"
            };
            format!("[sources]\ninsecure = true\n{gatherers}{text}")
        };
        let p = write("bad.toml", &text);
        let out = bin()
            .arg("--config")
            .arg(&p)
            .arg("--check-config")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(key), "{err} should name {key}");
        assert!(!err.contains("hunter2"), "password in an error: {err}");
    }
    let out = bin()
        .env("DEDUPLICATOR__SINK__BATCH_ROWS", "lots")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("sink.batch_rows")
    );
    let out = bin()
        .arg("--config")
        .arg("/nonexistent.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
