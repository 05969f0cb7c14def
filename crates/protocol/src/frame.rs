//! Length-prefixed frames and their codec.
//!
//! ```text
//!  0               4       5
//!  +---------------+-------+---------------------------+
//!  | length: u32be | kind  | body (length bytes)       |
//!  +---------------+-------+---------------------------+
//!
//!  kind 0x00  control  body = one JSON object (a Control message)
//!  kind 0x01  stdin    body = raw bytes, host -> guest
//!  kind 0x02  stdout   body = raw bytes, guest -> host
//!  kind 0x03  stderr   body = raw bytes, guest -> host
//!  kind 0x04  file     body = raw bytes of the current file entry, sender -> receiver
//! ```
//!
//! `length` counts the body only and may not exceed
//! [`MAX_FRAME_BYTES`](crate::limits::MAX_FRAME_BYTES); the decoder checks it
//! before reserving any memory. Data bodies are never encoded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::limits::MAX_FRAME_BYTES;
use crate::message::Control;

/// Size of the frame header: length (4) and kind (1).
pub const HEADER_BYTES: usize = 5;

/// Which byte stream a data frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamId {
    /// Standard input of the guest process (host to guest).
    Stdin,
    /// Standard output, or the terminal in pty mode (guest to host).
    Stdout,
    /// Standard error (guest to host).
    Stderr,
    /// Content of the file entry being copied (file service, either direction).
    File,
}

impl StreamId {
    const fn kind(self) -> u8 {
        match self {
            Self::Stdin => 0x01,
            Self::Stdout => 0x02,
            Self::Stderr => 0x03,
            Self::File => 0x04,
        }
    }
}

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A typed control message.
    Control(Control),
    /// Raw bytes of one stream.
    Data(StreamId, Bytes),
}

/// Why bytes from the peer are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit (checked before allocating).
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A control frame whose body is not a valid control message.
    #[error("malformed control message")]
    BadControl(#[source] serde_json::Error),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes received of the incomplete frame.
        buffered: usize,
    },
    /// The socket failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s with a hard size limit.
///
/// ```
/// # use bytes::BytesMut;
/// # use tokio_util::codec::{Decoder, Encoder};
/// use guestcomm_protocol::frame::{Frame, FrameCodec, StreamId};
///
/// let mut codec = FrameCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::Data(StreamId::Stdout, "hi".into()), &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x00\x00\x00\x02\x02hi");
/// assert_eq!(
///     codec.decode(&mut wire).unwrap(),
///     Some(Frame::Data(StreamId::Stdout, "hi".into()))
/// );
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec with the protocol's limit, [`MAX_FRAME_BYTES`].
    pub fn new() -> Self {
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }

    /// The largest body this codec accepts and emits.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Lowers (or raises) the largest body this codec accepts and emits.
    pub fn with_max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let kind = src[4];
        if !(0x00..=0x04).contains(&kind) {
            return Err(FrameError::UnknownKind(kind));
        }
        if src.len() < HEADER_BYTES + len {
            src.reserve(HEADER_BYTES + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_BYTES);
        let body = src.split_to(len).freeze();
        let frame = match kind {
            0x00 => Frame::Control(serde_json::from_slice(&body).map_err(FrameError::BadControl)?),
            0x01 => Frame::Data(StreamId::Stdin, body),
            0x02 => Frame::Data(StreamId::Stdout, body),
            0x03 => Frame::Data(StreamId::Stderr, body),
            _ => Frame::Data(StreamId::File, body),
        };
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

/// Writes the header of a data frame whose body (`len` bytes) follows.
pub(crate) fn put_data_header(stream: StreamId, len: usize, dst: &mut BytesMut) {
    dst.put_u32(len as u32);
    dst.put_u8(stream.kind());
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Control(msg) => {
                let start = dst.len();
                dst.put_bytes(0, HEADER_BYTES);
                serde_json::to_writer(dst.writer(), &msg).map_err(FrameError::BadControl)?;
                let len = dst.len() - start - HEADER_BYTES;
                if len > self.max_frame_bytes {
                    dst.truncate(start);
                    return Err(FrameError::TooLarge {
                        len,
                        max: self.max_frame_bytes,
                    });
                }
                dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            }
            Frame::Data(stream, body) => {
                if body.len() > self.max_frame_bytes {
                    return Err(FrameError::TooLarge {
                        len: body.len(),
                        max: self.max_frame_bytes,
                    });
                }
                dst.reserve(HEADER_BYTES + body.len());
                put_data_header(stream, body.len(), dst);
                dst.put_slice(&body);
            }
        }
        Ok(())
    }
}
