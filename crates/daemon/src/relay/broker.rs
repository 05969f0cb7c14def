//! `POST /v1/vms/{name}/services/{id}/connect`: a raw byte stream to the
//! guest program listening on the vsock port of a service GUID.
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
//! With `Upgrade: guestcomm-framed` (what `guestcomm connect` asks for) the
//! CLI's side of the relay carries guestcomm frames instead: `data` both
//! ways, and from the daemon a last `eof` when the guest program closed, or
//! `error` when the guest connection failed. A CLI whose stream ends without
//! either knows that the daemon itself went away.
//!
//! Only vsock and hybrid vsock endpoints have guest ports; a VM reached over
//! `unix://` or `tcp://` carries the agent's protocol only (400).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State as AxumState};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use guestcomm_api::{FRAMED_STREAM_PROTOCOL, UPGRADE_PROTOCOL};
use guestcomm_protocol::error_chain;
use guestcomm_protocol::limits::DATA_CHUNK_BYTES;
use guestcomm_protocol::{Control, Frame, FrameCodec, ServiceId, StreamId};
use guestcomm_protocol::{ErrorCode, ErrorFrame};
use guestcomm_transport::Address;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;
use tracing::{debug, Instrument};

use crate::admission;
use crate::audit;
use crate::error::Error;
use crate::state::State;

use super::copy::copy_both_ways;
use super::tap::{Tap, TapStats};
use super::upgrade::{acquire_relay, caller_of, require_upgrade_to, switching_to};

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

/// The handler.
pub(crate) async fn connect(
    AxumState(state): AxumState<Arc<State>>,
    Path((name, id)): Path<(String, String)>,
    mut req: Request,
) -> Result<Response, Error> {
    let protocol = require_upgrade_to(&req, &[FRAMED_STREAM_PROTOCOL, UPGRADE_PROTOCOL])?;
    let caller = caller_of(&req);
    let id: ServiceId = id.parse().map_err(|e| Error::BadRequest(error_chain(&e)))?;
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
    let upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::info_span!("broker", vm = %vm.name, service = %id, port);
    let mut record = audit::record(caller, "service.connect");
    record.vm = Some(vm.name.clone());
    record.service = Some(id.to_string());
    let started = Instant::now();
    let audit_id = state.audit_start(&record).await;
    tokio::spawn(
        async move {
            let stats = Arc::new(TapStats::counting());
            let ended = match upgrade.await {
                Ok(upgraded) => {
                    let guest = Tap::new(guest, stats.clone());
                    let client = TokioIo::new(upgraded);
                    if protocol == FRAMED_STREAM_PROTOCOL {
                        framed_both_ways(client, guest).await
                    } else {
                        copy_both_ways(client, &[], guest, &[], None)
                            .await
                            .map_err(|e| e.to_string())
                    }
                }
                Err(e) => Err(format!("HTTP upgrade failed: {e}")),
            };
            if let Err(e) = &ended {
                debug!(error = %e, "broker relay ended with an error");
            }
            drop(permit);
            audit::finish_relay(&mut record, ended, stats.bytes(), started);
            state.audit_end(audit_id, record).await;
        }
        .instrument(span),
    );
    switching_to(protocol)
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
