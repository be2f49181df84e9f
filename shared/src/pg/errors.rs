//! Database errors classified the way DESIGN.md's retry rules need them.
//!
//! It must never call a data error (classes 22 and 23) retryable: no retry fixes the row, so
//! callers bisect it out instead.

/// What to do about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbErrorClass {
    /// The connection is gone or unusable (network, `08xxx`, `57P01`-`57P03`, pool trouble):
    /// drop it, back off, retry the whole transaction.
    Connection,
    /// `25006`: connected to a server that is read-only (a demoted primary): rebuild the pool
    /// so the name is resolved again, then retry.
    ReadOnly,
    /// `40001`, `40P01`, `53xxx`: retry as is.
    Transient,
    /// A statement or client deadline expired (`57014` or ours): treat like a lost connection.
    Timeout,
    /// `22xxx`, `23xxx`: the data is wrong; retrying the same rows will fail again.
    Data,
    /// Anything else (a bug, a schema problem): not retried automatically.
    Other,
}

impl DbErrorClass {
    /// Every class, for registering metric label sets at zero.
    pub const ALL: [DbErrorClass; 6] = [
        DbErrorClass::Connection,
        DbErrorClass::ReadOnly,
        DbErrorClass::Transient,
        DbErrorClass::Timeout,
        DbErrorClass::Data,
        DbErrorClass::Other,
    ];

    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DbErrorClass::Connection => "connection",
            DbErrorClass::ReadOnly => "read_only",
            DbErrorClass::Transient => "transient",
            DbErrorClass::Timeout => "timeout",
            DbErrorClass::Data => "data",
            DbErrorClass::Other => "other",
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, DbErrorClass::Data | DbErrorClass::Other)
    }
}

/// Classifies by SQLSTATE.
pub fn classify_sqlstate(code: &str) -> DbErrorClass {
    match code {
        "25006" => DbErrorClass::ReadOnly,
        "40001" | "40P01" => DbErrorClass::Transient,
        "57014" => DbErrorClass::Timeout,
        "57P01" | "57P02" | "57P03" => DbErrorClass::Connection,
        c if c.starts_with("08") => DbErrorClass::Connection,
        c if c.starts_with("53") => DbErrorClass::Transient,
        c if c.starts_with("22") || c.starts_with("23") => DbErrorClass::Data,
        _ => DbErrorClass::Other,
    }
}

/// Classifies an sqlx error.
pub fn classify(e: &sqlx::Error) -> DbErrorClass {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .map_or(DbErrorClass::Other, |c| classify_sqlstate(&c)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbErrorClass::Connection,
        _ => DbErrorClass::Other,
    }
}

/// The SQLSTATE of an error, if the server sent one.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_md_classes() {
        for (code, class) in [
            ("08006", DbErrorClass::Connection),
            ("08P01", DbErrorClass::Connection),
            ("57P01", DbErrorClass::Connection),
            ("57P03", DbErrorClass::Connection),
            ("25006", DbErrorClass::ReadOnly),
            ("40001", DbErrorClass::Transient),
            ("40P01", DbErrorClass::Transient),
            ("53300", DbErrorClass::Transient),
            ("57014", DbErrorClass::Timeout),
            ("22P02", DbErrorClass::Data),
            ("23505", DbErrorClass::Data),
            ("42P01", DbErrorClass::Other),
        ] {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
        assert!(DbErrorClass::Connection.is_retryable());
        assert!(!DbErrorClass::Data.is_retryable());
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut),
            DbErrorClass::Connection
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), DbErrorClass::Other);
    }
}
