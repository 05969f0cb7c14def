//! Property tests of the frame codec: round trips through arbitrary splits,
//! arbitrary bytes that never panic or over-allocate, and the size limit
//! enforced on the header alone. `cargo fuzz run frame_decoder` (see
//! `fuzz/README.md`) explores the same decoder for longer.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use guestcomm_protocol::files::{CopyFromGuest, CopySummary, CopyToGuest, Entry, EntryKind};
use guestcomm_protocol::frame::{Frame, FrameCodec, FrameError, HEADER_BYTES};
use guestcomm_protocol::limits::MAX_FRAME_BYTES;
use guestcomm_protocol::message::{
    Call, Control, ExecRequest, ExitStatus, Hello, ProtocolVersion, Request, Welcome, WindowSize,
};
use guestcomm_protocol::service::{BuiltinService, ServiceId};
use guestcomm_protocol::{ErrorCode, ErrorFrame, StreamId};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        Just(StreamId::Stdin),
        Just(StreamId::Stdout),
        Just(StreamId::Stderr),
        Just(StreamId::File)
    ]
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| ProtocolVersion { major, minor })
}

fn window() -> impl Strategy<Value = WindowSize> {
    (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| WindowSize { rows, cols })
}

fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<String>(), 0..4)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn exec_request() -> impl Strategy<Value = ExecRequest> {
    (
        any::<String>(),
        words(),
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(window()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(program, args, env, cwd, user, tty, timeout_ms): (
                String,
                Vec<String>,
                BTreeMap<String, String>,
                _,
                _,
                _,
                _,
            )| ExecRequest {
                program,
                args,
                env,
                cwd,
                user,
                tty,
                timeout_ms,
            },
        )
}

fn core_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (
            any::<String>(),
            version(),
            words(),
            words(),
            any::<String>(),
            proptest::option::of(any::<String>())
        )
            .prop_map(|(protocol, version, features, auth, client, auth_nonce)| {
                Control::Hello(Hello {
                    protocol,
                    version,
                    features,
                    auth,
                    client,
                    auth_nonce,
                })
            }),
        (version(), words(), any::<String>(), any::<String>()).prop_map(
            |(version, features, auth, agent)| Control::Welcome(Welcome {
                version,
                features,
                auth,
                agent,
            })
        ),
        (any::<u128>(), proptest::option::of(exec_request())).prop_map(|(guid, exec)| {
            Control::Request(Request {
                service: ServiceId::from_uuid(uuid::Uuid::from_u128(guid)),
                call: exec.map_or(Call::Unsupported, Call::Exec),
            })
        }),
        (error_code(), any::<String>())
            .prop_map(|(code, message)| Control::Error(ErrorFrame::new(code, message))),
        any::<u32>().prop_map(|pid| Control::ExecStarted { pid }),
        stream_id().prop_map(|stream| Control::Eof { stream }),
        window().prop_map(Control::Resize),
        any::<i32>().prop_map(|signal| Control::Signal { signal }),
        (
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
            any::<bool>()
        )
            .prop_map(|(code, signal, timed_out)| Control::Exited(ExitStatus {
                code,
                signal,
                timed_out,
            })),
        Just(Control::Unknown),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<String>(),
        prop::sample::select(vec![EntryKind::File, EntryKind::Dir, EntryKind::Symlink]),
        any::<u32>(),
        any::<i64>(),
        any::<u32>(),
        any::<u64>(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(path, kind, mode, mtime, mtime_nsec, size, target, uid, gid)| Entry {
                path,
                kind,
                mode,
                mtime,
                mtime_nsec,
                size,
                target,
                uid,
                gid,
            },
        )
}

/// The file service's messages (section 13 of the spec).
fn file_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        Just(Control::CopyReady),
        Just(Control::CopyEnd),
        entry().prop_map(Control::Entry),
        "[0-9a-f]{64}".prop_map(|blake3| Control::EntryEnd { blake3 }),
        (any::<[u64; 5]>(), proptest::option::of("[0-9a-f]{64}")).prop_map(
            |([files, dirs, symlinks, bytes, resumed_bytes], blake3)| {
                Control::CopySummary(CopySummary {
                    files,
                    dirs,
                    symlinks,
                    bytes,
                    blake3,
                    resumed_bytes,
                })
            }
        ),
        (
            any::<String>(),
            any::<[bool; 5]>(),
            proptest::option::of(proptest::collection::vec(any::<String>(), 0..3))
        )
            .prop_map(
                |(
                    dst,
                    [overwrite, create_full_path, recursive, resume, preserve_owner],
                    host_prefixes,
                )| {
                    Control::Request(Request {
                        service: BuiltinService::Files.id(),
                        call: Call::CopyToGuest(CopyToGuest {
                            dst,
                            overwrite,
                            create_full_path,
                            recursive,
                            resume,
                            preserve_owner,
                            host_prefixes,
                        }),
                    })
                }
            ),
        (
            any::<String>(),
            any::<[bool; 2]>(),
            proptest::option::of(proptest::collection::vec(any::<String>(), 0..3))
        )
            .prop_map(|(src, [recursive, resume], host_prefixes)| {
                Control::Request(Request {
                    service: BuiltinService::Files.id(),
                    call: Call::CopyFromGuest(CopyFromGuest {
                        src,
                        recursive,
                        resume,
                        host_prefixes,
                    }),
                })
            }),
        (any::<u64>(), "[0-9a-f]{64}")
            .prop_map(|(offset, blake3)| Control::ResumeFrom { offset, blake3 }),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![core_control(), file_control()]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        control().prop_map(Frame::Control),
        (stream_id(), prop::collection::vec(any::<u8>(), 0..2048))
            .prop_map(|(s, body)| Frame::Data(s, Bytes::from(body))),
    ]
}

/// Feeds `wire` to a fresh codec in pieces cut at `cuts` (positions, any
/// order), decoding after each piece as `Framed` does, then at end of stream.
fn decode_in_pieces(
    codec: &mut FrameCodec,
    wire: &[u8],
    cuts: &[usize],
) -> Result<Vec<Frame>, FrameError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for cut in cuts {
        buf.extend_from_slice(&wire[start..cut]);
        start = cut;
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left after decode_eof", buf.len());
    Ok(frames)
}

/// Arbitrary bytes, or bytes shaped like frames (plausible headers with
/// small lengths, known and unknown kinds, JSON-ish bodies) so the decoder
/// gets past the header check often.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (
            0u32..300,
            0u8..6,
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(len, kind, body)| {
                let mut v = len.to_be_bytes().to_vec();
                v.push(kind);
                v.extend(body);
                v
            }),
        (0u8..5, "\\{\"type\":\"[a-z_]{0,12}\"[ -~]{0,40}\\}").prop_map(|(kind, json)| {
            let mut v = (json.len() as u32).to_be_bytes().to_vec();
            v.push(kind);
            v.extend(json.bytes());
            v
        }),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        prop::collection::vec(piece, 0..16).prop_map(|p| p.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_frames_round_trip_through_arbitrary_splits(
        frames in prop::collection::vec(frame(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
        }
        let decoded = decode_in_pieces(&mut FrameCodec::new(), &wire, &cuts).unwrap();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn truncated_wire_is_an_error_at_eof_never_a_short_frame(
        f in frame(),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(f, &mut wire).unwrap();
        // Any strict, non-empty prefix of one frame.
        let keep = 1 + keep.index(wire.len() - 1);
        let result = decode_in_pieces(&mut FrameCodec::new(), &wire[..keep], &[]);
        prop_assert!(
            matches!(result, Err(FrameError::Truncated { buffered }) if buffered == keep),
            "{:?}", result
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_buffer_past_the_limit(
        wire in hostile_bytes(),
        chunk in 1usize..256,
        limit in prop_oneof![0usize..512, Just(MAX_FRAME_BYTES)],
    ) {
        let mut codec = FrameCodec::new().with_max_frame_bytes(limit);
        let mut buf = BytesMut::new();
        // Whatever the input, the buffer holds at most one incomplete frame
        // plus the chunk just read; `reserve` may round up to twice that.
        let bound = 2 * (HEADER_BYTES + limit + chunk) + 64;
        let mut failed = false;
        'feed: for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                let result = codec.decode(&mut buf);
                prop_assert!(buf.capacity() <= bound, "capacity {} > {}", buf.capacity(), bound);
                match result {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        // Only an incomplete header or an incomplete body remains.
                        prop_assert!(buf.len() < HEADER_BYTES + limit);
                        break;
                    }
                    // A connection is dead after a decode error (Framed stops too).
                    Err(_) => {
                        failed = true;
                        break 'feed;
                    }
                }
            }
        }
        if !failed {
            loop {
                let result = codec.decode_eof(&mut buf);
                prop_assert!(buf.capacity() <= bound, "capacity {} > {}", buf.capacity(), bound);
                match result {
                    Ok(Some(_)) => {}
                    Ok(None) => { prop_assert!(buf.is_empty()); break; }
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn length_over_the_limit_is_refused_on_the_header_alone(
        limit in prop_oneof![0usize..4096, Just(MAX_FRAME_BYTES)],
        excess in 1u64..=u64::from(u32::MAX),
        kind in any::<u8>(),
    ) {
        let len = (limit as u64 + excess).min(u64::from(u32::MAX));
        prop_assume!(len > limit as u64);
        let mut codec = FrameCodec::new().with_max_frame_bytes(limit);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        // Four bytes are not a header yet: no verdict, no allocation.
        prop_assert!(matches!(codec.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(&[kind]);
        let cap_before = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        prop_assert!(
            matches!(err, FrameError::TooLarge { len: l, max } if l as u64 == len && max == limit),
            "{:?}", err
        );
        prop_assert_eq!(buf.capacity(), cap_before, "reserved memory for a refused frame");
    }

    #[test]
    fn unknown_kind_is_refused_on_the_header_alone(
        len in 0u32..1024,
        kind in 5u8..=255,
    ) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&[kind]);
        let cap_before = buf.capacity();
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        prop_assert!(matches!(err, FrameError::UnknownKind(k) if k == kind), "{:?}", err);
        prop_assert_eq!(buf.capacity(), cap_before);
    }
}
