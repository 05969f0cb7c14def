//! The daemon's one error type, [`Error`], and what each failure means,
//! [`ErrorKind`]: every module returns `Error`, and each front end turns an
//! `ErrorKind` into its own status in one exhaustive match (HTTP in `api`,
//! CIM in `wbem`). This is a leaf: it imports no other module of the daemon;
//! a lower module's own error (the store's) becomes an `Error` through a
//! `From` beside that error, which names its kind.

use guestcomm_api::Role;
use guestcomm_policy::PolicyError;
use guestcomm_protocol::auth::AuthError;
use guestcomm_protocol::service::ServiceIdError;
use guestcomm_protocol::{ErrorCode, ErrorFrame, ServiceId};
use guestcomm_transport::AddressError;

/// What a failure means to the caller, whatever its cause: the front ends
/// map this, and only this, to their statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such VM, service, key or endpoint.
    NotFound,
    /// It exists already.
    Conflict,
    /// A built-in service cannot be unregistered.
    Builtin,
    /// The request or one of its parameters is invalid.
    InvalidArgument,
    /// The caller may not do this (role, scope, read-only pool).
    Forbidden,
    /// A policy (the VM's argument policy, or the agent's) refuses it.
    PolicyDenied,
    /// The service is disabled for the VM.
    ServiceDisabled,
    /// The VM's agent could not be reached.
    AgentUnreachable,
    /// A port in the guest could not be reached.
    GuestUnreachable,
    /// The VM's agent failed the request.
    AgentFailed,
    /// The agent does not support the request.
    Unsupported,
    /// A limit of the guest was reached.
    LimitReached,
    /// A limit of the daemon was reached; retry later.
    Busy,
    /// A bug, or the state store failed.
    Internal,
}

impl ErrorKind {
    /// The meaning of an agent's (or a key-value pool's) error code.
    pub fn of_agent_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => Self::InvalidArgument,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::PermissionDenied => Self::Forbidden,
            ErrorCode::PolicyDenied => Self::PolicyDenied,
            ErrorCode::ResourceLimit => Self::LimitReached,
            ErrorCode::UnsupportedRequest | ErrorCode::UnknownService => Self::Unsupported,
            ErrorCode::UnsupportedVersion
            | ErrorCode::AuthRequired
            | ErrorCode::AuthFailed
            | ErrorCode::MalformedFrame
            | ErrorCode::UnexpectedMessage
            | ErrorCode::ServiceDisabled
            | ErrorCode::CommandNotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::Timeout
            | ErrorCode::Io
            | ErrorCode::Internal
            | ErrorCode::Unknown => Self::AgentFailed,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The state store refused or failed (see [`Classified`]).
    #[error(transparent)]
    Store(Classified),
    /// The request is malformed or a parameter is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A service GUID that is not one.
    #[error(transparent)]
    InvalidServiceId(#[from] ServiceIdError),
    /// An endpoint address that is not one.
    #[error(transparent)]
    InvalidAddress(#[from] AddressError),
    /// A VM key given in a request that is not one.
    #[error("invalid key")]
    InvalidKey(#[source] AuthError),
    /// A VM's host policy document that does not pass its checks.
    #[error("invalid policy for VM {vm}")]
    InvalidPolicy {
        /// The VM.
        vm: String,
        /// What is wrong with the document.
        #[source]
        source: PolicyError,
    },
    /// The VM's agent could not be reached.
    #[error("cannot reach the agent of VM {vm}")]
    Agent {
        /// The VM.
        vm: String,
        /// Why.
        #[source]
        source: guestcomm_client::ClientError,
    },
    /// The service is disabled for the VM.
    #[error("{0}")]
    ServiceDisabled(String),
    /// A guest port could not be reached.
    #[error("cannot reach service {service} in VM {vm}")]
    Guest {
        /// The VM.
        vm: String,
        /// The service.
        service: ServiceId,
        /// Why.
        #[source]
        source: guestcomm_transport::ConnectError,
    },
    /// No such endpoint (or not with this method).
    #[error("no API endpoint {method} {path} (see /openapi.json)")]
    NoRoute {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// A limit was reached; retry later.
    #[error("{0}")]
    Busy(String),
    /// The VM's agent refused a request (its error frame).
    #[error("VM {vm}: {}", .frame.message)]
    Refused {
        /// The VM.
        vm: String,
        /// What the agent said.
        frame: ErrorFrame,
    },
    /// A request to the VM's agent failed after connecting.
    #[error("VM {vm}: the request to its agent failed")]
    AgentCall {
        /// The VM.
        vm: String,
        /// Why.
        #[source]
        source: guestcomm_client::integration::CallError,
    },
    /// A bug or an unexpected state, and what failed.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The caller's role is not enough for this call.
    #[error("permission denied: {operation} needs the {required} role, and {who} {} (roles are set in {config})", has_role(*.has))]
    Forbidden {
        /// The operation asked for.
        operation: &'static str,
        /// The role it needs.
        required: Role,
        /// The caller, described.
        who: String,
        /// The caller's role, if any.
        has: Option<Role>,
        /// The configuration file holding the roles.
        config: String,
    },
    /// The VM's policy refuses the operation.
    #[error("{0}")]
    PolicyDenied(String),
    /// The caller's roles hold on some VMs only, and the call reaches past them.
    #[error("permission denied: {0}")]
    OutOfScope(String),
}

fn has_role(role: Option<Role>) -> String {
    match role {
        Some(role) => format!("is only a {role}"),
        None => "has no role".into(),
    }
}

impl Error {
    /// What the failure means: every variant, no default.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(classified) => classified.kind,
            Self::BadRequest(_)
            | Self::InvalidServiceId(_)
            | Self::InvalidAddress(_)
            | Self::InvalidKey(_)
            | Self::InvalidPolicy { .. } => ErrorKind::InvalidArgument,
            Self::Agent { .. } => ErrorKind::AgentUnreachable,
            Self::ServiceDisabled(_) => ErrorKind::ServiceDisabled,
            Self::Guest { .. } => ErrorKind::GuestUnreachable,
            Self::NoRoute { .. } => ErrorKind::NotFound,
            Self::Busy(_) => ErrorKind::Busy,
            Self::Refused { frame, .. } => ErrorKind::of_agent_code(frame.code),
            Self::AgentCall { .. } => ErrorKind::AgentFailed,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Forbidden { .. } | Self::OutOfScope(_) => ErrorKind::Forbidden,
            Self::PolicyDenied(_) => ErrorKind::PolicyDenied,
        }
    }

    /// The role the call needs, when the caller's was not enough.
    pub(crate) fn required_role(&self) -> Option<Role> {
        match self {
            Self::Forbidden { required, .. } => Some(*required),
            _ => None,
        }
    }
}

/// The one-line error of a failed call, attached to its response so the
/// audit log can record it.
#[derive(Clone, Debug)]
pub(crate) struct ErrorText(pub String);

/// A lower module's error with the kind it was given there: shown and
/// chained exactly as the error itself (its message, then its sources).
#[derive(Debug)]
pub(crate) struct Classified {
    kind: ErrorKind,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Classified {
    /// `error`, meaning `kind`.
    pub(crate) fn new(
        kind: ErrorKind,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            error: Box::new(error),
        }
    }
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Classified {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::error_chain;

    #[test]
    fn a_classified_error_reads_as_the_error_it_wraps() {
        let io = std::io::Error::other("disk on fire");
        let wrapped = Error::Store(Classified::new(ErrorKind::Internal, io));
        assert_eq!(wrapped.kind(), ErrorKind::Internal);
        assert_eq!(error_chain(&wrapped), "disk on fire");
    }

    #[test]
    fn an_invalid_parameter_keeps_its_cause_and_reads_as_one_line() {
        let key = Error::InvalidKey(guestcomm_protocol::auth::Psk::from_hex("xyz").unwrap_err());
        assert_eq!(key.kind(), ErrorKind::InvalidArgument);
        assert!(std::error::Error::source(&key).is_some());
        assert_eq!(
            error_chain(&key),
            "invalid key: a key must be 64 lower-case hex digits"
        );
        let id = Error::from("nope".parse::<ServiceId>().unwrap_err());
        assert_eq!(id.kind(), ErrorKind::InvalidArgument);
        assert!(error_chain(&id).starts_with("invalid service GUID \"nope\""));
        let internal = Error::Internal("disk on fire".into());
        assert_eq!(internal.kind(), ErrorKind::Internal);
        assert_eq!(error_chain(&internal), "internal error: disk on fire");
    }

    #[test]
    fn agent_codes_keep_their_meaning() {
        let cases = [
            (ErrorCode::InvalidArgument, ErrorKind::InvalidArgument),
            (ErrorCode::NotFound, ErrorKind::NotFound),
            (ErrorCode::PermissionDenied, ErrorKind::Forbidden),
            (ErrorCode::PolicyDenied, ErrorKind::PolicyDenied),
            (ErrorCode::ResourceLimit, ErrorKind::LimitReached),
            (ErrorCode::UnsupportedRequest, ErrorKind::Unsupported),
            (ErrorCode::UnknownService, ErrorKind::Unsupported),
            (ErrorCode::Io, ErrorKind::AgentFailed),
        ];
        for (code, kind) in cases {
            assert_eq!(ErrorKind::of_agent_code(code), kind, "{code}");
        }
    }
}
