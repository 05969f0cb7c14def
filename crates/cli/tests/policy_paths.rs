//! Copy path policy at the moment of use, with the real binaries: a
//! symbolic link inside an allowed directory (copied there by the operator
//! himself, or planted between the request and the copy's first entry)
//! never leads a copy out of it, in either direction, under the host's
//! policy, the guest's, or both; a daemon whose policy restricts copy
//! paths relays no copy to an agent that cannot enforce it; and the audit
//! never records such a copy as done.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use guestcomm_protocol::files::{CopyToGuest, EntryKind};
use guestcomm_protocol::message::{ProtocolVersion, Welcome};
use guestcomm_protocol::{BuiltinService, Call, Control, ErrorCode, Frame, FrameCodec};
use serde_json::Value;
use tokio_util::codec::Decoder;
use util::copy::{data, entry};
use util::daemon::Daemon;
use util::wire::{encode, hello, read_until_final, request};
use util::Agent;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn set_policy(d: &Daemon, vm: &str, doc: &str) {
    let out = d.run_with_stdin(&["policy", "set", vm, "-"], doc.as_bytes().to_vec());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn refused_for_leaving(out: &Output, root: &Path) {
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("leads outside") && err.contains(&root.display().to_string()),
        "{err}"
    );
}

/// The audit record of the copy whose arguments contain `args`.
fn copy_record(d: &Daemon, op: &str, args: &str) -> Value {
    let records = d.audit_settled(&["--vm", "vm1"]);
    records
        .into_iter()
        .find(|r| r["operation"] == op && r["arguments"].as_str().unwrap().contains(args))
        .unwrap_or_else(|| panic!("no {op} record with {args:?}"))
}

#[test]
fn a_symlink_copied_into_an_allowed_directory_leads_no_copy_out_of_it() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let inbox = d.dir.path().join("in");
    let etc = d.dir.path().join("etc");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("secret"), b"root only").unwrap();
    set_policy(
        &d,
        "vm1",
        &format!(
            "[cp]\nto_guest = [\"{0}\"]\nfrom_guest = [\"{0}\"]\n",
            inbox.display()
        ),
    );

    // The operator copies in a tree holding a link out (allowed: a link
    // is only a name), then copies through the link.
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    symlink(&etc, tree.join("esc")).unwrap();
    symlink("../../etc", tree.join("rel")).unwrap();
    let guest = |p: &str| format!("vm1:{}", inbox.join(p).display());
    d.ok(&["cp", "-r", tree.to_str().unwrap(), &guest("")]);
    assert!(std::fs::symlink_metadata(inbox.join("t/esc"))
        .unwrap()
        .is_symlink());

    let payload = local.path().join("x");
    std::fs::write(&payload, b"pwned").unwrap();
    for through in ["t/esc/x", "t/rel/x", "t/esc"] {
        let out = d.run(&["cp", "--force", payload.to_str().unwrap(), &guest(through)]);
        refused_for_leaving(&out, &inbox);
    }
    assert!(!etc.join("x").exists() && !etc.join("esc").exists());
    assert_eq!(std::fs::read(etc.join("secret")).unwrap(), b"root only");

    let got = tempfile::tempdir().unwrap();
    for through in ["t/esc/secret", "t/rel/secret"] {
        let out = d.run(&["cp", &guest(through), got.path().to_str().unwrap()]);
        refused_for_leaving(&out, &inbox);
    }
    let out = d.run(&["cp", "-r", &guest("t/esc"), got.path().to_str().unwrap()]);
    refused_for_leaving(&out, &inbox);
    assert!(!got.path().join("secret").exists() && !got.path().join("esc").exists());

    // Sent back, the tree's links stay links: nothing behind them travels.
    d.ok(&["cp", "-r", &guest("t"), got.path().to_str().unwrap()]);
    let back = got.path().join("t/esc");
    assert!(std::fs::symlink_metadata(&back).unwrap().is_symlink());
    // A link that stays inside still works.
    symlink("t", inbox.join("inside")).unwrap();
    d.ok(&["cp", payload.to_str().unwrap(), &guest("inside/ok")]);
    assert_eq!(std::fs::read(inbox.join("t/ok")).unwrap(), b"pwned");

    // The audit does not say the refused copies were done.
    for (op, args) in [
        ("cp.to_guest", "t/esc/x"),
        ("cp.from_guest", "t/esc/secret"),
    ] {
        let record = copy_record(&d, op, args);
        assert_eq!(record["outcome"], "failed", "{record:#}");
        assert!(
            record["error"].as_str().unwrap().contains("leads outside"),
            "{record:#}"
        );
    }
}

#[test]
fn host_and_guest_prefixes_both_hold_and_a_link_between_them_is_refused() {
    let d = Daemon::start("off");
    let outer = d.dir.path().join("srv");
    let inner = outer.join("in");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::create_dir(outer.join("other")).unwrap();
    // Inside the host's directory, outside the guest's.
    symlink("../other", inner.join("side")).unwrap();
    let policy = d.dir.path().join("guest-policy.toml");
    std::fs::write(
        &policy,
        format!("[cp]\nto_guest = [\"{}\"]\n", inner.display()),
    )
    .unwrap();
    let (_agent, _) = d.agent_vm_with("vm1", &["--policy", policy.to_str().unwrap()]);
    set_policy(
        &d,
        "vm1",
        &format!("[cp]\nto_guest = [\"{}\"]\n", outer.display()),
    );
    let payload = d.dir.path().join("payload");
    std::fs::write(&payload, b"data").unwrap();
    let to = |p: &Path| format!("vm1:{}", p.display());
    d.ok(&["cp", payload.to_str().unwrap(), &to(&inner.join("ok"))]);
    assert_eq!(std::fs::read(inner.join("ok")).unwrap(), b"data");
    let out = d.run(&["cp", payload.to_str().unwrap(), &to(&inner.join("side/x"))]);
    refused_for_leaving(&out, &inner);
    assert!(!outer.join("other/x").exists());
}

/// A fake agent that advertises no `copy-beneath` and records every
/// request that reaches it.
fn agent_without_the_feature(socket: &Path) -> Arc<Mutex<Vec<Call>>> {
    let listener = UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut frames = FrameReader::new(&mut sock);
                if frames.next().is_none() {
                    return;
                }
                let welcome = Welcome {
                    version: ProtocolVersion::CURRENT,
                    features: vec!["exec".into(), "files".into()],
                    auth: "none".into(),
                    agent: "guestcomm-agent 0.old".into(),
                };
                let sock = frames.into_inner();
                let _ = sock.write_all(&encode(vec![Frame::Control(Control::Welcome(welcome))]));
                let mut frames = FrameReader::new(sock);
                while let Some(frame) = frames.next() {
                    if let Frame::Control(Control::Request(req)) = frame {
                        log.lock().unwrap().push(req.call);
                    }
                }
            });
        }
    });
    seen
}

#[test]
fn a_daemon_that_restricts_copy_paths_relays_none_to_an_agent_that_cannot_enforce_them() {
    let d = Daemon::start("off");
    let socket = d.dir.path().join("old-agent.sock");
    let seen = agent_without_the_feature(&socket);
    let endpoint = format!("unix://{}", socket.display());
    d.ok(&["vm", "add", "vm1", "--endpoint", &endpoint]);
    let inbox = d.dir.path().join("in");
    std::fs::create_dir(&inbox).unwrap();
    set_policy(
        &d,
        "vm1",
        &format!("[cp]\nto_guest = [\"{}\"]\n", inbox.display()),
    );
    let payload = d.dir.path().join("payload");
    std::fs::write(&payload, b"data").unwrap();
    let out = d.run(&[
        "cp",
        payload.to_str().unwrap(),
        &format!("vm1:{}", inbox.join("x").display()),
    ]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("copy-beneath") && err.contains("upgrade guestcomm-agent"),
        "{err}"
    );
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|c| matches!(c, Call::CopyToGuest(_))),
        "the copy reached the agent"
    );
    let record = copy_record(&d, "cp.to_guest", "in/x");
    assert_eq!(record["outcome"], "refused", "{record:#}");
}

/// Reads frames one at a time from a blocking socket, within 30 s each.
struct FrameReader<S> {
    sock: S,
    buf: BytesMut,
    codec: FrameCodec,
}

impl<S: Read> FrameReader<S> {
    fn new(sock: S) -> Self {
        Self {
            sock,
            buf: BytesMut::new(),
            codec: FrameCodec::new(),
        }
    }

    fn next(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).ok()? {
                return Some(frame);
            }
            match self.sock.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn into_inner(self) -> S {
        self.sock
    }
}

#[test]
fn a_symlink_planted_after_the_request_does_not_redirect_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let inbox = base.join("in");
    let etc = base.join("etc");
    std::fs::create_dir_all(inbox.join("sub")).unwrap();
    std::fs::create_dir(&etc).unwrap();
    let policy = base.join("guest-policy.toml");
    std::fs::write(
        &policy,
        format!("[cp]\nto_guest = [\"{}\"]\n", inbox.display()),
    )
    .unwrap();
    let agent = Agent::start_with(&["--policy", policy.to_str().unwrap()]);

    // The request names a directory inside; the agent checks it and says
    // ready. Only then is the directory swapped for a link out, before the
    // copy's first entry.
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = Call::CopyToGuest(CopyToGuest {
        dst: inbox.join("sub").display().to_string(),
        ..CopyToGuest::default()
    });
    sock.write_all(&encode(vec![
        hello(),
        request(BuiltinService::Files.id(), req),
    ]))
    .unwrap();
    let mut frames = FrameReader::new(&mut sock);
    assert!(matches!(
        frames.next(),
        Some(Frame::Control(Control::Welcome(_)))
    ));
    let ready = frames.next();
    assert!(
        matches!(ready, Some(Frame::Control(Control::CopyReady))),
        "{ready:?}"
    );
    std::fs::rename(inbox.join("sub"), base.join("moved")).unwrap();
    symlink(&etc, inbox.join("sub")).unwrap();

    let content: &'static [u8] = b"pwned";
    let hash = blake3::hash(content).to_hex().to_string();
    sock.write_all(&encode(vec![
        entry("passwd", EntryKind::File, content.len() as u64, None),
        data(content),
        Frame::Control(Control::EntryEnd { blake3: hash }),
        Frame::Control(Control::CopyEnd),
    ]))
    .unwrap();
    let (answer, _) = read_until_final(&mut sock);
    match answer.last() {
        Some(Frame::Control(Control::Error(e))) => {
            assert_eq!(e.code, ErrorCode::PolicyDenied, "{}", e.message);
            assert!(e.message.contains("leads outside"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!etc.join("passwd").exists(), "the copy landed outside");
}
