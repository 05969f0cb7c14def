//! Exit codes of `guestcomm` (as `docker exec` and shells use them) and the
//! one failure reporter: every command that fails returns a [`Failure`],
//! which knows its exit code and prints its one line, control characters
//! escaped (a cause may quote a guest's or a caller's text).
//!
//! The codes are documented in `--help` ([`EXIT_CODES_HELP`], and each
//! subcommand's own after-help) and in README.md.

use std::io::Write;
use std::process::ExitCode;

use guestcomm_api::ApiError;
use guestcomm_client::{CopyError, ExecError};
use guestcomm_protocol::error_chain;
use guestcomm_protocol::text::Escaped;
use guestcomm_protocol::ErrorCode;

/// A management or integration command failed (`vm`, `service`, `status`,
/// `info`, `kvp`, ...), or a copy failed.
pub(crate) const FAILED: u8 = 1;
/// An invalid command line (as clap reports it).
pub(crate) const USAGE: u8 = 2;
/// `audit --verify`: the log was tampered with.
pub(crate) const TAMPERED: u8 = 3;
/// guestcomm itself failed: usage, connection, handshake, protocol.
pub(crate) const GUESTCOMM_FAILED: u8 = 125;
/// The agent could not run the command (permission, working directory, user).
pub(crate) const CANNOT_RUN: u8 = 126;
/// The command does not exist in the guest.
pub(crate) const NOT_FOUND: u8 = 127;
/// The local stdout was closed (e.g. `| head`): 128 + SIGPIPE, quietly.
pub(crate) const BROKEN_PIPE: u8 = 141;

/// Exit code after a signal: 128 + its number, as shells report it.
pub(crate) const fn killed_by(signal: libc::c_int) -> u8 {
    128 + signal as u8
}

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit status of `exec`: the guest command's own exit code, or 128+N when
signal N killed it. Otherwise:
  125  guestcomm failed (cannot connect, handshake refused, connection lost)
  126  the agent could not run the command (permission, working directory, user)
  127  the command was not found in the guest
  2    invalid command line";

/// Why a command ends unsuccessfully: its exit code and the line to print
/// (none when quiet, as for a closed stdout).
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: Option<String>,
}

impl Failure {
    /// guestcomm itself failed (exit 125): cannot connect, handshake
    /// refused, connection lost.
    pub(crate) fn guestcomm(err: &anyhow::Error) -> Self {
        Self::with(GUESTCOMM_FAILED, format!("{err:#}"))
    }

    /// The operation failed (exit 1).
    pub(crate) fn failed(err: &anyhow::Error) -> Self {
        Self::with(FAILED, format!("{err:#}"))
    }

    /// The daemon's API refused or could not be reached (exit 1); the
    /// daemon's body is already one line.
    pub(crate) fn api(err: &ApiError) -> Self {
        Self::with(FAILED, error_chain(err))
    }

    /// An invalid command line found after clap (exit 2).
    pub(crate) fn usage(message: String) -> Self {
        Self::with(USAGE, message)
    }

    /// An exec that did not produce an exit status: 125, 126 or 127
    /// (docs/PROTOCOL.md section 9), quietly 141 for a closed stdout.
    pub(crate) fn exec(err: ExecError) -> Self {
        let code = exec_failure_code(&err);
        if code == BROKEN_PIPE {
            return Self::quiet(code);
        }
        Self::with(code, format!("{:#}", anyhow::Error::new(err)))
    }

    /// A failed copy: 1, or 125 when guestcomm or the connection failed
    /// (`cp --help` lists them).
    pub(crate) fn copy(err: &CopyError) -> Self {
        Self::with(
            copy_failure_code(err),
            format!("cannot copy: {}", error_chain(err)),
        )
    }

    /// A byte stream to a guest service broke once open: 125, or quietly
    /// 141 for a closed stdout.
    pub(crate) fn stream(err: &std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::quiet(BROKEN_PIPE);
        }
        Self::with(
            GUESTCOMM_FAILED,
            format!("connection to the service failed: {err}"),
        )
    }

    /// A copy interrupted by `signal` (128 + its number).
    pub(crate) fn interrupted(signal: libc::c_int, resume: bool) -> Self {
        let kept = if resume {
            "run the same command again to resume"
        } else {
            "nothing partial was kept"
        };
        Self::with(killed_by(signal), format!("interrupted; {kept}"))
    }

    fn with(code: u8, message: String) -> Self {
        Self {
            code,
            message: Some(message),
        }
    }

    fn quiet(code: u8) -> Self {
        Self {
            code,
            message: None,
        }
    }

    /// Prints the line on stderr (a closed stderr, e.g. after SIGHUP, is
    /// no reason to panic) and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        if let Some(message) = &self.message {
            let _ = writeln!(std::io::stderr(), "guestcomm: {}", Escaped(message));
        }
        ExitCode::from(self.code)
    }
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        Self::api(&err)
    }
}

/// The exit code for an exec that did not produce an exit status.
fn exec_failure_code(err: &ExecError) -> u8 {
    // docs/PROTOCOL.md section 9 assigns these.
    match err {
        ExecError::Refused(frame) | ExecError::Remote(frame) => match frame.code {
            ErrorCode::CommandNotFound => NOT_FOUND,
            ErrorCode::MalformedFrame | ErrorCode::UnexpectedMessage => GUESTCOMM_FAILED,
            ErrorCode::UnsupportedVersion
            | ErrorCode::AuthRequired
            | ErrorCode::AuthFailed
            | ErrorCode::UnknownService
            | ErrorCode::UnsupportedRequest
            | ErrorCode::ServiceDisabled
            | ErrorCode::PolicyDenied
            | ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::PermissionDenied
            | ErrorCode::AlreadyExists
            | ErrorCode::ResourceLimit
            | ErrorCode::Timeout
            | ErrorCode::Io
            | ErrorCode::Internal
            | ErrorCode::Unknown => CANNOT_RUN,
        },
        ExecError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => BROKEN_PIPE,
        ExecError::Disconnected
        | ExecError::NoAnswer(_)
        | ExecError::Protocol(_)
        | ExecError::Frame(_)
        | ExecError::Output(_) => GUESTCOMM_FAILED,
    }
}

/// The exit code of a failed copy (`cp --help` lists them).
fn copy_failure_code(err: &CopyError) -> u8 {
    match err {
        CopyError::Peer(frame) => match frame.code {
            ErrorCode::MalformedFrame
            | ErrorCode::UnexpectedMessage
            | ErrorCode::Internal
            | ErrorCode::Timeout => GUESTCOMM_FAILED,
            ErrorCode::UnsupportedVersion
            | ErrorCode::AuthRequired
            | ErrorCode::AuthFailed
            | ErrorCode::UnknownService
            | ErrorCode::UnsupportedRequest
            | ErrorCode::ServiceDisabled
            | ErrorCode::PolicyDenied
            | ErrorCode::InvalidArgument
            | ErrorCode::CommandNotFound
            | ErrorCode::NotFound
            | ErrorCode::PermissionDenied
            | ErrorCode::AlreadyExists
            | ErrorCode::ResourceLimit
            | ErrorCode::Io
            | ErrorCode::Unknown => FAILED,
        },
        CopyError::Protocol(_)
        | CopyError::Disconnected
        | CopyError::Frame(_)
        | CopyError::Stalled { .. }
        | CopyError::Interrupted => GUESTCOMM_FAILED,
        CopyError::BadEntry { .. }
        | CopyError::ThroughSymlink { .. }
        | CopyError::Exists(_)
        | CopyError::WrongKind { .. }
        | CopyError::IsADirectory(_)
        | CopyError::MissingParent(_)
        | CopyError::SourceNotFound(_)
        | CopyError::Unsupported { .. }
        | CopyError::Checksum { .. }
        | CopyError::Size { .. }
        | CopyError::Changed(_)
        | CopyError::Busy(_)
        | CopyError::ResumeMismatch(_)
        | CopyError::TooManyEntries(_)
        | CopyError::TooManyDirectories(_)
        | CopyError::OverLimit { .. }
        | CopyError::OwnerNeedsRoot
        | CopyError::NotAllowed { .. }
        | CopyError::Escapes { .. }
        | CopyError::Fs { .. } => FAILED,
    }
}

/// A guest exit status as a process exit code (0..=255).
pub(crate) fn from_status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.rem_euclid(256)).unwrap_or(GUESTCOMM_FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::ErrorFrame;

    #[test]
    fn refusals_map_to_shell_codes() {
        let not_found = ExecError::Refused(ErrorFrame::new(ErrorCode::CommandNotFound, "x"));
        let bad_cwd = ExecError::Refused(ErrorFrame::new(ErrorCode::NotFound, "x"));
        let garbled = ExecError::Refused(ErrorFrame::new(ErrorCode::MalformedFrame, "x"));
        assert_eq!(exec_failure_code(&garbled), GUESTCOMM_FAILED);
        assert_eq!(exec_failure_code(&not_found), NOT_FOUND);
        assert_eq!(exec_failure_code(&bad_cwd), CANNOT_RUN);
        assert_eq!(
            exec_failure_code(&ExecError::Disconnected),
            GUESTCOMM_FAILED
        );
        let pipe = ExecError::Output(std::io::ErrorKind::BrokenPipe.into());
        assert_eq!(exec_failure_code(&pipe), BROKEN_PIPE);
    }

    #[test]
    fn each_failure_keeps_its_documented_code() {
        let err = anyhow::anyhow!("x");
        assert_eq!(Failure::guestcomm(&err).code, GUESTCOMM_FAILED);
        assert_eq!(Failure::failed(&err).code, FAILED);
        assert_eq!(Failure::usage("x".into()).code, USAGE);
        assert_eq!(Failure::interrupted(libc::SIGINT, false).code, 130);
        assert_eq!(Failure::interrupted(libc::SIGTERM, true).code, 143);
        assert_eq!(Failure::interrupted(libc::SIGHUP, false).code, 129);
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let quiet = Failure::stream(&pipe);
        assert_eq!((quiet.code, quiet.message), (BROKEN_PIPE, None));
        let reset = std::io::Error::other("reset");
        assert_eq!(Failure::stream(&reset).code, GUESTCOMM_FAILED);
        let stalled = CopyError::Disconnected;
        assert_eq!(Failure::copy(&stalled).code, GUESTCOMM_FAILED);
        let refused = CopyError::Peer(ErrorFrame::new(ErrorCode::PermissionDenied, "x"));
        assert_eq!(Failure::copy(&refused).code, FAILED);
    }
}
