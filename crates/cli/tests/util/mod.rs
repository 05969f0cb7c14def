//! Test support: find the workspace's binaries, start an agent on a Unix
//! socket in a temporary directory, and always stop it by PID.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod ansible;
pub mod copy;
pub mod daemon;
pub mod libvirtd;
pub mod tls;
pub mod users;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: a loaded CI machine may be slow to start a process.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding the workspace's binaries (target/debug or release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary (built by `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test does)",
        path.display()
    );
    path
}

/// Starts `guestcomm-agent` listening on `socket` and waits until it accepts.
/// The agent's local key-value socket sits beside its listen socket, never
/// in /run/guestcomm on the test machine, and Hyper-V's pool files are
/// left alone unless `extra` names a directory for them.
pub fn spawn_agent(socket: &Path, extra: &[&str]) -> Child {
    spawn_agent_logging(socket, extra, "warn", Stdio::inherit())
}

/// Same, logging at `level` into `log`.
pub fn spawn_agent_logging(socket: &Path, extra: &[&str], level: &str, log: Stdio) -> Child {
    let mut cmd = Command::new(bin("guestcomm-agent"));
    cmd.arg("--listen")
        .arg(format!("unix://{}", socket.display()));
    if !extra.contains(&"--kvp-socket") {
        cmd.arg("--kvp-socket").arg(kvp_socket_of(socket));
    }
    if !extra.contains(&"--hyperv-kvp") {
        cmd.arg("--hyperv-kvp").arg("off");
    }
    let child = cmd
        .args(extra)
        .env("GUESTCOMM_LOG", level)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn guestcomm-agent");
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        }),
        "the agent did not start listening"
    );
    child
}

/// A stand-in for the guest's shutdown program in `dir`, for an agent's
/// `--shutdown-command`: it writes its arguments (`ACTION MODE REASON`) to
/// the returned record file. Returns (program, record).
pub fn fake_shutdown_command(dir: &Path) -> (PathBuf, PathBuf) {
    let record = dir.join("shutdown-args");
    let script = dir.join("fake-shutdown");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .expect("write the fake shutdown program");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make the fake shutdown program executable");
    (script, record)
}

/// Where [`spawn_agent`] puts the local key-value socket of the agent on `socket`.
pub fn kvp_socket_of(socket: &Path) -> PathBuf {
    socket.with_extension("kvp.sock")
}

/// A running agent, killed (by PID) and reaped when dropped.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `guestcomm-agent` on a fresh Unix socket and waits until it accepts.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Same, with extra agent arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let child = spawn_agent(&socket, extra);
        Agent { child, dir, socket }
    }

    /// The agent's address for the CLI.
    pub fn addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `guestcomm exec ADDR [opts] -- cmd...` command, not yet run.
    pub fn exec_cmd(&self, opts: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(bin("guestcomm"));
        c.arg("exec")
            .args(opts)
            .arg(self.addr())
            .arg("--")
            .args(cmd);
        c
    }

    /// Runs `guestcomm exec` with stdin closed and collects its output.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        self.exec_cmd(&[], cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run guestcomm")
    }

    /// True while the agent process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A guest shell script that writes its pid to `pidfile`, prints "ready"
/// and loops until killed; `trap` is prepended (e.g. a signal trap).
/// The pid is written beside `pidfile` and renamed into place, so a test
/// that waits for `pidfile` to exist never reads it empty.
pub fn guest_loop_script(pidfile: &Path, trap: &str) -> String {
    let pidfile = pidfile.display();
    format!(
        "{trap} echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; echo ready; \
         while :; do sleep 0.05; done"
    )
}

/// Waits up to `deadline` for `child` to exit, SIGKILLing it (by PID, not
/// yet reaped) past that; returns whether it exited by itself, and its output.
#[allow(dead_code)] // not every test file waits for a child this way
pub fn output_within(mut child: Child, deadline: Duration) -> (bool, Output) {
    let exited = wait_until(deadline, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    (exited, child.wait_with_output().unwrap())
}

/// Spawns `cmd` (stdin closed, stdout piped) and waits for its "ready" line.
pub fn spawn_until_ready(mut cmd: Command) -> Child {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// Whether process `pid` is alive. Zombies count as gone: the agent reaps
/// them in the background.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Reads the guest pid from `pidfile`, kills the CLI `child` and asserts
/// that the guest process goes away too (nothing outlives its caller).
pub fn kill_caller_and_expect_guest_gone(mut child: Child, pidfile: &Path) {
    let pid: i32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || !process_alive(pid)),
        "guest process {pid} survived its caller"
    );
}

/// The count of the first `refusals.counted` record in `records` (the
/// audit log's JSON) that `of` picks: refusals counted, not recorded one by one.
pub fn refusals_counted(
    records: &[serde_json::Value],
    of: impl Fn(&serde_json::Value) -> bool,
) -> Option<u64> {
    records
        .iter()
        .filter(|r| r["operation"] == "refusals.counted")
        .find(|r| of(r))
        .and_then(|r| {
            r["arguments"]
                .as_str()?
                .strip_prefix("count=")?
                .parse()
                .ok()
        })
}
