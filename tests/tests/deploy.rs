//! The release and the host bootstrap, as EC2 user-data runs them, on this machine: the release
//! script makes reproducible tarballs with checksums; the gatherer's bootstrap sets up a
//! throwaway PostgreSQL cluster (peer authentication first in pg_hba.conf, the role, the
//! database; TimescaleDB preloaded only when its library is there) and temporary directories,
//! changing nothing outside them, twice with the same result; and the gatherer it installed
//! starts from the installed files against the simulator and becomes healthy. The
//! deduplicator's bootstrap writes a configuration its binary accepts. Every shell script
//! passes `bash -n` and shellcheck.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{t}");
    t
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kalshi-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn whoami() -> String {
    run(Command::new("id").arg("-un")).trim().to_owned()
}

/// Builds the release from the test build's binaries into `out` and unpacks `service`'s
/// tarball under `into`; returns the unpacked directory.
fn release(out: &Path, into: &Path, service: &str) -> PathBuf {
    run(Command::new(root().join("deploy/release/build.sh"))
        .arg("--bin-dir")
        .arg(kalshi_stack::default_bin_dir())
        .arg("--out")
        .arg(out));
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(out));
    let version = env!("CARGO_PKG_VERSION");
    let arch = run(Command::new("uname").arg("-m")).trim().to_owned();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(out.join(format!("kalshi-{service}-{version}-linux-{arch}.tar.gz")))
        .arg("-C")
        .arg(into));
    into.join(format!("kalshi-{service}-{version}"))
}

#[test]
fn the_release_is_reproducible_and_carries_what_the_bootstrap_needs() {
    let dir = temp("release");
    let unpacked = release(&dir.join("a"), &dir, "gatherer");
    // The same binaries give the same bytes.
    run(Command::new(root().join("deploy/release/build.sh"))
        .arg("--bin-dir")
        .arg(kalshi_stack::default_bin_dir())
        .arg("--out")
        .arg(dir.join("b")));
    let sums = |d: &str| std::fs::read_to_string(dir.join(d).join("SHA256SUMS")).unwrap();
    assert_eq!(sums("a"), sums("b"));
    assert_eq!(sums("a").lines().count(), 2, "{}", sums("a"));
    for f in [
        "bin/gatherer",
        "bootstrap.sh",
        "lib/fetch-tls.sh",
        "lib/common.sh",
        "lib/cloudwatch-logs.sh",
        "lib/data-volume.sh",
        "lib/renew-tls.sh",
        "systemd/kalshi-gatherer.service",
        "etc/gatherer.production.toml",
        "etc/gatherer.reference.toml",
    ] {
        assert!(unpacked.join(f).is_file(), "{f} missing from the tarball");
    }
    // The shipped config is the repository's, byte for byte.
    assert_eq!(
        std::fs::read(unpacked.join("etc/gatherer.production.toml")).unwrap(),
        std::fs::read(root().join("deploy/gatherer.production.toml")).unwrap()
    );
    let build = std::fs::read_to_string(unpacked.join("BUILD")).unwrap();
    assert!(
        build.contains(&format!("version={}\n", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    // A tampered tarball fails the check user-data runs.
    let tarball = std::fs::read_dir(dir.join("a"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("gatherer"))
        .unwrap();
    let mut bytes = std::fs::read(&tarball).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&tarball, bytes).unwrap();
    let out = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(dir.join("a"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bootstrap's arguments for a throwaway cluster under `host`.
fn bootstrap(
    unpacked: &Path,
    host: &Path,
    pg: &kalshi_testkit::pg::PgCluster,
    conf_dir: &Path,
    libdir: &Path,
    restart: &str,
) -> Output {
    let sock = pg.root_dir().join("sock");
    Command::new("bash")
        .arg(unpacked.join("bootstrap.sh"))
        .args(["--slot", "g2", "--no-apt", "--no-systemd"])
        .arg("--root")
        .arg(host)
        .args([
            "--psql",
            &format!("psql -X -h {} -p {} -U postgres", sock.display(), pg.port()),
        ])
        .arg("--pg-conf-dir")
        .arg(conf_dir)
        .arg("--pg-libdir")
        .arg(libdir)
        .args(["--pg-restart", restart])
        .arg("--pg-socket-dir")
        .arg(&sock)
        .args(["--pg-port", &pg.port().to_string()])
        .args(["--db-user", &whoami()])
        .arg("--key-id-file")
        .arg(host.join("secret-key-id"))
        .arg("--key-file")
        .arg(kalshi_testkit::keys::key_file())
        .args(["--log-group", "kalshi-prod/gatherers"])
        .arg("--tls-dir")
        .arg(host.parent().unwrap().join("tls-source"))
        .output()
        .unwrap()
}

/// Every file under `dir`, with its bytes and mode.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.clone(),
                    std::fs::read(&p).unwrap(),
                    meta.permissions().mode(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gatherer_bootstrap_sets_up_postgres_and_the_gatherer_starts_from_what_it_installed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp("bootstrap");
    let unpacked = release(&dir.join("dist"), &dir, "gatherer");
    let host = dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(
        host.join("secret-key-id"),
        format!("{}\n", kalshi_testkit::keys::KEY_ID),
    )
    .unwrap();
    // The slot's mTLS identity, as infra/modules/pki's secret would hand it over.
    let (_ca, tls) =
        kalshi_testkit::certs::write_mtls_set(&dir.join("tls-source"), &["g2".to_owned()]).unwrap();
    let mut pg = kalshi_testkit::pg::PgCluster::start_default().unwrap();
    // As on Debian: postgresql.conf includes conf.d, where the bootstrap writes.
    let data = pg.data_dir();
    let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    std::fs::write(
        data.join("postgresql.conf"),
        conf + "\ninclude_dir = 'conf.d'\n",
    )
    .unwrap();
    let no_timescale = dir.join("lib-without-timescaledb");
    std::fs::create_dir_all(&no_timescale).unwrap();

    // TimescaleDB absent: skipped cleanly, no restart (`false` would fail the script).
    let out = bootstrap(&unpacked, &host, &pg, &data, &no_timescale, "false");
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("TimescaleDB not installed: skipped"), "{log}");
    let ours = std::fs::read_to_string(data.join("conf.d/kalshi-gatherer.conf")).unwrap();
    assert!(!ours.contains("shared_preload_libraries"), "{ours}");

    // Peer authentication is the first rule PostgreSQL reads, and it took effect (reload).
    let me = whoami();
    let first = pg
        .psql(
            "postgres",
            "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), auth_method \
             FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number LIMIT 1",
        )
        .unwrap();
    assert_eq!(first.trim(), format!("local|kalshi|{me}|peer"));
    let owner = pg
        .psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'kalshi'",
        )
        .unwrap();
    assert_eq!(owner.trim(), me);

    // What it installed.
    let etc = host.join("etc/kalshi-data");
    let installed = std::fs::read_to_string(etc.join("gatherer.toml")).unwrap();
    let shipped = std::fs::read_to_string(root().join("deploy/gatherer.production.toml")).unwrap();
    let differing: Vec<&str> = installed
        .lines()
        .zip(shipped.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a)
        .collect();
    let sock = pg.root_dir().join("sock");
    assert_eq!(
        differing,
        vec![
            format!(
                "database_url = \"postgres://{me}@localhost:{}/kalshi?host={}\"",
                pg.port(),
                sock.display()
            )
            .as_str()
        ],
        "the installed config is the shipped one but for the database URL"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("gatherer.env")).unwrap(),
        "GATHERER__GATHERER_ID=g2\n"
    );
    for (f, want) in [
        ("kalshi-key-id", 0o400),
        ("kalshi-key.pem", 0o400),
        ("tls/gatherer.key", 0o400),
        ("tls/gatherer.crt", 0o444),
        ("tls/ca.crt", 0o444),
    ] {
        let mode = std::fs::metadata(etc.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{f}");
    }
    assert_eq!(
        std::fs::read(etc.join("tls/gatherer.crt")).unwrap(),
        std::fs::read(tls.gatherer("g2").unwrap().0).unwrap()
    );
    assert!(host.join("usr/local/bin/gatherer").is_file());
    assert!(
        host.join("etc/systemd/system/kalshi-gatherer.service")
            .is_file()
    );
    // Nothing was written outside --root and the cluster's own directories.
    let mut top: Vec<String> = std::fs::read_dir(&host)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["etc", "opt", "secret-key-id", "usr", "var"]);
    // Logs to CloudWatch: the journal export unit and the agent's configuration.
    let agent =
        std::fs::read_to_string(host.join("opt/aws/amazon-cloudwatch-agent/etc/kalshi-data.json"))
            .unwrap();
    let agent: serde_json::Value = serde_json::from_str(&agent).unwrap();
    let files = &agent["logs"]["logs_collected"]["files"]["collect_list"][0];
    assert_eq!(files["log_group_name"], "kalshi-prod/gatherers");
    assert_eq!(
        files["file_path"],
        "/var/log/kalshi-data/kalshi-gatherer.log"
    );
    assert!(
        host.join("etc/systemd/system/kalshi-journal-export@.service")
            .is_file()
    );

    // Twice: the same files, the same pg_hba.conf, no restart.
    let before = snapshot(&host);
    let hba_before = std::fs::read(data.join("pg_hba.conf")).unwrap();
    let out = bootstrap(&unpacked, &host, &pg, &data, &no_timescale, "false");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(snapshot(&host), before, "a second run changed files");
    assert_eq!(std::fs::read(data.join("pg_hba.conf")).unwrap(), hba_before);

    // The gatherer starts from the installed binary, config, key files and environment file,
    // reaching the database over the socket by peer authentication.
    let sim = kalshi_sim::start({
        let mut c = kalshi_sim::SimConfig::for_tests(640, 12);
        c.public_key_pem = Some(kalshi_testkit::keys::KEY_PUBLIC.to_vec());
        c.key_id = Some(kalshi_testkit::keys::KEY_ID.into());
        c
    })
    .await
    .unwrap();
    let run_cfg = dir.join("gatherer.run.toml");
    std::fs::write(
        &run_cfg,
        installed.replace("/etc/kalshi-data/", &format!("{}/", etc.display())),
    )
    .unwrap();
    let (health, metrics, grpc) = (
        kalshi_e2e::world::free_port(),
        kalshi_e2e::world::free_port(),
        kalshi_e2e::world::free_port(),
    );
    let env_line = std::fs::read_to_string(etc.join("gatherer.env")).unwrap();
    let (k, v) = env_line.trim().split_once('=').unwrap();
    let mut child = Command::new(host.join("usr/local/bin/gatherer"))
        .arg("--config")
        .arg(&run_cfg)
        .env(k, v)
        .env("GATHERER__KALSHI__REST_URL", sim.rest_url())
        .env("GATHERER__KALSHI__WS_URL", sim.ws_url())
        .env("GATHERER__HTTP__LISTEN", format!("127.0.0.1:{health}"))
        .env(
            "GATHERER__HTTP__METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        )
        .env("GATHERER__API__LISTEN", format!("127.0.0.1:{grpc}"))
        .env("GATHERER__STORE__SPILL_DIR", dir.join("spill"))
        .env("GATHERER__WS__CONNECTIONS", "2")
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("gatherer.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let h = loop {
        let h: serde_json::Value =
            match reqwest::get(format!("http://127.0.0.1:{health}/health")).await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
        if h["status"] == "healthy" {
            break h;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the installed gatherer never became healthy ({h}):\n{}",
                std::fs::read_to_string(dir.join("gatherer.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(h["gatherer_id"], "g2");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    let live = reqwest::get(format!("http://127.0.0.1:{health}/health/live"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // Its gRPC API serves mTLS with the certificate the bootstrap installed: the
    // deduplicator's certificate gets in.
    let heads = kalshi_stack::gatherer_heads(
        &format!("https://127.0.0.1:{grpc}"),
        Some(&kalshi_stack::GrpcClientTls {
            ca_file: tls.ca.clone(),
            cert_file: tls.deduplicator.0.clone(),
            key_file: tls.deduplicator.1.clone(),
            server_name: "g2".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(heads.len(), kalshi_proto::Stream::ALL.len(), "{heads:?}");
    // It stores into the database the bootstrap made, as the role it made.
    let tables = pg
        .psql(
            "kalshi",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'trades'",
        )
        .unwrap();
    assert_eq!(tables.trim(), me);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // TimescaleDB present (its library in the library directory): preloaded, PostgreSQL
    // restarted once, and not again on the next run. Against a copy of the configuration, so
    // the live cluster (which has no TimescaleDB) is not restarted with it.
    let conf_copy = dir.join("conf-copy");
    std::fs::create_dir_all(conf_copy.join("conf.d")).unwrap();
    std::fs::copy(data.join("pg_hba.conf"), conf_copy.join("pg_hba.conf")).unwrap();
    let with_timescale = dir.join("lib-with-timescaledb");
    std::fs::create_dir_all(&with_timescale).unwrap();
    std::fs::write(with_timescale.join("timescaledb.so"), b"").unwrap();
    let marker = dir.join("restarted");
    let restart = format!("touch {}", marker.display());
    let out = bootstrap(&unpacked, &host, &pg, &conf_copy, &with_timescale, &restart);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("TimescaleDB found"), "{log}");
    assert!(
        marker.exists(),
        "no restart after preloading TimescaleDB:\n{log}"
    );
    let ours = std::fs::read_to_string(conf_copy.join("conf.d/kalshi-gatherer.conf")).unwrap();
    assert!(
        ours.contains("shared_preload_libraries = 'timescaledb'"),
        "{ours}"
    );
    std::fs::remove_file(&marker).unwrap();
    let out = bootstrap(&unpacked, &host, &pg, &conf_copy, &with_timescale, &restart);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!marker.exists(), "restarted again with nothing changed");

    // The cluster is still the one the test started, and healthy.
    assert!(pg.is_running());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_deduplicator_bootstrap_writes_a_configuration_its_binary_accepts() {
    let dir = temp("bootstrap-dedup");
    let unpacked = release(&dir.join("dist"), &dir, "deduplicator");
    let host = dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (_tls_ca, tls) =
        kalshi_testkit::certs::write_mtls_set(&dir.join("tls-source"), &[]).unwrap();
    let args = |extra: &[&str]| {
        let mut c = Command::new("bash");
        c.arg(unpacked.join("bootstrap.sh"))
            .args(["--no-apt", "--no-systemd", "--region", "eu-west-1"])
            .arg("--root")
            .arg(&host)
            .arg("--rds-ca-bundle")
            .arg(&ca)
            .arg("--tls-dir")
            .arg(&tls.dir)
            .args(extra);
        c.output().unwrap()
    };
    // Bad input is refused, naming the option.
    let out = args(&[
        "--rds-endpoint",
        "not a host",
        "--rds-instance-id",
        "kalshi-prod",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--rds-endpoint must be host:port"),
        "{}",
        text(&out)
    );

    let prod = [
        "--rds-endpoint",
        "kalshi-prod.abc.eu-west-1.rds.amazonaws.com:5432",
        "--rds-instance-id",
        "kalshi-prod",
        "--zone",
        "prod.internal",
    ];
    let out = args(&prod);
    assert!(out.status.success(), "{}", text(&out));
    let etc = host.join("etc/kalshi-data");
    let cfg = std::fs::read_to_string(etc.join("deduplicator.toml")).unwrap();
    let gatherers = |cfg: &str| -> Vec<(String, String)> {
        let doc: toml::Value = toml::from_str(cfg).unwrap();
        doc["gatherers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["id"].as_str().unwrap().to_owned(),
                    g["endpoint"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let expect = |slots: &[&str]| -> Vec<(String, String)> {
        slots
            .iter()
            .map(|g| {
                (
                    (*g).to_owned(),
                    format!("https://{g}.gatherers.prod.internal:50051"),
                )
            })
            .collect()
    };
    assert_eq!(gatherers(&cfg), expect(&["g1", "g2", "g3"]), "{cfg}");
    // A fourth slot is Terraform's slot list, passed on: no file to edit.
    let out = args(&[&prod[..], &["--gatherers", "g1,g2,g3,g4"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let four = std::fs::read_to_string(etc.join("deduplicator.toml")).unwrap();
    assert_eq!(
        gatherers(&four),
        expect(&["g1", "g2", "g3", "g4"]),
        "{four}"
    );
    let out = args(&[&prod[..], &["--gatherers", "g1;rm -rf /"]].concat());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--gatherers must be slots"),
        "{}",
        text(&out)
    );
    // It issues the link's certificates: a daily renewal of every identity, in the secrets
    // Terraform names (lib/renew-tls.sh, tested on its own below).
    let issue = [
        "--tls-issue-prefix",
        "kalshi-data/prod/tls/",
        "--tls-issue-name",
        "prod",
        "--tls-issue-identity",
        "g1=g1,g1.gatherers.prod.internal",
        "--tls-issue-identity",
        "deduplicator=deduplicator",
        "--lag-metric",
        "prod",
    ];
    let out = args(&[&prod[..], &issue[..4]].concat());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--tls-issue-prefix needs --tls-issue-identity"),
        "{}",
        text(&out)
    );
    let out = args(&[&prod[..], &issue[..]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let unit =
        std::fs::read_to_string(host.join("etc/systemd/system/kalshi-tls-renew.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(
        exec.ends_with("lib/renew-tls.sh --region eu-west-1 --prefix kalshi-data/prod/tls/ --name prod --leaf-days 365 --renew-within-days 60 --identity g1=g1,g1.gatherers.prod.internal --identity deduplicator=deduplicator"),
        "{exec}"
    );
    assert!(
        host.join("etc/systemd/system/kalshi-tls-renew.timer")
            .is_file()
    );
    // And the lag for the CloudWatch alarm, every minute.
    let unit = std::fs::read_to_string(host.join("etc/systemd/system/kalshi-lag-publish.service"))
        .unwrap();
    assert!(
        unit.contains("lib/publish-lag.sh --region eu-west-1 --name prod"),
        "{unit}"
    );
    let out = args(&prod);
    assert!(out.status.success(), "{}", text(&out));
    let env = std::fs::read_to_string(etc.join("deduplicator.env")).unwrap();
    assert!(
        env.contains("DEDUPLICATOR__PRODUCTION__DATABASE_URL=\"postgres://deduplicator@kalshi-prod.abc.eu-west-1.rds.amazonaws.com:5432/kalshi?sslmode=verify-full&sslrootcert=/etc/kalshi-data/rds-global-bundle.pem\""),
        "{env}"
    );
    assert!(
        env.contains("DEDUPLICATOR__RDS__INSTANCE_ID=\"kalshi-prod\""),
        "{env}"
    );
    assert!(
        env.contains("DEDUPLICATOR__RDS__REGION=\"eu-west-1\""),
        "{env}"
    );
    let mode = std::fs::metadata(etc.join("deduplicator.env"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !env.contains("ARCHIVE"),
        "no archive unless a bucket is given: {env}"
    );
    // With the archive bucket (Terraform's archive_bucket output) the archive is on, and the
    // configuration still checks.
    let out = args(&[&prod[..], &["--archive-bucket", "Not_A_Bucket"]].concat());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--archive-bucket must be an S3 bucket name"),
        "{}",
        text(&out)
    );
    let out = args(
        &[
            &prod[..],
            &["--archive-bucket", "kalshi-prod-archive-20261128"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let env = std::fs::read_to_string(etc.join("deduplicator.env")).unwrap();
    for line in [
        "DEDUPLICATOR__ARCHIVE__ENABLED=\"true\"",
        "DEDUPLICATOR__ARCHIVE__BUCKET=\"kalshi-prod-archive-20261128\"",
        "DEDUPLICATOR__ARCHIVE__PREFIX=\"archive/\"",
        "DEDUPLICATOR__ARCHIVE__REGION=\"eu-west-1\"",
    ] {
        assert!(env.contains(line), "{line}: {env}");
    }
    // Its mTLS identity, under the names deduplicator.production.toml gives.
    assert_eq!(
        std::fs::read(etc.join("tls/deduplicator.crt")).unwrap(),
        std::fs::read(&tls.deduplicator.0).unwrap()
    );
    assert!(
        cfg.contains("cert_file = \"/etc/kalshi-data/tls/deduplicator.crt\""),
        "{cfg}"
    );
    // The monitoring host runs from the same tarball.
    the_monitoring_host_gets_rules_routes_and_dashboards_from_terraforms_values(&unpacked, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

fn the_monitoring_host_gets_rules_routes_and_dashboards_from_terraforms_values(
    unpacked: &Path,
    dir: &Path,
) {
    let host = dir.join("monitoring-host");
    let topic = "arn:aws:sns:eu-west-1:123456789012:kalshi-prod-alerts-20261207";
    let run_it = |extra: &[&str]| {
        Command::new("bash")
            .arg(unpacked.join("monitoring.sh"))
            .args(["--no-apt", "--no-systemd", "--region", "eu-west-1"])
            .arg("--root")
            .arg(&host)
            .args(extra)
            .output()
            .unwrap()
    };
    for (bad, says) in [
        (
            vec!["--alerts-topic-arn", "kalshi-alerts"],
            "must be an SNS topic ARN",
        ),
        (
            vec![
                "--alerts-topic-arn",
                topic,
                "--deadmans-switch-url",
                "http://x",
            ],
            "must be an https:// URL",
        ),
    ] {
        let out = run_it(&bad);
        assert!(
            !out.status.success() && text(&out).contains(says),
            "{}",
            text(&out)
        );
    }
    let url = "https://hc-ping.com/11111111-2222-3333-4444-555555555555";
    let out = run_it(&["--alerts-topic-arn", topic, "--deadmans-switch-url", url]);
    assert!(out.status.success(), "{}", text(&out));
    let prom = std::fs::read_to_string(host.join("etc/prometheus/prometheus.yml")).unwrap();
    assert_eq!(prom.matches("- region: eu-west-1").count(), 3, "{prom}");
    assert!(!prom.contains("region: us-east-1"), "{prom}");
    assert_eq!(
        std::fs::read(host.join("etc/prometheus/kalshi-data/alerts.yml")).unwrap(),
        std::fs::read(root().join("deploy/prometheus/alerts.yml")).unwrap()
    );
    let am = host.join("etc/prometheus/alertmanager.yml");
    let text_am = std::fs::read_to_string(&am).unwrap();
    assert_eq!(
        text_am.matches(&format!("topic_arn: {topic}")).count(),
        2,
        "{text_am}"
    );
    assert_eq!(text_am.matches("region: eu-west-1").count(), 2, "{text_am}");
    assert!(text_am.contains(&format!("- url: {url}")), "{text_am}");
    let route = |labels: &[&str]| {
        let out = Command::new("amtool")
            .args(["config", "routes", "test", "--config.file"])
            .arg(&am)
            .args(labels)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        route(&["alertname=Watchdog", "severity=none"]),
        "deadmans-switch"
    );
    assert_eq!(
        route(&["alertname=GathererDown", "severity=critical"]),
        "page"
    );
    // The dashboards, provisioned read-only against the local Prometheus.
    for d in ["gatherers.json", "deduplicator.json"] {
        assert_eq!(
            std::fs::read(host.join("var/lib/grafana/dashboards/kalshi-data").join(d)).unwrap(),
            std::fs::read(root().join("deploy/grafana").join(d)).unwrap()
        );
    }
    let ds =
        std::fs::read_to_string(host.join("etc/grafana/provisioning/datasources/kalshi-data.yaml"))
            .unwrap();
    assert!(ds.contains("url: http://127.0.0.1:9090"), "{ds}");
    // Without a dead man's switch, the Watchdog goes nowhere, and the boot says so.
    let out = run_it(&["--alerts-topic-arn", topic]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no --deadmans-switch-url"),
        "{}",
        text(&out)
    );
    assert_eq!(route(&["alertname=Watchdog", "severity=none"]), "blackhole");
}

/// Every shell script: the release's, the bootstraps, `dev`, `.ci/run` and the user-data
/// templates (rendered with placeholder values as Terraform's templatefile would).
#[test]
fn every_shell_script_passes_bash_n_and_shellcheck() {
    let dir = temp("shellcheck");
    let mut scripts = vec![
        root().join("dev"),
        root().join(".ci/run"),
        root().join("deploy/release/build.sh"),
        root().join("deploy/bootstrap/gatherer.sh"),
        root().join("deploy/bootstrap/deduplicator.sh"),
    ];
    for e in std::fs::read_dir(root().join("deploy/bootstrap/lib"))
        .unwrap()
        .flatten()
    {
        scripts.push(e.path());
    }
    assert!(scripts.len() >= 8, "{scripts:?}");
    for module in ["gatherers", "deduplicator"] {
        let tpl = std::fs::read_to_string(
            root().join(format!("infra/modules/{module}/user-data.sh.tftpl")),
        )
        .unwrap();
        // templatefile: ${name} is a value, $${ is a literal ${.
        let mut rendered = String::new();
        let mut rest = tpl.as_str();
        while let Some(i) = rest.find('$') {
            rendered.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$${") {
                rendered.push_str("${");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("${") {
                let end = r.find('}').unwrap();
                rendered.push_str("placeholder");
                rest = &r[end + 1..];
            } else {
                rendered.push('$');
                rest = &rest[1..];
            }
        }
        rendered.push_str(rest);
        let p = dir.join(format!("{module}-user-data.sh"));
        std::fs::write(&p, rendered).unwrap();
        scripts.push(p);
    }
    for s in &scripts {
        run(Command::new("bash").arg("-n").arg(s));
    }
    let out = Command::new("shellcheck")
        .args(["--severity=style", "--shell=bash"])
        .args(&scripts)
        .output()
        .expect("shellcheck not found: install Debian's `shellcheck` package (.ci/run does)");
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake `aws` for lib/data-volume.sh: the volume is attached to the old instance for two
/// looks, then free (or, with `stuck`, never); attaching it makes its NVMe link appear. Every
/// call is logged.
fn fake_aws(dir: &Path, stuck: bool) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/bash
dir="{dir}"
echo "$*" >>"$dir/calls"
n=$(grep -c describe-volumes "$dir/calls")
case "$*" in
  *describe-volumes*)
    if [ -f "$dir/attached" ]; then printf 'in-use\ti-new\n'
    elif [ "{stuck}" = true ] || [ "$n" -le 2 ]; then printf 'in-use\ti-old\n'
    else printf 'available\tNone\n'; fi ;;
  *attach-volume*)
    touch "$dir/attached"
    ln -s "$dir/nvme1n1" "$dir/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123" ;;
  *) exit 2 ;;
esac
"#,
        dir = dir.display()
    );
    std::fs::write(bin.join("aws"), script).unwrap();
    std::fs::set_permissions(bin.join("aws"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.join("by-id")).unwrap();
    std::fs::write(dir.join("nvme1n1"), b"").unwrap();
    bin
}

fn attach(dir: &Path, bin: &Path, timeout: &str) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    Command::new("bash")
        .arg(root().join("deploy/bootstrap/lib/data-volume.sh"))
        .args(["--volume-id", "vol-0abc123", "--region", "eu-west-1"])
        .args([
            "--instance-id",
            "i-new",
            "--poll",
            "0",
            "--timeout",
            timeout,
        ])
        .arg("--by-id-dir")
        .arg(dir.join("by-id"))
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn a_slots_volume_is_attached_when_the_old_instance_lets_go_and_never_forced() {
    // The replaced instance still holds it for two looks: wait, attach once, find its device.
    let dir = temp("volume");
    let bin = fake_aws(&dir, false);
    let out = attach(&dir, &bin, "60");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.join("nvme1n1").display().to_string()
    );
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    let attaches: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("attach-volume"))
        .collect();
    assert_eq!(
        attaches,
        [
            "ec2 --region eu-west-1 attach-volume --volume-id vol-0abc123 --instance-id i-new --device /dev/sdf"
        ],
        "{calls}"
    );
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.contains("describe-volumes"))
            .count(),
        4,
        "{calls}"
    );
    assert!(!calls.contains("detach"), "{calls}");
    // Attached already (a second run of the bootstrap): nothing to do but find it.
    let out = attach(&dir, &bin, "60");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("calls"))
            .unwrap()
            .matches("attach-volume")
            .count(),
        1
    );

    // Held by another instance past the timeout: an error naming the holder, nothing forced.
    let dir = temp("volume-stuck");
    let bin = fake_aws(&dir, true);
    let out = attach(&dir, &bin, "0");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("attached to i-old"), "{}", text(&out));
    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    assert!(
        !calls.contains("attach-volume") && !calls.contains("detach"),
        "{calls}"
    );
}

/// A fake `aws secretsmanager` keeping secrets under `dir/sm`: get-secret-value (the current
/// value, or ResourceNotFoundException), put-secret-value with Secrets Manager's token rule (a
/// second, different value under one token is ResourceExistsException). Serialized by a lock,
/// as the real service is; every put is logged.
fn fake_secrets(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(dir.join("sm")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/bash
state="{state}"
exec 9>"$state/.lock"; flock 9
op="$4"; shift 4
while [ $# -gt 0 ]; do
  case "$1" in
    --secret-id) id="$(tr / _ <<<"$2")"; shift 2 ;;
    --secret-string) value="${{2#file://}}"; shift 2 ;;
    --client-request-token) token="$2"; shift 2 ;;
    *) shift ;;
  esac
done
case "$op" in
  get-secret-value)
    [ -f "$state/$id" ] || {{ echo "An error occurred (ResourceNotFoundException) when calling the GetSecretValue operation" >&2; exit 254; }}
    cat "$state/$id" ;;
  put-secret-value)
    if [ -f "$state/$id.$token" ]; then
      cmp -s "$value" "$state/$id.$token" && exit 0
      echo "An error occurred (ResourceExistsException) when calling the PutSecretValue operation" >&2; exit 254
    fi
    cp "$value" "$state/$id.$token"; cp "$value" "$state/$id"; echo "$id" >>"$state/.puts" ;;
  *) exit 2 ;;
esac
"#,
        state = dir.join("sm").display()
    );
    std::fs::write(bin.join("aws"), script).unwrap();
    std::fs::set_permissions(bin.join("aws"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn renew(bin: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(root().join("deploy/bootstrap/lib/renew-tls.sh"))
        .args(["--region", "eu-west-1", "--prefix", "kalshi-data/prod/tls/"])
        .args(["--name", "prod"])
        .args(["--identity", "g1=g1,g1.gatherers.kalshi.internal"])
        .args(["--identity", "deduplicator=deduplicator"])
        .args(extra)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
    c
}

/// The secret `id` as the three files a host installs, and the puts so far.
fn identity(dir: &Path, id: &str) -> (serde_json::Value, Vec<String>) {
    let v = std::fs::read_to_string(dir.join(format!("sm/kalshi-data_prod_tls_{id}"))).unwrap();
    let puts = std::fs::read_to_string(dir.join("sm/.puts")).unwrap_or_default();
    (
        serde_json::from_str(&v).unwrap(),
        puts.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn certificates_are_issued_and_renewed_without_terraform_and_two_hosts_agree() {
    use kalshi_shared::tls::{ClientTls, ServerTls, TlsFiles};
    let dir = temp("renew-tls");
    let bin = fake_secrets(&dir);
    // Two deduplicator hosts at their first boot, at once: one CA, one certificate each.
    let a = renew(&bin, &[]).stderr(Stdio::piped()).spawn().unwrap();
    let b = renew(&bin, &[]).stderr(Stdio::piped()).spawn().unwrap();
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let (g1, puts) = identity(&dir, "g1");
    let mut sorted = puts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "kalshi-data_prod_tls_ca-signing",
            "kalshi-data_prod_tls_deduplicator",
            "kalshi-data_prod_tls_g1"
        ],
        "one write each, whoever won"
    );
    // The files load as each side's TLS configuration, and the validity is what was asked.
    let write = |id: &str, v: &serde_json::Value| -> TlsFiles {
        let d = dir.join("hosts").join(id);
        std::fs::create_dir_all(&d).unwrap();
        for (f, k) in [("ca.crt", "ca"), ("c.crt", "cert"), ("c.key", "key")] {
            std::fs::write(d.join(f), v[k].as_str().unwrap()).unwrap();
        }
        TlsFiles {
            ca_file: d.join("ca.crt"),
            cert_file: d.join("c.crt"),
            key_file: d.join("c.key"),
        }
    };
    let files = write("g1", &g1);
    ServerTls::load(files.clone(), vec!["deduplicator".into()]).unwrap();
    let (dedup, _) = identity(&dir, "deduplicator");
    ClientTls::load(write("deduplicator", &dedup)).unwrap();
    assert_eq!(g1["ca"], dedup["ca"], "one CA");
    let pem = std::fs::read(&files.cert_file).unwrap();
    let der =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            &pem,
        )
        .unwrap();
    let (from, to) = kalshi_shared::x509::validity(&der).unwrap();
    assert_eq!((to - from + 3_600) / 86_400, 365, "{from} {to}");
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&files.cert_file)
        .output()
        .unwrap();
    assert!(
        text(&san).contains("DNS:g1, DNS:g1.gatherers.kalshi.internal"),
        "{}",
        text(&san)
    );

    // Nothing to do the next day.
    let out = renew(&bin, &[]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(identity(&dir, "g1").1.len(), 3, "{}", text(&out));

    // A certificate near its end (here a new slot's, issued for 2 days) is reissued at the
    // first run that finds it within 60 days of its end; the CA and the others stay.
    let g2 = ["--identity", "g2=g2,g2.gatherers.kalshi.internal"];
    let out = renew(
        &bin,
        &[&g2[..], &["--leaf-days", "2", "--renew-within-days", "1"]].concat(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (short, _) = identity(&dir, "g2");
    let out = renew(&bin, &g2).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (renewed, puts) = identity(&dir, "g2");
    assert_ne!(renewed["cert"], short["cert"]);
    assert_ne!(
        renewed["key"], short["key"],
        "a new key with each certificate"
    );
    assert_eq!(renewed["ca"], g1["ca"]);
    assert_eq!(identity(&dir, "g1").0, g1, "g1 is far from its end");
    let mut counts = std::collections::BTreeMap::new();
    for p in &puts {
        *counts
            .entry(p.trim_start_matches("kalshi-data_prod_tls_"))
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("ca-signing", 1), ("deduplicator", 1), ("g1", 1), ("g2", 2)]
    );
    ServerTls::load(write("g2", &renewed), vec!["deduplicator".into()]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_the_active_deduplicator_publishes_its_largest_lag_to_cloudwatch() {
    let dir = temp("publish-lag");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("aws"),
        format!(
            "#!/bin/bash\necho \"$*\" >>{}\n",
            dir.join("calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("aws"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The deduplicator's /health/active and /metrics, served from files.
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("health")).unwrap();
    std::fs::write(
        www.join("metrics"),
        "# TYPE dedup_sync_lag_seconds gauge\n\
         dedup_sync_lag_seconds{gatherer=\"g1\"} 1.5\n\
         dedup_sync_lag_seconds{gatherer=\"g2\"} 742.25\n\
         dedup_sync_lag_seconds_other 99999\n\
         dedup_sync_lag_seconds{gatherer=\"g3\"} 0\n",
    )
    .unwrap();
    let port = kalshi_testkit::ports::free_port().unwrap();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let publish = || {
        Command::new("bash")
            .arg(root().join("deploy/bootstrap/lib/publish-lag.sh"))
            .args(["--region", "eu-west-1", "--name", "kalshi-prod"])
            .args([
                "--health",
                &format!("http://127.0.0.1:{port}/health/active"),
            ])
            .args(["--metrics", &format!("http://127.0.0.1:{port}/metrics")])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the test's HTTP server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A standby (404 on /health/active) publishes nothing.
    let out = publish();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dir.join("calls").exists());
    // The active one publishes the largest lag over its gatherers.
    std::fs::write(www.join("health/active"), "{}").unwrap();
    let out = publish();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("calls")).unwrap().trim(),
        "cloudwatch put-metric-data --region eu-west-1 --namespace kalshi-data --metric-name DedupSyncLagSeconds --dimensions Environment=kalshi-prod --unit Seconds --value 742.250"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
