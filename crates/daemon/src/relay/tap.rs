//! A byte stream wrapper for the audit log of relayed operations: counts
//! the bytes each way and follows the frames in both directions to learn how
//! the operation ended (`Exited`, `CopySummary`, `Error`), without copying
//! or decoding data frames.
//!
//! ```text
//! relay <-> Tap(agent stream): poll_read  -> FrameWatcher (from the agent)
//!                              poll_write -> FrameWatcher (to the agent)
//!          each reads frame headers, and decodes control bodies only
//! ```
//!
//! The watcher reads only frame headers and control bodies (at most
//! [`MAX_WATCHED_CONTROL_BYTES`] each); a malformed stream just stops it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use guestcomm_protocol::frame::{FrameHeader, HEADER_BYTES};
use guestcomm_protocol::Control;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::MAX_WATCHED_CONTROL_BYTES;

/// What the watcher saw of an operation's end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The guest command's exit status, as a shell reports it.
    pub(crate) exit_code: Option<i32>,
    /// The last error frame's text.
    pub(crate) error: Option<String>,
    /// The operation's last message went by (`Exited`, or the receiver's
    /// `CopySummary`): what follows is only the connection closing.
    pub(crate) completed: bool,
    /// A `CopySummary` went by (a receiver's acknowledgement).
    summary: bool,
    /// A `CopyEnd` went by (the sender ended its copy stream).
    copy_ended: bool,
}

/// Follows frame boundaries in a byte stream.
#[derive(Debug, Default)]
struct FrameWatcher {
    header: [u8; HEADER_BYTES],
    have: usize,
    /// Body bytes still to pass in the current frame.
    remaining: u64,
    /// The current control body, when captured.
    body: Option<Vec<u8>>,
    observed: Observed,
    /// Set when the stream stopped making sense as frames.
    lost: bool,
}

impl FrameWatcher {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.remaining == 0 && self.body.is_none() {
                let take = (HEADER_BYTES - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < HEADER_BYTES {
                    return;
                }
                self.have = 0;
                let header = FrameHeader::parse(self.header);
                let Ok(stream) = header.stream() else {
                    self.lost = true;
                    return;
                };
                let len = header.len as usize;
                self.remaining = len as u64;
                if stream.is_none() && len <= MAX_WATCHED_CONTROL_BYTES {
                    self.body = Some(Vec::with_capacity(len));
                }
                if len == 0 {
                    self.end_of_frame();
                }
                continue;
            }
            let take = (self.remaining.min(bytes.len() as u64)) as usize;
            if let Some(body) = &mut self.body {
                body.extend_from_slice(&bytes[..take]);
            }
            self.remaining -= take as u64;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                self.end_of_frame();
            }
        }
    }

    fn end_of_frame(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        match serde_json::from_slice::<Control>(&body) {
            Ok(Control::Exited(status)) => {
                self.observed.exit_code = Some(status.shell_code());
                self.observed.completed = true;
            }
            Ok(Control::CopySummary(_)) => {
                self.observed.completed = true;
                self.observed.summary = true;
            }
            Ok(Control::CopyEnd) => self.observed.copy_ended = true,
            Ok(Control::Error(frame)) => self.observed.error = Some(frame.to_string()),
            _ => {}
        }
    }
}

/// Counters and observations shared by a [`Tap`] and whoever reads them.
#[derive(Debug, Default)]
pub(crate) struct TapStats {
    read: AtomicU64,
    written: AtomicU64,
    /// Frames from the agent.
    watcher: Mutex<FrameWatcher>,
    /// Frames to the agent (the client's `CopySummary` or `Error`).
    up: Mutex<FrameWatcher>,
}

impl TapStats {
    /// Counters only: the stream is not guestcomm frames (a raw service).
    pub(crate) fn counting() -> Self {
        let stats = Self::default();
        stats.watcher.lock().unwrap_or_else(|e| e.into_inner()).lost = true;
        stats.up.lock().unwrap_or_else(|e| e.into_inner()).lost = true;
        stats
    }

    /// Feeds bytes read from the stream before the tap was in place.
    pub(crate) fn saw(&self, bytes: &[u8]) {
        self.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(bytes);
    }

    /// Counts and watches bytes written to the stream.
    pub(crate) fn sent(&self, bytes: &[u8]) {
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(bytes);
    }

    /// Bytes moved both ways.
    pub(crate) fn bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }

    /// What the frames said. The client's frames never complete or
    /// excuse its own operation: only the agent's `Exited` or `CopySummary`
    /// complete it, except a copy out of the guest, which completes when
    /// the agent ended its copy stream and the client then acknowledged it
    /// with its `CopySummary`. The agent's error comes first; an error the
    /// client sent is kept as the client's word.
    pub(crate) fn observed(&self) -> Observed {
        let down = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observed
            .clone();
        let up = self
            .up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observed
            .clone();
        Observed {
            exit_code: down.exit_code,
            error: down
                .error
                .or_else(|| up.error.map(|e| format!("the client reported: {e}"))),
            completed: down.completed || (down.copy_ended && up.summary),
            ..Observed::default()
        }
    }
}

/// A stream whose traffic is counted and watched.
pub(crate) struct Tap<T> {
    inner: T,
    stats: Arc<TapStats>,
}

impl<T> Tap<T> {
    /// Wraps `inner`, reporting to `stats`.
    pub(crate) fn new(inner: T, stats: Arc<TapStats>) -> Self {
        Self { inner, stats }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.stats.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.stats.sent(&buf[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use guestcomm_protocol::{ErrorCode, ErrorFrame, ExitStatus};
    use guestcomm_protocol::{Frame, FrameCodec, StreamId};
    use tokio_util::codec::Encoder;

    fn encode(frames: Vec<Frame>) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            FrameCodec::new().encode(f, &mut out).unwrap();
        }
        out.to_vec()
    }

    #[test]
    fn the_exit_status_is_found_across_any_split_of_the_stream() {
        let exited = ExitStatus {
            code: None,
            signal: Some(9),
            timed_out: false,
        };
        let bytes = encode(vec![
            Frame::Control(Control::ExecStarted { pid: 7 }),
            Frame::Data(StreamId::Stdout, Bytes::from(vec![0u8; 70_000])),
            Frame::Data(StreamId::Stdout, Bytes::new()),
            Frame::Control(Control::Exited(exited)),
        ]);
        for step in [1, 3, 5, 4096, bytes.len()] {
            let stats = TapStats::default();
            for chunk in bytes.chunks(step) {
                stats.saw(chunk);
            }
            assert_eq!(stats.observed().exit_code, Some(137), "step {step}");
            assert!(stats.observed().completed);
            assert_eq!(stats.bytes(), bytes.len() as u64);
        }
    }

    #[test]
    fn the_clients_summary_or_error_ends_a_copy_out_of_the_guest() {
        let stats = TapStats::default();
        stats.saw(&encode(vec![Frame::Control(Control::CopyEnd)]));
        assert!(!stats.observed().completed);
        let summary = guestcomm_protocol::files::CopySummary::default();
        stats.sent(&encode(vec![Frame::Control(Control::CopySummary(summary))]));
        assert!(stats.observed().completed);
        let failed = TapStats::default();
        failed.sent(&encode(vec![Frame::Control(Control::Error(
            ErrorFrame::new(ErrorCode::Io, "disk full"),
        ))]));
        let error = failed.observed().error.unwrap();
        assert!(
            error.contains("the client reported") && error.contains("disk full"),
            "{error}"
        );
    }

    #[test]
    fn the_client_cannot_complete_or_excuse_its_own_operation() {
        let exited = ExitStatus {
            code: Some(0),
            signal: None,
            timed_out: false,
        };
        let summary = guestcomm_protocol::files::CopySummary::default();
        let stats = TapStats::default();
        stats.sent(&encode(vec![
            Frame::Control(Control::Exited(exited)),
            Frame::Control(Control::CopySummary(summary)),
        ]));
        assert_eq!(stats.observed().exit_code, None);
        assert!(!stats.observed().completed, "not before the agent ended");
        stats.saw(&encode(vec![Frame::Control(Control::Error(
            ErrorFrame::new(ErrorCode::Io, "the guest's disk failed"),
        ))]));
        stats.sent(&encode(vec![Frame::Control(Control::Error(
            ErrorFrame::new(ErrorCode::Io, "all is well"),
        ))]));
        let error = stats.observed().error.unwrap();
        assert!(error.contains("the guest's disk failed"), "{error}");
    }

    #[test]
    fn errors_are_kept_and_garbage_stops_the_watcher_quietly() {
        let stats = TapStats::default();
        stats.saw(&encode(vec![Frame::Control(Control::Error(
            ErrorFrame::new(ErrorCode::NotFound, "no such file"),
        ))]));
        assert!(stats.observed().error.unwrap().contains("no such file"));
        let garbage = TapStats::default();
        garbage.saw(&[0, 0, 0, 1, 0x77, 1, 2, 3]);
        assert_eq!(garbage.observed(), Observed::default());
    }
}
