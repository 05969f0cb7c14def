//! Hybrid vsock: reaching a guest port through a VMM's Unix socket.
//!
//! ```text
//! host -> VMM   "CONNECT <port>\n"
//! VMM  -> host  "OK <number>\n"     (the number is the host-side port for Firecracker
//!                                    and Cloud Hypervisor, the guest port for
//!                                    vhost-device-vsock: any number is accepted)
//! ```
//!
//! The reply is read one byte at a time so that nothing past `\n` (the first
//! bytes of the guest's own stream) is consumed, into a bounded buffer; EOF
//! before `\n` is an error. [`parse_reply`] is a pure function.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest reply line accepted, newline included ("OK 4294967295\n" is 14).
pub const MAX_REPLY_BYTES: usize = 64;

/// Why the hybrid vsock handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    /// The VMM answered something other than `OK <number>`.
    #[error("hybrid vsock: expected \"OK <port>\" after CONNECT {port}, got {reply:?} (is a guest agent listening on that port?)")]
    Refused {
        /// The port asked for.
        port: u32,
        /// What came back, lossily decoded.
        reply: String,
    },
    /// The reply line did not end within [`MAX_REPLY_BYTES`].
    #[error("hybrid vsock: reply to CONNECT {port} longer than {MAX_REPLY_BYTES} bytes without a newline")]
    TooLong {
        /// The port asked for.
        port: u32,
    },
    /// The VMM closed the socket before a full reply.
    #[error("hybrid vsock: the VMM closed the connection after CONNECT {port} (partial reply {partial:?}); is the guest listening on that port?")]
    Closed {
        /// The port asked for.
        port: u32,
        /// Whatever arrived before the close.
        partial: String,
    },
    /// The socket failed.
    #[error("hybrid vsock i/o error")]
    Io(#[from] std::io::Error),
}

/// Parses one reply line (without its `\n`): `OK <number>` gives the number.
pub fn parse_reply(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let number = text.strip_prefix("OK ")?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Sends `CONNECT <port>` and waits for `OK`; the stream is then the guest's.
pub async fn handshake(stream: &mut UnixStream, port: u32) -> Result<u32, HybridError> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(HybridError::Closed {
                port,
                partial: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() + 1 >= MAX_REPLY_BYTES {
            return Err(HybridError::TooLong { port });
        }
        line.push(byte[0]);
    }
    parse_reply(&line).ok_or_else(|| HybridError::Refused {
        port,
        reply: String::from_utf8_lossy(&line).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_number_after_ok() {
        assert_eq!(parse_reply(b"OK 1073741824"), Some(1073741824));
        assert_eq!(parse_reply(b"OK 52"), Some(52));
        assert_eq!(parse_reply(b"OK 7\r"), Some(7));
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            &b""[..],
            b"OK",
            b"OK ",
            b"ok 5",
            b"OK x",
            b"OK 5 6",
            b"ERR",
            b"\xff\xfe",
            b"OK 99999999999",
        ] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
    }

    async fn vmm(reply: &'static [u8]) -> (UnixStream, tokio::task::JoinHandle<Vec<u8>>) {
        let (client, mut server) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move {
            let mut request = Vec::new();
            while request.last() != Some(&b'\n') {
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            server.write_all(reply).await.unwrap();
            request
        });
        (client, task)
    }

    #[tokio::test]
    async fn handshake_stops_at_the_newline_and_keeps_the_rest() {
        let (mut client, task) = vmm(b"OK 1024\nhello").await;
        assert_eq!(handshake(&mut client, 18243).await.unwrap(), 1024);
        assert_eq!(task.await.unwrap(), b"CONNECT 18243\n");
        let mut rest = [0u8; 5];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[tokio::test]
    async fn refusal_names_what_came_back() {
        let (mut client, _task) = vmm(b"NO SUCH PORT\n").await;
        let err = handshake(&mut client, 5).await.unwrap_err().to_string();
        assert!(err.contains("NO SUCH PORT"), "{err}");
    }

    #[tokio::test]
    async fn eof_before_newline_is_an_error() {
        let (mut client, _task) = vmm(b"OK 1").await;
        // The fake VMM drops its end right after the partial reply.
        let err = handshake(&mut client, 5).await.unwrap_err();
        assert!(matches!(err, HybridError::Closed { .. }), "{err}");
    }

    #[tokio::test]
    async fn endless_reply_is_cut_off() {
        let (mut client, _task) = vmm(&[b'O'; 200]).await;
        let err = handshake(&mut client, 5).await.unwrap_err();
        assert!(matches!(err, HybridError::TooLong { .. }), "{err}");
    }
}
