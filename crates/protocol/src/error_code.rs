//! Error frames and their typed codes: what either side says when an
//! operation (or the handshake) fails.
//!
//! A leaf: every other module may name an [`ErrorCode`]; this one names
//! only the limits.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_ERROR_MESSAGE_BYTES;

/// An error reported to the peer: its sender's last frame (the connection
/// then closes by the rule of [`crate::closing`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ErrorFrame {
    /// What kind of failure, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people: one line.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame, its message cut to [`MAX_ERROR_MESSAGE_BYTES`].
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }
}

/// Typed error codes; stable strings on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer's major protocol version is not supported.
    UnsupportedVersion,
    /// The agent requires credentials the client did not offer.
    AuthRequired,
    /// The credentials offered did not verify.
    AuthFailed,
    /// A frame could not be decoded (size, kind, JSON).
    MalformedFrame,
    /// A valid message arrived where another was expected.
    UnexpectedMessage,
    /// No service with that GUID here.
    UnknownService,
    /// The service does not support that operation.
    UnsupportedRequest,
    /// The service exists but is disabled by policy.
    ServiceDisabled,
    /// The argument-level policy (host's or guest's) refuses the request;
    /// the message names which side and why.
    PolicyDenied,
    /// A parameter is invalid (empty program, bad env name, ...).
    InvalidArgument,
    /// The program to execute does not exist (a shell would exit with 127).
    CommandNotFound,
    /// A file, directory or user does not exist.
    NotFound,
    /// The operating system refused (EACCES, EPERM).
    PermissionDenied,
    /// The destination already exists.
    AlreadyExists,
    /// A limit was reached (connections, sizes).
    ResourceLimit,
    /// A deadline passed.
    Timeout,
    /// An operating-system error not covered above.
    Io,
    /// A bug or an unexpected state in the sender.
    Internal,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 19] = [
        Self::UnsupportedVersion,
        Self::AuthRequired,
        Self::AuthFailed,
        Self::MalformedFrame,
        Self::UnexpectedMessage,
        Self::UnknownService,
        Self::UnsupportedRequest,
        Self::ServiceDisabled,
        Self::PolicyDenied,
        Self::InvalidArgument,
        Self::CommandNotFound,
        Self::NotFound,
        Self::PermissionDenied,
        Self::AlreadyExists,
        Self::ResourceLimit,
        Self::Timeout,
        Self::Io,
        Self::Internal,
        Self::Unknown,
    ];

    /// The code's stable name on the wire (its serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported_version",
            Self::AuthRequired => "auth_required",
            Self::AuthFailed => "auth_failed",
            Self::MalformedFrame => "malformed_frame",
            Self::UnexpectedMessage => "unexpected_message",
            Self::UnknownService => "unknown_service",
            Self::UnsupportedRequest => "unsupported_request",
            Self::ServiceDisabled => "service_disabled",
            Self::PolicyDenied => "policy_denied",
            Self::InvalidArgument => "invalid_argument",
            Self::CommandNotFound => "command_not_found",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::AlreadyExists => "already_exists",
            Self::ResourceLimit => "resource_limit",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codes_name_is_its_serde_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json.as_str(), Some(code.as_str()), "{code:?}");
        }
    }

    #[test]
    fn error_code_displays_its_wire_name() {
        assert_eq!(
            ErrorCode::UnsupportedVersion.to_string(),
            "unsupported_version"
        );
        let e = ErrorFrame::new(ErrorCode::NotFound, "no such file: foo");
        assert_eq!(e.to_string(), "no such file: foo (not_found)");
    }

    #[test]
    fn error_message_is_truncated_on_a_char_boundary() {
        let e = ErrorFrame::new(ErrorCode::Io, "é".repeat(MAX_ERROR_MESSAGE_BYTES));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(e.message.chars().all(|c| c == 'é'));
    }
}
