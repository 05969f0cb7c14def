//! Ansible for the tests that run it: the collection in contrib/ansible
//! built with `ansible-galaxy collection build` and installed into a
//! temporary collections path, and ansible-core's commands run with it,
//! each with a deadline, writing only in the test's directory.
//!
//! Needs ansible-core: GUESTCOMM_ANSIBLE_BIN names the directory of its
//! commands (else they are looked up in PATH). Without it a test says
//! SKIPPED loudly, and fails when GUESTCOMM_ANSIBLE_REQUIRED is set (.ci/run
//! installs ansible-core into a venv under target/ and sets both).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{bin, wait_until};

/// Generous for a loaded CI machine: a playbook of a dozen tasks, each a
/// few guestcomm runs and a Python start in the guest.
pub const PLAYBOOK_DEADLINE: Duration = Duration::from_secs(600);

/// The collection's source, in the repository.
pub fn collection_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/ansible/ansible_collections/guestcomm/guestcomm")
}

/// The playbook and template of these tests.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ansible")
}

/// An ansible-core command: in GUESTCOMM_ANSIBLE_BIN, else from PATH.
pub fn ansible_command(name: &str) -> PathBuf {
    match std::env::var_os("GUESTCOMM_ANSIBLE_BIN") {
        Some(dir) => Path::new(&dir).join(name),
        None => PathBuf::from(name),
    }
}

/// The collection installed for one test, with the private directories
/// ansible-core writes to (never the caller's ~/.ansible).
pub struct Ansible {
    dir: tempfile::TempDir,
}

impl Ansible {
    /// Builds and installs the collection; `None` (after saying so) without
    /// ansible-core, a failure when GUESTCOMM_ANSIBLE_REQUIRED is set.
    pub fn install() -> Option<Self> {
        // The test harness names each test's thread after the test.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("ansible");
        let ansible = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for sub in ["build", "collections", "home", "local", "remote", "work"] {
            std::fs::create_dir(ansible.dir.path().join(sub)).expect("mkdir");
        }
        let found = ansible
            .command("ansible-galaxy")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("GUESTCOMM_ANSIBLE_REQUIRED").is_none(),
                "GUESTCOMM_ANSIBLE_REQUIRED is set but `{} --version` fails",
                ansible_command("ansible-galaxy").display()
            );
            eprintln!(
                "*** {test}: SKIPPED: ansible-core is not installed (pip install ansible-core, then set GUESTCOMM_ANSIBLE_BIN; .ci/run does) ***"
            );
            return None;
        }
        let build = ansible.path("build");
        ansible.ok(
            "ansible-galaxy",
            &[
                "collection".as_ref(),
                "build".as_ref(),
                collection_source().as_os_str(),
                "--output-path".as_ref(),
                build.as_os_str(),
            ],
        );
        let tarball = build.join("guestcomm-guestcomm-0.1.0.tar.gz");
        ansible.ok(
            "ansible-galaxy",
            &[
                "collection".as_ref(),
                "install".as_ref(),
                tarball.as_os_str(),
                "-p".as_ref(),
                ansible.path("collections").as_os_str(),
            ],
        );
        Some(ansible)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The directory the playbooks' files go to (in the "guest", this host).
    pub fn work(&self) -> PathBuf {
        self.path("work")
    }

    /// An ansible-core command with the collection installed, writing only
    /// in this test's directory, not started.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(ansible_command(name));
        command
            .env("ANSIBLE_COLLECTIONS_PATH", self.path("collections"))
            .env("ANSIBLE_HOME", self.path("home"))
            .env("ANSIBLE_LOCAL_TEMP", self.path("local"))
            .env("ANSIBLE_REMOTE_TMP", self.path("remote"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_PYTHON_INTERPRETER", guest_python())
            .env("ANSIBLE_GUESTCOMM_PATH", bin("guestcomm"))
            .env_remove("GUESTCOMM_API")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs an ansible-core command with the collection installed, killed
    /// (by PID) past [`PLAYBOOK_DEADLINE`]; output goes through files, so a
    /// chatty run never blocks on a full pipe.
    pub fn run(&self, name: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
        let stdout = self.path(&format!("{name}.stdout"));
        let stderr = self.path(&format!("{name}.stderr"));
        let mut child = self
            .command(name)
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let exited = wait_until(PLAYBOOK_DEADLINE, || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait for ansible");
        assert!(exited, "{name} {args:?} outlived its deadline; killed");
        Output {
            status,
            stdout: std::fs::read(stdout).expect("read stdout"),
            stderr: std::fs::read(stderr).expect("read stderr"),
        }
    }

    /// Same, asserting success.
    pub fn ok(&self, name: &str, args: &[&std::ffi::OsStr]) -> Output {
        let out = self.run(name, args, &[]);
        assert!(
            out.status.success(),
            "{name} {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The guest's (this host's) Python: the system's, where discovery could
/// pick a shim of a per-user version manager found first in PATH.
pub fn guest_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "auto_silent"
    }
}
