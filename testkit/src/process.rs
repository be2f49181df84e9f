//! Child processes that cannot outlive their parent: started through `setpriv
//! --pdeathsig=SIGTERM` from a thread that lives as long as the process, so the kernel signals
//! them when the parent dies, even by SIGKILL. The local stack and the end-to-end tests start
//! every service this way and never leave one behind.

use std::io;
use std::process::{Child, Command};

/// Spawns `program args...` with a parent-death SIGTERM. Stdio and environment are taken from
/// `configure`.
pub fn spawn_tied(
    program: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> io::Result<Child> {
    let mut cmd = Command::new("setpriv");
    cmd.arg("--pdeathsig=SIGTERM").arg("--").arg(program);
    configure(&mut cmd);
    crate::pg::spawn_long_lived(cmd)
}
