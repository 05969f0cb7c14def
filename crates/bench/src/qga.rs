//! The QEMU guest agent as a comparison point: `qemu-ga` started on a Unix
//! socket in a temporary directory (`-m unix-listen`), and a minimal client
//! of its JSON protocol for the file commands (`guest-file-open`,
//! `guest-file-write`/`guest-file-read` with base64 bodies, `guest-file-close`)
//! and for running a program (`guest-exec`, then `guest-exec-status` until it
//! has exited: qemu-ga returns output only then, base64, at most 16 MiB).
//!
//! Used only when `qemu-ga` is installed (Debian: `qemu-guest-agent`); the
//! bench installs nothing itself.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// Bytes per `guest-file-write`/`guest-file-read`: qemu-ga's throughput was
/// flat from 64 KiB to 16 MiB on the bench machine, so a middle value.
pub(crate) const QGA_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Where `qemu-ga` is looked for when not on `PATH` (Debian puts it in sbin).
const QGA_CANDIDATES: [&str; 2] = ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"];

/// Finds `qemu-ga`: on `PATH`, then in the usual sbin directories.
pub(crate) fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("qemu-ga"));
    on_path
        .chain(QGA_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Most output qemu-ga captures for `guest-exec` (its `GUEST_EXEC_MAX_OUTPUT`).
pub(crate) const QGA_MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// A `qemu-ga` process of ours, killed (by PID) and reaped on drop.
pub(crate) struct QgaAgent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl QgaAgent {
    /// Starts `program` listening on a Unix socket and waits for the socket.
    pub(crate) fn start(program: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("failed to create a directory for qemu-ga")?;
        let socket = dir.path().join("qga.sock");
        let child = Command::new(program)
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(dir.path())
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {}", program.display()))?;
        let agent = Self {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&agent.socket).is_err() {
            if Instant::now() > deadline {
                bail!("qemu-ga did not open {}", agent.socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// A new client connection, synchronised with `guest-sync`.
    pub(crate) fn connect(&self) -> anyhow::Result<QgaClient> {
        let stream = UnixStream::connect(&self.socket).context("failed to connect to qemu-ga")?;
        QgaClient::over(stream)
    }
}

impl QgaAgent {
    /// The process ID, for its memory figures.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for QgaAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One connection to `qemu-ga`: a JSON command per line, one answer each.
pub(crate) struct QgaClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QgaClient {
    /// A client on `stream`, already connected to qemu-ga (its Unix socket,
    /// or a guest's vsock port through hybrid vsock), synchronised with
    /// `guest-sync`.
    pub(crate) fn over(stream: UnixStream) -> anyhow::Result<Self> {
        let mut client = QgaClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let id = std::process::id();
        let answer = client.call("guest-sync", json!({ "id": id }))?;
        if answer != json!(id) {
            bail!("qemu-ga answered guest-sync with {answer}");
        }
        Ok(client)
    }

    /// Sends a command and returns its `return` value.
    fn call(&mut self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments }))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            bail!("qemu-ga closed the connection during {command}");
        }
        let mut answer: Value = serde_json::from_str(&answer)
            .with_context(|| format!("qemu-ga's answer to {command} is not JSON"))?;
        if let Some(error) = answer.get("error") {
            bail!("qemu-ga refused {command}: {error}");
        }
        answer
            .get_mut("return")
            .map(Value::take)
            .with_context(|| format!("qemu-ga's answer to {command} has no return value"))
    }

    fn open(&mut self, path: &Path, mode: &str) -> anyhow::Result<Value> {
        let handle = self.call(
            "guest-file-open",
            json!({ "path": path.display().to_string(), "mode": mode }),
        )?;
        if !handle.is_i64() {
            bail!("qemu-ga's file handle is not a number: {handle}");
        }
        Ok(handle)
    }

    /// Runs `path args` with `guest-exec` and polls `guest-exec-status`
    /// (without pause, qemu-ga's best case) until it exits; returns the
    /// decoded stdout when `capture` is set, else nothing.
    pub(crate) fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        capture: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let started = self.call(
            "guest-exec",
            json!({ "path": path, "arg": args, "capture-output": capture }),
        )?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .context("qemu-ga's guest-exec answer has no pid")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let status = self.call("guest-exec-status", json!({ "pid": pid }))?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                if status.get("out-truncated").and_then(Value::as_bool) == Some(true) {
                    bail!("qemu-ga truncated the output of {path}");
                }
                if status.get("exitcode").and_then(Value::as_i64) != Some(0) {
                    bail!("{path} ended under qemu-ga with {status}");
                }
                return match status.get("out-data").and_then(Value::as_str) {
                    Some(data) => BASE64.decode(data).context("qemu-ga sent invalid base64"),
                    None => Ok(Vec::new()),
                };
            }
            if Instant::now() > deadline {
                bail!("{path} did not exit under qemu-ga within 10 minutes");
            }
        }
    }

    /// Host to guest: `src` (local) written to `dst` through qemu-ga.
    pub(crate) fn write_file(&mut self, src: &Path, dst: &Path) -> anyhow::Result<u64> {
        let mut input = File::open(src)?;
        let handle = self.open(dst, "w")?;
        let mut buf = vec![0u8; QGA_CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            let body = BASE64.encode(&buf[..n]);
            let wrote = self.call(
                "guest-file-write",
                json!({ "handle": handle, "buf-b64": body }),
            )?;
            if wrote.get("count").and_then(Value::as_u64) != Some(n as u64) {
                bail!("qemu-ga wrote {wrote} of a {n}-byte chunk");
            }
            total += n as u64;
        }
        self.call("guest-file-close", json!({ "handle": handle }))?;
        Ok(total)
    }

    /// Guest to host: `src` read through qemu-ga into `dst` (local).
    pub(crate) fn read_file(&mut self, src: &Path, dst: &Path) -> anyhow::Result<u64> {
        let handle = self.open(src, "r")?;
        let mut output = File::create(dst)?;
        let mut total = 0u64;
        loop {
            let read = self.call(
                "guest-file-read",
                json!({ "handle": handle, "count": QGA_CHUNK_BYTES }),
            )?;
            let body = read
                .get("buf-b64")
                .and_then(Value::as_str)
                .context("qemu-ga's guest-file-read answer has no buf-b64")?;
            let bytes = BASE64.decode(body).context("qemu-ga sent invalid base64")?;
            output.write_all(&bytes)?;
            total += bytes.len() as u64;
            if read.get("eof").and_then(Value::as_bool) == Some(true) || bytes.is_empty() {
                break;
            }
        }
        self.call("guest-file-close", json!({ "handle": handle }))?;
        output.sync_all()?;
        Ok(total)
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(input: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..])? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}
