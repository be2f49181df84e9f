//! Loopback ports for tests. Prefer binding port 0 and reading the address back (every
//! service has an address file or returns its bound address); [`free_port`] is for the few
//! configs that need a number before the process starts, and can race with another process.
//!
//! It must never be used where binding port 0 works: a number picked here can be taken by
//! another process before it is bound.

use std::net::{SocketAddr, TcpListener};

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
