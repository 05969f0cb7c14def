//! The QEMU guest agent protocol (QGA) beside the native one, so libvirt,
//! Proxmox and OpenStack keep their agent features with guestcomm-agent:
//! `--qga /dev/virtio-ports/org.qemu.guest_agent.0` (the virtio-serial
//! channel libvirt gives a domain), `--qga unix:///PATH`, or, only with
//! `--qga-allow-unauthenticated-vsock`, `--qga vsock://any:PORT`.
//!
//! ```text
//! client -> [0xFF] {"execute": "guest-sync-delimited", "arguments": {"id": 7}}
//! agent  -> 0xFF {"return": 7}
//! client -> {"execute": "guest-get-osinfo", "id": "a"}
//! agent  -> {"return": {"id": "debian", ...}, "id": "a"}
//! client -> garbage
//! agent  -> {"error": {"class": "GenericError", "desc": "JSON parse error, ..."}}
//! ```
//!
//! One command at a time per channel, answered in order ([`stream`] finds
//! the requests, [`commands`] answers them). QGA has no authentication: it
//! is refused on vsock, which any host user can reach, unless the operator
//! says so by name (and then only the host, CID 2, may connect); the
//! virtio-serial channel is reachable only through the VMM's own socket.

mod accounts;
mod commands;
mod cpus;
mod exec;
mod files;
mod fsinfo;
mod reply;
mod storage;
mod stream;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use guestcomm_transport::{Address, Listener, PeerCidFilter};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

pub use commands::{Qga, Rpcs};
use reply::Reply;
use stream::{Next, Requests, RESYNC};

use crate::integration::Services;
use crate::limits::MAX_QGA_REQUEST_BYTES;

/// Mode of a QGA Unix socket: its owner only (QGA runs anything as root).
const QGA_SOCKET_MODE: u32 = 0o600;

/// How long to wait before reading a virtio-serial port again after the
/// host side closed it (reads then return end-of-file at once).
const DEVICE_REOPEN_PAUSE: Duration = Duration::from_millis(200);

/// Where QGA is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A character device (virtio-serial port), one endless stream.
    Device(PathBuf),
    /// A Unix socket (mode 0600: root's only), each connection a stream.
    Listen(PathBuf),
    /// A vsock port, the host's connections only, each a stream; named
    /// with `--qga-allow-unauthenticated-vsock` (see [`Channel::parse`]).
    Vsock(Address),
}

/// Why `--qga` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Not an address.
    #[error(transparent)]
    Address(#[from] guestcomm_transport::AddressError),
    /// vsock: unauthenticated QGA would be open to every host user.
    #[error("refusing QGA on {0}: the QEMU guest agent protocol has no authentication and any host user can reach a guest's vsock; use the virtio-serial channel (--qga /dev/virtio-ports/org.qemu.guest_agent.0), or accept that risk with --qga-allow-unauthenticated-vsock")]
    Vsock(String),
    /// Hybrid vsock is the host's side of a guest's vsock.
    #[error("refusing QGA on {0}: hybrid vsock is a host-side address; in the guest, QGA listens on vsock://any:PORT")]
    HybridVsock(String),
    /// TCP: unauthenticated QGA would be open to every guest user.
    #[error("refusing QGA on {0}: the QEMU guest agent protocol has no authentication and any guest user can reach a loopback port; use the virtio-serial channel or unix:///PATH")]
    Tcp(String),
}

impl Channel {
    /// `--qga`'s value: a device path, unix:///PATH, or vsock://any:PORT
    /// when `allow_vsock` (`--qga-allow-unauthenticated-vsock`): the
    /// operator accepts that every host user may then run anything in the
    /// guest as the agent's user.
    pub fn parse(text: &str, allow_vsock: bool) -> Result<Self, ChannelError> {
        if !text.contains("://") {
            return Ok(Self::Device(PathBuf::from(text)));
        }
        match text.parse::<Address>()? {
            address @ Address::Vsock { .. } if allow_vsock => Ok(Self::Vsock(address)),
            Address::Vsock { .. } => Err(ChannelError::Vsock(text.to_string())),
            Address::HybridVsock { .. } => Err(ChannelError::HybridVsock(text.to_string())),
            Address::Tcp(_) => Err(ChannelError::Tcp(text.to_string())),
            Address::Unix(path) => Ok(Self::Listen(path)),
        }
    }
}

impl FromStr for Channel {
    type Err = ChannelError;

    /// As [`Channel::parse`] without the vsock opt-in.
    fn from_str(text: &str) -> Result<Self, ChannelError> {
        Self::parse(text, false)
    }
}

/// Serves QGA on `channel` until the task is dropped.
pub async fn serve(channel: Channel, qga: Arc<Qga>, services: Arc<Services>) {
    match channel {
        Channel::Device(path) => loop {
            match tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .await
            {
                Ok(port) => serve_stream(port, &qga, &services).await,
                Err(e) => {
                    warn!(device = %path.display(), error = %e, "cannot open the QGA channel")
                }
            }
            tokio::time::sleep(DEVICE_REOPEN_PAUSE).await;
        },
        Channel::Listen(path) => {
            let root_only = |p: &std::path::Path| {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(QGA_SOCKET_MODE))
            };
            let listener = match Listener::bind_unix(&path, root_only).await {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(error = %guestcomm_protocol::error_chain(&e), "cannot serve QGA");
                    return;
                }
            };
            info!(listen = %path.display(), "serving the QEMU guest agent protocol");
            accept_loop(listener, &PeerCidFilter::Any, qga, services).await;
        }
        Channel::Vsock(address) => {
            let listener = match Listener::bind(&address).await {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(error = %guestcomm_protocol::error_chain(&e), "cannot serve QGA");
                    return;
                }
            };
            warn!(listen = %address, "serving the QEMU guest agent protocol on vsock WITHOUT authentication (--qga-allow-unauthenticated-vsock): every host user can run anything in this guest through it");
            accept_loop(listener, &PeerCidFilter::default(), qga, services).await;
        }
    }
}

/// Serves each connection `listener` accepts from a peer `filter` allows
/// (vsock: the host only) on its own task.
async fn accept_loop(
    listener: Listener,
    filter: &PeerCidFilter,
    qga: Arc<Qga>,
    services: Arc<Services>,
) {
    loop {
        match listener.accept().await {
            Ok((_, peer)) if !filter.allows(&peer) => {
                warn!(%peer, "refused a QGA connection from a vsock peer that is not the host");
            }
            Ok((conn, _)) => {
                let (qga, services) = (qga.clone(), services.clone());
                tokio::spawn(async move { serve_stream(conn, &qga, &services).await });
            }
            Err(e) => {
                warn!(error = %e, "QGA accept failed");
                tokio::time::sleep(DEVICE_REOPEN_PAUSE).await;
            }
        }
    }
}

/// The bytes of one reply: `{"return": ...}` or `{"error": ...}`, the
/// request's `id` echoed, a newline; 0xFF first for guest-sync-delimited.
fn encode(reply: &Reply, id: Option<Value>, delimited: bool) -> Option<Vec<u8>> {
    let mut body = match reply {
        Reply::Return(value) => json!({ "return": value }),
        Reply::Error(class, desc) => json!({ "error": { "class": class, "desc": desc } }),
        Reply::Shutdown(_) => return None,
    };
    if let Some(id) = id {
        body["id"] = id;
    }
    let mut out = if delimited { vec![RESYNC] } else { Vec::new() };
    out.extend_from_slice(body.to_string().as_bytes());
    out.push(b'\n');
    Some(out)
}

/// Answers the requests of one stream until it ends.
async fn serve_stream<T>(mut io: T, qga: &Arc<Qga>, services: &Arc<Services>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut requests = Requests::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        requests.feed(&chunk[..n]);
        loop {
            let (reply, id, delimited) = match requests.next() {
                Next::More => break,
                Next::Garbage(why) => (
                    reply::generic(format!("JSON parse error, {why}")),
                    None,
                    false,
                ),
                Next::TooLarge => (
                    reply::generic(format!(
                        "JSON request too large (at most {MAX_QGA_REQUEST_BYTES} bytes)"
                    )),
                    None,
                    false,
                ),
                Next::Value(request) => {
                    let id = request.get("id").cloned();
                    let worker = qga.clone();
                    // Commands read files and run programs: off the async threads.
                    let (reply, delimited) =
                        tokio::task::spawn_blocking(move || worker.execute(request))
                            .await
                            .unwrap_or_else(|_| (reply::generic("the agent failed"), false));
                    (reply, id, delimited)
                }
            };
            if let Reply::Shutdown(req) = &reply {
                info!("guest-shutdown accepted");
                services.shutdown.run(req).await;
                continue;
            }
            if let Some(bytes) = encode(&reply, id, delimited) {
                if io.write_all(&bytes).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_a_device_path_or_an_address_but_never_vsock() {
        assert_eq!(
            "/dev/virtio-ports/org.qemu.guest_agent.0"
                .parse::<Channel>()
                .unwrap(),
            Channel::Device("/dev/virtio-ports/org.qemu.guest_agent.0".into())
        );
        assert_eq!(
            "unix:///run/qga.sock".parse::<Channel>().unwrap(),
            Channel::Listen("/run/qga.sock".into())
        );
        for unauthenticated in ["vsock://any:9999", "tcp://127.0.0.1:4444"] {
            let err = unauthenticated.parse::<Channel>().unwrap_err();
            assert!(err.to_string().contains("no authentication"), "{err}");
        }
        let err = "vsock://any:9999".parse::<Channel>().unwrap_err();
        assert!(
            err.to_string()
                .contains("--qga-allow-unauthenticated-vsock"),
            "{err}"
        );
    }

    #[test]
    fn vsock_is_taken_only_when_the_operator_names_the_risk() {
        let vsock = Channel::parse("vsock://any:9999", true).unwrap();
        assert_eq!(
            vsock,
            Channel::Vsock("vsock://any:9999".parse::<Address>().unwrap())
        );
        // Never TCP, and never the host's side of a guest's vsock.
        assert!(Channel::parse("tcp://127.0.0.1:4444", true).is_err());
        let err = Channel::parse("hvsock-uds:///run/vm.vsock?port=5", true).unwrap_err();
        assert!(err.to_string().contains("host-side"), "{err}");
        assert_eq!(
            Channel::parse("unix:///run/qga.sock", true).unwrap(),
            Channel::Listen("/run/qga.sock".into())
        );
    }

    #[test]
    fn replies_echo_the_id_and_delimited_ones_start_with_0xff() {
        let ok = encode(&Reply::Return(json!(7)), Some(json!("a")), true).unwrap();
        assert_eq!(ok[0], RESYNC);
        assert_eq!(*ok.last().unwrap(), b'\n');
        let body: Value = serde_json::from_slice(&ok[1..]).unwrap();
        assert_eq!(body, json!({"return": 7, "id": "a"}));
        let err = encode(&reply::generic("no"), None, false).unwrap();
        assert_eq!(
            err,
            b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}\n"
        );
    }
}
