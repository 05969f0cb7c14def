//! A framed connection split into a frame reader and a frame writer that
//! sends large data bodies without copying them.
//!
//! `Framed`'s encoder copies every body into its write buffer. For bulk
//! streams that is one memcpy per byte moved, so [`FrameWriter`] instead
//! writes a large data frame as one vectored write of the pending buffer
//! (small frames, the header) and the body itself. Small frames are still
//! batched in the buffer, so a burst of control messages costs one write.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, Framed, FramedParts};

use crate::frame::{put_data_header, Frame, FrameCodec, FrameError, FramedConn, HEADER_BYTES};

/// Bodies at least this large are written in place rather than copied into
/// the write buffer; below it, the copy is cheaper than another iovec.
const ZERO_COPY_MIN_BYTES: usize = 16 * 1024;

/// Buffered small frames are written out once they reach this size.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The reading half: a stream of frames. (A `Framed` used only for reading:
/// unlike `FramedRead`, it can be built from parts that carry bytes already
/// buffered, and then decodes them before reading more.)
pub type FrameReader<T> = Framed<ReadHalf<T>, FrameCodec>;

/// The writing half: frames out, large bodies without a copy.
pub struct FrameWriter<T> {
    io: WriteHalf<T>,
    buf: BytesMut,
    codec: FrameCodec,
}

/// Splits a connection (after its handshake) into reader and writer,
/// keeping any bytes the reader had already buffered.
pub fn split<T: AsyncRead + AsyncWrite>(conn: FramedConn<T>) -> (FrameReader<T>, FrameWriter<T>) {
    let parts = conn.into_parts();
    let (read, write) = tokio::io::split(parts.io);
    let mut read_parts = FramedParts::new::<Frame>(read, parts.codec.clone());
    read_parts.read_buf = parts.read_buf;
    let reader = Framed::from_parts(read_parts);
    let writer = FrameWriter {
        io: write,
        // Anything `Framed` had not written yet goes first.
        buf: parts.write_buf,
        codec: parts.codec,
    };
    (reader, writer)
}

/// Joins what [`split`] made back into one connection, for another
/// operation on it (`docs/PROTOCOL.md`, "Connection reuse"): bytes the
/// reader buffered and frames the writer has not written yet are kept.
///
/// # Panics
///
/// If `reader` and `writer` are not the two halves of one [`split`].
pub fn join<T: AsyncRead + AsyncWrite + Unpin>(
    reader: FrameReader<T>,
    writer: FrameWriter<T>,
) -> FramedConn<T> {
    let read_parts = reader.into_parts();
    let io = read_parts.io.unsplit(writer.io);
    let mut parts = FramedParts::new::<Frame>(io, read_parts.codec);
    parts.read_buf = read_parts.read_buf;
    parts.write_buf = writer.buf;
    Framed::from_parts(parts)
}

impl<T: AsyncWrite> FrameWriter<T> {
    /// Queues `frame`; large data bodies are written at once, without a copy.
    pub async fn feed(&mut self, frame: Frame) -> Result<(), FrameError> {
        match frame {
            Frame::Data(stream, body) if body.len() >= ZERO_COPY_MIN_BYTES => {
                // The codec's limit check, without its copy.
                if body.len() > self.codec.max_frame_bytes() {
                    return Err(FrameError::TooLarge {
                        len: body.len(),
                        max: self.codec.max_frame_bytes(),
                    });
                }
                self.buf.reserve(HEADER_BYTES);
                put_data_header(stream, body.len(), &mut self.buf);
                let mut out = (&mut self.buf).chain(body);
                self.io.write_all_buf(&mut out).await?;
            }
            frame => {
                self.codec.encode(frame, &mut self.buf)?;
                if self.buf.len() >= WRITE_BUFFER_BYTES {
                    self.io.write_all_buf(&mut self.buf).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes out buffered frames and flushes the socket.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.io.write_all_buf(&mut self.buf).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// [`feed`](Self::feed) then [`flush`](Self::flush).
    pub async fn send(&mut self, frame: Frame) -> Result<(), FrameError> {
        self.feed(frame).await?;
        self.flush().await
    }
}

/// Sends every frame queued on `rx`, flushing whenever the queue runs
/// empty, until every sender is gone.
///
/// Both sides use it as the single writer of a connection whose frames come
/// from several tasks (stdout and stderr readers, stdin, control messages):
/// the bounded queue gives back-pressure, and batching the flushes saves
/// system calls under load without delaying a lone frame.
///
/// Gives the writer back once flushed, for [`join`].
pub async fn forward_frames<T: AsyncWrite>(
    mut writer: FrameWriter<T>,
    mut rx: mpsc::Receiver<Frame>,
) -> Result<FrameWriter<T>, FrameError> {
    while let Some(frame) = rx.recv().await {
        writer.feed(frame).await?;
        if rx.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Control;
    use crate::stream::StreamId;
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::FramedRead;

    #[tokio::test]
    async fn small_and_large_frames_arrive_in_order_and_intact() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (_, mut writer) = split(Framed::new(a, FrameCodec::new()));
        let big: bytes::Bytes = (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let frames = vec![
            Frame::Control(Control::ExecStarted { pid: 7 }),
            Frame::Data(StreamId::Stdout, "small".into()),
            Frame::Data(StreamId::Stderr, big.slice(..200_000)),
            Frame::Control(Control::Eof {
                stream: StreamId::Stdout,
            }),
            Frame::Data(StreamId::Stderr, big.slice(200_000..)),
        ];
        let expected = frames.clone();
        let send = tokio::spawn(async move {
            for frame in frames {
                writer.feed(frame).await.unwrap();
            }
            writer.flush().await.unwrap();
        });
        let mut reader = FramedRead::new(b, FrameCodec::new());
        for want in expected {
            assert_eq!(reader.next().await.unwrap().unwrap(), want);
        }
        send.await.unwrap();
    }

    #[tokio::test]
    async fn a_joined_connection_keeps_buffered_bytes_and_carries_the_next_frames() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut wire = BytesMut::new();
        for pid in [1, 2, 3] {
            FrameCodec::new()
                .encode(Frame::Control(Control::ExecStarted { pid }), &mut wire)
                .unwrap();
        }
        b.write_all(&wire).await.unwrap();
        let (mut reader, mut writer) = split(Framed::new(a, FrameCodec::new()));
        // The first read pulls all three frames into the reader's buffer.
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Frame::Control(Control::ExecStarted { pid: 1 })
        );
        writer
            .send(Frame::Control(Control::ExecStarted { pid: 10 }))
            .await
            .unwrap();
        let mut joined = join(reader, writer);
        for pid in [2, 3] {
            assert_eq!(
                joined.next().await.unwrap().unwrap(),
                Frame::Control(Control::ExecStarted { pid })
            );
        }
        joined
            .send(Frame::Control(Control::ExecStarted { pid: 11 }))
            .await
            .unwrap();
        drop(joined);
        let mut peer = FramedRead::new(b, FrameCodec::new());
        for pid in [10, 11] {
            assert_eq!(
                peer.next().await.unwrap().unwrap(),
                Frame::Control(Control::ExecStarted { pid })
            );
        }
        assert!(peer.next().await.is_none(), "the joined connection closed");
    }

    #[tokio::test]
    async fn bytes_buffered_before_the_split_are_not_lost() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut wire = BytesMut::new();
        for pid in [1, 2] {
            FrameCodec::new()
                .encode(Frame::Control(Control::ExecStarted { pid }), &mut wire)
                .unwrap();
        }
        b.write_all(&wire).await.unwrap();
        let mut conn = Framed::new(a, FrameCodec::new());
        // Reading the first frame pulls both into the read buffer.
        assert_eq!(
            conn.next().await.unwrap().unwrap(),
            Frame::Control(Control::ExecStarted { pid: 1 })
        );
        let (mut reader, _) = split(conn);
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Frame::Control(Control::ExecStarted { pid: 2 })
        );
    }

    #[tokio::test]
    async fn oversized_body_is_refused_before_writing() {
        let (a, _b) = tokio::io::duplex(1024);
        let (_, mut writer) = split(Framed::new(
            a,
            FrameCodec::new().with_max_frame_bytes(20_000),
        ));
        let body = bytes::Bytes::from(vec![0u8; 30_000]);
        let err = writer
            .feed(Frame::Data(StreamId::Stdout, body))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 30_000,
                max: 20_000
            }
        ));
    }
}
