//! The operations pack stays true to the code: the alert rules pass `promtool check` and their
//! unit tests, the scrape configuration is valid, and every metric the rules and dashboards
//! query is one the running services actually expose on /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool not found: install Debian's `prometheus` package (.ci/run does)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let out = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test and a runbook that exists.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "alert {line} has no unit test"
        );
    }
    for rb in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: "))
    {
        assert!(root().join(rb).exists(), "runbook {rb} does not exist");
    }
}

#[test]
fn scrape_configuration_is_valid() {
    let dir = std::env::temp_dir().join(format!("kalshi-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = root().join("deploy/prometheus/alerts.yml");
    let cfg = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/kalshi-data/alerts.yml",
            &rules.display().to_string(),
        );
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    promtool(&["check", "config", "prometheus.yml"], &dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Metric names a text mentions (ours all carry one of these prefixes).
fn mentioned(text: &str) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "ws_client_",
        "conn_manager_",
        "market_registry_",
        "backfill_",
        "writer_",
        "gaps_declared",
        "dedup_",
        "api_",
        "retention_",
        "export_",
    ];
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| PREFIXES.iter().any(|p| t.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// Metric names a /metrics page exposes (histograms also as `_bucket`, `_sum`, `_count`).
fn exposed(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in page.lines() {
        let name = match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None if l.starts_with('#') => continue,
            None => l.split(['{', ' ']).next().unwrap_or(""),
        };
        if !name.is_empty() {
            out.insert(name.to_owned());
            if l.ends_with(" histogram") {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboards_use_only_metrics_the_services_expose() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = kalshi_e2e::stack(620, false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A gap and a lag of some kind so every family has moved at least once.
    s.fault(serde_json::json!({"fault": "drop", "count": 1}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut have = BTreeSet::new();
    have.extend(exposed(
        &kalshi_stack::get_text(&s.endpoints.deduplicator_metrics)
            .await
            .unwrap(),
    ));
    for g in &s.endpoints.gatherers {
        have.extend(exposed(&kalshi_stack::get_text(&g.metrics).await.unwrap()));
    }
    let _ = tokio::task::spawn_blocking(move || s.down()).await;
    let mut files = vec![
        root().join("deploy/prometheus/alerts.yml"),
        root().join("deploy/prometheus/alerts_test.yml"),
    ];
    for e in std::fs::read_dir(root().join("deploy/grafana"))
        .unwrap()
        .flatten()
    {
        files.push(e.path());
    }
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for m in mentioned(&text) {
            assert!(
                have.contains(&m),
                "{} queries {m}, which no service exposes",
                f.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
}

#[test]
fn systemd_units_restart_sanely_and_are_hardened() {
    for (unit, bin) in [
        ("kalshi-gatherer.service", "gatherer"),
        ("kalshi-deduplicator.service", "deduplicator"),
    ] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{unit} lacks {k}"))
                .to_owned()
        };
        assert_eq!(get("Restart"), "always", "{unit}");
        assert_eq!(get("RestartSec"), "10", "{unit}");
        assert_eq!(get("StartLimitIntervalSec"), "60", "{unit}");
        assert_eq!(get("StartLimitBurst"), "3", "{unit}");
        assert_eq!(get("NoNewPrivileges"), "yes", "{unit}");
        assert_eq!(get("ProtectSystem"), "strict", "{unit}");
        assert_eq!(get("User"), "kalshi", "{unit}");
        assert!(
            get("EnvironmentFile").contains("/etc/kalshi-data/"),
            "{unit}"
        );
        // Longer than the services' own shutdown deadlines (writers' drain plus one database
        // deadline, about 40 s).
        let stop: u64 = get("TimeoutStopSec").parse().unwrap();
        assert!(stop >= 60, "{unit}: TimeoutStopSec {stop}");
        // The command line is one the binary accepts.
        let exec = get("ExecStart");
        assert!(
            exec.starts_with(&format!("/usr/local/bin/{bin} --config ")),
            "{unit}: {exec}"
        );
        let help = Command::new(kalshi_stack::default_bin_dir().join(bin))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        assert!(help.contains("--config"), "{bin} --help");
        if exec.ends_with(" run") {
            assert!(help.contains("run "), "{bin} has a run subcommand");
        }
    }
}

#[test]
fn terraform_is_formatted() {
    let out = Command::new("terraform")
        .args(["fmt", "-check", "-recursive", "-diff", "infra"])
        .current_dir(root())
        .output()
        .expect("terraform not found (see infra/README.md)");
    assert!(
        out.status.success(),
        "terraform fmt -check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every module documents its variables and outputs.
    for e in std::fs::read_dir(root().join("infra/modules"))
        .unwrap()
        .flatten()
    {
        for f in ["variables.tf", "outputs.tf"] {
            let text = std::fs::read_to_string(e.path().join(f)).unwrap();
            let blocks = text.matches("variable \"").count() + text.matches("output \"").count();
            let described = text.matches("description").count();
            assert_eq!(
                blocks,
                described,
                "{}/{f}: every variable and output has a description",
                e.path().display()
            );
        }
    }
}
