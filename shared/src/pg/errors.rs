//! Database errors classified the way DESIGN.md's retry rules need them.
//!
//! It must never call a data error (classes 22 and 23) retryable: no retry fixes the row, so
//! callers bisect it out instead. And it must never call anything else a data error: a
//! refused privilege, a bad password or a broken server is not the rows' fault, and a caller
//! that bisected on it would quarantine valid rows (every gatherer's copy of them).

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
    /// `28xxx` (bad password, no such role), `42501` (permission denied): the server refuses
    /// this client. Not the rows' fault: an operator must fix it; stall and retry meanwhile.
    Refused,
    /// Other `42xxx`, `3Dxxx`, `3Fxxx`, `0Axxx`: the schema is not what this binary expects
    /// (a missing table or column, a migration not applied). Stall and retry.
    Schema,
    /// `XX`, `58`, `55`, `54`, `57` (other than the connection ones), `F0`, `HV`, `P0`: the
    /// server is broken or busy (disk, corruption, locks, limits). Stall and retry.
    Server,
    /// Anything else (no SQLSTATE, a decode error): not the rows' fault that we know of.
    Other,
}

impl DbErrorClass {
    /// Every class, for registering metric label sets at zero.
    pub const ALL: [DbErrorClass; 9] = [
        DbErrorClass::Connection,
        DbErrorClass::ReadOnly,
        DbErrorClass::Transient,
        DbErrorClass::Timeout,
        DbErrorClass::Data,
        DbErrorClass::Refused,
        DbErrorClass::Schema,
        DbErrorClass::Server,
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
            DbErrorClass::Refused => "refused",
            DbErrorClass::Schema => "schema",
            DbErrorClass::Server => "server",
            DbErrorClass::Other => "other",
        }
    }

    /// Whether retrying the same operation can succeed without anyone acting (a failover, a
    /// dropped connection, a deadlock).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            DbErrorClass::Connection
                | DbErrorClass::ReadOnly
                | DbErrorClass::Transient
                | DbErrorClass::Timeout
        )
    }

    /// Whether the rows themselves are at fault (`22xxx`, `23xxx`): the only class a writer
    /// may bisect a batch on and quarantine rows for.
    pub fn is_data(self) -> bool {
        self == DbErrorClass::Data
    }

    /// Whether the error needs someone to act (a privilege, a password, the schema, the
    /// server), while retrying is all a writer can do: it stalls, loudly, with nothing moved.
    pub fn needs_operator(self) -> bool {
        matches!(
            self,
            DbErrorClass::Refused
                | DbErrorClass::Schema
                | DbErrorClass::Server
                | DbErrorClass::Other
        )
    }
}

/// Classifies by SQLSTATE.
pub fn classify_sqlstate(code: &str) -> DbErrorClass {
    match code {
        "25006" => DbErrorClass::ReadOnly,
        "40001" | "40P01" => DbErrorClass::Transient,
        "57014" => DbErrorClass::Timeout,
        "57P01" | "57P02" | "57P03" | "57P05" => DbErrorClass::Connection,
        c if c.starts_with("08") => DbErrorClass::Connection,
        c if c.starts_with("53") => DbErrorClass::Transient,
        c if c.starts_with("22") || c.starts_with("23") => DbErrorClass::Data,
        "42501" => DbErrorClass::Refused,
        c if c.starts_with("28") => DbErrorClass::Refused,
        c if ["42", "3D", "3F", "0A"].iter().any(|p| c.starts_with(p)) => DbErrorClass::Schema,
        c if ["XX", "58", "55", "54", "57", "F0", "HV", "P0"]
            .iter()
            .any(|p| c.starts_with(p)) =>
        {
            DbErrorClass::Server
        }
        _ => DbErrorClass::Other,
    }
}

/// The SQLSTATE class (its first two characters, e.g. `42` for `42501`), a bounded label for
/// metrics; `none` when the server sent no SQLSTATE.
pub fn sqlstate_class(sqlstate: Option<&str>) -> &'static str {
    const CLASSES: &[&str] = &[
        "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22",
        "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F",
        "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
    ];
    match sqlstate {
        None => "none",
        Some(s) => CLASSES
            .iter()
            .find(|c| s.starts_with(**c))
            .copied()
            .unwrap_or("unknown"),
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
            ("42501", DbErrorClass::Refused),
            ("28P01", DbErrorClass::Refused),
            ("28000", DbErrorClass::Refused),
            ("42P01", DbErrorClass::Schema),
            ("42703", DbErrorClass::Schema),
            ("3D000", DbErrorClass::Schema),
            ("XX000", DbErrorClass::Server),
            ("XX001", DbErrorClass::Server),
            ("58030", DbErrorClass::Server),
            ("55P03", DbErrorClass::Server),
            ("54000", DbErrorClass::Server),
            ("57000", DbErrorClass::Server),
            ("ZZ999", DbErrorClass::Other),
        ] {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
        assert!(DbErrorClass::Connection.is_retryable());
        assert!(!DbErrorClass::Data.is_retryable());
        // Only the rows' own errors may be bisected; the rest stall for an operator.
        for c in DbErrorClass::ALL {
            assert_eq!(c.is_data(), c == DbErrorClass::Data, "{c:?}");
            assert_eq!(
                c.needs_operator(),
                !c.is_data() && !c.is_retryable(),
                "{c:?}"
            );
        }
        assert_eq!(sqlstate_class(Some("42501")), "42");
        assert_eq!(sqlstate_class(Some("XX000")), "XX");
        assert_eq!(sqlstate_class(Some("Q1234")), "unknown");
        assert_eq!(sqlstate_class(None), "none");
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut),
            DbErrorClass::Connection
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), DbErrorClass::Other);
    }
}
