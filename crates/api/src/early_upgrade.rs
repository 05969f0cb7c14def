//! An HTTP upgrade whose answer is read when the stream is first read: the
//! request goes out and the caller writes its first bytes (the guestcomm
//! `hello` and `request`) at once, without waiting for `101 Switching
//! Protocols`. One round trip less for every exec through guestcommd.
//!
//! The daemon's HTTP server keeps bytes that follow a request in its read
//! buffer and hands them to the upgraded connection. When it refuses
//! instead (an unknown VM, a missing role), the first read of the stream
//! fails with that refusal as an [`ApiError`] inside the [`io::Error`]
//! ([`api_error`] finds it again).
//!
//! Only for the Unix socket ([`ApiClient::upgrade_early`]): a server that
//! refuses closes with the early bytes unread, and over TCP that may reset
//! the connection before the refusal is read.
//!
//! [`ApiClient::upgrade_early`]: crate::ApiClient::upgrade_early

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{error_from, ApiError};

/// Longest answer head accepted (status line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest error body kept from a refusal; the rest is not read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Most headers in the answer.
const MAX_HEADERS: usize = 32;

/// The request an upgrade to `protocol` at `path` sends.
pub fn request_bytes(path: &str, protocol: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: guestcommd\r\nConnection: upgrade\r\nUpgrade: {protocol}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A stream past an upgrade request whose answer has not been read yet.
#[derive(Debug)]
pub struct EarlyUpgrade<S> {
    io: S,
    /// The answer's bytes so far; `None` once it was `101`.
    answer: Option<Vec<u8>>,
    /// Bytes read with the answer that belong to the upgraded stream.
    rest: Vec<u8>,
    /// How much of `rest` has been handed out.
    rest_at: usize,
}

/// What the answer bytes read so far amount to.
#[derive(Debug, PartialEq)]
enum Answer {
    /// More bytes needed.
    Partial,
    /// `101`: the upgraded stream starts after `head` bytes.
    Switched { head: usize },
    /// A refusal, once its body (up to its Content-Length) is in.
    Refused {
        status: u16,
        head: usize,
        body_len: usize,
    },
}

fn parse(bytes: &[u8]) -> io::Result<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD_BYTES => {
            return Err(invalid("the answer's head is too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(Answer::Partial),
        Err(e) => return Err(invalid(&format!("not an HTTP answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    if status == StatusCode::SWITCHING_PROTOCOLS.as_u16() {
        return Ok(Answer::Switched { head });
    }
    let body_len = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_ERROR_BODY_BYTES);
    Ok(Answer::Refused {
        status,
        head,
        body_len,
    })
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("guestcommd's answer to the upgrade: {what}"),
    )
}

/// The refusal as the error of a read.
fn refusal(status: u16, body: &[u8]) -> io::Error {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    io::Error::other(error_from(status, body))
}

/// The daemon's refusal inside an error of an [`EarlyUpgrade`] read, if
/// that is what `error` (or anything in its source chain) carries.
pub fn api_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ApiError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<ApiError>() {
            return Some(api);
        }
        if let Some(api) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<ApiError>())
        {
            return Some(api);
        }
        next = e.source();
    }
    None
}

impl<S> EarlyUpgrade<S> {
    /// `io` with the upgrade request already written.
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            answer: Some(Vec::new()),
            rest: Vec::new(),
            rest_at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> EarlyUpgrade<S> {
    /// Reads until the answer is known: `Ok` once switched, the refusal or
    /// a broken answer as the error.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(answer) = &mut self.answer {
            let parsed = parse(answer)?;
            if let Answer::Switched { head } = parsed {
                self.rest = answer.split_off(head);
                self.answer = None;
                break;
            }
            if let Answer::Refused {
                status,
                head,
                body_len,
            } = parsed
            {
                if answer.len() >= head + body_len {
                    return Poll::Ready(Err(refusal(status, &answer[head..head + body_len])));
                }
            }
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Err(match parsed {
                    Answer::Refused { status, head, .. } => refusal(status, &answer[head..]),
                    _ => invalid("the connection closed before the answer"),
                }));
            }
            answer.extend_from_slice(buf.filled());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EarlyUpgrade<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        if this.rest_at < this.rest.len() {
            let n = buf.remaining().min(this.rest.len() - this.rest_at);
            buf.put_slice(&this.rest[this.rest_at..this.rest_at + n]);
            this.rest_at += n;
            if this.rest_at == this.rest.len() {
                this.rest = Vec::new();
                this.rest_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EarlyUpgrade<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What an [`EarlyUpgrade`] reads when the daemon sends `answer` in
    /// pieces of `piece` bytes, then closes.
    async fn read_all(answer: &[u8], piece: usize) -> io::Result<Vec<u8>> {
        let (mut daemon, client) = tokio::io::duplex(64 * 1024);
        let answer = answer.to_vec();
        let sender = tokio::spawn(async move {
            for chunk in answer.chunks(piece) {
                daemon.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut stream = EarlyUpgrade::new(client);
        let mut out = Vec::new();
        let read = stream.read_to_end(&mut out).await.map(|_| out);
        sender.await.unwrap();
        read
    }

    #[tokio::test]
    async fn after_101_the_stream_starts_right_after_the_head_in_any_split() {
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: guestcomm\r\n\r\nWELCOME-FRAME\x00\x01";
        for piece in [1, 7, answer.len()] {
            let got = read_all(answer, piece).await.unwrap();
            assert_eq!(got, b"WELCOME-FRAME\x00\x01", "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn a_refusal_is_the_daemons_error_with_its_json_body() {
        let body = br#"{"error":"no VM named \"web9\" (see `guestcomm vm list`)","code":"not_found","chain":[]}"#;
        let answer = [
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.to_vec(),
        ]
        .concat();
        for piece in [3, answer.len()] {
            let err = read_all(&answer, piece).await.unwrap_err();
            let api = api_error(&err).expect("the daemon's error inside");
            assert!(
                matches!(api, ApiError::Status { status: 404, .. }),
                "{api:?}"
            );
            assert!(api.to_string().contains("no VM named \"web9\""), "{api}");
        }
    }

    #[tokio::test]
    async fn garbage_an_endless_head_and_an_early_close_are_clear_errors() {
        let err = read_all(b"SSH-2.0-OpenSSH\r\n\r\n", 64).await.unwrap_err();
        assert!(err.to_string().contains("not an HTTP answer"), "{err}");

        let endless = [
            b"HTTP/1.1 101 OK\r\n".to_vec(),
            vec![b'x'; 2 * MAX_HEAD_BYTES],
        ]
        .concat();
        let err = read_all(&endless, 4096).await.unwrap_err();
        assert!(err.to_string().contains("guestcommd's answer"), "{err}");

        let err = read_all(b"HTTP/1.1 101 Swi", 64).await.unwrap_err();
        assert!(
            err.to_string().contains("closed before the answer"),
            "{err}"
        );
        assert!(api_error(&err).is_none());
    }

    #[test]
    fn the_request_asks_for_the_upgrade_with_an_empty_body() {
        let text = String::from_utf8(request_bytes("/v1/vms/web1/connect", "guestcomm")).unwrap();
        assert!(text.starts_with("POST /v1/vms/web1/connect HTTP/1.1\r\n"));
        assert!(text.contains("\r\nUpgrade: guestcomm\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
