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
    for (file, block) in &blocks {
        let out = Command::new("bash")
            .args(["-e", "-u", "-o", "pipefail", "-c", block])
            .env("PATH", &path)
            .env("GATHERER_HEALTH", &e.gatherers[0].health)
            .env("GATHERER_METRICS", &e.gatherers[0].metrics)
            .env("GATHERER_DB_URL", &e.gatherers[0].database_url)
            .env("DEDUP_HEALTH", &e.deduplicator_health)
            .env("DEDUP_METRICS", &e.deduplicator_metrics)
            .env("DEDUP_CONFIG", &e.deduplicator_config)
            .env("PRODUCTION_URL", s.production_direct_url())
            // The instance role's credentials on a host; the local S3's here.
            .envs(kalshi_testkit::s3::ENV)
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
