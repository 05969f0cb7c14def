//! Exit codes of `guestcomm`, as `docker exec` and shells use them, and the
//! one-line error report.

use std::process::ExitCode;

use guestcomm_client::ExecError;
use guestcomm_protocol::text::Escaped;
use guestcomm_protocol::ErrorCode;

/// guestcomm itself failed: usage, connection, handshake, protocol.
pub const GUESTCOMM_FAILED: u8 = 125;
/// The agent could not run the command (permission, working directory, user).
pub const CANNOT_RUN: u8 = 126;
/// The command does not exist in the guest.
pub const NOT_FOUND: u8 = 127;
/// The local stdout was closed (e.g. `| head`): 128 + SIGPIPE, quietly.
pub const BROKEN_PIPE: u8 = 141;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status of `exec`: the guest command's own exit code, or 128+N when
signal N killed it. Otherwise:
  125  guestcomm failed (cannot connect, handshake refused, connection lost)
  126  the agent could not run the command (permission, working directory, user)
  127  the command was not found in the guest
  2    invalid command line";

/// Prints `err` with its causes on one line (control characters escaped:
/// the causes may quote a guest's text) and returns code 125.
pub fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("guestcomm: {}", Escaped(&format!("{err:#}")));
    ExitCode::from(GUESTCOMM_FAILED)
}

/// The exit code for an exec that did not produce an exit status.
pub fn exec_failure_code(err: &ExecError) -> u8 {
    // docs/PROTOCOL.md section 9 assigns these.
    match err {
        ExecError::Refused(frame) | ExecError::Remote(frame) => match frame.code {
            ErrorCode::CommandNotFound => NOT_FOUND,
            ErrorCode::MalformedFrame | ErrorCode::UnexpectedMessage => GUESTCOMM_FAILED,
            _ => CANNOT_RUN,
        },
        ExecError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => BROKEN_PIPE,
        ExecError::Disconnected
        | ExecError::NoAnswer(_)
        | ExecError::Protocol(_)
        | ExecError::Frame(_)
        | ExecError::Output(_) => GUESTCOMM_FAILED,
    }
}

/// A guest exit status as a process exit code (0..=255).
pub fn from_status(code: i32) -> ExitCode {
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
}
