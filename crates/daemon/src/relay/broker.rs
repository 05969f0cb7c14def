//! A raw byte stream to the guest program listening on the vsock port of a
//! service GUID: what `POST /v1/vms/{name}/services/{id}/connect`
//! (`http/relay.rs`) starts once the caller's connection is upgraded.
//!
//! ```text
//! CLI                         guestcommd                          guest
//!  | POST .../connect ------> VM known? service registered? (404)    |
//!  |  Upgrade: guestcomm      enabled on this VM? (403)              |
//!  |                          GUID -> vsock port (VSOCK template)    |
//!  |                          vsock://CID:P or hvsock-uds CONNECT P -> |  (502 if refused)
//!  | <------ 101 ------------ |                                      |
//!  | <======= raw bytes both ways, bounded buffers, no half-close ==> |
//! ```
//!
//! With `Upgrade: guestcomm-framed` (what `guestcomm connect` asks for,
//! [`Framing::Frames`]) the CLI's side of the relay carries guestcomm frames instead: `data` both
//! ways, and from the daemon a last `eof` when the guest program closed, or
//! `error` when the guest connection failed. A CLI whose stream ends without
//! either knows that the daemon itself went away.
//!
//! Only vsock and hybrid vsock endpoints have guest ports; a VM reached over
//! `unix://` or `tcp://` carries the agent's protocol only (400).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use guestcomm_protocol::limits::DATA_CHUNK_BYTES;
use guestcomm_protocol::{Control, Frame, FrameCodec, ServiceId, StreamId};
use guestcomm_protocol::{ErrorCode, ErrorFrame};
use guestcomm_transport::{Address, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::Framed;
use tracing::{debug, Instrument};

use crate::admission;
use crate::audit;
use crate::caller::Caller;
use crate::error::Error;
use crate::state::State;

use super::copy::copy_both_ways;
use super::slots::acquire_relay;
use super::tap::{Tap, TapStats};

/// The guest address of `port` behind a VM's agent endpoint.
pub(crate) fn guest_address(endpoint: &Address, port: u32) -> Option<Address> {
    match endpoint {
        Address::Vsock { cid, .. } => Some(Address::Vsock { cid: *cid, port }),
        Address::HybridVsock { path, .. } => Some(Address::HybridVsock {
            path: path.clone(),
            port,
        }),
        Address::Unix(_) | Address::Tcp(_) => None,
    }
}

/// How the caller's side of a service stream is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The guest's bytes as they are.
    Raw,
    /// In guestcomm `data` frames, with a last `eof` or `error`.
    Frames,
}

/// A stream to a guest program, connected and audited as started; what is
/// left is the caller's side.
pub(crate) struct ServiceStream {
    state: Arc<State>,
    guest: Stream,
    permit: OwnedSemaphorePermit,
    record: audit::Record,
    audit_id: Option<i64>,
    started: Instant,
    span: tracing::Span,
}

/// Opens `caller`'s stream to service `id` in VM `name`: the VM and service
/// known (404), the service enabled on the VM (403), a guest port behind
/// its endpoint (400), a relay slot (503), the guest program reached (502).
pub(crate) async fn open(
    state: Arc<State>,
    name: String,
    id: ServiceId,
    caller: Caller,
) -> Result<ServiceStream, Error> {
    let vm = state.db(move |s| s.vm(&name)).await?;
    admission::service(&state, &vm, id).await?;
    let Some(port) = id.vsock_port() else {
        return Err(Error::BadRequest(format!(
            "service {id} has no vsock port: only GUIDs of the form PPPPPPPP-facb-11e6-bd58-64006a7986d3 can be reached in a Linux guest"
        )));
    };
    let endpoint = &vm.endpoint;
    let Some(addr) = guest_address(endpoint, port) else {
        return Err(Error::BadRequest(format!(
            "VM {} is reached at {endpoint}, which carries only the agent's protocol; raw service connections need a vsock:// or hvsock-uds:// endpoint",
            vm.name
        )));
    };
    let permit = acquire_relay(&state, &vm.name)?;
    let guest = guestcomm_transport::connect(&addr)
        .await
        .map_err(|source| Error::Guest {
            vm: vm.name.clone(),
            service: id,
            source,
        })?;
    let span = tracing::info_span!("broker", vm = %vm.name, service = %id, port);
    let mut record = audit::record(caller, "service.connect");
    record.vm = Some(vm.name.clone());
    record.service = Some(id.to_string());
    let started = Instant::now();
    let audit_id = state.audit_start(&record).await;
    Ok(ServiceStream {
        state,
        guest,
        permit,
        record,
        audit_id,
        started,
        span,
    })
}

impl ServiceStream {
    /// Relays, in a task of its own, between the guest program and the
    /// caller's stream once `upgraded` gives it, carried as `framing` says;
    /// audits the end, with the bytes moved.
    pub(crate) fn start<C, E>(
        self,
        framing: Framing,
        upgraded: impl Future<Output = Result<C, E>> + Send + 'static,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        E: Display + Send + 'static,
    {
        let span = self.span.clone();
        tokio::spawn(self.run(framing, upgraded).instrument(span));
    }

    async fn run<C, E>(mut self, framing: Framing, upgraded: impl Future<Output = Result<C, E>>)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        E: Display,
    {
        let stats = Arc::new(TapStats::counting());
        let ended = match upgraded.await {
            Ok(client) => {
                let guest = Tap::new(self.guest, stats.clone());
                match framing {
                    Framing::Frames => framed_both_ways(client, guest).await,
                    Framing::Raw => copy_both_ways(client, &[], guest, &[], None)
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
            Err(e) => Err(format!("HTTP upgrade failed: {e}")),
        };
        if let Err(e) = &ended {
            debug!(error = %e, "broker relay ended with an error");
        }
        drop(self.permit);
        audit::finish_relay(&mut self.record, ended, stats.bytes(), self.started);
        self.state.audit_end(self.audit_id, self.record).await;
    }
}

/// Relays between a client speaking guestcomm frames and the guest's raw
/// bytes until either side ends; tells the client how the guest side ended
/// (`eof` or `error`). A client that closes ends the relay quietly.
async fn framed_both_ways<C, G>(client: C, guest: G) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    G: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = Framed::new(client, FrameCodec::new()).split();
    let (mut guest_read, mut guest_write) = tokio::io::split(guest);
    let up = async {
        while let Some(frame) = from_client.next().await {
            match frame.map_err(|e| format!("from the client: {e}"))? {
                Frame::Data(_, bytes) => guest_write
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("to the guest: {e}"))?,
                // End of the client's input: not forwarded (no half-close
                // over hybrid vsock); the guest program ends the stream.
                Frame::Control(Control::Eof { .. }) => {}
                other => return Err(format!("unexpected from the client: {}", other.describe())),
            }
        }
        Ok(())
    };
    let down = async {
        let mut buf = vec![0u8; DATA_CHUNK_BYTES];
        let ended = loop {
            match guest_read.read(&mut buf).await {
                Ok(0) => {
                    break Control::Eof {
                        stream: StreamId::Stdout,
                    }
                }
                Ok(n) => {
                    let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                    to_client
                        .send(Frame::Data(StreamId::Stdout, data))
                        .await
                        .map_err(|e| format!("to the client: {e}"))?;
                }
                Err(e) => {
                    let message = format!("the guest connection failed: {e}");
                    break Control::Error(ErrorFrame::new(ErrorCode::Io, message));
                }
            }
        };
        let failed = match &ended {
            Control::Error(e) => Some(e.message.clone()),
            _ => None,
        };
        to_client
            .send(Frame::Control(ended))
            .await
            .map_err(|e| format!("to the client: {e}"))?;
        failed.map_or(Ok(()), Err)
    };
    tokio::select! {
        r = down => r,
        r = up => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ports_exist_only_behind_vsock_endpoints() {
        let at = |s: &str| guest_address(&s.parse().unwrap(), 2761).map(|a| a.to_string());
        assert_eq!(at("vsock://3:18243").as_deref(), Some("vsock://3:2761"));
        assert_eq!(
            at("hvsock-uds:///run/v.sock?port=18243").as_deref(),
            Some("hvsock-uds:///run/v.sock?port=2761")
        );
        assert_eq!(at("unix:///a.sock"), None);
        assert_eq!(at("tcp://127.0.0.1:1"), None);
    }
}
