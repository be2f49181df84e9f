//! Configuration loading: a TOML file, then environment overrides, into a serde struct that
//! rejects unknown keys, with every error naming the key it is about.
//!
//! Every key can be overridden from the environment as `PREFIX__SECTION__KEY=value` (double
//! underscores separate levels; `GATHERER__STORE__BATCH_ROWS=2000` sets `store.batch_rows`).
//! A value is read as TOML (`true`, `42`, `"x"`, `["a","b"]`) where the key's default is not a
//! string, and as a plain string where it is, so `GATHERER__GATHERER_ID=1` stays the string
//! `"1"`. In a data pipeline a silently ignored typo is silent data loss, hence
//! `deny_unknown_fields` everywhere and the exact key in every message: it must never ignore a
//! key it does not know.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod deduplicator;
pub mod gatherer;

use crate::telemetry::LogFormat;

/// A secret string (a password, a private key, a URL with credentials): usable, never shown
/// by `Debug`. It serializes as itself only so that defaults can be inspected.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A configuration problem, one line, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn key(key: &str, message: impl std::fmt::Display) -> Self {
        Self(format!("{key}: {message}"))
    }
}

/// Loads `T` from an optional TOML file plus `PREFIX__...` variables from `env`.
pub fn load<T>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            // The position and the parser's message only: toml's Display quotes the line,
            // which may hold a secret (a database URL with its password).
            text.parse::<toml::Table>().map_err(|e| {
                let at = e.span().map_or(String::new(), |s| {
                    let before = &text.as_bytes()[..s.start.min(text.len())];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                    format!(" at line {line}, column {col}")
                });
                ConfigError(format!(
                    "config file {}{at}: TOML parse error: {}",
                    path.display(),
                    one_line(e.message())
                ))
            })?
        }
        None => toml::Table::new(),
    };
    let defaults = toml::Table::try_from(T::default())
        .map_err(|e| ConfigError(format!("internal: defaults do not serialize: {e}")))?;
    let marker = format!("{env_prefix}__");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&marker))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        let path: Vec<String> = name[marker.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError(format!(
                "environment variable {name}: empty key segment"
            )));
        }
        for i in 1..path.len() {
            if lookup(&defaults, &path[..i]).is_some_and(|v| !v.is_table()) {
                return Err(ConfigError(format!(
                    "environment variable {name}: `{}` is not a section",
                    path[..i].join(".")
                )));
            }
        }
        let default_is_string = lookup(&defaults, &path).is_some_and(|v| v.is_str());
        let parsed = if default_is_string {
            toml::Value::String(value)
        } else {
            parse_value(&value)
        };
        set(&mut table, &path, parsed)
            .map_err(|e| ConfigError(format!("environment variable {name}: {e}")))?;
    }
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = without_quoted_values(&one_line(&e.inner().to_string()));
        if path == "." || path.is_empty() {
            ConfigError(inner)
        } else {
            ConfigError(format!("{path}: {inner}"))
        }
    })
}

/// A serde message without the values it quotes (`invalid type: string "...", expected u32`):
/// the value may be a secret put under the wrong key.
fn without_quoted_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i + "string".len()]);
        let after = &rest[i + "string \"".len()..];
        // The closing quote: the last one before ", expected" or the end.
        let end = after
            .find("\", expected")
            .or_else(|| after.rfind('"'))
            .map_or(after.len(), |j| j + 1);
        rest = &after[end.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// Reads an environment value as TOML when it is a TOML literal, else as a string.
fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        lookup(v.as_table()?, rest)
    }
}

/// Why an environment override cannot be placed in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SetError {
    #[error("empty key")]
    EmptyKey,
    #[error("`{0}` is not a section")]
    NotASection(String),
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), SetError> {
    let Some((first, rest)) = path.split_first() else {
        return Err(SetError::EmptyKey);
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => set(t, rest, value),
        _ => Err(SetError::NotASection(first.clone())),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `humantime` durations in config files (`"50ms"`, `"5m"`, `"30d"`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                // Not the value itself: it may be a secret put under the wrong key (found by
                // tests/tests/fuzz.rs, config_files).
                "invalid duration ({e}); write e.g. \"50ms\", \"10s\", \"5m\", \"7d\""
            ))
        })
    }
}

/// Checks that `url` is a PostgreSQL URL sqlx can connect with. The parser's reason is kept
/// without the values it quotes, and dropped altogether if it still holds a piece of the URL
/// that may be secret (the credentials, any query value): a mistyped URL must never print its
/// password (found by tests/tests/fuzz.rs, config_files: a URL spliced into `sslmode=`).
pub fn check_pg_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::key(
            key,
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError::key(
            key,
            format!(
                "not a PostgreSQL URL{}",
                url_error_detail(&e.to_string(), url)
            ),
        )),
    }
}

/// `": <reason>"` from a URL parser's message, or nothing when the reason could show a secret.
fn url_error_detail(msg: &str, url: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = false;
    for c in msg.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    let out = one_line(&out.replace("error with configuration: ", ""));
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let credentials = after_scheme
        .split_once('@')
        .map(|(c, _)| c)
        .filter(|c| !c.contains('/'));
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let pieces = credentials.into_iter().flat_map(|c| c.split(':')).chain(
        query
            .split('&')
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v)),
    );
    let leaks = pieces.into_iter().any(|p| p.len() >= 3 && out.contains(p));
    if leaks || out.is_empty() {
        String::new()
    } else {
        format!(": {out}")
    }
}

/// Checks that a duration is positive.
pub fn positive(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::key(key, "must be greater than zero"))
    } else {
        Ok(d)
    }
}

/// Checks that a number is in a range.
pub fn in_range<N: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: N,
    lo: N,
    hi: N,
) -> Result<N, ConfigError> {
    if v < lo || v > hi {
        Err(ConfigError::key(key, format!("{v} is outside {lo}..={hi}")))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL whose parse fails names the key and the reason, never a piece of the URL that
    /// may be a secret, wherever in the URL the secret sits.
    #[test]
    fn a_bad_database_url_never_prints_its_secrets() {
        for url in [
            "postgres://postgres:hunter2secret@127.0.0.1:5432/p?sslmode=tgres://postgres:hunter2secret@h",
            "postgres://u:hunter2secret@h:99999/p",
            "postgres://u:hunter2secret@h/p?sslmode=hunter2secret",
            "postgres://u:hunter2secret@h/p?sslmode=verify-full&sslrootcert=/x&statement-cache-capacity=hunter2secret",
            "postgresx://u:hunter2secret@h/p",
        ] {
            let e = check_pg_url("store.database_url", url).expect_err(url);
            assert!(e.0.starts_with("store.database_url: "), "{e}");
            assert!(!e.0.contains("hunter2"), "{e}");
            assert_eq!(e.0.lines().count(), 1, "{e}");
        }
        let e = check_pg_url("k", "postgres://u:pw@h/p?sslmode=sometimes").unwrap_err();
        assert!(e.0.contains("ssl_mode"), "the reason is kept: {e}");
        check_pg_url("k", "postgres://u:pw@h:5432/p?sslmode=verify-full").unwrap();
    }

    /// What the stack writes from these types is what the services read back, key for key.
    #[test]
    fn service_files_written_from_the_types_read_back_the_same() {
        let mut g = gatherer::FileConfig::fast_local(
            "g7",
            "http://127.0.0.1:1/trade-api/v2".into(),
            "ws://127.0.0.1:1/trade-api/ws/v2".into(),
            "key",
            "/k.pem".into(),
            "postgres://u:pw@h/db",
        );
        g.ws.silence_timeout = Duration::from_millis(1500);
        g.registry.series = vec!["KXA".into(), "KXB".into()];
        let text = toml::to_string(&g).unwrap_or_else(|e| panic!("{e}"));
        let back: gatherer::FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, g);
        assert!(text.contains("silence_timeout = \"1s 500ms\""), "{text}");

        let mut d = deduplicator::FileConfig {
            gatherers: vec![deduplicator::GathererEndpoint {
                id: "g1".into(),
                endpoint: "http://127.0.0.1:5".into(),
                server_name: Some("g1".into()),
            }],
            ..Default::default()
        };
        d.sources.insecure = true;
        d.production.database_url = Secret("postgres://p@h/prod".into());
        d.sources.reconnect_max = Duration::from_secs(5);
        let text = toml::to_string(&d).unwrap_or_else(|e| panic!("{e}"));
        let back: deduplicator::FileConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, d);
    }

    /// Found by tests/tests/fuzz.rs (config_files): a TOML syntax error quoted the line, and a
    /// string under a numeric key quoted the string; either can be a password.
    #[test]
    fn errors_never_quote_the_file_or_a_value() {
        let dir = std::env::temp_dir().join(format!("cfg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let p = dir.join("c.toml");
        std::fs::write(&p, "name = \"x\"\n\"postgres://u:hunter2@h/db\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = load::<Cfg>(Some(&p), "APP", env(&[])).unwrap_err();
        assert!(!e.0.contains("hunter2"), "{e}");
        assert!(e.0.contains("at line 2, column"), "{e}");
        std::fs::write(&p, "[store]\nbatch_rows = \"postgres://u:hunter2@h/db\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = load::<Cfg>(Some(&p), "APP", env(&[])).unwrap_err();
        assert!(!e.0.contains("hunter2"), "{e}");
        assert!(
            e.0.starts_with("store.batch_rows: invalid type: string, expected"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        name: String,
        store: Store,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Store {
        url: String,
        batch_rows: u32,
        #[serde(with = "duration")]
        interval: Duration,
        tags: Vec<String>,
        enabled: bool,
    }

    impl Default for Store {
        fn default() -> Self {
            Self {
                url: "postgres://x".into(),
                batch_rows: 100,
                interval: Duration::from_millis(50),
                tags: vec![],
                enabled: true,
            }
        }
    }

    fn write(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "kalshi-config-test-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn file_then_environment() {
        let p = write("name = \"g1\"\n[store]\nbatch_rows = 5\ninterval = \"2s\"\n");
        let c: Cfg = load(
            Some(&p),
            "APP",
            env(&[
                ("APP__STORE__BATCH_ROWS", "7"),
                ("APP__STORE__TAGS", "[\"a\", \"b\"]"),
                ("APP__STORE__ENABLED", "false"),
                ("OTHER__STORE__BATCH_ROWS", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(c.name, "g1");
        assert_eq!(c.store.batch_rows, 7);
        assert_eq!(c.store.interval, Duration::from_secs(2));
        assert_eq!(c.store.tags, vec!["a", "b"]);
        assert!(!c.store.enabled);
        assert_eq!(c.store.url, "postgres://x", "defaults fill the rest");
        // A string key stays a string even when it looks like a number.
        let c: Cfg = load(None, "APP", env(&[("APP__NAME", "12")])).unwrap();
        assert_eq!(c.name, "12");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let p = write("[store]\nbatchrows = 5\n");
        let e = load::<Cfg>(Some(&p), "APP", vec![]).unwrap_err();
        assert!(e.0.contains("store") && e.0.contains("batchrows"), "{e}");
        assert!(!e.0.contains('\n'));
        let e = load::<Cfg>(None, "APP", env(&[("APP__STORE__BATCH_ROWS", "many")])).unwrap_err();
        assert!(e.0.starts_with("store.batch_rows:"), "{e}");
        let e = load::<Cfg>(None, "APP", env(&[("APP__STORE__INTERVAL", "soon")])).unwrap_err();
        assert!(
            e.0.starts_with("store.interval:") && e.0.contains("invalid duration"),
            "{e}"
        );
        let e = load::<Cfg>(None, "APP", env(&[("APP__STORE__NOPE", "1")])).unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        let e = load::<Cfg>(None, "APP", env(&[("APP__NAME__X", "1")])).unwrap_err();
        assert!(e.0.contains("APP__NAME__X"), "{e}");
        let bad = write("[store\n");
        let e = load::<Cfg>(Some(&bad), "APP", vec![]).unwrap_err();
        assert!(e.0.starts_with("config file") && !e.0.contains('\n'), "{e}");
        let e = load::<Cfg>(Some(Path::new("/nonexistent.toml")), "APP", vec![]).unwrap_err();
        assert!(e.0.contains("/nonexistent.toml"), "{e}");
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(bad).unwrap();
    }
}

/// `[http]` of both services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `GET /health`.
    pub listen: std::net::SocketAddr,
    /// `GET /metrics`.
    pub metrics_listen: std::net::SocketAddr,
    /// Open connections per server; more are closed at once.
    pub max_connections: usize,
    /// Deadline for each request head, and for an idle keep-alive connection.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection is closed (after its current response) at this age.
    #[serde(with = "duration")]
    pub max_connection_age: Duration,
}

impl HttpSection {
    /// The checks both services apply to `[http]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("http.max_connections", self.max_connections, 1, 100_000)?;
        let within = |key: &str, d: Duration, lo: Duration, hi: Duration, says: &str| {
            if d < lo || d > hi {
                Err(ConfigError::key(key, format!("must be between {says}")))
            } else {
                Ok(())
            }
        };
        within(
            "http.header_read_timeout",
            self.header_read_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
            "100ms and 10m",
        )?;
        within(
            "http.max_connection_age",
            self.max_connection_age,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
            "1s and 24h",
        )?;
        Ok(())
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9464)),
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(300),
        }
    }
}

/// `[log]` of both services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// RUST_LOG syntax.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}
