//! The agent at the protocol level: hostile or broken input gets one clear
//! error frame and the agent keeps serving; pty resize through the client
//! library; a hostile agent cannot crash the CLI.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use guestcomm_protocol::handshake::default_hello;
use guestcomm_protocol::message::{Call, ExecRequest, ProtocolVersion};
use guestcomm_protocol::{
    BuiltinService, Control, ErrorCode, Frame, FrameCodec, ServiceId, WindowSize,
};
use tokio_util::codec::Decoder;
use util::wire::{encode, exchange, exec_request, final_error, hello, hostile_agent, request};
use util::Agent;

#[test]
fn bad_input_gets_one_clear_error_and_the_agent_keeps_serving() {
    let mut agent = Agent::start();
    let mut oversized = vec![0x7f, 0xff, 0xff, 0xff, 0x00];
    oversized.extend_from_slice(b"xxxx");
    let mut wrong_version = default_hello("test");
    wrong_version.version = ProtocolVersion { major: 9, minor: 0 };
    let exec_true = Call::Exec(ExecRequest {
        program: "true".into(),
        ..Default::default()
    });
    let cases: Vec<(&str, Vec<u8>, bool, ErrorCode, &str)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            false,
            ErrorCode::MalformedFrame,
            "exceeds",
        ),
        (
            "oversized length",
            oversized.clone(),
            false,
            ErrorCode::MalformedFrame,
            // Before authentication, a hello is bounded far below a frame.
            "exceeds the 8192-byte limit",
        ),
        (
            "oversized request",
            [encode(vec![hello()]), oversized].concat(),
            false,
            ErrorCode::MalformedFrame,
            "exceeds the 1048576-byte limit",
        ),
        (
            "truncated frame",
            vec![0, 0, 0, 100, 0, b'{'],
            true,
            ErrorCode::MalformedFrame,
            "middle of a frame",
        ),
        (
            "unknown kind",
            vec![0, 0, 0, 1, 9, 0],
            false,
            ErrorCode::MalformedFrame,
            "unknown frame kind 0x09",
        ),
        (
            "bad json",
            vec![0, 0, 0, 1, 0, b'{'],
            false,
            ErrorCode::MalformedFrame,
            "malformed control message",
        ),
        (
            "wrong version",
            encode(vec![Frame::Control(Control::Hello(wrong_version))]),
            false,
            ErrorCode::UnsupportedVersion,
            "9.0",
        ),
        (
            "data before hello",
            encode(vec![Frame::Data(
                guestcomm_protocol::StreamId::Stdin,
                "x".into(),
            )]),
            false,
            ErrorCode::UnexpectedMessage,
            "expected hello",
        ),
        (
            "unknown service",
            encode(vec![
                hello(),
                request(ServiceId::from_vsock_port(4242), exec_true.clone()),
            ]),
            false,
            ErrorCode::UnknownService,
            "00001092-facb-11e6-bd58-64006a7986d3",
        ),
        (
            "request the service cannot do",
            encode(vec![
                hello(),
                request(BuiltinService::Files.id(), exec_true),
            ]),
            false,
            ErrorCode::UnsupportedRequest,
            "files",
        ),
        (
            "empty program",
            encode(vec![
                hello(),
                request(
                    BuiltinService::Exec.id(),
                    Call::Exec(ExecRequest::default()),
                ),
            ]),
            false,
            ErrorCode::InvalidArgument,
            "empty program",
        ),
        (
            "truncated handshake",
            encode(vec![hello()])[..7].to_vec(),
            true,
            ErrorCode::MalformedFrame,
            "middle of a frame",
        ),
    ];
    for (name, bytes, half_close, code, text) in cases {
        let frames = exchange(&agent, &bytes, half_close);
        let (got_code, message) = final_error(&frames);
        assert_eq!(got_code, code, "{name}: {message}");
        assert!(message.contains(text), "{name}: {message:?} lacks {text:?}");
        assert!(!message.contains('\n'), "{name}: one line, got {message:?}");
        assert!(agent.is_running(), "{name}: the agent died");
    }
    assert_eq!(agent.exec(&["true"]).status.code(), Some(0));
}

#[tokio::test]
async fn pty_resize_reaches_the_guest_terminal() {
    let agent = Agent::start();
    let addr = agent.addr().parse().unwrap();
    let session = guestcomm_client::connect(&addr, "test").await.unwrap();
    let (to_cmd, cmd_stdin) = tokio::io::duplex(1024);
    let (input_tx, input_rx) = tokio::sync::mpsc::channel(4);
    let req = ExecRequest {
        program: "sh".into(),
        args: vec!["-c".into(), "stty size; read line; stty size".into()],
        tty: Some(WindowSize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let (out_w, mut out_r) = tokio::io::duplex(1 << 20);
    let io = guestcomm_client::ExecIo {
        stdin: Some(cmd_stdin),
        stdout: out_w,
        stderr: tokio::io::sink(),
        input: Some(input_rx),
    };
    let run = tokio::spawn(guestcomm_client::exec(session.conn, req, io, |_| {}));
    // Wait for the first size, then resize and let the script go on.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("24 80") {
        let mut buf = [0u8; 256];
        let n = tokio::io::AsyncReadExt::read(&mut out_r, &mut buf)
            .await
            .unwrap();
        assert!(
            n > 0,
            "output ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    input_tx
        .send(guestcomm_client::ExecInput::Resize(WindowSize {
            rows: 50,
            cols: 132,
        }))
        .await
        .unwrap();
    let mut to_cmd = to_cmd;
    tokio::io::AsyncWriteExt::write_all(&mut to_cmd, b"go\r")
        .await
        .unwrap();
    let status = run.await.unwrap().unwrap();
    assert_eq!(status.code, Some(0));
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut out_r, &mut rest)
        .await
        .unwrap();
    seen.extend_from_slice(&rest);
    assert!(
        String::from_utf8_lossy(&seen).contains("50 132"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn a_hostile_agent_gets_the_cli_to_fail_cleanly_not_crash() {
    let started = encode(vec![Frame::Control(Control::ExecStarted { pid: 1 })]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized frame",
            vec![0xff, 0xff, 0xff, 0xff, 0x02],
            "exceeds",
        ),
        (
            "garbage after start",
            [started.clone(), b"\x00\x00\x00\x02\x07zz".to_vec()].concat(),
            "unknown frame kind",
        ),
        (
            "closed mid-command",
            started.clone(),
            "closed before the command finished",
        ),
        (
            "stdin data from the agent",
            [
                started,
                encode(vec![Frame::Data(
                    guestcomm_protocol::StreamId::Stdin,
                    "x".into(),
                )]),
            ]
            .concat(),
            "protocol error",
        ),
    ];
    for (name, reply, text) in cases {
        let (_dir, addr, thread) = hostile_agent(reply);
        let out = std::process::Command::new(util::bin("guestcomm"))
            .args(["exec", "-n", &addr, "--", "true"])
            .output()
            .unwrap();
        thread.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{name}: {err}");
        assert!(err.contains(text), "{name}: {err:?} lacks {text:?}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn a_whole_session_sent_in_one_burst_is_served() {
    // Hello, request, stdin and its end in a single write: the agent must
    // decode what it buffered during the handshake, not wait for more bytes.
    let agent = Agent::start();
    let cat = Call::Exec(ExecRequest {
        program: "cat".into(),
        ..Default::default()
    });
    let burst = encode(vec![
        hello(),
        request(BuiltinService::Exec.id(), cat),
        Frame::Data(guestcomm_protocol::StreamId::Stdin, "hello".into()),
        Frame::Control(Control::Eof {
            stream: guestcomm_protocol::StreamId::Stdin,
        }),
    ]);
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&burst).unwrap();
    let (stdout, status) = until_exited(&mut sock, &mut BytesMut::new());
    assert_eq!(stdout, b"hello");
    assert_eq!(status.code, Some(0));
}

/// Reads one exec's frames from `sock` up to its `exited`: its stdout and
/// status. `buf` keeps bytes that arrived after it, for the next operation.
fn until_exited(
    sock: &mut UnixStream,
    buf: &mut BytesMut,
) -> (Vec<u8>, guestcomm_protocol::ExitStatus) {
    let mut stdout = Vec::new();
    let mut status = None;
    for frame in util::wire::frames_until_exited(sock, buf) {
        match frame {
            Frame::Data(guestcomm_protocol::StreamId::Stdout, data) => {
                stdout.extend_from_slice(&data)
            }
            Frame::Control(Control::Exited(exited)) => status = Some(exited),
            _ => {}
        }
    }
    (stdout, status.expect("the frames end with exited"))
}

#[test]
fn one_connection_carries_execs_one_after_another_when_both_sides_offer_reuse() {
    use guestcomm_protocol::StreamId::Stdin;
    let agent = Agent::start();
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    // The first command does not read its stdin, which may reach the agent
    // after `exited`: dropped there, not taken for the next request.
    sock.write_all(&encode(vec![
        Frame::Control(Control::Hello(
            guestcomm_protocol::handshake::reusable_hello("test"),
        )),
        exec_request("true", &[]),
        Frame::Data(Stdin, vec![b'x'; 300_000].into()),
        Frame::Control(Control::Eof { stream: Stdin }),
    ]))
    .unwrap();
    let mut buf = BytesMut::new();
    let (out, status) = until_exited(&mut sock, &mut buf);
    assert_eq!((out.as_slice(), status.code), (&b""[..], Some(0)));

    sock.write_all(&encode(vec![exec_request(
        "sh",
        &["-c", "echo second; exit 3"],
    )]))
    .unwrap();
    let (out, status) = until_exited(&mut sock, &mut buf);
    assert_eq!((out.as_slice(), status.code), (&b"second\n"[..], Some(3)));

    // A refused request is the connection's last frame, as without reuse.
    sock.write_all(&encode(vec![exec_request(
        "no-such-command-guestcomm",
        &[],
    )]))
    .unwrap();
    let (frames, end) = util::wire::read_until_final(&mut sock);
    let (code, message) = final_error(&frames);
    assert_eq!(code, ErrorCode::CommandNotFound, "{message}");
    assert_eq!(end, util::wire::End::Final);
}

#[test]
fn a_client_that_does_not_offer_reuse_gets_one_operation_per_connection() {
    let agent = Agent::start();
    // The default hello does not offer reuse (a relay's must not).
    let one_shot = default_hello("test");
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![
        Frame::Control(Control::Hello(one_shot)),
        exec_request("true", &[]),
    ]))
    .unwrap();
    let mut buf = BytesMut::new();
    let (_, status) = until_exited(&mut sock, &mut buf);
    assert_eq!(status.code, Some(0));
    // A second request is not served: the agent waits for the close,
    // dropping what comes, then closes (within its linger bound).
    sock.write_all(&encode(vec![exec_request("sh", &["-c", "echo no"])]))
        .unwrap();
    let (frames, end) = util::wire::read_until_final(&mut sock);
    assert!(buf.is_empty() && frames.is_empty(), "{frames:?}");
    assert_eq!(end, util::wire::End::Closed);
}

#[tokio::test]
async fn the_library_runs_commands_one_after_another_on_one_session() {
    let agent = Agent::start();
    let addr = agent.addr().parse().unwrap();
    let one_shot = guestcomm_client::connect(&addr, "test").await.unwrap();
    assert!(!one_shot.reusable(), "reuse is offered only when asked for");
    drop(one_shot);
    let session = guestcomm_client::connect_reusable(&addr, "test", None)
        .await
        .unwrap();
    assert!(session.reusable(), "{:?}", session.welcome.features);
    let mut conn = session.conn;
    for round in 0..3u8 {
        let req = ExecRequest {
            program: "sh".into(),
            args: vec!["-c".into(), format!("cat; echo {round} >&2; exit {round}")],
            ..Default::default()
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let io = guestcomm_client::ExecIo {
            stdin: Some(std::io::Cursor::new(format!("input {round}\n"))),
            stdout: &mut stdout,
            stderr: &mut stderr,
            input: None,
        };
        let (status, open) = guestcomm_client::exec_reusing(conn, req, io, |_| {})
            .await
            .unwrap();
        assert_eq!(status.code, Some(i32::from(round)));
        assert_eq!(String::from_utf8_lossy(&stdout), format!("input {round}\n"));
        assert_eq!(String::from_utf8_lossy(&stderr), format!("{round}\n"));
        conn = open.expect("the connection can carry another request");
    }
}

/// The agent's `heartbeat` answer on `conn`, and the connection back.
async fn heartbeat_on(
    conn: guestcomm_protocol::FramedConn<guestcomm_transport::Stream>,
) -> (
    guestcomm_protocol::integration::AgentCounters,
    guestcomm_protocol::FramedConn<guestcomm_transport::Stream>,
) {
    let (answer, conn) = guestcomm_client::integration::call_on(
        conn,
        guestcomm_protocol::Call::Heartbeat { counters: true },
    )
    .await
    .expect("a heartbeat answer");
    match answer {
        Control::AgentCounters(counters) => (counters, conn),
        other => panic!("not the agent's counters: {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_then_an_exec_share_one_connection_when_both_sides_offer_reuse() {
    let agent = Agent::start();
    let addr = agent.addr().parse().unwrap();
    let session = guestcomm_client::connect_reusable(&addr, "test", None)
        .await
        .unwrap();
    assert!(session.reusable(), "{:?}", session.welcome.features);
    let mut conn = session.conn;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (counters, open) = heartbeat_on(conn).await;
        seen.push((counters.connections, counters.requests["heartbeat"]));
        conn = open;
    }
    // No connection accepted after ours (the harness's readiness check came
    // before); each heartbeat counted as it came.
    let ours = seen[0].0;
    assert_eq!(seen, [(ours, 1), (ours, 2), (ours, 3)]);
    // A liveness heartbeat (no counters asked) is answered `done` and the
    // connection stays open for the next request.
    let (answer, open) = guestcomm_client::integration::call_on(
        conn,
        guestcomm_protocol::Call::Heartbeat { counters: false },
    )
    .await
    .expect("a liveness answer");
    assert_eq!(answer, Control::Done);
    conn = open;
    let mut stdout = Vec::new();
    let io = guestcomm_client::ExecIo {
        stdin: None::<std::io::Cursor<Vec<u8>>>,
        stdout: &mut stdout,
        stderr: &mut Vec::new(),
        input: None,
    };
    let req = ExecRequest {
        program: "sh".into(),
        args: vec!["-c".into(), "echo after the heartbeats".into()],
        ..Default::default()
    };
    let (status, open) = guestcomm_client::exec_reusing(conn, req, io, |_| {})
        .await
        .unwrap();
    assert_eq!(status.code, Some(0));
    assert_eq!(stdout, b"after the heartbeats\n");
    let (counters, _) = heartbeat_on(open.expect("reusable after the exec")).await;
    assert_eq!(counters.connections, ours);
    assert_eq!(counters.requests["exec"], 1);
    assert_eq!(
        counters.requests["heartbeat"], 5,
        "the liveness one counted too"
    );
}

#[tokio::test]
async fn without_reuse_a_heartbeat_is_the_connections_last_answer() {
    let agent = Agent::start();
    let addr = agent.addr().parse().unwrap();
    let session = guestcomm_client::connect(&addr, "test").await.unwrap();
    let (counters, conn) = heartbeat_on(session.conn).await;
    assert_eq!(counters.requests["heartbeat"], 1);
    // The agent drops a second request and closes within its linger bound.
    let second = guestcomm_client::integration::call_on(
        conn,
        guestcomm_protocol::Call::Heartbeat { counters: true },
    )
    .await;
    assert!(
        matches!(
            second,
            Err(guestcomm_client::integration::CallError::Disconnected)
        ),
        "{second:?}"
    );
    let session = guestcomm_client::connect(&addr, "test").await.unwrap();
    let (counters, _) = heartbeat_on(session.conn).await;
    assert_eq!(
        counters.requests["heartbeat"], 2,
        "the dropped request was never served"
    );
}

#[test]
fn stdin_after_its_eof_is_an_unexpected_message_that_ends_the_command() {
    use guestcomm_protocol::StreamId::Stdin;
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = util::guest_loop_script(&pidfile, "");
    let run = Call::Exec(ExecRequest {
        program: "sh".into(),
        args: vec!["-c".into(), script],
        ..Default::default()
    });
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![
        hello(),
        request(BuiltinService::Exec.id(), run),
    ]))
    .unwrap();
    // Once the command runs, its stdin ends, and then more stdin comes.
    assert!(util::wait_until(util::STARTUP_DEADLINE, || pidfile.exists()));
    let stray = encode(vec![
        Frame::Data(Stdin, "a".into()),
        Frame::Control(Control::Eof { stream: Stdin }),
        Frame::Data(Stdin, "b".into()),
    ]);
    sock.write_all(&stray).unwrap();
    let (frames, _) = util::wire::read_until_final(&mut sock);
    let (code, message) = final_error(&frames);
    assert_eq!(code, ErrorCode::UnexpectedMessage, "{message}");
    assert!(message.contains("after eof stdin"), "{message}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        util::wait_until(util::STARTUP_DEADLINE, || !util::process_alive(pid)),
        "the command outlived the refused session"
    );
}

#[tokio::test]
async fn ctrl_c_typed_into_the_pty_interrupts_the_guest_program() {
    let agent = Agent::start();
    let addr = agent.addr().parse().unwrap();
    let session = guestcomm_client::connect(&addr, "test").await.unwrap();
    let (mut keyboard, cmd_stdin) = tokio::io::duplex(1024);
    let req = ExecRequest {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "trap 'exit 42' INT; echo ready; while :; do sleep 0.05; done".into(),
        ],
        tty: Some(WindowSize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let (out_w, mut out_r) = tokio::io::duplex(1 << 20);
    let io = guestcomm_client::ExecIo {
        stdin: Some(cmd_stdin),
        stdout: out_w,
        stderr: tokio::io::sink(),
        input: None,
    };
    let run = tokio::spawn(guestcomm_client::exec(session.conn, req, io, |_| {}));
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let mut buf = [0u8; 256];
        let n = tokio::io::AsyncReadExt::read(&mut out_r, &mut buf)
            .await
            .unwrap();
        assert!(
            n > 0,
            "output ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // What a raw-mode local terminal sends for Ctrl-C: the byte 0x03.
    tokio::io::AsyncWriteExt::write_all(&mut keyboard, b"\x03")
        .await
        .unwrap();
    let status = run.await.unwrap().unwrap();
    assert_eq!(status.code, Some(42));
}

#[test]
fn at_the_connection_cap_newcomers_are_refused_and_service_resumes() {
    let agent = Agent::start_with(&["--max-connections", "2"]);
    // Open connections that finish their handshake and then send nothing,
    // until one is refused: the ones kept hold the slots (a slot is taken
    // once the client is authenticated; a refused connection gets its error
    // frame instead of the Welcome).
    let mut held = Vec::new();
    let refused = util::wait_until(Duration::from_secs(60), || {
        let mut sock = UnixStream::connect(&agent.socket).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        sock.write_all(&encode(vec![hello()])).unwrap();
        let mut reply = [0u8; 1024];
        let refused = match sock.read(&mut reply) {
            Ok(n) if n > 0 => {
                let mut buf = BytesMut::from(&reply[..n]);
                matches!(
                    FrameCodec::new().decode(&mut buf),
                    Ok(Some(Frame::Control(Control::Error(e)))) if e.code == ErrorCode::ResourceLimit
                )
            }
            _ => false,
        };
        if !refused {
            held.push(sock);
        }
        refused
    });
    assert!(refused, "no connection was refused with resource_limit");
    drop(held);
    let served = util::wait_until(Duration::from_secs(30), || {
        agent.exec(&["true"]).status.success()
    });
    assert!(
        served,
        "the agent did not serve again after connections closed"
    );
}

/// Reads frames from `sock` until `done` says so (30 s at most, else the
/// test fails), each with the number of the read that completed it.
fn frames_by_read(sock: &mut UnixStream, done: impl Fn(&[Frame]) -> bool) -> Vec<(usize, Frame)> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut buf, mut codec) = (BytesMut::new(), FrameCodec::new());
    let mut frames: Vec<(usize, Frame)> = Vec::new();
    let mut reads = 0;
    loop {
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push((reads, frame));
        }
        let seen: Vec<Frame> = frames.iter().map(|(_, f)| f.clone()).collect();
        if done(&seen) {
            return frames;
        }
        let mut chunk = [0u8; 4096];
        let n = sock
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("nothing more within 30 s ({e}); so far {seen:?}"));
        assert!(n > 0, "the agent closed the connection; so far {seen:?}");
        buf.extend_from_slice(&chunk[..n]);
        reads += 1;
    }
}

fn is_eof(frame: &Frame, stream: guestcomm_protocol::StreamId) -> bool {
    matches!(frame, Frame::Control(Control::Eof { stream: s }) if *s == stream)
}

#[test]
fn output_eofs_come_with_exited_and_still_come_while_a_command_runs_on() {
    use guestcomm_protocol::StreamId::{Stderr, Stdin, Stdout};
    let agent = Agent::start();
    let exited = |frames: &[Frame]| {
        frames
            .iter()
            .any(|f| matches!(f, Frame::Control(Control::Exited(_))))
    };

    // A command that ends: its outputs' ends and its exit reach the host in
    // one write, so in one read. (The agent sends the `eof`s first when the
    // exit comes more than its grace after them, which a loaded host can
    // make happen once: three tries.)
    let in_one_read = |_| {
        let mut sock = UnixStream::connect(&agent.socket).unwrap();
        sock.write_all(&encode(vec![
            hello(),
            exec_request("true", &[]),
            Frame::Control(Control::Eof { stream: Stdin }),
        ]))
        .unwrap();
        let frames = frames_by_read(&mut sock, exited);
        let read_of = |what: &dyn Fn(&Frame) -> bool| {
            frames
                .iter()
                .find(|(_, f)| what(f))
                .unwrap_or_else(|| panic!("missing from {frames:?}"))
                .0
        };
        let exit_read = read_of(&|f| matches!(f, Frame::Control(Control::Exited(_))));
        let together = read_of(&|f| is_eof(f, Stdout)) == exit_read
            && read_of(&|f| is_eof(f, Stderr)) == exit_read;
        together.then_some(()).ok_or(frames)
    };
    let tries: Vec<_> = (0..3).map(in_one_read).collect();
    assert!(tries.iter().any(Result::is_ok), "{tries:?}");

    // A command that closes its outputs and runs on (here until its stdin
    // brings a line): the host learns of their end while it runs.
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![
        hello(),
        exec_request("sh", &["-c", "exec >&- 2>&-; read line; exit 7"]),
    ]))
    .unwrap();
    let both_ended = |frames: &[Frame]| {
        frames.iter().any(|f| is_eof(f, Stdout)) && frames.iter().any(|f| is_eof(f, Stderr))
    };
    let frames = frames_by_read(&mut sock, |f| both_ended(f) || exited(f));
    let frames: Vec<Frame> = frames.into_iter().map(|(_, f)| f).collect();
    assert!(!exited(&frames), "exited before its stdin came: {frames:?}");
    sock.write_all(&encode(vec![
        Frame::Data(Stdin, "go on\n".into()),
        Frame::Control(Control::Eof { stream: Stdin }),
    ]))
    .unwrap();
    let frames = frames_by_read(&mut sock, exited);
    match &frames.last().unwrap().1 {
        Frame::Control(Control::Exited(status)) => assert_eq!(status.code, Some(7)),
        other => panic!("expected exited, got {other:?}"),
    }
}

#[test]
fn a_silent_command_still_has_its_exec_started_while_it_runs() {
    // A command that writes nothing and runs on (until its stdin brings a
    // line) is reported started while it runs, not with its first output
    // or its end.
    use guestcomm_protocol::StreamId::Stdin;
    let agent = Agent::start();
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![
        hello(),
        exec_request("sh", &["-c", "read line; echo \"$line\""]),
    ]))
    .unwrap();
    let started = |frames: &[Frame]| {
        frames
            .iter()
            .any(|f| matches!(f, Frame::Control(Control::ExecStarted { .. })))
    };
    let frames: Vec<Frame> = frames_by_read(&mut sock, started)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Data(..) | Frame::Control(Control::Exited(_)))),
        "{frames:?}"
    );
    sock.write_all(&encode(vec![
        Frame::Data(Stdin, "hello\n".into()),
        Frame::Control(Control::Eof { stream: Stdin }),
    ]))
    .unwrap();
    let mut buf = BytesMut::new();
    let rest = util::wire::frames_until_exited(&mut sock, &mut buf);
    let out: Vec<u8> = rest
        .iter()
        .filter_map(|f| match f {
            Frame::Data(guestcomm_protocol::StreamId::Stdout, d) => Some(d.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out, b"hello\n");
}
