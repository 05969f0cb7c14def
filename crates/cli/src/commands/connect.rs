//! `guestcomm connect VM SERVICE`: a raw byte stream between stdin/stdout
//! and the guest program listening on the service's vsock port, through
//! guestcommd (only for services registered and enabled for that VM).
//! Between the CLI and the daemon the bytes travel in guestcomm frames
//! (`Upgrade: guestcomm-framed`), so that the daemon can say how the guest
//! side ended and a daemon that dies is told apart from a guest that closed.

use std::process::ExitCode;

use clap::Args;
use futures::{SinkExt, StreamExt};
use guestcomm_api::{ApiError, ApiErrorCode, ServiceRegistration, FRAMED_STREAM_PROTOCOL};
use guestcomm_protocol::limits::DATA_CHUNK_BYTES;
use guestcomm_protocol::{BuiltinService, Control, Frame, FrameCodec, ServiceId, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::api;
use crate::context::Context;
use crate::exit::Failure;

/// Connect stdin and stdout to a guest communication service of a VM.
///
/// The guest program must listen on the vsock port of the service GUID
/// (PPPPPPPP-facb-11e6-bd58-64006a7986d3 is port 0xPPPPPPPP); the VM needs a
/// vsock:// or hvsock-uds:// endpoint. The stream ends when the guest side
/// closes (exit status 0). End of stdin is not forwarded (a socket half-close
/// would end the whole hybrid vsock connection): the guest's protocol must
/// mark its own ends.
///
/// Exit status: 0 when the guest program closed the stream; 1 when the
/// connection was refused (unknown VM or service, disabled, no vsock port,
/// role); 125 when the stream failed once open (the guest connection broke,
/// or guestcommd went away).
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The VM.
    pub(crate) vm: String,
    /// The service: its GUID, a built-in's short name, or a registered ElementName.
    pub(crate) service: String,
}

/// Runs `guestcomm connect`.
pub(crate) async fn run(args: ConnectArgs, ctx: &Context) -> Result<ExitCode, Failure> {
    let client = ctx.api()?;
    let id = resolve(client, &args.service).await?;
    let path = format!("{}/services/{id}/connect", api::vm_path(&args.vm)?);
    let stream = client.upgrade_to(&path, FRAMED_STREAM_PROTOCOL).await?;
    let (mut to_daemon, mut from_daemon) = Framed::new(stream, FrameCodec::new()).split();
    let up = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; DATA_CHUNK_BYTES];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let data = bytes::Bytes::copy_from_slice(&buf[..n]);
            to_daemon
                .send(Frame::Data(StreamId::Stdin, data))
                .await
                .map_err(std::io::Error::other)?;
        }
        // Keep the connection open: the guest decides when it ends.
        std::future::pending::<std::io::Result<()>>().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        while let Some(frame) = from_daemon.next().await {
            match frame.map_err(std::io::Error::other)? {
                Frame::Data(_, bytes) => stdout.write_all(&bytes).await?,
                Frame::Control(Control::Eof { .. }) => return stdout.flush().await,
                Frame::Control(Control::Error(e)) => {
                    stdout.flush().await?;
                    return Err(std::io::Error::other(e.message));
                }
                other => {
                    let what = other.describe();
                    return Err(std::io::Error::other(format!(
                        "guestcommd sent {what} on a service stream"
                    )));
                }
            }
        }
        stdout.flush().await?;
        Err(std::io::Error::other(
            "guestcommd closed the connection without ending it (was it stopped or restarted?)",
        ))
    };
    let result = tokio::select! {
        r = down => r,
        r = up => r,
    };
    result.map_err(|e| Failure::stream(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// A GUID, a built-in's short name, or the ElementName of a registration.
async fn resolve(client: &guestcomm_api::ApiClient, text: &str) -> Result<ServiceId, ApiError> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    if let Some(s) = BuiltinService::ALL.iter().find(|s| s.name() == text) {
        return Ok(s.id());
    }
    let list: Vec<ServiceRegistration> = client.get("/v1/services").await?;
    match list.iter().find(|s| s.element_name == text) {
        Some(found) => Ok(found.id),
        None => Err(api::local_error(
            404,
            ApiErrorCode::NotFound,
            format!("no registered service named {text:?} (give its GUID, or see `guestcomm service list`)"),
        )),
    }
}
