//! Loopback ports for tests. Prefer binding port 0 and reading the address back (every
//! service has an address file or returns its bound address); [`free_port`] is for the few
//! configs that need a number before the process starts, and can race with another process.
//!
//! It must never be used where binding port 0 works: a number picked here can be taken by
//! another process before it is bound.

use std::net::{SocketAddr, TcpListener};

/// A loopback port that was free a moment ago, below the kernel's ephemeral range
/// (32768-60999 by default). A service stopped for a while is started again on its port, and a
/// port in the ephemeral range can meanwhile become the source port of any outgoing
/// connection on the machine (seen in CI: production's cluster, down for two minutes, could not
/// bind again: "Address already in use"); one below it is only taken by a listener asking for
/// it.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    for i in 0..64u64 {
        let port = (LOW + seed.wrapping_add(i.wrapping_mul(7_919)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
