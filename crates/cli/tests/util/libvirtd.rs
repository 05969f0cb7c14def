//! Test support for libvirt: Debian's libvirtd run as the session daemon of
//! a throw-away user, its runtime, configuration and cache in a directory
//! of the test (no systemd, nothing shared with a system libvirtd), with
//! `virsh` run against it under a deadline; and guestcommd's view of a
//! domain's VM. Its domains are destroyed and
//! the daemon killed by PID when the guard drops; the user goes last.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use super::daemon::Daemon;
use super::users::TestUser;
use super::{bin, wait_until, STARTUP_DEADLINE};

pub const LIBVIRTD: &str = "/usr/sbin/libvirtd";
pub const VIRSH: &str = "/usr/bin/virsh";

/// Any one `virsh` command; a guest agent command under TCG may be slow.
pub const VIRSH_DEADLINE: Duration = Duration::from_secs(120);

/// Whether guestcommd was built with the `libvirt` feature.
pub fn guestcommd_has_libvirt() -> bool {
    let probe = Command::new(bin("guestcommd"))
        // A state directory that cannot be made: a build with the feature
        // fails there, one without it before.
        .args(["--state", "/dev/null/state", "--libvirt", "test:///default"])
        .args(["--api", "unix:///dev/null/api.sock"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run guestcommd");
    !String::from_utf8_lossy(&probe.stderr).contains("built without libvirt")
}

/// A session libvirtd of a test user, in `dir`; killed by PID when dropped
/// (its domains destroyed first).
pub struct Libvirtd {
    child: Option<Child>,
    pub user: TestUser,
    pub dir: PathBuf,
}

impl Libvirtd {
    /// Starts it in `dir/libvirt` (made and given to the test user
    /// `gc<tag><pid>`: a tag per test, as tests of one file run at the same
    /// time in one process); `None` when no test user can be made (not root).
    pub fn start(dir: &Path, tag: &str) -> Option<Self> {
        let user = TestUser::create(tag)?;
        let dir = dir.join("libvirt");
        // QEMU's logs go to files: no virtlogd to start and stop.
        std::fs::create_dir_all(dir.join("config/libvirt")).unwrap();
        std::fs::write(
            dir.join("config/libvirt/qemu.conf"),
            "stdio_handler = \"file\"\n",
        )
        .unwrap();
        let chown = Command::new("chown")
            .args(["-R", &format!("{}:{}", user.uid, user.gid)])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let mut libvirtd = Self {
            child: None,
            user,
            dir,
        };
        libvirtd.spawn();
        Some(libvirtd)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt/libvirt-sock")
    }

    pub fn uri(&self) -> String {
        format!("qemu:///session?socket={}", self.socket().display())
    }

    /// Starts the daemon (again, after [`Libvirtd::stop`]) and waits until
    /// it answers.
    pub fn spawn(&mut self) {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("libvirtd.log"))
            .unwrap();
        let child = self
            .user
            .command(
                Path::new(LIBVIRTD),
                &["--timeout", "0"],
                &[
                    ("HOME", &d("")),
                    ("XDG_RUNTIME_DIR", &d("run")),
                    ("XDG_CONFIG_HOME", &d("config")),
                    ("XDG_CACHE_HOME", &d("cache")),
                    ("XDG_DATA_HOME", &d("data")),
                ],
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn libvirtd");
        self.child = Some(child);
        assert!(
            wait_until(STARTUP_DEADLINE, || self
                .virsh(&["version"])
                .status
                .success()),
            "libvirtd did not answer: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    /// `virsh ARGS...` against this daemon, SIGKILLed past [`VIRSH_DEADLINE`].
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(VIRSH);
        cmd.args(["-q", "-c", &self.uri()]).args(args);
        guestcomm_vmtest::run_with_deadline(cmd, None, VIRSH_DEADLINE).expect("run virsh")
    }

    /// `virsh ARGS...`, which must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?}: {}\nlibvirtd: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// SIGTERM by PID, and reap; its domains' QEMUs keep running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let exited = wait_until(STARTUP_DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let listed = self.virsh(&["list", "--name"]);
            for name in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                let _ = self.virsh(&["destroy", name]);
            }
        }
        self.stop();
        // The user goes with `self.user` (userdel), now that nothing of it runs.
    }
}

/// VM `name` as `guestcomm vm list --json` shows it, if listed.
pub fn listed(d: &Daemon, name: &str) -> Option<serde_json::Value> {
    let vms = d.json(&["vm", "list"]);
    vms.as_array()?.iter().find(|v| v["name"] == name).cloned()
}

/// Waits (up to `deadline`) until VM `name` is listed with health `status`.
pub fn wait_for_status(
    d: &Daemon,
    name: &str,
    status: &str,
    deadline: Duration,
) -> serde_json::Value {
    let mut last = None;
    let reached = wait_until(deadline, || {
        last = listed(d, name);
        last.as_ref()
            .is_some_and(|v| v["health"]["status"] == status)
    });
    assert!(
        reached,
        "VM {name} never reached {status:?}: {last:#?}\n{}",
        d.log()
    );
    last.unwrap()
}
