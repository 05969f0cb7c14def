//! Test support for the daemon: start `guestcommd` on a Unix socket in a
//! temporary directory, restart it after a SIGKILL with the same state, and
//! start agents on fixed socket paths (so one can come back). Every process
//! is killed by PID and reaped when its guard is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{bin, wait_until, STARTUP_DEADLINE};

/// A running guestcommd with its state directory.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    heartbeat: String,
    /// `--config` file, when the test gave one.
    config: Option<PathBuf>,
    extra: Vec<String>,
    /// File the daemon's log (level info) goes to, when the test reads it.
    log: Option<PathBuf>,
}

impl Daemon {
    /// Starts guestcommd; `heartbeat` is its `--heartbeat-interval`.
    pub fn start(heartbeat: &str) -> Self {
        Self::start_inner(heartbeat, &[], None, false)
    }

    /// Same, with extra guestcommd arguments.
    pub fn start_with(heartbeat: &str, extra: &[&str]) -> Self {
        Self::start_inner(heartbeat, extra, None, false)
    }

    /// Starts guestcommd with `--config` holding `config` (TOML).
    pub fn start_with_config(heartbeat: &str, config: &str) -> Self {
        Self::start_inner(heartbeat, &[], Some(config), false)
    }

    /// Starts guestcommd with extra arguments and `--config` holding `config`.
    #[allow(dead_code)] // not every test file needs both
    pub fn start_with_args_and_config(heartbeat: &str, extra: &[&str], config: &str) -> Self {
        Self::start_inner(heartbeat, extra, Some(config), false)
    }

    fn start_inner(heartbeat: &str, extra: &[&str], config: Option<&str>, log: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let mut daemon = Daemon {
            child: None,
            socket,
            heartbeat: heartbeat.into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config: config.map(|_| dir.path().join("guestcommd.toml")),
            log: log.then(|| dir.path().join("daemon.log")),
            dir,
        };
        if let Some(text) = config {
            daemon.set_config(text);
        }
        daemon.spawn();
        daemon
    }

    /// Starts guestcommd logging at level info to `<dir>/daemon.log`
    /// ([`Daemon::log`]).
    #[allow(dead_code)] // not every test file reads the log
    pub fn start_logging(heartbeat: &str) -> Self {
        Self::start_inner(heartbeat, &[], None, true)
    }

    /// [`Daemon::start_logging`] with extra guestcommd arguments.
    #[allow(dead_code)] // not every test file reads the log
    pub fn start_logging_with(heartbeat: &str, extra: &[&str]) -> Self {
        Self::start_inner(heartbeat, extra, None, true)
    }

    /// What the daemon logged so far (after [`Daemon::start_logging`]).
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logging");
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    }

    /// Rewrites the `--config` file (read at the next start).
    pub fn set_config(&self, text: &str) {
        let path = self.config.as_ref().expect("started with a config");
        std::fs::write(path, text).expect("write the config");
    }

    fn spawn(&mut self) {
        let child = Command::new(bin("guestcommd"))
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--api")
            .arg(self.api())
            .arg("--heartbeat-interval")
            .arg(&self.heartbeat)
            .args(
                self.config
                    .iter()
                    .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
            )
            .args(&self.extra)
            .env(
                "GUESTCOMM_LOG",
                if self.log.is_some() { "info" } else { "warn" },
            )
            .stdin(Stdio::null())
            .stderr(match &self.log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("open the daemon's log"),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("spawn guestcommd");
        self.child = Some(child);
        let socket = self.socket.clone();
        assert!(
            wait_until(STARTUP_DEADLINE, || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            }),
            "guestcommd did not start listening"
        );
    }

    /// SIGKILL (no chance to clean up), then start again on the same state.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// SIGKILL, by PID, and reap.
    #[allow(dead_code)] // not every test file kills without restarting
    pub fn kill9(&mut self) {
        self.stop();
    }

    /// Starts again on the same state (after [`Daemon::kill9`]).
    pub fn restart(&mut self) {
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The API address.
    pub fn api(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `guestcomm ARGS...` command talking to this daemon.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("guestcomm"));
        c.env("GUESTCOMM_API", self.api()).args(args);
        c
    }

    /// Starts an agent on `<dir>/agent.sock`, adds it as VM `name`, and
    /// returns the agent and its endpoint.
    pub fn agent_vm(&self, name: &str) -> (AgentAt, String) {
        self.agent_vm_with(name, &[])
    }

    /// Same, with extra agent arguments.
    pub fn agent_vm_with(&self, name: &str, extra: &[&str]) -> (AgentAt, String) {
        let socket = self.dir.path().join("agent.sock");
        let agent = AgentAt::start_with(&socket, extra);
        let endpoint = format!("unix://{}", socket.display());
        self.ok(&["vm", "add", name, "--endpoint", &endpoint]);
        (agent, endpoint)
    }

    /// Adds VM `name` whose agent nobody can reach (its socket's directory
    /// does not exist).
    pub fn add_unreachable_vm(&self, name: &str) {
        self.ok(&[
            "vm",
            "add",
            name,
            "--endpoint",
            "unix:///nonexistent/agent.sock",
        ]);
    }

    /// Adds VM `name` on `<dir>/<name>.sock` with a new key, writes the
    /// guest side of the key to `<dir>/<name>.guest.key` (returned) and
    /// starts the agent there with it.
    #[allow(dead_code)] // not every test file needs a keyed VM
    pub fn keyed_agent_vm(&self, name: &str) -> (AgentAt, PathBuf, PathBuf) {
        let socket = self.dir.path().join(format!("{name}.sock"));
        let endpoint = format!("unix://{}", socket.display());
        let guest_file = self.dir.path().join(format!("{name}.guest.key"));
        let guest = guest_file.to_str().expect("utf-8 path");
        self.ok(&[
            "vm",
            "add",
            name,
            "--endpoint",
            &endpoint,
            "--generate-credentials",
        ]);
        self.ok(&["vm", "credentials", name, "--guest-file", guest]);
        let agent = AgentAt::start_with(&socket, &["--credentials", guest]);
        (agent, socket, guest_file)
    }

    /// Runs `guestcomm ARGS...` feeding `stdin` from another thread.
    pub fn run_with_stdin(&self, args: &[&str], stdin: Vec<u8>) -> Output {
        let mut child = self
            .cli(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn guestcomm");
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &stdin));
        let output = child.wait_with_output().expect("wait for guestcomm");
        writer.join().expect("stdin writer").expect("write stdin");
        output
    }

    /// `POST /v1/vms/{vm}/connect` by hand on the API socket: the stream
    /// to the VM's agent, past the daemon's `101`, for a test that speaks
    /// the protocol itself.
    pub fn raw_connect(&self, vm: &str) -> std::os::unix::net::UnixStream {
        use std::io::{Read, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        sock.set_read_timeout(Some(STARTUP_DEADLINE))
            .expect("timeout");
        let path = format!("/v1/vms/{vm}/connect");
        sock.write_all(&guestcomm_api::early_upgrade::request_bytes(
            &path,
            guestcomm_api::UPGRADE_PROTOCOL,
        ))
        .expect("send the upgrade");
        // Byte by byte up to the blank line: what follows is the agent's.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            assert_eq!(
                sock.read(&mut byte).expect("read the answer"),
                1,
                "closed: {head:?}"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        sock
    }

    /// Runs `guestcomm ARGS...` with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli(args)
            .stdin(Stdio::null())
            .output()
            .expect("run guestcomm")
    }

    /// Runs `guestcomm ARGS...`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "guestcomm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `guestcomm audit ARGS... --json`, once no record is `running`: a
    /// relayed operation's record is completed just after its client has
    /// seen the end (a wait for that state, not a timing assertion).
    pub fn audit_settled(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut args = [&["audit"], args].concat();
        args.push("--json");
        let mut records = Vec::new();
        let settled = super::wait_until(STARTUP_DEADLINE, || {
            let out = self.run(&args);
            records =
                serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default();
            out.status.success() && records.iter().all(|r| r["outcome"] != "running")
        });
        assert!(settled, "audit records still running: {records:#?}");
        records
    }

    /// Runs `guestcomm ARGS... --json` and parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).expect("JSON output")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An agent on a fixed socket path, killed by PID when dropped.
pub struct AgentAt {
    child: Child,
}

impl AgentAt {
    /// Starts guestcomm-agent on `socket` and waits until it accepts.
    pub fn start(socket: &Path) -> Self {
        Self::start_with(socket, &[])
    }

    /// Same, with extra agent arguments.
    pub fn start_with(socket: &Path, extra: &[&str]) -> Self {
        AgentAt {
            child: super::spawn_agent(socket, extra),
        }
    }

    /// The agent's process id.
    #[allow(dead_code)] // not every test file signals its agent
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts one logging at debug level into `log`, where each accepted
    /// connection's handshake leaves a "handshake done" line.
    #[allow(dead_code)] // not every test file reads an agent's log
    pub fn start_logging(socket: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create the agent's log");
        AgentAt {
            child: super::spawn_agent_logging(socket, &[], "debug", file.into()),
        }
    }
}

impl Drop for AgentAt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake hybrid vsock VMM on `path`: accepts one connection, reads the
/// `CONNECT <port>` line, answers `OK`, then echoes lines until "quit" and
/// closes (or its peer does). Returns the CONNECT line it received.
#[allow(dead_code)] // not every test file needs a VMM
pub fn fake_vmm(path: &Path) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut connect = String::new();
        reader.read_line(&mut connect).unwrap();
        writer.write_all(b"OK 1073741824\n").unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "quit\n" {
            writer.write_all(line.as_bytes()).unwrap();
            line.clear();
        }
        connect
    })
}
