//! `guestcomm connect VM SERVICE`: a raw byte stream between stdin/stdout
//! and the guest program listening on the service's vsock port, through
//! guestcommd (only for services registered and enabled for that VM).

use std::process::ExitCode;

use clap::Args;
use guestcomm_api::{ApiError, ServiceRegistration};
use guestcomm_protocol::{BuiltinService, ServiceId};
use tokio::io::{AsyncWriteExt, BufReader};

use super::api::{self, FAILED};

/// Connect stdin and stdout to a guest communication service of a VM.
///
/// The guest program must listen on the vsock port of the service GUID
/// (PPPPPPPP-facb-11e6-bd58-64006a7986d3 is port 0xPPPPPPPP); the VM needs a
/// vsock:// or hvsock-uds:// endpoint. The stream ends when the guest side
/// closes. End of stdin is not forwarded (a socket half-close would end the
/// whole hybrid vsock connection): the guest's protocol must mark its own ends.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The VM.
    pub vm: String,
    /// The service: its GUID, a built-in's short name, or a registered ElementName.
    pub service: String,
}

/// Runs `guestcomm connect`.
pub async fn run(args: ConnectArgs, api: Option<&str>) -> ExitCode {
    let stream = async {
        let client = api::client(api)?;
        let id = resolve(&client, &args.service).await?;
        let path = format!("{}/services/{id}/connect", api::vm_path(&args.vm)?);
        client.upgrade(&path).await
    };
    let stream = match stream.await {
        Ok(stream) => stream,
        Err(e) => return api::report(&e, FAILED),
    };
    let (mut from_guest, mut to_guest) = tokio::io::split(stream);
    let up = async {
        let mut stdin = BufReader::new(tokio::io::stdin());
        tokio::io::copy_buf(&mut stdin, &mut to_guest).await?;
        // Keep the connection open: the guest decides when it ends.
        std::future::pending::<std::io::Result<()>>().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut from_guest, &mut stdout).await?;
        stdout.flush().await
    };
    let result = tokio::select! {
        r = down => r,
        r = up => r,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(crate::exit::BROKEN_PIPE)
        }
        Err(e) => {
            eprintln!("guestcomm: connection to the service failed: {e}");
            ExitCode::from(FAILED)
        }
    }
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
    let found = list.iter().find(|s| s.element_name == text);
    match found.map(|s| s.id.parse()) {
        Some(Ok(id)) => Ok(id),
        _ => Err(api::local_error(
            404,
            "not_found",
            format!("no registered service named {text:?} (give its GUID, or see `guestcomm service list`)"),
        )),
    }
}
