//! The supply-chain policy of deny.toml, checked offline: every dependency built for x86_64
//! Linux carries a licence expression the policy allows, no crate is in two versions unless the
//! policy lists it with a reason (and every listed one still is), Cargo.lock is committed and
//! agrees with the manifests (`--locked`), and no dependency is a wildcard.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Policy {
    allow: BTreeSet<String>,
    /// `name@major` (or `name@0.minor`) of the crates allowed twice.
    skip: BTreeSet<String>,
}

fn policy() -> Policy {
    let text = std::fs::read_to_string(root().join("deny.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let allow = v["licenses"]["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let skip = v["bans"]["skip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let reason = e["reason"].as_str().unwrap_or_default();
            assert!(reason.len() > 10, "{e}: every skipped duplicate says why");
            e["crate"].as_str().unwrap().to_owned()
        })
        .collect();
    Policy { allow, skip }
}

/// Whether an SPDX expression (as crates publish them: `A OR B`, `A/B`, `(A OR B) AND C`) is
/// satisfied by the allowed licences: every AND-term must have an allowed alternative.
fn allowed(expr: &str, allow: &BTreeSet<String>) -> bool {
    let expr = expr.replace(" / ", " OR ").replace('/', " OR ");
    expr.split(" AND ").all(|term| {
        term.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
            .split(" OR ")
            .any(|alt| {
                allow
                    .contains(alt.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace()))
            })
    })
}

/// `name@major` as cargo-deny's skip spec means it: 1.2.3 -> 1, 0.4.5 -> 0.4.
fn spec(name: &str, version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("0");
    if major == "0" {
        format!("{name}@0.{}", parts.next().unwrap_or("0"))
    } else {
        format!("{name}@{major}")
    }
}

#[test]
fn every_dependency_is_licensed_as_the_policy_allows_and_duplicates_are_explained() {
    let p = policy();
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata --locked --offline: Cargo.lock must be committed and current:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeSet<&str> = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let in_graph: BTreeSet<&str> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let mut bad = Vec::new();
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked = 0;
    for pkg in m["packages"].as_array().unwrap() {
        let id = pkg["id"].as_str().unwrap();
        let (name, version) = (
            pkg["name"].as_str().unwrap(),
            pkg["version"].as_str().unwrap(),
        );
        if members.contains(id) {
            // Our own crates: never a wildcard requirement on a registry crate (the workspace's
            // own path crates carry no version, as cargo-deny's allow-wildcard-paths).
            for d in pkg["dependencies"].as_array().unwrap() {
                if d["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("registry+"))
                {
                    assert_ne!(d["req"], "*", "{name} depends on {} by wildcard", d["name"]);
                }
            }
            continue;
        }
        if !in_graph.contains(id) {
            continue;
        }
        checked += 1;
        match pkg["license"].as_str() {
            Some(l) if allowed(l, &p.allow) => {}
            other => bad.push(format!("{name} {version}: licence {other:?}")),
        }
        versions
            .entry(name.to_owned())
            .or_default()
            .insert(version.to_owned());
    }
    assert!(checked > 200, "only {checked} dependencies");
    assert!(
        bad.is_empty(),
        "licences outside deny.toml's allow list:\n{}",
        bad.join("\n")
    );

    // Duplicates: each newer copy must be listed; each listed one must still exist.
    let mut seen = BTreeSet::new();
    let mut unexplained = Vec::new();
    for (name, vs) in &versions {
        if vs.len() < 2 {
            continue;
        }
        let specs: Vec<String> = vs.iter().map(|v| spec(name, v)).collect();
        let listed: Vec<&String> = specs.iter().filter(|s| p.skip.contains(*s)).collect();
        if listed.len() + 1 < specs.len() {
            unexplained.push(format!("{name}: {vs:?}"));
        }
        seen.extend(listed.into_iter().cloned());
    }
    assert!(
        unexplained.is_empty(),
        "crates in several versions without a reason in deny.toml [bans] skip:\n{}",
        unexplained.join("\n")
    );
    let stale: Vec<&String> = p.skip.difference(&seen).collect();
    assert!(
        stale.is_empty(),
        "deny.toml skips duplicates that are gone: {stale:?}"
    );
}

#[test]
fn the_licence_expressions_are_read_as_spdx_means_them() {
    let allow: BTreeSet<String> = ["MIT", "Apache-2.0", "Unicode-3.0"]
        .map(String::from)
        .into();
    assert!(allowed("MIT OR Apache-2.0", &allow));
    assert!(allowed("MIT/Apache-2.0", &allow));
    assert!(allowed("(MIT OR Apache-2.0) AND Unicode-3.0", &allow));
    assert!(!allowed("MIT AND GPL-3.0", &allow));
    assert!(!allowed("GPL-3.0 OR AGPL-3.0", &allow));
    assert!(allowed("GPL-3.0 OR MIT", &allow));
    assert_eq!(spec("syn", "3.0.10"), "syn@3");
    assert_eq!(spec("rand", "0.10.4"), "rand@0.10");
}
