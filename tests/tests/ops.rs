//! The operations pack stays true to the code: the alert rules pass `promtool check` and their
//! unit tests, the scrape configuration is valid, and every metric the rules and dashboards
//! query is one the running services actually expose on /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kalshi_e2e::metric_names::{exposed, mentioned};

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
    // Every alert links its runbook by an absolute URL (it is clicked from Alertmanager, e-mail
    // or a pager), into this repository's runbooks/, and the file exists.
    const RUNBOOKS: &str = "https://github.com/kalshi-data/kalshi-data/blob/main/";
    let alerts = alert_names_and_severities(&rules);
    assert!(alerts.len() >= 25, "{alerts:?}");
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(
        urls.len(),
        alerts.len(),
        "every alert has exactly one runbook_url"
    );
    for url in urls {
        let path = url
            .strip_prefix(RUNBOOKS)
            .unwrap_or_else(|| panic!("runbook_url {url} is not under {RUNBOOKS}"));
        assert!(root().join(path).exists(), "runbook {path} does not exist");
    }
    assert!(
        !rules.contains("runbook: "),
        "a relative runbook annotation is left"
    );
}

/// `(alertname, severity)` of every rule in alerts.yml.
fn alert_names_and_severities(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for l in rules.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("- alert: ") {
            name = Some(n.to_owned());
        } else if let Some(rest) = l.strip_prefix("labels: {severity: ") {
            let sev = rest.trim_end_matches('}').to_owned();
            out.push((name.take().expect("labels before alert"), sev));
        }
    }
    out
}

fn amtool(args: &[&str]) -> String {
    let out = Command::new("amtool")
        .args(args)
        .current_dir(root().join("deploy/alertmanager"))
        .output()
        .expect(
            "amtool not found: install Debian's `prometheus-alertmanager` package (.ci/run does)",
        );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "amtool {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Alertmanager configuration is valid, and every alert of alerts.yml is routed where its
/// severity says: critical pages, warning opens a ticket, info goes nowhere, the Watchdog goes
/// to the dead man's switch. An alert without a known severity would fail here.
#[test]
fn alertmanager_routes_every_alert_by_its_severity() {
    let out = amtool(&["check-config", "alertmanager.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut routed = 0;
    for (name, severity) in alert_names_and_severities(&rules) {
        let want = match (name.as_str(), severity.as_str()) {
            ("Watchdog", _) => "deadmans-switch",
            (_, "critical") => "page",
            (_, "warning") => "ticket",
            (_, "info") => "blackhole",
            (n, s) => panic!("{n}: severity {s} has no route"),
        };
        let got = amtool(&[
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            &format!("alertname={name}"),
            &format!("severity={severity}"),
            "instance=g1",
        ]);
        assert_eq!(got, want, "{name} ({severity})");
        routed += 1;
    }
    assert!(routed >= 25);
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

/// Debian's prometheus-node-exporter, started on a free loopback port, scraped once.
async fn node_exporter_metrics() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus-node-exporter not found: install Debian's `prometheus-node-exporter` package (.ci/run does)");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Ok(t) = kalshi_stack::get_text(&format!("http://127.0.0.1:{port}/metrics")).await {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node_exporter did not answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    page
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
    // Every metric of ours is documented, by name, in the service docs.
    let docs = std::fs::read_to_string(root().join("docs/gatherer.md")).unwrap()
        + &std::fs::read_to_string(root().join("docs/deduplicator.md")).unwrap();
    let ours: Vec<&String> = have
        .iter()
        .filter(|m| !mentioned(m).is_empty() || m.starts_with("db_operation"))
        .filter(|m| !(m.ends_with("_bucket") || m.ends_with("_sum") || m.ends_with("_count")))
        .collect();
    assert!(ours.len() > 40, "{ours:?}");
    let undocumented: Vec<&&String> = ours.iter().filter(|m| !docs.contains(m.as_str())).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/gatherer.md and docs/deduplicator.md: {undocumented:?}"
    );
    // The host alerts query node_exporter: read the names off a real one.
    have.extend(exposed(&node_exporter_metrics().await));
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
        // Restarted forever: a unit systemd gave up on fails its instance's health check, and
        // a replacement is the costly way to restart a process.
        assert_eq!(get("StartLimitIntervalSec"), "0", "{unit}");
        assert!(!text.contains("StartLimitBurst="), "{unit}");
        // Only a configuration error (64) stops it: restarting cannot fix that.
        assert_eq!(get("RestartPreventExitStatus"), "64", "{unit}");
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

/// `terraform validate` of the example environment, with every module, against the AWS
/// provider from a local mirror (the registry is out of reach; the project's machines carry one
/// in /opt/tf-plugins, `$KALSHI_TF_PLUGINS` overrides). In a copy: no `.terraform` in the tree.
#[test]
fn terraform_validates_against_the_aws_provider() {
    let mirror = std::env::var("KALSHI_TF_PLUGINS").unwrap_or_else(|_| "/opt/tf-plugins".into());
    if !std::path::Path::new(&mirror)
        .join("registry.terraform.io/hashicorp/aws")
        .is_dir()
    {
        eprintln!(
            "no provider mirror at {mirror}: terraform validate not run (fmt and descriptions are)"
        );
        return;
    }
    let copy = std::env::temp_dir().join(format!("kalshi-tf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let out = Command::new("cp")
        .args(["-r"])
        .arg(root().join("infra"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    let env = copy.join("envs/example");
    let tf = |args: &[&str]| {
        let out = Command::new("terraform")
            .args(args)
            .current_dir(&env)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tf(&[
        "init",
        "-backend=false",
        "-input=false",
        &format!("-plugin-dir={mirror}"),
    ]);
    let v = tf(&["validate", "-no-color"]);
    assert!(v.contains("The configuration is valid"), "{v}");
    let _ = std::fs::remove_dir_all(&copy);
}

/// The Athena tables (infra/modules/athena) describe exactly the Parquet the archiver writes:
/// every archived stream has a table, and its columns are the file's, in order, each with the
/// Hive type of the file's physical and logical type (decimals for prices and quantities).
#[test]
fn athena_tables_have_the_archives_columns() {
    use deduplicator::archive::format::{ARCHIVED, schema};
    let tf = std::fs::read_to_string(root().join("infra/modules/athena/main.tf")).unwrap();
    // `<stream> = [` then `{ name = "x", type = "y" },` lines, up to `]`.
    let mut tables: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    let mut current: Option<String> = None;
    // Within `columns = { ... }` of the locals.
    let block = tf.split_once("  columns = {\n").unwrap().1;
    let block = block.split_once("\n  }\n").unwrap().0;
    for line in block.lines().map(str::trim) {
        if let Some(name) = line.strip_suffix(" = [") {
            current = Some(name.to_owned());
            tables.insert(name.to_owned(), Vec::new());
        } else if line == "]" {
            current = None;
        } else if let (Some(t), Some(rest)) = (&current, line.strip_prefix("{ name = \"")) {
            let (name, rest) = rest.split_once("\", type = \"").unwrap();
            let ty = rest.strip_suffix("\" },").unwrap();
            tables
                .get_mut(t)
                .unwrap()
                .push((name.to_owned(), ty.to_owned()));
        }
    }
    let hive = |f: &parquet_type::Type| -> String { hive_type(f) };
    let want: std::collections::BTreeMap<String, Vec<(String, String)>> = ARCHIVED
        .iter()
        .map(|s| {
            let sch = schema(*s).unwrap();
            let cols = sch
                .get_fields()
                .iter()
                .map(|f| (f.name().to_owned(), hive(f)))
                .collect();
            (s.table().to_owned(), cols)
        })
        .collect();
    assert_eq!(
        tables, want,
        "infra/modules/athena/main.tf against the archive's schema"
    );
}

use deduplicator::archive::format::parquet_type;

/// The Hive (Athena) type of a Parquet column, from its physical and logical types.
fn hive_type(f: &parquet_type::Type) -> String {
    let info = f.get_basic_info();
    if f.is_group() {
        // LIST { repeated group list { required group element { ... } } }
        let element = &f.get_fields()[0].get_fields()[0];
        let fields: Vec<String> = element
            .get_fields()
            .iter()
            .map(|x| format!("{}:{}", x.name(), hive_type(x)))
            .collect();
        assert_eq!(
            format!("{:?}", info.logical_type_ref()),
            "Some(List)",
            "{}",
            f.name()
        );
        return format!("array<struct<{}>>", fields.join(","));
    }
    let logical = format!("{:?}", info.logical_type_ref());
    match (
        format!("{:?}", f.get_physical_type()).as_str(),
        logical.as_str(),
    ) {
        ("BYTE_ARRAY", "Some(String)" | "Some(Json)") => "string".to_owned(),
        ("INT64", l) if l.starts_with("Some(Timestamp") => "timestamp".to_owned(),
        ("INT64", l) if l.starts_with("Some(Decimal") => {
            let scale = l
                .split("scale: ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            let precision = l
                .split("precision: ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            format!("decimal({precision},{scale})")
        }
        ("INT64", "None") => "bigint".to_owned(),
        ("INT32", l) if l.starts_with("Some(Integer(IntType { bit_width: 16") => {
            "smallint".to_owned()
        }
        ("BOOLEAN", "None") => "boolean".to_owned(),
        (p, l) => panic!("{}: no Hive type for {p} {l}", f.name()),
    }
}
