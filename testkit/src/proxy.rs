//! A TCP proxy that tests and the local stack control: it plays the database endpoint that
//! moves on failover (`set_target`), the network that stalls without closing (`stall`), the
//! partition that refuses new connections (`refuse`) and the link that drops (`drop_all`).
//!
//! It must never change the bytes it forwards.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Forward,
    /// Hold every byte (existing and new connections stay open, nothing passes): a half-open
    /// or black-holed network.
    Stall,
    /// Close new connections at once; existing ones keep forwarding.
    Refuse,
}

struct State {
    target: Mutex<SocketAddr>,
    mode: watch::Sender<Mode>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target: Mutex::new(target),
            mode: watch::Sender::new(Mode::Forward),
            conns: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if *st.mode.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let target = *st
                    .target
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mode = st.mode.subscribe();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, mode.clone());
                    let down = pump(sr, cw, mode);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
                let mut conns = st
                    .conns
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        Ok(TcpProxy {
            addr,
            state,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// New connections go to `target` (existing ones stay where they are).
    pub fn set_target(&self, target: SocketAddr) {
        *self
            .state
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// Cuts every current connection (both sockets closed).
    pub fn drop_all(&self) {
        let conns: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .state
                .conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for c in conns {
            c.abort();
        }
    }

    /// Current connections.
    pub fn connections(&self) -> usize {
        let mut conns = self
            .state
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.retain(|t| !t.is_finished());
        conns.len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_all();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While stalled, neither read nor write: the peer's buffers fill and nothing passes.
        while *mode.borrow_and_update() == Mode::Stall {
            if mode.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        while *mode.borrow_and_update() == Mode::Stall {
            if mode.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(c: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        c.write_all(msg).await.ok()?;
        let mut b = vec![0u8; msg.len()];
        tokio::time::timeout(wait, c.read_exact(&mut b))
            .await
            .ok()?
            .ok()?;
        Some(b)
    }

    #[tokio::test]
    async fn forwards_stalls_moves_and_refuses() {
        let a = echo_server().await;
        let b = echo_server().await;
        let p = TcpProxy::start("127.0.0.1:0".parse().unwrap(), a)
            .await
            .unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, b"hi", Duration::from_secs(5))
                .await
                .unwrap(),
            b"hi"
        );
        p.set_mode(Mode::Stall);
        assert!(
            roundtrip(&mut c, b"x", Duration::from_millis(300))
                .await
                .is_none(),
            "stalled"
        );
        p.set_mode(Mode::Forward);
        let mut got = vec![0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"x", "held bytes pass after the stall");
        p.set_target(b);
        p.drop_all();
        let mut dead = [0u8; 1];
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut dead)).await,
            Ok(Ok(0) | Err(_))
        ));
        let mut c2 = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut c2, b"yo", Duration::from_secs(5))
                .await
                .unwrap(),
            b"yo"
        );
        p.set_mode(Mode::Refuse);
        let mut c3 = TcpStream::connect(p.addr()).await.unwrap();
        assert!(
            roundtrip(&mut c3, b"no", Duration::from_millis(500))
                .await
                .is_none(),
            "refused"
        );
        assert_eq!(
            roundtrip(&mut c2, b"ok", Duration::from_secs(5))
                .await
                .unwrap(),
            b"ok",
            "existing ones continue"
        );
    }
}
