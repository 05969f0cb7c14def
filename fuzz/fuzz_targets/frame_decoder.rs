//! Fuzzes `FrameCodec::decode`/`decode_eof` with arbitrary bytes, fed in
//! chunks as a socket would deliver them. The first two input bytes pick the
//! chunk size and the frame limit; the rest is the wire.
//!
//! Checked on every call: no panic; the buffer never holds more than one
//! incomplete frame and never reserves far past limit + header; every frame
//! decoded re-encodes and decodes to itself.

#![no_main]

use bytes::BytesMut;
use guestcomm_protocol::frame::{Frame, FrameCodec, HEADER_BYTES};
use guestcomm_protocol::limits::MAX_FRAME_BYTES;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let [chunk, limit, wire @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    // 0..=254: small limits that real headers can hit; 255: the protocol's.
    let limit = match *limit {
        255 => MAX_FRAME_BYTES,
        n => usize::from(n) * 8,
    };
    let bound = 2 * (HEADER_BYTES + limit + chunk) + 64;
    let mut codec = FrameCodec::new().with_max_frame_bytes(limit);
    let mut buf = BytesMut::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let result = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= bound,
                "capacity {} > {bound}",
                buf.capacity()
            );
            match result {
                Ok(Some(frame)) => round_trips(frame),
                Ok(None) => {
                    assert!(
                        buf.len() < HEADER_BYTES + limit,
                        "{} bytes buffered",
                        buf.len()
                    );
                    break;
                }
                // A decode error ends the connection.
                Err(_) => return,
            }
        }
    }
    loop {
        let result = codec.decode_eof(&mut buf);
        assert!(
            buf.capacity() <= bound,
            "capacity {} > {bound}",
            buf.capacity()
        );
        match result {
            Ok(Some(frame)) => round_trips(frame),
            Ok(None) => {
                assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
                return;
            }
            Err(_) => return,
        }
    }
});

/// A frame that decoded must encode and decode back to itself.
fn round_trips(frame: Frame) {
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    codec
        .encode(frame.clone(), &mut wire)
        .expect("a decoded frame re-encodes");
    let again = codec.decode(&mut wire).expect("re-encoded frame decodes");
    assert_eq!(again, Some(frame));
    assert!(wire.is_empty());
}
