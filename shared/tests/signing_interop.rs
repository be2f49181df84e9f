//! Kalshi request signing checked against an independent implementation: Python's
//! `cryptography` package, which Kalshi's own SDK signs with. Both the committed vectors
//! (`testdata/python-signatures.json`, made by `testdata/gen_keys_and_vectors.py`) and a live
//! exchange in both directions through `testdata/interop.py`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kalshi_shared::auth::{Signer, Verifier};
use serde_json::{Value, json};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The interpreter of the pinned PyPI oracles (`prerequisites.txt`): `$KALSHI_PYTHON`, which
/// `./dev test` sets, else the workspace's `target/venv`.
fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("KALSHI_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python3");
    assert!(
        p.is_file(),
        "{} not found: run `./dev check --for test`, which installs the pinned oracles",
        p.display()
    );
    p
}

fn interop(request: Value) -> Value {
    let mut child = Command::new(oracle_python())
        .arg(testdata("interop.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (`./dev check --for test` installs it): {e}",
                oracle_python().display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "interop.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify(verifier: &Verifier, ts: &str, method: &str, path: &str, sig: &str) -> bool {
    let now: i64 = ts.parse().unwrap();
    let headers = kalshi_shared::auth::ReceivedHeaders {
        key_id: Some("any"),
        timestamp: Some(ts),
        signature: Some(sig),
    };
    verifier.verify(&headers, method, path, now, 0).is_ok()
}

#[test]
fn python_vectors_verify_in_rust() {
    let vectors: Vec<Value> =
        serde_json::from_slice(&std::fs::read(testdata("python-signatures.json")).unwrap())
            .unwrap();
    assert_eq!(vectors.len(), 6);
    let rsa_spki = Verifier::from_pem(&std::fs::read(testdata("rsa-public.pem")).unwrap()).unwrap();
    let rsa_pkcs1 =
        Verifier::from_pem(&std::fs::read(testdata("rsa-public-pkcs1.pem")).unwrap()).unwrap();
    let ed = Verifier::from_pem(&std::fs::read(testdata("ed25519-pkcs8.pem")).unwrap()).unwrap();
    for v in &vectors {
        let (ts, method, path, sig) = (
            v["timestamp"].as_str().unwrap(),
            v["method"].as_str().unwrap(),
            v["path"].as_str().unwrap(),
            v["signature"].as_str().unwrap(),
        );
        let verifiers: Vec<&Verifier> = match v["key"].as_str().unwrap() {
            "rsa" => vec![&rsa_spki, &rsa_pkcs1],
            _ => vec![&ed],
        };
        for verifier in verifiers {
            assert!(
                verify(verifier, ts, method, path, sig),
                "vector {v} must verify"
            );
            // The query string is not signed, so the path without it verifies too ...
            let bare = path.split('?').next().unwrap();
            assert!(verify(verifier, ts, method, bare, sig));
            // ... but another timestamp, method or path does not.
            assert!(!verify(verifier, "1700000000001", method, path, sig));
            assert!(!verify(verifier, ts, "POST", path, sig));
            assert!(!verify(verifier, ts, method, "/trade-api/v2/events", sig));
        }
    }
}

#[test]
fn rust_signatures_verify_in_python() {
    for (key, public) in [
        ("rsa-pkcs1.pem", "rsa-public.pem"),
        ("rsa-pkcs8.pem", "rsa-public.pem"),
        ("ed25519-pkcs8.pem", ""),
    ] {
        let signer = Signer::from_file("key-id", &testdata(key)).unwrap();
        let public_path = if public.is_empty() {
            let dir = std::env::temp_dir().join(format!("kalshi-interop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join("ed-public.pem");
            std::fs::write(&p, signer.public_key_pem()).unwrap();
            p
        } else {
            testdata(public)
        };
        let path = "/trade-api/v2/markets/trades?ticker=X&min_ts=1";
        let h = signer.sign_at("GET", path, 1_763_800_000_000).unwrap();
        let answer = interop(json!({
            "op": "verify", "public_key": public_path, "timestamp": h.timestamp_ms,
            "method": "GET", "path": path, "signature": h.signature_b64,
        }));
        assert_eq!(
            answer["valid"], true,
            "{key}: Python must accept Rust's signature"
        );
        let answer = interop(json!({
            "op": "verify", "public_key": public_path, "timestamp": h.timestamp_ms,
            "method": "GET", "path": "/trade-api/ws/v2", "signature": h.signature_b64,
        }));
        assert_eq!(
            answer["valid"], false,
            "{key}: a signature for another path must fail"
        );
    }
}

#[test]
fn fresh_python_signatures_verify_in_rust() {
    let rsa = Verifier::from_pem(&std::fs::read(testdata("rsa-public.pem")).unwrap()).unwrap();
    let ed = Verifier::from_pem(&std::fs::read(testdata("ed25519-pkcs8.pem")).unwrap()).unwrap();
    for (key, verifier) in [("rsa-pkcs8.pem", &rsa), ("ed25519-pkcs8.pem", &ed)] {
        let ts = kalshi_shared::time::now_ms().to_string();
        let answer = interop(json!({
            "op": "sign", "key": testdata(key), "timestamp": ts, "method": "GET",
            "path": "/trade-api/ws/v2",
        }));
        let sig = answer["signature"].as_str().unwrap();
        assert!(
            verify(verifier, &ts, "GET", "/trade-api/ws/v2", sig),
            "{key}"
        );
    }
}
