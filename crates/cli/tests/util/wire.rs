//! Speaking the wire protocol directly, for test doubles: encode frames,
//! exchange bytes with the agent, and a fake agent for the CLI to talk to.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use bytes::BytesMut;
use guestcomm_protocol::handshake::default_hello;
use guestcomm_protocol::message::{Call, ProtocolVersion, Request};
use guestcomm_protocol::{Control, ErrorCode, Frame, FrameCodec, ServiceId};
use tokio_util::codec::{Decoder, Encoder};

use super::Agent;

pub fn encode(frames: Vec<Frame>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        FrameCodec::new().encode(frame, &mut buf).unwrap();
    }
    buf.to_vec()
}

/// Sends `bytes` (then optionally half-closes) and returns the frames the
/// agent sent back, up to its final one; then closes, as a client does
/// once it has read the last frame (the agent waits for that close).
pub fn exchange(agent: &Agent, bytes: &[u8], half_close: bool) -> Vec<Frame> {
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(bytes).unwrap();
    if half_close {
        sock.shutdown(std::net::Shutdown::Write).unwrap();
    }
    read_until_final(&mut sock).0
}

/// The error frame that ends `frames`, which must be the only thing after any Welcome.
pub fn final_error(frames: &[Frame]) -> (ErrorCode, String) {
    match frames.last() {
        Some(Frame::Control(Control::Error(e))) => (e.code, e.message.clone()),
        other => panic!("expected an error frame last, got {other:?}"),
    }
}

pub fn hello() -> Frame {
    Frame::Control(Control::Hello(default_hello("test")))
}

pub fn request(service: ServiceId, call: Call) -> Frame {
    Frame::Control(Control::Request(Request { service, call }))
}

/// The `request` frame of an exec of `program args`.
#[allow(dead_code)] // not every test file runs commands on the wire
pub fn exec_request(program: &str, args: &[&str]) -> Frame {
    request(
        guestcomm_protocol::BuiltinService::Exec.id(),
        Call::Exec(guestcomm_protocol::ExecRequest {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
    )
}

/// Reads frames from `sock` up to and including one exec's `exited` (30 s
/// at most; an `error` first fails the test). `buf` keeps the bytes that
/// came after it, for the next operation on the connection.
#[allow(dead_code)] // not every test file reads an exec on the wire
pub fn frames_until_exited(sock: &mut UnixStream, buf: &mut BytesMut) -> Vec<Frame> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut codec = FrameCodec::new();
    let mut frames = Vec::new();
    loop {
        match codec.decode(buf).unwrap() {
            Some(Frame::Control(Control::Error(e))) => panic!("error instead of exited: {e}"),
            Some(frame) => {
                let exited = matches!(frame, Frame::Control(Control::Exited(_)));
                frames.push(frame);
                if exited {
                    return frames;
                }
            }
            None => {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed before exited: {frames:?}");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// A fake agent that answers the handshake, then sends `reply` and ends its
/// side of the connection (reading until the client closes).
pub fn hostile_agent(reply: Vec<u8>) -> (tempfile::TempDir, String, std::thread::JoinHandle<()>) {
    fake_agent(reply, false)
}

/// A fake agent that answers the handshake, sends `reply`, then stalls
/// (reads and discards) until the client closes the connection.
pub fn stalling_agent(reply: Vec<u8>) -> (tempfile::TempDir, String, std::thread::JoinHandle<()>) {
    fake_agent(reply, true)
}

fn fake_agent(
    reply: Vec<u8>,
    stall: bool,
) -> (tempfile::TempDir, String, std::thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf);
        let welcome = guestcomm_protocol::message::Welcome {
            version: ProtocolVersion::CURRENT,
            features: vec![],
            auth: "none".into(),
            agent: "evil".into(),
        };
        let mut bytes = encode(vec![Frame::Control(Control::Welcome(welcome))]);
        bytes.extend_from_slice(&reply);
        let _ = sock.write_all(&bytes);
        if !stall {
            // The end of the reply, seen as such: closing with the client's
            // later frames unread would reset its connection instead
            // (ECONNRESET on Unix sockets too) and hide what it makes of
            // the reply.
            let _ = sock.shutdown(std::net::Shutdown::Write);
        }
        while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
    });
    let addr = format!("unix://{}", path.display());
    (dir, addr, thread)
}

/// Sends `bytes` and returns the frames the agent sends back, up to and
/// including its final one (an error or a copy summary); then closes, as a
/// real client does (the agent waits for that close).
pub fn exchange_until_final(agent: &Agent, bytes: &[u8]) -> Vec<Frame> {
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    // The agent may refuse (and stop reading) before taking every byte.
    let _ = sock.write_all(bytes);
    read_until_final(&mut sock).0
}

/// How [`read_until_final`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// An error or a copy summary arrived.
    Final,
    /// The peer closed the connection first.
    Closed,
    /// Nothing came for 30 s (the test's deadline), or the read failed.
    Silent,
}

/// Reads frames from `sock` up to and including the final one (an error or
/// a copy summary), the peer's close, or 30 s of silence.
pub fn read_until_final(sock: &mut UnixStream) -> (Vec<Frame>, End) {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            let last = matches!(
                frame,
                Frame::Control(Control::Error(_) | Control::CopySummary(_))
            );
            frames.push(frame);
            if last {
                return (frames, End::Final);
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) => return (frames, End::Closed),
            Err(_) => return (frames, End::Silent),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A fake agent on `path` that answers every connection's handshake, then
/// never answers its request: each request it receives is sent to the
/// returned channel. Its threads end when their connections close.
#[allow(dead_code)] // not every test file needs a silent agent
pub fn silent_agent(path: &std::path::Path) -> std::sync::mpsc::Receiver<Request> {
    let listener = UnixListener::bind(path).unwrap();
    let (requests, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { break };
            let requests = requests.clone();
            std::thread::spawn(move || {
                let welcome = guestcomm_protocol::message::Welcome {
                    version: ProtocolVersion::CURRENT,
                    features: vec![],
                    auth: "none".into(),
                    agent: "silent".into(),
                };
                let mut codec = FrameCodec::new();
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = sock.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(frame)) = codec.decode(&mut buf) {
                        match frame {
                            Frame::Control(Control::Hello(_)) => {
                                let welcome = Frame::Control(Control::Welcome(welcome.clone()));
                                if sock.write_all(&encode(vec![welcome])).is_err() {
                                    return;
                                }
                            }
                            Frame::Control(Control::Request(request)) => {
                                let _ = requests.send(request);
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
    });
    received
}
