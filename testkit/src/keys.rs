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
