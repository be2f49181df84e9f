//! `deduplicator.toml`: the file format with its defaults, and the validated runtime settings.
//! Every key can be overridden from the environment as `DEDUPLICATOR__SECTION__KEY`. The
//! production database URL (its password) never appears in logs or `Debug` output.

use std::sync::Arc;
use std::time::Duration;

pub use kalshi_shared::config::Secret;
pub use kalshi_shared::config::deduplicator::*;
use kalshi_shared::config::{ConfigError, check_pg_url, in_range, positive};
pub use kalshi_shared::config::{HttpSection, LogSection};
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::tls::{ClientTls, TlsFiles};

/// The documented reference configuration: every key with its default (checked by a test).
pub const REFERENCE: &str = include_str!("../../deploy/deduplicator.reference.toml");

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub gatherers: Vec<GathererEndpoint>,
    pub production: ProductionSection,
    pub production_retry: BackoffConfig,
    pub rds: RdsSection,
    pub sink: SinkSection,
    pub sources: SourcesSection,
    /// mTLS to the gatherers (None: plaintext, `sources.insecure`).
    pub sources_tls: Option<Arc<ClientTls>>,
    pub source_backoff: BackoffConfig,
    pub http: HttpSection,
    pub log: LogSection,
    pub lease: LeaseSection,
    pub testing: TestingSection,
    /// The Parquet archive (None: off).
    pub archive: Option<ArchiveConfig>,
}

pub use crate::archive::settings::ArchiveConfig;

/// Validation: the file format lives in `kalshi_shared::config::deduplicator`; what it
/// means is decided here.
pub trait Validate {
    fn validate(self) -> Result<Config, ConfigError>;
}

impl Validate for FileConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let FileConfig {
            gatherers,
            production,
            rds,
            sink,
            sources,
            http,
            log,
            lease,
            testing,
            archive,
        } = self;
        http.validate()?;
        if gatherers.is_empty() {
            return Err(ConfigError::key(
                "gatherers",
                "at least one gatherer is required",
            ));
        }
        let sources_tls = sources_tls(&sources)?;
        let mut gatherers = gatherers;
        let mut ids = std::collections::HashSet::new();
        for (i, g) in gatherers.iter_mut().enumerate() {
            if g.id.is_empty()
                || g.id.len() > 64
                || !g
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].id"),
                    "must be 1-64 letters, digits, '-' or '_'",
                ));
            }
            if !ids.insert(g.id.clone()) {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].id"),
                    format!("{:?} is listed twice", g.id),
                ));
            }
            if !(g.endpoint.starts_with("http://") || g.endpoint.starts_with("https://"))
                || g.endpoint.parse::<tonic::transport::Uri>().is_err()
            {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].endpoint"),
                    // Not echoed whole: a misplaced database URL would show its password.
                    format!(
                        "is not an http:// or https:// address (its scheme: {:?})",
                        g.endpoint
                            .split_once("://")
                            .map_or("none", |(scheme, _)| scheme)
                    ),
                ));
            }
            // The scheme says what the link is, so a config never looks encrypted when it is not.
            match (&sources_tls, g.endpoint.starts_with("https://")) {
                (Some(_), false) => {
                    return Err(ConfigError::key(
                        &format!("gatherers[{i}].endpoint"),
                        "with [sources.tls] (mTLS) endpoints are https://",
                    ));
                }
                (None, true) => {
                    return Err(ConfigError::key(
                        &format!("gatherers[{i}].endpoint"),
                        "with sources.insecure (plaintext) endpoints are http://",
                    ));
                }
                _ => {}
            }
            let host = g
                .endpoint
                .parse::<tonic::transport::Uri>()
                .ok()
                .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()));
            let name = g.server_name.clone().or(host).unwrap_or_default();
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].server_name"),
                    format!("{name:?} is not a DNS name or IP address"),
                ));
            }
            g.server_name = Some(name);
        }
        let url = production.database_url.expose();
        check_pg_url("production.database_url", url)?;
        check_sslmode(url)?;
        in_range("production.pool_max", production.pool_max, 4, 1000)?;
        positive("production.connect_timeout", production.connect_timeout)?;
        positive("production.op_timeout", production.op_timeout)?;
        positive("production.unhealthy_after", production.unhealthy_after)?;
        let production_retry = BackoffConfig::new(production.retry_initial, production.retry_max)
            .map_err(|e| ConfigError::key("production.retry_initial", e))?;
        if rds.iam_auth && rds.region.is_empty() {
            return Err(ConfigError::key("rds.region", "required with rds.iam_auth"));
        }
        if rds.iam_auth
            && !(Duration::from_secs(1)..=Duration::from_secs(840)).contains(&rds.iam_token_refresh)
        {
            return Err(ConfigError::key(
                "rds.iam_token_refresh",
                "must be between 1s and 14m (tokens expire after 15 minutes)",
            ));
        }
        if !rds.endpoint_url.is_empty() && !rds.endpoint_url.starts_with("http") {
            return Err(ConfigError::key(
                "rds.endpoint_url",
                "must be an http(s) URL",
            ));
        }
        in_range("sink.batch_rows", sink.batch_rows, 1, 1_000_000)?;
        if sink.batch_interval > Duration::from_secs(60) {
            return Err(ConfigError::key(
                "sink.batch_interval",
                "must be at most 1m (0s: commit as soon as the previous commit finished)",
            ));
        }
        in_range("sink.cache_keys", sink.cache_keys, 0, 100_000_000)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&sink.cache_window) {
            return Err(ConfigError::key(
                "sink.cache_window",
                "must be between 1s and 24h",
            ));
        }
        in_range("sink.queue_pages", sink.queue_pages, 1, 10_000)?;
        if !(Duration::from_millis(100)..=Duration::from_secs(600))
            .contains(&sink.lifecycle_match_window)
        {
            return Err(ConfigError::key(
                "sink.lifecycle_match_window",
                "between 100ms and 10m",
            ));
        }
        in_range("sources.page_limit", sources.page_limit, 1, 100_000)?;
        in_range(
            "sources.max_message_bytes",
            sources.max_message_bytes,
            64 * 1024,
            1 << 30,
        )?;
        positive("sources.connect_timeout", sources.connect_timeout)?;
        positive("sources.silence_timeout", sources.silence_timeout)?;
        let source_backoff = BackoffConfig::new(sources.reconnect_initial, sources.reconnect_max)
            .map_err(|e| ConfigError::key("sources.reconnect_initial", e))?;
        check_lease(&lease, &production, &testing)?;
        Ok(Config {
            gatherers,
            production,
            production_retry,
            rds,
            sink,
            sources,
            sources_tls,
            source_backoff,
            http,
            log,
            lease,
            testing,
            archive: crate::archive::settings::validate(archive)?,
        })
    }
}

/// The lease's timings: a standby polls and an active renews often enough that a takeover
/// needs several missed renewals, and an active is called hung only after a transaction
/// outlived its own deadline.
fn check_lease(
    lease: &LeaseSection,
    production: &ProductionSection,
    testing: &TestingSection,
) -> Result<(), ConfigError> {
    let ms = Duration::from_millis;
    if !(ms(50)..=ms(60_000)).contains(&lease.poll) {
        return Err(ConfigError::key("lease.poll", "between 50ms and 1m"));
    }
    if !(ms(100)..=ms(60_000)).contains(&lease.renew_every) {
        return Err(ConfigError::key(
            "lease.renew_every",
            "between 100ms and 1m",
        ));
    }
    if lease.takeover_after < lease.renew_every * 3 || lease.takeover_after > ms(600_000) {
        return Err(ConfigError::key(
            "lease.takeover_after",
            "between 3 x lease.renew_every and 10m",
        ));
    }
    if lease.hung_after <= production.op_timeout + testing.pause_before_commit
        || lease.hung_after > ms(3_600_000)
    {
        return Err(ConfigError::key(
            "lease.hung_after",
            "above production.op_timeout (a transaction's own deadline) and at most 1h",
        ));
    }
    Ok(())
}

/// Production is reached over TLS that checks the server's certificate and name
/// (`sslmode=verify-full`, with `sslrootcert` naming the RDS CA bundle), or, said explicitly,
/// in plaintext (`sslmode=disable`, a trusted local link). Modes that encrypt without checking
/// who answers (`require`, `verify-ca`, `prefer`, `allow`) are refused, as is no mode at all
/// (libpq's default, `prefer`, silently falls back to plaintext).
fn check_sslmode(url: &str) -> Result<(), ConfigError> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mode = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "sslmode")
        .map(|(_, v)| v);
    match mode {
        Some("verify-full" | "disable") => Ok(()),
        Some(m) => Err(ConfigError::key(
            "production.database_url",
            format!(
                "sslmode={m} does not check the server's name: use sslmode=verify-full (sslrootcert=<the RDS CA bundle>), or sslmode=disable on a trusted local link"
            ),
        )),
        None => Err(ConfigError::key(
            "production.database_url",
            "say sslmode=verify-full (with sslrootcert=<the RDS CA bundle>), or sslmode=disable on a trusted local link",
        )),
    }
}

/// mTLS to the gatherers, loaded (files that do not load are a configuration error), or None
/// for plaintext, which must be asked for.
fn sources_tls(sources: &SourcesSection) -> Result<Option<Arc<ClientTls>>, ConfigError> {
    match (sources.insecure, &sources.tls) {
        (true, Some(_)) => Err(ConfigError::key(
            "sources.insecure",
            "sources.insecure = true and [sources.tls] are both set: choose one",
        )),
        (false, None) => Err(ConfigError::key(
            "sources.tls",
            "reading the gatherers needs [sources.tls] (mTLS), or sources.insecure = true for plaintext",
        )),
        (true, None) => Ok(None),
        (false, Some(t)) => ClientTls::load(TlsFiles {
            ca_file: t.ca_file.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
        })
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| ConfigError::key("sources.tls", e)),
    }
}

/// Loads `path` (if any) plus `DEDUPLICATOR__*` variables, then validates.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let file: FileConfig = kalshi_shared::config::load(path, "DEDUPLICATOR", std::env::vars())?;
    file.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_is_exactly_the_defaults() {
        let parsed: FileConfig = toml::from_str(REFERENCE).expect("reference parses");
        assert_eq!(parsed, FileConfig::default());
        let e = FileConfig::default().validate().unwrap_err();
        assert!(
            e.0.starts_with("sources.tls: "),
            "mTLS unless asked otherwise: {e}"
        );
        insecure().validate().unwrap();
    }

    /// Defaults with plaintext gRPC asked for (and an http:// endpoint).
    fn insecure() -> FileConfig {
        let mut c = FileConfig::default();
        c.sources.insecure = true;
        c.gatherers[0].endpoint = "http://127.0.0.1:50051".into();
        c
    }

    #[test]
    fn production_tls_must_verify_the_server_or_be_off_explicitly() {
        let with = |url: &str| {
            let mut c = insecure();
            c.production.database_url = Secret(url.into());
            c.validate().map(|_| ()).map_err(|e| e.0)
        };
        with("postgres://u:pw@h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        with("postgres://u:pw@h/db?sslmode=disable").unwrap();
        for bad in [
            "postgres://u:hunter2@h/db",
            "postgres://u:hunter2@h/db?sslmode=require",
            "postgres://u:hunter2@h/db?sslmode=prefer",
            "postgres://u:hunter2@h/db?application_name=x&sslmode=verify-ca",
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.starts_with("production.database_url: "), "{bad}: {e}");
            assert!(e.contains("verify-full"), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_settings_are_checked_naming_the_key() {
        let tls = SourcesTlsSection {
            ca_file: "/nonexistent/ca.crt".into(),
            cert_file: "/nonexistent/d.crt".into(),
            key_file: "/nonexistent/d.key".into(),
        };
        let check = |mutate: &dyn Fn(&mut FileConfig), want: &str| {
            let mut c = insecure();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(want), "{want}: {e}");
        };
        check(&|c| c.sources.tls = Some(tls.clone()), "sources.insecure: ");
        check(
            &|c| c.gatherers[0].endpoint = "https://127.0.0.1:50051".into(),
            "gatherers[0].endpoint: with sources.insecure",
        );
        check(
            &|c| c.gatherers[0].server_name = Some("not a name".into()),
            "gatherers[0].server_name: ",
        );
        check(
            &|c| {
                c.sources.insecure = false;
                c.sources.tls = Some(tls.clone());
            },
            "sources.tls: cannot read /nonexistent/ca.crt",
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        type Mutate = fn(&mut FileConfig);
        let cases: Vec<(Mutate, &str)> = vec![
            (|c| c.gatherers.clear(), "gatherers"),
            (|c| c.gatherers[0].id = "a b".into(), "gatherers[0].id"),
            (
                |c| c.gatherers.push(c.gatherers[0].clone()),
                "gatherers[1].id",
            ),
            (
                |c| c.gatherers[0].endpoint = "127.0.0.1:1".into(),
                "gatherers[0].endpoint",
            ),
            (
                |c| c.production.database_url = Secret("mysql://x".into()),
                "production.database_url",
            ),
            (|c| c.rds.iam_auth = true, "rds.region"),
            (|c| c.sink.batch_rows = 0, "sink.batch_rows"),
            (
                |c| c.sources.reconnect_max = Duration::from_millis(1),
                "sources.reconnect_initial",
            ),
        ];
        for (mutate, key) in cases {
            let mut c = insecure();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(&format!("{key}:")), "{key}: {e}");
        }
        let mut c = insecure();
        c.production.database_url = Secret("postgres://u:hunter2@h/db?sslmode=disable".into());
        assert!(!format!("{:?}", c.validate().unwrap()).contains("hunter2"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn load_example(name: &str, tweak: impl FnOnce(&mut FileConfig)) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        let mut file: FileConfig = kalshi_shared::config::load(
            Some(&path),
            "DEDUPLICATOR",
            Vec::<(String, String)>::new(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        tweak(&mut file);
        file.validate().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_example_configs_are_valid() {
        let sim = load_example("deduplicator.sim.toml", |_| {});
        assert_eq!(sim.gatherers.len(), 3);
        assert!(sim.sources_tls.is_none());
        // The production TLS files live on the host: a throwaway set stands in for them.
        let dir = std::env::temp_dir().join(format!("dedup-example-tls-{}", std::process::id()));
        let ids: Vec<String> = vec!["g1".into()];
        let (_ca, files) = kalshi_testkit::certs::write_mtls_set(&dir, &ids).unwrap();
        let prod = load_example("deduplicator.production.toml", |f| {
            let tls = f.sources.tls.as_mut().expect("production runs mTLS");
            assert!(tls.ca_file.starts_with("/etc/kalshi-data/tls"));
            tls.ca_file = files.ca.clone();
            tls.cert_file = files.deduplicator.0.clone();
            tls.key_file = files.deduplicator.1.clone();
        });
        assert!(prod.rds.iam_auth);
        assert_eq!(prod.gatherers.len(), 3);
        assert!(prod.sources_tls.is_some());
        assert_eq!(
            prod.gatherers[1].server_name.as_deref(),
            Some("g2.gatherers.kalshi.internal"),
            "the certificate name is the endpoint's host"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
