//! A throw-away local user for tests of roles: created with `useradd`
//! (root only), used through `setpriv`, removed with `userdel` when dropped.

use std::process::{Command, Output, Stdio};

/// A local user and its own group, removed when dropped.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn id(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

impl TestUser {
    /// Creates `gc<tag><pid>`; `None` (after saying so) when not root or
    /// without `useradd` and `setpriv`.
    pub fn create(tag: &str) -> Option<Self> {
        if !nix_is_root() {
            eprintln!("SKIPPED: creating a second local user needs root (useradd)");
            return None;
        }
        let name = format!("gc{tag}{}", std::process::id());
        let made = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status();
        match made {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("SKIPPED: useradd {name} failed: {other:?}");
                return None;
            }
        }
        Some(Self {
            uid: id("-u", &name),
            gid: id("-g", &name),
            name,
        })
    }

    /// Runs `program args...` as this user (no supplementary groups), in `/`.
    pub fn run(&self, program: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(program, args, env)
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv")
    }

    /// The command that runs `program args...` as this user, not started.
    pub fn command(
        &self,
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                &self.uid.to_string(),
                "--regid",
                &self.gid.to_string(),
            ])
            .args(["--clear-groups", "--"])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .current_dir("/");
        command
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
