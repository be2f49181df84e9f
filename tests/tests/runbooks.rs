//! Every runbook command that can run off AWS (fenced as `sh runnable`) runs against a local
//! `kalshi-stack` with the variables runbooks/README.md defines, and succeeds. A runbook whose
//! commands have drifted from the code (a renamed flag, metric, column or endpoint) fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `(file, block)` for every `sh runnable` block.
fn runnable_blocks(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut block: Option<String> = None;
        for line in text.lines() {
            let t = line.trim();
            match &mut block {
                None if t == "```sh runnable" => block = Some(String::new()),
                Some(b) if t == "```" => {
                    out.push((
                        f.file_name().unwrap().to_string_lossy().into_owned(),
                        std::mem::take(b),
                    ));
                    block = None;
                }
                Some(b) => {
                    b.push_str(t);
                    b.push('\n');
                }
                None => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_commands_run_against_the_stack() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    let blocks = runnable_blocks(&dir);
    assert!(blocks.len() >= 15, "only {} runnable blocks", blocks.len());
    // `| head` ends the pipeline early and hides a grep that found nothing (pipefail sees
    // head's success); blocks trim with `sed -n 1,Np`, which reads to the end.
    let with_head: Vec<&String> = blocks
        .iter()
        .filter(|(_, b)| b.contains("| head"))
        .map(|(f, _)| f)
        .collect();
    assert!(
        with_head.is_empty(),
        "runnable blocks piping into head: {with_head:?}"
    );

    let s = kalshi_e2e::stack(630, false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let e = s.endpoints.clone();
    let path = format!(
        "{}:{}",
        kalshi_stack::default_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    // The variables come from the file the stack writes for a second terminal (as on a host:
    // the instance role's credentials there, the local S3's here).
    let env_file = s.opts.data_dir.join("env");
    let env = std::fs::read_to_string(&env_file).unwrap();
    for var in [
        "GATHERER_HEALTH",
        "GATHERER_METRICS",
        "GATHERER_DB_URL",
        "DEDUP_HEALTH",
        "DEDUP_METRICS",
        "DEDUP_CONFIG",
        "PRODUCTION_URL",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(env.contains(&format!("export {var}=")), "{var}: {env}");
    }
    for (file, block) in &blocks {
        let out = Command::new("bash")
            .args(["-e", "-u", "-o", "pipefail", "-c"])
            .arg(format!("source {}\n{block}", env_file.display()))
            .env("PATH", &path)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{file}:\n{block}exit {:?}\nstdout: {}\nstderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // Every metric a runbook names, in a command or in prose, is one the services expose: a
    // renamed metric fails here even where no runnable block greps for it.
    let mut exposed = std::collections::BTreeSet::new();
    exposed.extend(kalshi_e2e::metric_names::exposed(
        &kalshi_stack::get_text(&e.deduplicator_metrics)
            .await
            .unwrap(),
    ));
    exposed.extend(kalshi_e2e::metric_names::exposed(
        &kalshi_stack::get_text(&e.gatherers[0].metrics)
            .await
            .unwrap(),
    ));
    let _ = tokio::task::spawn_blocking(move || s.down()).await;
    let mut named = 0;
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap();
        for m in kalshi_e2e::metric_names::mentioned(&text) {
            named += 1;
            // node_exporter's names are checked against a real exporter in ops.rs; `dedup_*`
            // and the like name a family; the other two are a gap reason and a config key.
            let not_a_metric = m.starts_with("node_")
                || m.ends_with('_')
                || ["dedup_retention_overrun", "spill_dir"].contains(&m.as_str());
            if !not_a_metric && !exposed.contains(&m) {
                failures.push(format!(
                    "{} names the metric {m}, which no service exposes",
                    f.path().display()
                ));
            }
        }
    }
    assert!(named >= 20, "only {named} metric names in the runbooks");
    assert!(
        failures.is_empty(),
        "{} runbook blocks failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}

/// Every bootstrap command line the runbooks, the docs and the user-data templates give, with
/// its continuation lines joined and `sudo` dropped.
fn bootstrap_invocations() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "runbooks",
        "docs",
        "infra",
        "infra/modules/gatherers",
        "infra/modules/deduplicator",
        "infra/modules/monitoring",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            let name = p.to_string_lossy().into_owned();
            if name.ends_with(".md") || name.ends_with(".tftpl") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            // (the script in deploy/bootstrap, its name in the release, the release)
            let svc = [
                ("gatherer", "bootstrap.sh", "gatherer"),
                ("deduplicator", "bootstrap.sh", "deduplicator"),
                ("monitoring", "monitoring.sh", "deduplicator"),
            ]
            .into_iter()
            .find(|(_, f, r)| l.contains(&format!("kalshi-{r}-")) && l.contains(&format!("/{f}")));
            let Some((svc, script, _)) = svc else {
                i += 1;
                continue;
            };
            let mut cmd = l.to_owned();
            while cmd.trim_end().ends_with('\\') && i + 1 < lines.len() {
                cmd = format!(
                    "{} {}",
                    cmd.trim_end().trim_end_matches('\\'),
                    lines[i + 1].trim()
                );
                i += 1;
            }
            let args = cmd.split(script).nth(1).unwrap().trim().to_owned();
            out.push((f.display().to_string(), svc.to_owned(), args));
            i += 1;
        }
    }
    out
}

#[test]
fn every_documented_bootstrap_command_is_one_the_script_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let found = bootstrap_invocations();
    let mut checked = 0;
    for (file, svc, args) in &found {
        // Template values become plausible ones (a slot, an endpoint, a region, a zone).
        let args = args
            .replace("${slot}", "g1")
            .replace("${rds_endpoint}", "db.example:5432")
            .replace("${rds_instance_id}", "kalshi-prod")
            .replace("${region}", "us-east-1")
            .replace("${zone}", "kalshi.internal")
            .replace("${gatherers}", "g1,g2,g3")
            .replace("${name}", "kalshi-prod")
            .replace(
                "${alerts_topic_arn}",
                "arn:aws:sns:us-east-1:123456789012:kalshi-prod-alerts",
            )
            .replace("${grafana_version}", "12.0.0")
            .replace(
                "${deadmans_switch_flag}",
                "--deadmans-switch-url https://hc-ping.com/x",
            )
            .replace(
                "${tls_issue_flags}",
                "--tls-issue-prefix kalshi-data/kalshi-prod/tls/ --tls-issue-name kalshi-prod \
                 --tls-leaf-days 365 --tls-renew-within-days 60 \
                 --tls-issue-identity g1=g1,g1.gatherers.kalshi.internal \
                 --tls-issue-identity deduplicator=deduplicator",
            )
            .replace("${archive_prefix}", "archive/")
            .replace("${archive_bucket}", "kalshi-prod-archive");
        let args = other_template_values(&args);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec bash {} {args} --check-args",
                root.join(format!("deploy/bootstrap/{svc}.sh")).display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: `bootstrap.sh {args}` is refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    // The key rotation runbook and the three hosts' user-data.
    assert!(checked >= 4, "{found:?}");
}

/// Any other `${name}` of a template becomes `x`; `$${...}` (a shell expansion in a template)
/// and what follows it on its word is dropped.
fn other_template_values(s: &str) -> String {
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        if w.starts_with("$${") {
            continue;
        }
        let mut w = w.to_owned();
        while let Some(a) = w.find("${") {
            let b = w[a..].find('}').map_or(w.len(), |b| a + b + 1);
            w.replace_range(a..b, "x");
        }
        out.push(w);
    }
    out.join(" ")
}
