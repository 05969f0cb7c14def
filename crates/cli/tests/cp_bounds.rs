//! Every wait of a copy has a bound, with real processes (the refusal of
//! `cp --resume` onto an existing file, at once in both directions, is in
//! `cp.rs`): a peer that stops in the middle of a copy (a sender
//! driven by hand, a fake agent, a host that stops answering the agent, a
//! client through guestcommd) ends the copy with a "stalled" error after
//! the configured idle timeout; a `guestcomm cp` killed by SIGINT, SIGTERM
//! or SIGHUP leaves no temporary file. Every wait in here has a deadline,
//! so a regression fails instead of hanging.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use guestcomm_protocol::files::{CopyFromGuest, EntryKind};
use guestcomm_protocol::{BuiltinService, Call, Control, ErrorCode, Frame};
use util::copy::{
    copy_to_guest_request, cp_within_deadline, data, entry, output_within_deadline, temp_files,
};
use util::daemon::{AgentAt, Daemon};
use util::wire::{encode, exchange_until_final, hello, read_until_final, request, End};
use util::{bin, Agent, STARTUP_DEADLINE};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The error frame that ended `frames`.
fn last_error(frames: &[Frame]) -> (ErrorCode, String) {
    match frames.last() {
        Some(Frame::Control(Control::Error(e))) => (e.code, e.message.clone()),
        other => panic!("expected an error frame last, got {other:?}"),
    }
}

#[test]
fn a_sender_that_stops_mid_file_is_reported_stalled_by_the_agent() {
    let agent = Agent::start_with(&["--copy-idle-timeout", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("f");
    // 3 bytes of 10, then nothing (the connection stays open).
    let frames = vec![
        hello(),
        copy_to_guest_request(&dst, false),
        entry("f", EntryKind::File, 10, None),
        data(b"abc"),
    ];
    let reply = exchange_until_final(&agent, &encode(frames));
    let (code, message) = last_error(&reply);
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(
        message.contains("stalled") && message.contains("the receiver got nothing from the sender"),
        "{message}"
    );
    assert!(util::wait_until(STARTUP_DEADLINE, || temp_files(
        dir.path()
    )
    .is_empty()));
    assert!(!dst.exists());
}

#[test]
fn a_host_that_stops_answering_is_reported_stalled_by_the_sending_agent() {
    let agent = Agent::start_with(&["--copy-idle-timeout", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::write(&src, "content").unwrap();
    // A resumed copy out of the guest: the agent sends the entry and waits
    // for a resume_from that never comes.
    let req = request(
        BuiltinService::Files.id(),
        Call::CopyFromGuest(CopyFromGuest {
            src: s(&src).into(),
            recursive: false,
            resume: true,
            ..CopyFromGuest::default()
        }),
    );
    let mut sock = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    std::io::Write::write_all(&mut sock, &encode(vec![hello(), req])).unwrap();
    let (frames, end) = read_until_final(&mut sock);
    assert_eq!(end, End::Final, "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Control(Control::Entry(e)) if e.path == "src")),
        "{frames:?}"
    );
    let (code, message) = last_error(&frames);
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(message.contains("no resume_from"), "{message}");
    // After a stall the agent closes at once, without waiting for the host.
    let (rest, end) = read_until_final(&mut sock);
    assert_eq!((rest.len(), end), (0, End::Closed));
}

#[test]
fn an_agent_that_stops_mid_file_is_reported_stalled_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (_sock_dir, addr, thread) = util::wire::stalling_agent(encode(vec![
        entry("f", EntryKind::File, 10 << 20, None),
        data(b"abc"),
    ]));
    let out = cp_within_deadline(&["--idle-timeout", "1", &format!("{addr}:/f"), s(dir.path())]);
    thread.join().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the copy stalled: the receiver got nothing from the sender for 1s"),
        "{}",
        stderr(&out)
    );
    assert!(temp_files(dir.path()).is_empty());
    assert!(!dir.path().join("f").exists());
}

#[test]
fn a_receiver_that_never_answers_is_reported_stalled_by_the_sending_cli() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::write(&src, "content").unwrap();
    let ready = encode(vec![Frame::Control(Control::CopyReady)]);
    // With --resume the CLI waits for the answer to its entry; without, for
    // the summary after its last frame. The fake agent reads and says no
    // more.
    for (resume, waited_for) in [(true, "no resume_from"), (false, "no copy_summary")] {
        let (_sock_dir, addr, thread) = util::wire::stalling_agent(ready.clone());
        let dst = format!("{addr}:/dst");
        let mut args = vec!["--idle-timeout", "1", s(&src), &dst];
        if resume {
            args.insert(0, "--resume");
        }
        let out = cp_within_deadline(&args);
        thread.join().unwrap();
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("stalled") && stderr(&out).contains(waited_for),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_stalled_copy_through_guestcommd_is_ended_by_the_agent_or_by_the_relay() {
    let daemon = Daemon::start_with("off", &["--copy-idle-timeout", "5s"]);
    let dir = tempfile::tempdir().unwrap();
    // One agent reports a stall after 1 s, before the relay's 5 s; the
    // other keeps its default (60 s), so the relay's bound ends the copy.
    let quick_socket = daemon.dir.path().join("quick.sock");
    let slow_socket = daemon.dir.path().join("slow.sock");
    let _quick = AgentAt::start_with(&quick_socket, &["--copy-idle-timeout", "1"]);
    let _slow = AgentAt::start(&slow_socket);
    for (name, socket) in [("quick", &quick_socket), ("slow", &slow_socket)] {
        let endpoint = format!("unix://{}", socket.display());
        daemon.ok(&["vm", "add", name, "--endpoint", &endpoint]);
    }
    let stall = |vm: &str| {
        let dst = dir.path().join(vm);
        let mut sock = daemon.raw_connect(vm);
        let frames = vec![
            hello(),
            copy_to_guest_request(&dst, false),
            entry(vm, EntryKind::File, 10, None),
            data(b"abc"),
        ];
        std::io::Write::write_all(&mut sock, &encode(frames)).unwrap();
        let (frames, end) = read_until_final(&mut sock);
        assert!(
            util::wait_until(STARTUP_DEADLINE, || temp_files(dir.path()).is_empty()),
            "{vm}: temporary file left"
        );
        (frames, end)
    };

    // The agent's own bound: its error reaches the client through the relay.
    let (frames, end) = stall("quick");
    assert_eq!(end, End::Final, "{frames:?}");
    let (code, message) = last_error(&frames);
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(message.contains("stalled"), "{message}");

    // The relay's bound: both connections closed, no frame of its own.
    let (frames, end) = stall("slow");
    assert_eq!(end, End::Closed, "{frames:?}");
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Control(Control::Error(_)))),
        "{frames:?}"
    );

    let outcome_of = |vm: &str| {
        let records = daemon.audit_settled(&["--vm", vm]);
        let record = records
            .iter()
            .find(|r| r["operation"] == "cp.to_guest")
            .unwrap_or_else(|| panic!("no copy record for {vm}: {records:#?}"));
        (
            record["outcome"].as_str().unwrap().to_string(),
            record["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (outcome, error) = outcome_of("quick");
    assert_eq!(outcome, "failed", "{error}");
    assert!(error.contains("stalled"), "{error}");
    let (outcome, error) = outcome_of("slow");
    assert_eq!(outcome, "stalled", "{error}");
    assert!(error.contains("no byte moved either way for 5s"), "{error}");
    // The relay slot and the agent connection were released: the VM
    // serves the next operation.
    let src = dir.path().join("next");
    fs::write(&src, "next").unwrap();
    let out = daemon.run(&[
        "cp",
        s(&src),
        &format!("slow:{}", s(&dir.path().join("landed"))),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sigint_sigterm_and_sighup_in_the_middle_of_a_file_remove_its_temporary_file() {
    use nix::sys::signal::Signal;
    for (signal, code) in [
        (Signal::SIGINT, 130),
        (Signal::SIGTERM, 143),
        (Signal::SIGHUP, 129),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // An agent that sends 3 bytes of a 10 MiB file, then nothing.
        let (_sock_dir, addr, thread) = util::wire::stalling_agent(encode(vec![
            entry("f", EntryKind::File, 10 << 20, None),
            data(b"abc"),
        ]));
        let child = Command::new(bin("guestcomm"))
            .args(["cp", &format!("{addr}:/f"), s(dir.path())])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(util::wait_until(STARTUP_DEADLINE, || !temp_files(
            dir.path()
        )
        .is_empty()));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let out = output_within_deadline(child);
        thread.join().unwrap();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("interrupted; nothing partial was kept"),
            "{signal}: {}",
            stderr(&out)
        );
        assert!(temp_files(dir.path()).is_empty(), "{signal}");
        assert!(!dir.path().join("f").exists(), "{signal}");
    }
}
