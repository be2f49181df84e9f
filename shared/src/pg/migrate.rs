//! The bookkeeping of embedded migrations, for both services' databases: `schema_migrations`
//! records each applied version with the SHA-256 of its SQL, and every start checks the record
//! against the binary before anything is applied.
//!
//! Each service applies its missing migrations itself, in order, each in one transaction
//! together with [`record`], under its own advisory lock (the gatherer's TimescaleDB path adds
//! statements to its first migration). What lives here is the rule they share.
//!
//! It must never let a service run on a schema it does not know: a migration edited after it
//! was applied, or a database migrated by a newer binary, is refused with the version named.

use sqlx::{Executor as _, PgConnection, Row as _};

/// One embedded migration.
pub type Migration = (i32, &'static str);

/// Why a database's migrations cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {version} was edited after it was applied (checksum {applied} in the database, {embedded} in this binary): put schema changes in a new migration"
    )]
    Edited {
        version: i32,
        applied: String,
        embedded: String,
    },
    #[error(
        "migration {version} is applied in the database but unknown to this binary: the database was migrated by a newer version"
    )]
    Unknown { version: i32 },
    #[error("reading schema_migrations: {0}")]
    Database(#[from] sqlx::Error),
}

impl crate::pg::op::Classified for MigrationError {
    fn class(&self) -> crate::pg::DbErrorClass {
        match self {
            MigrationError::Database(e) => crate::pg::classify(e),
            // Refused schema: nothing a retry fixes.
            _ => crate::pg::DbErrorClass::Other,
        }
    }
}

/// SHA-256 (hex) of a migration's SQL, as stored.
pub fn checksum(sql: &str) -> String {
    crate::identity::sha256_hex(sql.as_bytes())
}

/// Creates `schema_migrations` if needed and checks every applied version against
/// `migrations`. Versions applied before checksums were recorded get theirs now (logged).
/// Returns the applied versions.
pub async fn verify(
    conn: &mut PgConnection,
    migrations: &[Migration],
) -> Result<Vec<i32>, MigrationError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        .await?;
    let rows = sqlx::query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for r in rows {
        let version: i32 = r.try_get(0)?;
        let stored: Option<String> = r.try_get(1)?;
        let Some((_, sql)) = migrations.iter().find(|(v, _)| *v == version) else {
            return Err(MigrationError::Unknown { version });
        };
        let embedded = checksum(sql);
        match stored {
            Some(s) if s == embedded => {}
            Some(s) => {
                return Err(MigrationError::Edited {
                    version,
                    applied: s,
                    embedded,
                });
            }
            None => {
                sqlx::query("UPDATE schema_migrations SET checksum = $2 WHERE version = $1")
                    .bind(version)
                    .bind(&embedded)
                    .execute(&mut *conn)
                    .await?;
                tracing::info!(
                    version,
                    "recorded the checksum of a migration applied before checksums existed"
                );
            }
        }
        applied.push(version);
    }
    Ok(applied)
}

/// Records one applied migration; call it in the migration's own transaction.
pub async fn record(conn: &mut PgConnection, version: i32, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)")
        .bind(version)
        .bind(checksum(sql))
        .execute(conn)
        .await?;
    Ok(())
}
