//! Listening sockets and who may connect to them.
//!
//! In a guest the agent listens on vsock; by default only the host (CID 2)
//! may connect, because on some hypervisors sibling VMs can reach each other
//! over vsock. Unix sockets are guarded by their file mode, TCP is loopback.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener};

use crate::address::{Address, VSOCK_CID_HOST};
use crate::stream::Stream;

/// Who is on the other end of an accepted connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A Unix socket peer, with its credentials when the kernel gives them.
    Unix {
        /// User id.
        uid: Option<u32>,
        /// Group id.
        gid: Option<u32>,
        /// Process id.
        pid: Option<i32>,
    },
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A vsock peer.
    Vsock {
        /// The peer's context id (2 = the host).
        cid: u32,
        /// The peer's port.
        port: u32,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix { uid, pid, .. } => write!(
                f,
                "unix peer uid={} pid={}",
                uid.map_or("?".into(), |u| u.to_string()),
                pid.map_or("?".into(), |p| p.to_string())
            ),
            Self::Tcp(addr) => write!(f, "tcp peer {addr}"),
            Self::Vsock { cid, port } => write!(f, "vsock peer cid={cid} port={port}"),
        }
    }
}

/// Which vsock peers may connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCidFilter {
    /// Only these CIDs.
    Only(Vec<u32>),
    /// Any CID.
    Any,
}

impl Default for PeerCidFilter {
    /// Only the host.
    fn default() -> Self {
        Self::Only(vec![VSOCK_CID_HOST])
    }
}

impl PeerCidFilter {
    /// The host plus `extra` CIDs, or any peer when `any` is set.
    pub fn host_and(extra: &[u32], any: bool) -> Self {
        if any {
            return Self::Any;
        }
        let mut cids = vec![VSOCK_CID_HOST];
        cids.extend(extra.iter().copied().filter(|c| *c != VSOCK_CID_HOST));
        Self::Only(cids)
    }

    /// Whether `peer` may talk to us. Non-vsock peers are always allowed.
    pub fn allows(&self, peer: &Peer) -> bool {
        match (self, peer) {
            (Self::Any, _) | (_, Peer::Unix { .. } | Peer::Tcp(_)) => true,
            (Self::Only(cids), Peer::Vsock { cid, .. }) => cids.contains(cid),
        }
    }
}

/// A listening socket on any transport.
#[derive(Debug)]
pub enum Listener {
    /// Unix socket; the path is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
    /// TCP socket.
    Tcp(TcpListener),
    /// AF_VSOCK socket.
    Vsock(VsockListener),
}

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Hybrid vsock is reached from the host through the VMM; guests listen on vsock.
    #[error("cannot listen on {0}: hybrid vsock is a host-side address; in the guest listen on vsock://any:PORT")]
    HybridVsock(String),
    /// Another process already listens on this Unix socket.
    #[error("cannot listen on {0}: another process is listening there")]
    InUse(String),
    /// TCP listening is restricted to loopback until the stream is encrypted.
    #[error("cannot listen on {0}: only loopback TCP addresses (127.0.0.1, ::1) are allowed")]
    NotLoopback(String),
    /// The operating system refused.
    #[error("cannot listen on {addr}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Listener {
    /// Opens a listening socket at `addr`.
    pub async fn bind(addr: &Address) -> Result<Self, ListenError> {
        let name = addr.to_string();
        let io_err = |source| ListenError::Io {
            addr: name.clone(),
            source,
        };
        match addr {
            Address::Unix(path) => Self::bind_unix(path, |_| Ok(())).await,
            Address::Tcp(sock) => {
                if !sock.ip().is_loopback() {
                    return Err(ListenError::NotLoopback(name));
                }
                Ok(Self::Tcp(TcpListener::bind(sock).await.map_err(io_err)?))
            }
            Address::Vsock { cid, port } => Ok(Self::Vsock(
                VsockListener::bind(VsockAddr::new(*cid, *port)).map_err(io_err)?,
            )),
            Address::HybridVsock { .. } => Err(ListenError::HybridVsock(name)),
        }
    }

    /// Opens a listening Unix socket at `path` that appears there only when
    /// it is ready: bound under a private name beside `path`, given its mode
    /// and owner by `prepare`, listening, then renamed into place. So whoever
    /// waits for the file never meets a socket that refuses connections or
    /// has the wrong mode. A stale socket left by a crash is replaced.
    pub async fn bind_unix(
        path: &Path,
        prepare: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<Self, ListenError> {
        let name = Address::Unix(path.to_path_buf()).to_string();
        if path.exists() && tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::InUse(name));
        }
        let io_err = |source| ListenError::Io {
            addr: name.clone(),
            source,
        };
        let listener = bind_unix_published(path, prepare).map_err(io_err)?;
        Ok(Self::Unix(listener, path.to_path_buf()))
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_address(&self) -> io::Result<Address> {
        Ok(match self {
            Self::Unix(_, path) => Address::Unix(path.clone()),
            Self::Tcp(l) => Address::Tcp(l.local_addr()?),
            Self::Vsock(l) => {
                let a = l.local_addr()?;
                Address::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                }
            }
        })
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Self::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                let cred = s.peer_cred().ok();
                let peer = Peer::Unix {
                    uid: cred.map(|c| c.uid()),
                    gid: cred.map(|c| c.gid()),
                    pid: cred.and_then(|c| c.pid()),
                };
                Ok((Stream::Unix(s), peer))
            }
            Self::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), Peer::Tcp(addr)))
            }
            Self::Vsock(l) => {
                let (s, addr) = l.accept().await?;
                let peer = Peer::Vsock {
                    cid: addr.cid(),
                    port: addr.port(),
                };
                Ok((Stream::Vsock(s), peer))
            }
        }
    }
}

/// Binds a listening Unix socket under a private name in `path`'s directory,
/// lets `prepare` set its mode and owner, and renames it over `path`
/// (replacing whatever is there). The private name is short (a dot, the
/// process id and a counter), so it fits wherever `path` does unless `path`'s
/// own file name is shorter still and `path` is at the 107-byte limit.
pub fn bind_unix_published(
    path: &Path,
    prepare: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<UnixListener> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let private = path.with_file_name(format!(
        ".{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&private);
    let listener = UnixListener::bind(&private)?;
    let published = prepare(&private).and_then(|()| std::fs::rename(&private, path));
    if let Err(e) = published {
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    Ok(listener)
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vsock(cid: u32) -> Peer {
        Peer::Vsock { cid, port: 1234 }
    }

    #[test]
    fn default_filter_admits_only_the_host() {
        let f = PeerCidFilter::default();
        assert!(f.allows(&vsock(2)));
        assert!(!f.allows(&vsock(3)));
        assert!(!f.allows(&vsock(1)));
    }

    #[test]
    fn extra_cids_widen_the_filter_and_any_opens_it() {
        let f = PeerCidFilter::host_and(&[7], false);
        assert!(f.allows(&vsock(2)) && f.allows(&vsock(7)) && !f.allows(&vsock(8)));
        assert!(PeerCidFilter::host_and(&[], true).allows(&vsock(8)));
    }

    #[test]
    fn unix_and_tcp_peers_are_not_filtered_by_cid() {
        let f = PeerCidFilter::default();
        assert!(f.allows(&Peer::Unix {
            uid: Some(0),
            gid: Some(0),
            pid: None
        }));
        assert!(f.allows(&Peer::Tcp("127.0.0.1:1".parse().unwrap())));
    }

    #[tokio::test]
    async fn stale_unix_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Address::Unix(dir.path().join("a.sock"));
        {
            let _stale = std::os::unix::net::UnixListener::bind(dir.path().join("a.sock")).unwrap();
        }
        let live = Listener::bind(&addr).await.unwrap();
        let err = Listener::bind(&addr).await.unwrap_err();
        assert!(matches!(err, ListenError::InUse(_)), "{err}");
        drop(live);
        assert!(!dir.path().join("a.sock").exists());
    }

    #[tokio::test]
    async fn a_unix_socket_appears_only_ready_with_the_mode_it_was_given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let listener = Listener::bind_unix(&path, |private| {
            // Still private: nothing at the published path yet.
            assert!(!path.exists());
            std::fs::set_permissions(private, std::fs::Permissions::from_mode(0o600))
        })
        .await
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "the private name was left behind");
        tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert!(matches!(peer, Peer::Unix { .. }));
    }

    #[tokio::test]
    async fn a_unix_socket_whose_preparation_fails_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let refused = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no chown");
        let err = Listener::bind_unix(&path, |_| Err(refused))
            .await
            .unwrap_err();
        assert!(matches!(err, ListenError::Io { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn tcp_listening_is_loopback_only() {
        let err = Listener::bind(&"tcp://0.0.0.0:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, ListenError::NotLoopback(_)), "{err}");
        let ok = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let Address::Tcp(bound) = ok.local_address().unwrap() else {
            panic!()
        };
        assert_ne!(bound.port(), 0);
    }

    #[tokio::test]
    async fn hybrid_vsock_cannot_be_listened_on() {
        let err = Listener::bind(&"hvsock-uds:///tmp/x.vsock".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("vsock://any:PORT"), "{err}");
    }
}
