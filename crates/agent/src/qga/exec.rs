//! guest-exec and guest-exec-status: a program started in the background,
//! its output kept (up to a bound) until the host collects its status.
//! As with qemu-ga, an `env` list is the whole environment, the program is
//! searched in `PATH`, and the process outlives the connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use guestcomm_protocol::ExecRequest;
use serde_json::{json, Map, Value};

use super::reply::locked;
use super::reply::{generic, Reply};
use crate::limits::{MAX_QGA_EXECS, MAX_QGA_EXEC_OUTPUT_BYTES};

/// One stream's captured bytes.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// A started program.
#[derive(Default)]
struct Run {
    capture: bool,
    out: Captured,
    err: Captured,
    /// Exit code, or negative signal number; `None` while running.
    status: Option<(Option<i32>, Option<i32>)>,
}

/// The programs started and not yet collected.
#[derive(Default)]
pub(super) struct Execs {
    runs: Mutex<HashMap<i64, Arc<Mutex<Run>>>>,
}

/// Reads `from` into the run's capture of one stream, keeping at most the bound.
fn capture(
    run: Arc<Mutex<Run>>,
    mut from: impl Read + Send + 'static,
    stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut run = locked(&run);
            let stream = if stderr { &mut run.err } else { &mut run.out };
            let room = MAX_QGA_EXEC_OUTPUT_BYTES - stream.bytes.len();
            stream.bytes.extend_from_slice(&chunk[..n.min(room)]);
            stream.truncated |= n > room;
        }
    })
}

impl Execs {
    /// Starts `req`, feeding it `input`, capturing its output if asked.
    pub(super) fn start(
        &self,
        req: ExecRequest,
        input: Option<Vec<u8>>,
        capture_output: bool,
    ) -> Reply {
        if locked(&self.runs).len() >= MAX_QGA_EXECS {
            return generic(format!(
                "too many guest-exec processes not yet collected (at most {MAX_QGA_EXECS}): collect their guest-exec-status first"
            ));
        }
        let mut cmd = Command::new(&req.program);
        cmd.args(&req.args);
        if !req.env.is_empty() {
            cmd.env_clear().envs(&req.env);
        }
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(piped(input.is_some()))
            .stdout(piped(capture_output))
            .stderr(piped(capture_output));
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return generic(format!(
                    "Failed to execute child process \u{201c}{}\u{201d} ({e})",
                    req.program
                ))
            }
        };
        let pid = i64::from(child.id());
        let run = Arc::new(Mutex::new(Run {
            capture: capture_output,
            ..Run::default()
        }));
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let readers: Vec<_> = [
            child.stdout.take().map(|o| capture(run.clone(), o, false)),
            child.stderr.take().map(|e| capture(run.clone(), e, true)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let waiter = run.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            for reader in readers {
                let _ = reader.join();
            }
            locked(&waiter).status = Some(match status {
                Ok(s) => (s.code(), s.signal()),
                Err(_) => (None, None),
            });
        });
        locked(&self.runs).insert(pid, run);
        Reply::Return(json!({ "pid": pid }))
    }

    /// The status of `pid`; once it has exited, its entry goes away.
    pub(super) fn status(&self, pid: i64) -> Reply {
        let Some(run) = locked(&self.runs).get(&pid).cloned() else {
            return generic("Invalid parameter 'pid'");
        };
        let run_now = locked(&run);
        let Some((code, signal)) = run_now.status else {
            return Reply::Return(json!({ "exited": false }));
        };
        let mut out = Map::new();
        out.insert("exited".into(), json!(true));
        if let Some(code) = code {
            out.insert("exitcode".into(), json!(code));
        }
        if let Some(signal) = signal {
            out.insert("signal".into(), json!(signal));
        }
        if run_now.capture {
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            for (name, stream) in [("out", &run_now.out), ("err", &run_now.err)] {
                // As qemu-ga (since its 2025 fix): with data, always
                // whether it was cut; without, neither member.
                if !stream.bytes.is_empty() {
                    out.insert(format!("{name}-data"), json!(b64(&stream.bytes)));
                    out.insert(format!("{name}-truncated"), json!(stream.truncated));
                }
            }
        }
        drop(run_now);
        locked(&self.runs).remove(&pid);
        Reply::Return(Value::Object(out))
    }
}
