//! aws-sdk-rds against local stand-ins, never AWS: IAM database authentication (a proxy in
//! front of production plays RDS's IAM check: it asks for a cleartext password and accepts
//! only a well-formed, fresh, signed token for this endpoint and user), tokens refreshed
//! before expiry; and, while production refuses writes, the instance's RDS events read from a
//! stand-in of the RDS API so /health and dedup_rds_failover_in_progress say so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kalshi_e2e::world::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Reads one startup-phase message (no type byte): length-prefixed.
async fn read_startup(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut body).await?;
    let mut all = (len as u32).to_be_bytes().to_vec();
    all.extend(body);
    Ok(all)
}

/// A PostgreSQL front door that demands an IAM token as a cleartext password, records it,
/// and lets valid ones through to `upstream` (trust auth).
async fn iam_front(
    upstream: std::net::SocketAddr,
    tokens: Arc<Mutex<Vec<String>>>,
    expect_prefix: impl Fn(u16) -> String + Send + Sync + 'static,
) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let expect_prefix = Arc::new(expect_prefix);
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let tokens = tokens.clone();
            let prefix = expect_prefix(port);
            tokio::spawn(async move {
                let mut startup = read_startup(&mut c).await?;
                if startup[4..8] == 80_877_103u32.to_be_bytes() {
                    c.write_all(b"N").await?; // no TLS
                    startup = read_startup(&mut c).await?;
                }
                // AuthenticationCleartextPassword.
                c.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
                let kind = c.read_u8().await?;
                let len = c.read_u32().await? as usize;
                let mut pw = vec![0u8; len - 4];
                c.read_exact(&mut pw).await?;
                let token = String::from_utf8_lossy(&pw[..pw.len().saturating_sub(1)]).into_owned();
                tokens.lock().unwrap().push(token.clone());
                let ok = kind == b'p'
                    && token.starts_with(&prefix)
                    && token.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256")
                    && token.contains("X-Amz-Credential=AKIDTESTONLY%2F")
                    && token.contains("%2Fus-east-1%2Frds-db%2Faws4_request")
                    && token.contains("X-Amz-Expires=900")
                    && token.contains("X-Amz-Signature=");
                if !ok {
                    let msg = b"SFATAL\0C28P01\0Mbad IAM token\0\0";
                    let mut e = vec![b'E'];
                    e.extend(((msg.len() + 4) as u32).to_be_bytes());
                    e.extend(msg);
                    c.write_all(&e).await?;
                    return Ok::<(), std::io::Error>(());
                }
                let mut up = TcpStream::connect(upstream).await?;
                up.write_all(&startup).await?;
                tokio::io::copy_bidirectional(&mut c, &mut up).await?;
                Ok(())
            });
        }
    });
    port
}

/// A stand-in for the RDS API answering DescribeEvents with a failover in progress.
async fn rds_api(requests: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().fallback(axum::routing::any(move |body: String| {
        let requests = requests.clone();
        async move {
            requests.lock().unwrap().push(body);
            (
                [("content-type", "text/xml")],
                r#"<DescribeEventsResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">
  <DescribeEventsResult>
    <Events>
      <Event>
        <SourceIdentifier>prod-db</SourceIdentifier>
        <SourceType>db-instance</SourceType>
        <Message>Multi-AZ instance failover started.</Message>
        <EventCategories><EventCategory>failover</EventCategory></EventCategories>
        <Date>2026-11-22T19:00:00.000Z</Date>
        <SourceArn>arn:aws:rds:us-east-1:123456789012:db:prod-db</SourceArn>
      </Event>
    </Events>
  </DescribeEventsResult>
  <ResponseMetadata><RequestId>6b6d1f1e-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</DescribeEventsResponse>"#,
            )
        }
    }));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(dedup_bin())
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn metrics_of(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_tokens_and_rds_failover_events() {
    let mut w = World::start(441, 20, 1).await;
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let upstream = format!("127.0.0.1:{}", w.prod.port()).parse().unwrap();
    let front = iam_front(upstream, tokens.clone(), |port| {
        format!("127.0.0.1:{port}/?Action=connect&DBUser=postgres&")
    })
    .await;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let api = rds_api(requests.clone()).await;

    let mut file = w.dedup_file(&format!(
        "postgres://postgres:ignored-password@127.0.0.1:{front}/postgres"
    ));
    let (http, metrics) = (free_port(), free_port());
    file.http.listen = format!("127.0.0.1:{http}").parse().unwrap();
    file.http.metrics_listen = format!("127.0.0.1:{metrics}").parse().unwrap();
    file.rds.iam_auth = true;
    file.rds.region = "us-east-1".into();
    file.rds.iam_token_refresh = Duration::from_secs(2);
    file.rds.instance_id = "prod-db".into();
    file.rds.endpoint_url = api;
    file.rds.events_after = Duration::from_secs(1);
    let dir = std::env::temp_dir().join(format!("dedup-rds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("deduplicator.toml");
    std::fs::write(&config, toml::to_string(&file).unwrap()).unwrap();
    let log = dir.join("deduplicator.log");
    let mut child = spawn(&config, &log);

    // Data flows through IAM authentication.
    let pool = pool(&w.prod.url()).await;
    traffic(&w, 300, 4.0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    assert_exact(&w, &pool).await;
    let first: Vec<String> = tokens.lock().unwrap().clone();
    assert!(!first.is_empty(), "connections authenticated with a token");
    // New connections after the refresh interval carry a newer token.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'kalshi-deduplicator%'")
        .execute(&pool)
        .await
        .unwrap();
    traffic(&w, 300, 3.0).await;
    w.settle(Duration::from_millis(1000)).await;
    w.wait_synced(&pool, Duration::from_secs(60)).await;
    let all: Vec<String> = tokens.lock().unwrap().clone();
    let date = |t: &str| t.split("X-Amz-Date=").nth(1).unwrap()[..16].to_owned();
    let dates: std::collections::HashSet<String> = all.iter().map(|t| date(t)).collect();
    assert!(dates.len() >= 2, "tokens refreshed: {dates:?}");
    let m = metrics_of(metrics).await;
    assert!(
        metric_sum(&m, "dedup_iam_tokens_total") >= 3.0,
        "{}",
        metric_sum(&m, "dedup_iam_tokens_total")
    );
    assert_eq!(metric_sum(&m, "dedup_rds_failover_in_progress"), 0.0);
    assert!(
        requests.lock().unwrap().is_empty(),
        "no RDS API call while writes succeed"
    );

    // Production goes away during traffic: the RDS events say failover.
    w.rate(200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.prod.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics_of(metrics).await;
        if metric_sum(&m, "dedup_rds_failover_in_progress") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "failover never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, h) = dedup_health(format!("127.0.0.1:{http}").parse().unwrap()).await;
    assert_eq!(h["rds"], "failover_in_progress", "{h}");
    let req = requests.lock().unwrap().first().cloned().unwrap();
    assert!(
        req.contains("Action=DescribeEvents") && req.contains("SourceIdentifier=prod-db"),
        "{req}"
    );
    w.prod.restart().unwrap();
    w.rate(0).await;
    w.settle(Duration::from_millis(1000)).await;
    let pool = kalshi_e2e::world::pool(&w.prod.url()).await;
    w.wait_synced(&pool, Duration::from_secs(90)).await;
    assert_exact(&w, &pool).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric_sum(&metrics_of(metrics).await, "dedup_rds_failover_in_progress") != 0.0 {
        assert!(Instant::now() < deadline, "failover gauge stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("RDS failover in progress"), "logged");
    for t in &all {
        let sig = t.split("X-Amz-Signature=").nth(1).unwrap();
        assert!(
            !text.contains(sig),
            "a token's signature appears in the log"
        );
    }
    assert!(
        !text.contains("ignored-password") && !text.contains("test-secret-not-real"),
        "secrets in the log"
    );
}
