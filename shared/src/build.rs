//! What build is running: the crate version and the git commit it was built from, for the
//! `<service>_build_info{version,git_sha}` metric, `/health` and the gRPC `Status` reply.
//!
//! The commit comes from `KALSHI_GIT_SHA` at compile time (the release script sets it; rustc
//! records the variable, so changing it rebuilds this crate). A build without it (a developer's
//! `cargo build`) says `unknown` rather than guessing from a work tree that may be dirty.

/// The workspace version (`Cargo.toml`), e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the release was built from, or `unknown`.
pub const GIT_SHA: &str = match option_env!("KALSHI_GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};

/// Sets `<service>_build_info{version,git_sha} 1` (the Prometheus convention for build labels).
pub fn record_build_info(service: &str) {
    metrics::gauge!(
        format!("{service}_build_info"),
        "version" => VERSION,
        "git_sha" => GIT_SHA
    )
    .set(1.0);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_workspace_version_and_the_sha_is_never_empty() {
        assert_eq!(super::VERSION, env!("CARGO_PKG_VERSION"));
        assert!(!super::GIT_SHA.is_empty());
    }
}
