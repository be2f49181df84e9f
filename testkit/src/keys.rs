//! The test key pair: the simulator verifies with the public half, gatherers sign with the
//! private half. Never used with Kalshi.

use std::path::PathBuf;

/// The key id tests register with the simulator.
pub const KEY_ID: &str = "test-key";
pub const KEY_PKCS8: &[u8] = include_bytes!("../../shared/testdata/rsa-pkcs8.pem");
pub const KEY_PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");

/// The private key as a file, for configs that take a path.
pub fn key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/rsa-pkcs8.pem")
}

/// A second key pair (made with `openssl genpkey -algorithm RSA`), for key rotation tests: the
/// key a gatherer is switched to at a reload.
pub const ROTATED_KEY_ID: &str = "rotated-key";
pub const ROTATED_KEY_PUBLIC: &[u8] =
    include_bytes!("../../shared/testdata/rsa-rotated-public.pem");

/// The rotated key's private half as a file.
pub fn rotated_key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/rsa-rotated-pkcs8.pem")
}
