//! OpenSSH as a comparison point: a throwaway `sshd` on 127.0.0.1 with its
//! own host and user keys in a temporary directory, and the `ssh`/`scp`
//! command lines that reach it, with or without a kept-alive master
//! connection (`ControlMaster`).
//!
//! Used only when `sshd` and `ssh` are installed (Debian: `openssh-server`)
//! and the bench runs as root (sshd must switch users); the bench installs
//! nothing. sshd needs its privilege separation directory `/run/sshd`, which
//! the bench creates if it is missing, as the Debian package's unit does.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// Where Debian installs sshd.
const SSHD: &str = "/usr/sbin/sshd";
/// The SFTP server that `scp` (SFTP protocol since OpenSSH 9) needs.
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// A running sshd of ours and, once asked for, a master connection; both
/// killed by PID on drop.
pub(crate) struct Sshd {
    child: Child,
    master: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Whether sshd can be used here, or why not.
pub(crate) fn available() -> Result<(), String> {
    if !Path::new(SSHD).is_file() {
        return Err(format!("{SSHD} is not installed (Debian: openssh-server)"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("sshd needs root to accept logins".into());
    }
    for tool in ["ssh", "scp", "ssh-keygen"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("-?").output().is_err()
        {
            return Err(format!("{tool} is not installed (Debian: openssh-client)"));
        }
    }
    Ok(())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .context("failed to run ssh-keygen")?;
    ensure!(status.success(), "ssh-keygen failed");
    Ok(())
}

impl Sshd {
    /// Starts sshd on a free loopback port and waits until it accepts.
    pub(crate) fn start() -> anyhow::Result<Self> {
        std::fs::create_dir_all("/run/sshd").context("failed to create /run/sshd")?;
        let dir = tempfile::Builder::new()
            .prefix("guestcomm-bench-sshd-")
            .tempdir()?;
        let path = dir.path();
        keygen(&path.join("host_key"))?;
        keygen(&path.join("user_key"))?;
        std::fs::copy(path.join("user_key.pub"), path.join("authorized_keys"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             UsePAM no\nUseDNS no\nStrictModes no\nPasswordAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp {SFTP_SERVER}\n",
            dir = path.display()
        );
        std::fs::write(path.join("sshd_config"), config)?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(path.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start sshd")?;
        let sshd = Self {
            child,
            master: None,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "sshd did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join("master.sock")
    }

    /// Options every client command line shares.
    fn common(&self, cmd: &mut Command, port_flag: &str) {
        cmd.arg("-i")
            .arg(self.dir.path().join("user_key"))
            .args([port_flag, &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
            ]);
    }

    fn master_options(&self, cmd: &mut Command, master: bool) {
        if master {
            cmd.arg("-o")
                .arg(format!("ControlPath={}", self.control_path().display()));
        }
    }

    /// Opens the master connection that `master` command lines reuse.
    pub(crate) fn start_master(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, "-p");
        cmd.args(["-M", "-N", "-o"])
            .arg(format!("ControlPath={}", self.control_path().display()))
            .arg("root@127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        self.master = Some(cmd.spawn().context("failed to start the ssh master")?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.control_path().exists() {
            if Instant::now() > deadline {
                bail!("the ssh master connection did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `ssh root@127.0.0.1 REMOTE...`, through the master or not.
    pub(crate) fn ssh(&self, master: bool, remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, "-p");
        self.master_options(&mut cmd, master);
        cmd.arg("root@127.0.0.1").args(remote);
        cmd
    }

    /// `scp SRC DST`, where a remote side is written `root@127.0.0.1:PATH`.
    pub(crate) fn scp(&self, master: bool, src: &str, dst: &str) -> Command {
        let mut cmd = Command::new("scp");
        self.common(&mut cmd, "-P");
        self.master_options(&mut cmd, master);
        cmd.args(["-q", src, dst]);
        cmd
    }

    /// The loopback port sshd listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The key sshd accepts for root.
    pub(crate) fn user_key(&self) -> PathBuf {
        self.dir.path().join("user_key")
    }

    /// The listening sshd's process ID, for its memory figures.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(master) = self.master.as_mut() {
            let _ = master.kill();
            let _ = master.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
