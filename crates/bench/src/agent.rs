//! The agent under test: started on a Unix socket in a temporary directory,
//! waited for until it completes a handshake, and killed by its PID when the
//! guard drops (also when the bench fails half-way).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guestcomm_protocol::auth::{write_credentials, Psk};
use guestcomm_transport::Address;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::runtime::Runtime;

/// How long the agent may take to accept its first connection.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between connection attempts while the agent starts.
const STARTUP_RETRY: Duration = Duration::from_millis(20);

/// How long the agent gets to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A running `guestcomm-agent`; dropping it stops the process.
pub(crate) struct AgentGuard {
    child: Child,
    addr: Address,
    psk: Option<Psk>,
    log: PathBuf,
    // Kept last so the directory outlives the process that uses it.
    _dir: tempfile::TempDir,
}

impl AgentGuard {
    /// Starts `binary --listen unix://DIR/agent.sock` and waits until a
    /// client handshake succeeds. The agent's log goes to `DIR/agent.log`.
    pub(crate) fn start(binary: &Path, rt: &Runtime) -> anyhow::Result<Self> {
        Self::start_keyed(binary, rt, None)
    }

    /// [`AgentGuard::start`], the agent requiring `psk` (`--credentials`)
    /// when given.
    pub(crate) fn start_keyed(
        binary: &Path,
        rt: &Runtime,
        psk: Option<Psk>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("guestcomm-bench-")
            .tempdir()
            .context("failed to create a temporary directory")?;
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let log_file = File::create(&log).context("failed to create the agent's log file")?;
        let addr = Address::Unix(socket);
        let mut cmd = Command::new(binary);
        if let Some(psk) = &psk {
            let key = dir.path().join("agent.key");
            write_credentials(&key, psk).context("failed to write the agent's key")?;
            cmd.arg("--credentials").arg(key);
        }
        let child = cmd
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--kvp-socket", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "failed to start the agent {} (build it with `cargo build --release -p guestcomm-agent`, or pass --agent)",
                    binary.display()
                )
            })?;
        let mut guard = Self {
            child,
            addr,
            psk,
            log,
            _dir: dir,
        };
        guard.wait_ready(rt)?;
        Ok(guard)
    }

    /// The address the agent listens on.
    pub(crate) fn addr(&self) -> &Address {
        &self.addr
    }

    /// The key the agent requires, if any.
    pub(crate) fn psk(&self) -> Option<&Psk> {
        self.psk.as_ref()
    }

    /// The agent's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, rt: &Runtime) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent exited at start-up ({status}); its log:\n{}",
                    self.log_text()
                );
            }
            let attempt = rt.block_on(guestcomm_client::connect_with(
                &self.addr,
                "guestcomm-bench",
                self.psk.as_ref(),
            ));
            match attempt {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > STARTUP_TIMEOUT => {
                    return Err(anyhow::Error::new(e).context(format!(
                    "the agent did not accept connections within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.log_text()
                )))
                }
                Err(_) => std::thread::sleep(STARTUP_RETRY),
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        if kill(pid, Signal::SIGTERM).is_ok() {
            let start = Instant::now();
            while start.elapsed() < STOP_TIMEOUT {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // `Child::kill` signals exactly this PID (SIGKILL).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
