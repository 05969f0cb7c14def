//! One connected byte stream, whatever the transport, and how to open one.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_vsock::{VsockAddr, VsockStream};

use crate::address::Address;
use crate::hybrid::{self, HybridError};
use crate::limits::CONNECT_TIMEOUT_MS;

/// A connected stream over any transport.
#[derive(Debug)]
pub enum Stream {
    /// Unix socket, also hybrid vsock after its handshake.
    Unix(UnixStream),
    /// TCP socket.
    Tcp(TcpStream),
    /// AF_VSOCK socket.
    Vsock(VsockStream),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be reached.
    #[error("cannot connect to {addr}")]
    Io {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The hybrid vsock handshake failed.
    #[error("cannot connect to {addr}")]
    Hybrid {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        #[source]
        source: HybridError,
    },
    /// Nothing answered in time.
    #[error("cannot connect to {addr}: no answer within {CONNECT_TIMEOUT_MS} ms")]
    Timeout {
        /// Where we tried.
        addr: String,
    },
}

/// Connects to `addr`, including the hybrid vsock handshake, within
/// [`CONNECT_TIMEOUT_MS`].
pub async fn connect(addr: &Address) -> Result<Stream, ConnectError> {
    let name = addr.to_string();
    let io_err = |source| ConnectError::Io {
        addr: name.clone(),
        source,
    };
    let attempt = async {
        Ok(match addr {
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path).await.map_err(io_err)?),
            Address::Tcp(sock) => {
                let tcp = TcpStream::connect(sock).await.map_err(io_err)?;
                // Small control frames must not wait for Nagle.
                tcp.set_nodelay(true).map_err(io_err)?;
                Stream::Tcp(tcp)
            }
            Address::Vsock { cid, port } => Stream::Vsock(
                VsockStream::connect(VsockAddr::new(*cid, *port))
                    .await
                    .map_err(io_err)?,
            ),
            Address::HybridVsock { path, port } => {
                let mut unix = UnixStream::connect(path).await.map_err(io_err)?;
                hybrid::handshake(&mut unix, *port)
                    .await
                    .map_err(|source| ConnectError::Hybrid {
                        addr: name.clone(),
                        source,
                    })?;
                Stream::Unix(unix)
            }
        })
    };
    tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), attempt)
        .await
        .unwrap_or_else(|_| Err(ConnectError::Timeout { addr: name.clone() }))
}

impl Stream {
    /// Whether the peer has been silent: no byte waiting to be read and no
    /// end of stream. Asked of the kernel at the moment of the call (a
    /// nonblocking peek), not of the runtime's last readiness event, so a
    /// close that just happened is seen even before the runtime's I/O
    /// driver has run. An error on the socket counts as not quiet.
    pub fn is_quiet(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a valid local buffer on a socket
        // this value owns; MSG_DONTWAIT keeps it from blocking.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                std::ptr::addr_of_mut!(byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Unix(s) => s.as_raw_fd(),
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Vsock(s) => s.as_raw_fd(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Unix($s) => $call,
            Stream::Tcp($s) => $call,
            Stream::Vsock($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Unix(s) => s.is_write_vectored(),
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Vsock(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Address::Unix(dir.path().join("nobody.sock"));
        let err = connect(&addr).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nobody.sock"), "{text}");
        assert!(matches!(err, ConnectError::Io { .. }));
    }

    #[tokio::test]
    async fn hybrid_refusal_surfaces_the_vmm_reply() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"ERR no listener\n").await.unwrap();
        });
        let addr = Address::HybridVsock { path, port: 99 };
        let text = guestcomm_protocol::error_chain(&connect(&addr).await.unwrap_err());
        assert!(text.contains("ERR no listener"), "{text}");
    }
}
