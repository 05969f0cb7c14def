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
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::limits::MAX_FRAME_BYTES;
use crate::message::Control;
use crate::stream::StreamId;

/// A framed connection: the type both sides use after connecting.
pub type FramedConn<T> = Framed<T, FrameCodec>;

/// Size of the frame header: length (4) and kind (1).
pub const HEADER_BYTES: usize = 5;

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A typed control message.
    Control(Control),
    /// Raw bytes of one stream.
    Data(StreamId, Bytes),
}

impl Frame {
    /// A short description for errors and logs: the message type or the
    /// data's size and stream, never the peer's content (error frames give
    /// their code and escaped message).
    pub fn describe(&self) -> String {
        match self {
            Frame::Control(Control::Error(e)) => format!("error frame: {e}"),
            Frame::Control(c) => format!("{} message", c.kind()),
            Frame::Data(stream, body) => format!("{} bytes of {stream:?} data", body.len()),
        }
    }
}

/// What a frame's header says: how long the body is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The body's length in bytes (not checked against any limit here).
    pub len: u32,
    /// The kind byte, as sent.
    pub kind: u8,
}

impl FrameHeader {
    /// Reads a header's two fields.
    pub fn parse(header: [u8; HEADER_BYTES]) -> Self {
        let [a, b, c, d, kind] = header;
        Self {
            len: u32::from_be_bytes([a, b, c, d]),
            kind,
        }
    }

    /// What the body holds: a control message (`None`) or data of a
    /// stream; a kind this version does not know is an error (the bytes no
    /// longer make sense as frames).
    pub fn stream(self) -> Result<Option<StreamId>, FrameError> {
        match self.kind {
            CONTROL_KIND => Ok(None),
            kind => StreamId::from_kind(kind)
                .map(Some)
                .ok_or(FrameError::UnknownKind(kind)),
        }
    }
}

/// The kind byte of a control frame.
const CONTROL_KIND: u8 = 0x00;

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
/// use guestcomm_protocol::{Frame, FrameCodec, StreamId};
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

    /// Lowers (or raises) the largest body this codec accepts and emits,
    /// clipped to what the 32-bit length prefix can say.
    pub fn with_max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max.min(u32::MAX as usize);
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
        let Some(header) = src.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(*header);
        let len = header.len as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let stream = header.stream()?;
        if src.len() < HEADER_BYTES + len {
            src.reserve(HEADER_BYTES + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_BYTES);
        let body = src.split_to(len).freeze();
        let frame = match stream {
            None => Frame::Control(serde_json::from_slice(&body).map_err(FrameError::BadControl)?),
            Some(stream) => Frame::Data(stream, body),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_clipped_to_what_the_length_prefix_can_say() {
        let codec = FrameCodec::new().with_max_frame_bytes(usize::MAX);
        assert_eq!(codec.max_frame_bytes(), u32::MAX as usize);
    }

    #[test]
    fn a_header_names_its_stream_and_an_unknown_kind_is_an_error() {
        let data = FrameHeader::parse([0, 0, 1, 0, 0x02]);
        assert_eq!(data.len, 256);
        assert_eq!(data.stream().unwrap(), Some(StreamId::Stdout));
        assert_eq!(
            FrameHeader::parse([0; HEADER_BYTES]).stream().unwrap(),
            None
        );
        let err = FrameHeader::parse([0, 0, 0, 0, 0x09]).stream().unwrap_err();
        assert!(matches!(err, FrameError::UnknownKind(0x09)), "{err}");
    }

    #[test]
    fn a_description_names_the_message_type_not_its_content() {
        let frame = Frame::Control(Control::Exited(crate::ExitStatus {
            code: Some(3),
            signal: None,
            timed_out: false,
        }));
        assert_eq!(frame.describe(), "exited message");
        let data = Frame::Data(StreamId::Stdin, Bytes::from_static(b"secret"));
        assert_eq!(data.describe(), "6 bytes of Stdin data");
    }
}
