//! mTLS between the deduplicator and the gatherers (DESIGN.md): production is exact over it;
//! certificates (even the CA) rotate by replacing their files, with no restart and no loss;
//! every bad peer is refused with a clear error and a metric: a client certificate from
//! another CA, an expired one, none at all, or one whose name is not allowed; a gatherer whose
//! certificate is from another CA, expired, or for another name; and clients that connect and
//! never finish a handshake are dropped after the handshake timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kalshi_e2e::world::*;
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::tls::{ClientTls, Connector, TlsFiles};
use kalshi_testkit::certs::{Ca, DEDUPLICATOR_NAME, Validity, write_atomically, write_mtls_set};
use kalshi_testkit::wait::wait_for;
use rustls::pki_types::pem::PemObject as _;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kalshi-mtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn gatherer_metrics(g: &GProc) -> String {
    let addr = g.g.as_ref().unwrap().metrics_addr;
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn rejections(page: &str, reason: &str) -> f64 {
    metric_line(
        page,
        &format!("api_tls_rejections_total{{reason=\"{reason}\"}}"),
    )
}

/// A Status call through the deduplicator's connector with these files; the error's full
/// chain as text when it fails.
async fn status_with(files: TlsFiles, endpoint: &str, server_name: &str) -> Result<(), String> {
    let tls = Arc::new(ClientTls::load(files).map_err(|e| e.to_string())?);
    let ch = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(Connector::new(tls, server_name).unwrap())
        .await
        .map_err(|e| chain(&e))?;
    GathererClient::new(ch)
        .status(pb::StatusRequest {})
        .await
        .map(|_| ())
        .map_err(|e| chain(&e))
}

/// One TLS connection to `g` (trusting `ca`, presenting `identity` if any), one HTTP/2
/// preface, one read: what the client saw. Exactly one handshake, so the server's counters
/// move by exactly one.
async fn one_handshake(g: &GProc, ca: &Ca, identity: Option<(&PathBuf, &PathBuf)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(g.file.api.listen)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("g1").unwrap();
    let mut s = match tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => return format!("handshake failed: {e}"),
    };
    // TLS 1.3: the server's verdict on the client's certificate comes after the client's side
    // of the handshake, with the first read.
    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(0)) => "connection closed by the gatherer".into(),
        Ok(Ok(n)) => panic!("a refused client was served {n} bytes"),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => panic!("a refused client was left hanging"),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_is_exact_over_mtls_and_even_the_ca_rotates_without_a_restart() {
    let dir = temp("rotate");
    let ids: Vec<String> = ["g1", "g2", "g3"].map(String::from).to_vec();
    let (old_ca, files) = write_mtls_set(&dir, &ids).unwrap();
    let mut w = World::start_with(611, 12, 3, Some(files.clone())).await;
    let dedup_file = w.dedup_file(&w.prod.url());
    let d = start_dedup(dedup_file.clone()).await;
    w.rate(300).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A CA rotation, as an operator does it, while records flow and nothing restarts:
    // 1. every side trusts both CAs;
    let new_ca = Ca::new("rotated CA").unwrap();
    let bundle = format!("{}{}", old_ca.pem(), new_ca.pem());
    write_atomically(&files.ca, bundle.as_bytes()).unwrap();
    w.ping_all().await;
    // 2. every certificate is reissued by the new CA;
    for id in &ids {
        new_ca
            .issue(&[id.as_str()], Validity::Days(30))
            .unwrap()
            .write(&dir, id)
            .unwrap();
    }
    new_ca
        .issue(&[DEDUPLICATOR_NAME], Validity::Days(30))
        .unwrap()
        .write(&dir, DEDUPLICATOR_NAME)
        .unwrap();
    w.ping_all().await;
    // 3. the old CA is no longer trusted.
    write_atomically(&files.ca, new_ca.pem().as_bytes()).unwrap();
    // New connections from the test's client (the deduplicator's new certificate) to g2 and g3
    // succeed only if those gatherers reloaded their files.
    w.ping_all().await;
    // g1 restarts: the deduplicator must reconnect to it with its reloaded certificate, which
    // is the only one g1 (trusting the new CA alone) accepts.
    let file = w.gatherers[0].file.clone();
    let client_tls = w.gatherers[0].client_tls.clone();
    w.gatherers[0].stop().await;
    w.disturbed.insert("g1".into());
    let mut g1 = GProc::start(file).await;
    g1.client_tls = client_tls;
    w.gatherers[0] = g1;
    w.gatherers[0].wait_healthy(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.rate(0).await;
    w.settle(Duration::from_millis(800)).await;
    let pool = pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let (_, h) = dedup_health(d.http_addr).await;
    assert_eq!(h["gatherers"]["g1"], "connected", "{h}");
    // The operator's `status`, from the service's own configuration, reads every gatherer over
    // the same mTLS link (it once built a plaintext client of its own: "h2 protocol error").
    let config = dir.join("deduplicator.toml");
    std::fs::write(&config, toml::to_string(&dedup_file).unwrap()).unwrap();
    let out = std::process::Command::new(dedup_bin())
        .arg("--config")
        .arg(&config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let seen: Vec<&str> = doc["gatherers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["reachable"] == true && g["streams"][0]["health"] == "ok")
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["g1", "g2", "g3"], "{doc}");
    let m = dedup_metrics(&d).await;
    d.stop().await.unwrap();
    let e = assert_exact(&w, &pool).await;
    assert!(e.trades > 100, "{e:?}");
    // Both sides reloaded (the metrics of every service in this process render together).
    let reloads = |side: &str, result: &str| {
        metric_line(
            &m,
            &format!("tls_reloads_total{{side=\"{side}\",result=\"{result}\"}}"),
        )
    };
    assert!(
        reloads("server", "ok") >= 2.0,
        "{}",
        reloads("server", "ok")
    );
    assert!(
        reloads("client", "ok") >= 1.0,
        "{}",
        reloads("client", "ok")
    );
    assert_eq!(
        metric_sum(&m, "api_tls_rejections_total"),
        0.0,
        "nobody refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_refused_with_a_reason_and_a_metric_and_slowloris_is_dropped() {
    let dir = temp("refuse");
    let (ca, files) = write_mtls_set(&dir, &["g1".to_owned()]).unwrap();
    let w = World::start_with(612, 5, 1, Some(files.clone())).await;
    let g = &w.gatherers[0];
    let endpoint = g.grpc();
    let good = dedup_tls_files(&files);
    status_with(good.clone(), &endpoint, "g1").await.unwrap();
    // When its certificate and its CA end, as the files say (the alert's input).
    let not_after = |path: &std::path::Path| {
        let pem = std::fs::read(path).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        kalshi_shared::x509::validity(&der).unwrap().1 as f64
    };
    let page = gatherer_metrics(g).await;
    let expiry = |cert: &str| {
        metric_line(
            &page,
            &format!("tls_certificate_expiry_timestamp_seconds{{side=\"server\",cert=\"{cert}\"}}"),
        )
    };
    assert_eq!(expiry("own"), not_after(files.gatherer("g1").unwrap().0));
    assert_eq!(expiry("ca"), not_after(&files.ca));
    assert!(expiry("own") > (kalshi_shared::time::now_ms() / 1000 + 364 * 86_400) as f64);

    let other_ca = Ca::new("someone else's CA").unwrap();
    // The expired and wrong-name certificates come from the right CA.
    let cases: Vec<(&str, &Ca, Validity, &str)> = vec![
        (
            "unknown_ca",
            &other_ca,
            Validity::Days(30),
            DEDUPLICATOR_NAME,
        ),
        ("expired", &ca, Validity::Expired, DEDUPLICATOR_NAME),
        ("name_not_allowed", &ca, Validity::Days(30), "intruder"),
    ];
    for (reason, issuer, validity, name) in cases {
        let (cert, key) = issuer
            .issue(&[name], validity)
            .unwrap()
            .write(&dir, &format!("client-{reason}"))
            .unwrap();
        let before = rejections(&gatherer_metrics(g).await, reason);
        let seen = one_handshake(g, &ca, Some((&cert, &key))).await;
        eprintln!("{reason}: the client sees: {seen}");
        wait_for(reason, Duration::from_secs(10), async || {
            rejections(&gatherer_metrics(g).await, reason) == before + 1.0
        })
        .await;
    }
    // No client certificate at all.
    let before = rejections(&gatherer_metrics(g).await, "no_client_certificate");
    let seen = one_handshake(g, &ca, None).await;
    eprintln!("no_client_certificate: the client sees: {seen}");
    wait_for(
        "no_client_certificate",
        Duration::from_secs(10),
        async || rejections(&gatherer_metrics(g).await, "no_client_certificate") == before + 1.0,
    )
    .await;
    // The other reasons stayed at zero: each refusal was counted once, under its own reason.
    let page = gatherer_metrics(g).await;
    for r in [
        "unknown_ca",
        "expired",
        "name_not_allowed",
        "no_client_certificate",
    ] {
        assert_eq!(rejections(&page, r), 1.0, "{r}");
    }
    assert_eq!(metric_sum(&page, "api_tls_rejections_total"), 4.0);

    // Slowloris: connections that never send a byte hold a handshake slot for at most the
    // handshake timeout (5 s here), are dropped and counted, and a real client still gets in.
    let before = rejections(&gatherer_metrics(g).await, "handshake_timeout");
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(g.file.api.listen)
                .await
                .unwrap(),
        );
    }
    status_with(good.clone(), &endpoint, "g1").await.unwrap();
    wait_for("handshake timeouts", Duration::from_secs(15), async || {
        rejections(&gatherer_metrics(g).await, "handshake_timeout") == before + 20.0
    })
    .await;
    for mut s in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was not closed: {r:?}"
        );
    }
    status_with(good, &endpoint, "g1").await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deduplicator_refuses_a_gatherer_it_cannot_authenticate() {
    let dir = temp("server");
    let (ca, files) = write_mtls_set(&dir, &["g1".to_owned()]).unwrap();
    let w = World::start_with(613, 5, 1, Some(files.clone())).await;
    let endpoint = w.gatherers[0].grpc();
    let good = dedup_tls_files(&files);
    let (cert, key) = files.gatherer("g1").unwrap();
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    let other_ca = Ca::new("someone else's CA").unwrap();
    // The gatherer's certificate is replaced (it reloads at the next handshake); the client's
    // error names what is wrong with it.
    let cases: Vec<(&str, &Ca, Validity, &str)> = vec![
        ("UnknownIssuer", &other_ca, Validity::Days(30), "g1"),
        ("certificate expired", &ca, Validity::Expired, "g1"),
        ("not valid for name", &ca, Validity::Days(30), "g9"),
    ];
    for (want, issuer, validity, name) in &cases {
        let leaf = issuer.issue(&[name], *validity).unwrap();
        write_atomically(&key, leaf.key_pem.as_bytes()).unwrap();
        write_atomically(&cert, leaf.cert_pem.as_bytes()).unwrap();
        let err = status_with(good.clone(), &endpoint, "g1")
            .await
            .expect_err(want);
        eprintln!("{want}: the deduplicator's side sees: {err}");
        assert!(err.contains(want), "{want} not in: {err}");
    }
    // A deduplicator started now counts it as a TLS failure and never marks g1 connected.
    let d = start_dedup(w.dedup_file(&w.prod.url())).await;
    wait_for("TLS errors counted", Duration::from_secs(20), async || {
        metric_line(
            &dedup_metrics(&d).await,
            "dedup_source_errors_total{gatherer=\"g1\",kind=\"tls\"}",
        ) >= 2.0
    })
    .await;
    let (_, h) = dedup_health(d.http_addr).await;
    assert_ne!(h["gatherers"]["g1"], "connected", "{h}");
    // The right certificate back: the deduplicator connects without a restart.
    ca.issue(&["g1"], Validity::Days(30))
        .unwrap()
        .write(&dir, "g1")
        .unwrap();
    wait_for(
        "connected after the fix",
        Duration::from_secs(30),
        async || dedup_health(d.http_addr).await.1["gatherers"]["g1"] == "connected",
    )
    .await;
    d.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
