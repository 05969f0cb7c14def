//! `guestcomm-agent connect-host SERVICE`: how a guest program reaches a
//! service on the host (a guest-initiated connection, Hyper-V's guest
//! side of a registered guest communication service).
//!
//! It connects to the host's vsock context (CID 2) on the port of the
//! service's GUID (or `--port`), then copies stdin to the connection and
//! the connection to stdout. On the host, guestcommd relays the connection
//! to the service's registered host endpoint while the service is enabled
//! for this VM. Like guestcomm's relays it never half-closes: the end of
//! stdin does not end the connection; the host closing it does.
//!
//! Meant to run inside a guest: on a host, CID 2 is the machine's own
//! hypervisor, not a guestcomm daemon.

use guestcomm_protocol::ServiceId;
use guestcomm_transport::address::VSOCK_CID_HOST;
use guestcomm_transport::{Address, ConnectError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Why a host connection failed.
#[derive(Debug, thiserror::Error)]
pub enum HostConnectError {
    /// The service names no port.
    #[error("service {0} has no vsock port (only GUIDs of the form XXXXXXXX-facb-11e6-bd58-64006a7986d3 have one): give --port")]
    NoPort(ServiceId),
    /// Neither a service nor a port.
    #[error("name a service GUID or give --port")]
    NoTarget,
    /// The connection could not be made.
    #[error("cannot reach the host on vsock port {port} (is the service registered, enabled for this VM, and given a host endpoint?)")]
    Connect {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: ConnectError,
    },
    /// Copying failed.
    #[error("the connection to the host failed")]
    Io(#[from] std::io::Error),
}

/// The host port for `service` or `port` (`port` wins).
pub fn host_port(service: Option<ServiceId>, port: Option<u32>) -> Result<u32, HostConnectError> {
    match (service, port) {
        (_, Some(port)) => Ok(port),
        (Some(id), None) => id.vsock_port().ok_or(HostConnectError::NoPort(id)),
        (None, None) => Err(HostConnectError::NoTarget),
    }
}

/// Connects to the host on `port` and relays stdin and stdout.
pub async fn run(port: u32) -> Result<(), HostConnectError> {
    let addr = Address::Vsock {
        cid: VSOCK_CID_HOST,
        port,
    };
    let stream = guestcomm_transport::connect(&addr)
        .await
        .map_err(|source| HostConnectError::Connect { port, source })?;
    relay(stream, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Copies `input` to `conn` and `conn` to `output` until `conn` closes
/// (the end of `input` does not close `conn`).
pub(crate) async fn relay<C, I, O>(
    conn: C,
    mut input: I,
    mut output: O,
) -> Result<(), HostConnectError>
where
    C: AsyncRead + AsyncWrite,
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let (mut from_host, mut to_host) = tokio::io::split(conn);
    let up = async {
        tokio::io::copy(&mut input, &mut to_host).await?;
        to_host.flush().await?;
        // Keep the write side open: the host decides when it is over.
        std::future::pending::<std::io::Result<()>>().await
    };
    let down = async {
        tokio::io::copy(&mut from_host, &mut output).await?;
        output.flush().await
    };
    tokio::select! {
        done = down => Ok(done?),
        failed = up => Ok(failed?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn the_port_comes_from_the_guid_or_the_flag() {
        let echo: ServiceId = "00000ac9-facb-11e6-bd58-64006a7986d3".parse().unwrap();
        assert_eq!(host_port(Some(echo), None).unwrap(), 0xac9);
        assert_eq!(host_port(Some(echo), Some(7)).unwrap(), 7);
        let other: ServiceId = "0e0b6031-5213-4934-818b-38d90ced39db".parse().unwrap();
        assert!(matches!(
            host_port(Some(other), None),
            Err(HostConnectError::NoPort(_))
        ));
        assert!(matches!(
            host_port(None, None),
            Err(HostConnectError::NoTarget)
        ));
    }

    #[tokio::test]
    async fn input_goes_up_replies_come_down_and_the_host_ends_it() {
        let (conn, host) = tokio::io::duplex(1024);
        let host = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(host);
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            write
                .write_all(line.to_uppercase().as_bytes())
                .await
                .unwrap();
            // Dropping both halves closes the connection.
        });
        let mut output = Vec::new();
        relay(conn, &b"ping\n"[..], &mut output).await.unwrap();
        host.await.unwrap();
        assert_eq!(output, b"PING\n");
    }
}
