//! The shutdown service: power off or reboot the guest, after the host has
//! its acknowledgement.
//!
//! A [`ShutdownRunner`] decides how: [`ShutdownRunner::System`] asks the
//! init system (`systemctl poweroff|reboot` under systemd, else
//! `shutdown -h|-r now`, else busybox's `poweroff`/`reboot`), and with
//! `force` syncs and powers off at once (reboot(2)); [`ShutdownRunner::Command`]
//! runs a program given with `--shutdown-command` as
//! `PROGRAM ACTION MODE REASON` (`poweroff|reboot`, `graceful|force`), which
//! is how tests run the service without powering anything off.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use guestcomm_protocol::integration::ShutdownRequest;
use tokio::process::Command;
use tracing::{info, warn};

/// How the agent powers off or reboots.
#[derive(Clone, Debug)]
pub enum ShutdownRunner {
    /// The init system, or reboot(2) with `force`.
    System,
    /// This program, with ACTION MODE REASON.
    Command(PathBuf),
}

/// Why a shutdown cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// No way to shut down was found.
    #[error("no shutdown program in the guest (looked for systemctl, shutdown, poweroff and reboot in PATH)")]
    NoProgram,
    /// The configured program is missing.
    #[error("the shutdown command {0} does not exist")]
    MissingCommand(String),
}

/// `graceful` or `force`.
pub(crate) const fn mode(req: &ShutdownRequest) -> &'static str {
    if req.force {
        "force"
    } else {
        "graceful"
    }
}

/// Finds `name` in `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The graceful command for this guest: program and arguments.
fn graceful_command(req: &ShutdownRequest, systemd: bool) -> Option<(PathBuf, Vec<String>)> {
    let action = req.action();
    if systemd {
        if let Some(systemctl) = which("systemctl") {
            let mut args = vec![action.to_string()];
            if !req.reason.is_empty() {
                args.push(format!("--message={}", req.reason));
            }
            return Some((systemctl, args));
        }
    }
    if let Some(shutdown) = which("shutdown") {
        let flag = if req.reboot { "-r" } else { "-h" };
        let mut args = vec![flag.to_string(), "now".to_string()];
        if !req.reason.is_empty() {
            args.push(req.reason.clone());
        }
        return Some((shutdown, args));
    }
    which(action).map(|p| (p, Vec::new()))
}

impl ShutdownRunner {
    /// Checks, before acknowledging, that the shutdown can start.
    pub fn check(&self, req: &ShutdownRequest) -> Result<(), ShutdownError> {
        match self {
            Self::Command(path) if !path.is_file() => {
                Err(ShutdownError::MissingCommand(path.display().to_string()))
            }
            Self::Command(_) => Ok(()),
            Self::System if req.force => Ok(()),
            Self::System => graceful_command(req, Path::new("/run/systemd/system").exists())
                .map(drop)
                .ok_or(ShutdownError::NoProgram),
        }
    }

    /// Starts the shutdown (the acknowledgement was sent).
    pub async fn run(&self, req: &ShutdownRequest) {
        info!(action = req.action(), mode = mode(req), reason = %req.reason, "shutting the guest down at the host's request");
        let (program, args) = match self {
            Self::Command(path) => (
                path.clone(),
                vec![
                    req.action().to_string(),
                    mode(req).to_string(),
                    req.reason.clone(),
                ],
            ),
            Self::System if req.force => return force(req.reboot),
            Self::System => {
                match graceful_command(req, Path::new("/run/systemd/system").exists()) {
                    Some(found) => found,
                    None => return warn!("no shutdown program found"),
                }
            }
        };
        match Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .status()
            .await
        {
            Ok(status) if status.success() => {}
            Ok(status) => {
                warn!(program = %program.display(), %status, "the shutdown command failed")
            }
            Err(e) => {
                warn!(program = %program.display(), error = %e, "cannot run the shutdown command")
            }
        }
    }
}

/// Syncs, then powers off or reboots at once.
fn force(reboot: bool) {
    use nix::sys::reboot::{reboot as reboot_now, RebootMode};
    nix::unistd::sync();
    let how = if reboot {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let Err(e) = reboot_now(how);
    warn!(error = %e, "immediate power-off failed (the agent needs CAP_SYS_BOOT)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_command_is_refused_before_acknowledging() {
        let runner = ShutdownRunner::Command("/nonexistent/guestcomm-shutdown".into());
        let err = runner.check(&ShutdownRequest::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent"), "{err}");
    }

    #[tokio::test]
    async fn a_command_runner_gets_action_mode_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("record");
        let out = dir.path().join("args");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runner = ShutdownRunner::Command(script);
        let req = ShutdownRequest {
            reboot: true,
            force: false,
            reason: "patching".into(),
        };
        runner.check(&req).unwrap();
        runner.run(&req).await;
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "reboot graceful patching\n"
        );
    }

    #[test]
    fn systemd_guests_use_systemctl_with_the_reason_when_present() {
        let req = ShutdownRequest {
            reason: "r".into(),
            ..Default::default()
        };
        if let Some((program, args)) = graceful_command(&req, true) {
            if program.ends_with("systemctl") {
                assert_eq!(args, ["poweroff", "--message=r"]);
            }
        }
    }
}
