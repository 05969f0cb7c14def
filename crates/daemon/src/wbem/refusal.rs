//! How the WBEM front end says no: the CIM status of every [`ErrorKind`]
//! (one exhaustive match), the ReturnValue of a Hyper-V method that failed
//! with one (another), an [`Error`] as a CIM error, and the role check of a
//! method. A leaf of `wbem`: the operations, methods and jobs import it.

use guestcomm_api::Role;
use guestcomm_cim::{CimError, CimStatus, ReturnValue};

use crate::access::Authorized;
use crate::error::{Error, ErrorKind};

/// The CIM status of every kind of error: the one mapping.
pub(crate) fn cim_status(kind: ErrorKind) -> CimStatus {
    match kind {
        ErrorKind::NotFound => CimStatus::NotFound,
        ErrorKind::InvalidArgument => CimStatus::InvalidParameter,
        ErrorKind::Forbidden | ErrorKind::PolicyDenied | ErrorKind::ServiceDisabled => {
            CimStatus::AccessDenied
        }
        ErrorKind::Conflict
        | ErrorKind::Builtin
        | ErrorKind::AgentUnreachable
        | ErrorKind::GuestUnreachable
        | ErrorKind::AgentFailed
        | ErrorKind::Unsupported
        | ErrorKind::LimitReached
        | ErrorKind::Busy
        | ErrorKind::Internal => CimStatus::Failed,
    }
}

/// The ReturnValue of a Hyper-V method whose operation failed with
/// `kind` (the numbers are [`ReturnValue`]'s): Invalid parameter, Access
/// Denied (the caller's role, a host policy), Invalid state (the service is
/// disabled on the VM), Not Supported, System is in use, System is not
/// available (the agent cannot be reached), Failed otherwise.
pub(crate) fn return_code(kind: ErrorKind) -> ReturnValue {
    match kind {
        ErrorKind::InvalidArgument => ReturnValue::InvalidParameter,
        ErrorKind::Forbidden | ErrorKind::PolicyDenied => ReturnValue::AccessDenied,
        ErrorKind::ServiceDisabled => ReturnValue::InvalidState,
        ErrorKind::Unsupported => ReturnValue::Unsupported,
        ErrorKind::Busy | ErrorKind::LimitReached => ReturnValue::SystemInUse,
        ErrorKind::AgentUnreachable | ErrorKind::GuestUnreachable => {
            ReturnValue::SystemNotAvailable
        }
        ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Builtin
        | ErrorKind::AgentFailed
        | ErrorKind::Internal => ReturnValue::Failed,
    }
}

/// An error as a CIM error: its status, and its whole chain as the text.
pub(crate) fn cim_error(e: &Error) -> CimError {
    CimError::new(cim_status(e.kind()), guestcomm_protocol::error_chain(e))
}

/// `CIM_ERR_ACCESS_DENIED` unless the caller holds `needed`.
pub(crate) fn require(auth: &Authorized, needed: Role, what: &str) -> Result<(), CimError> {
    if auth.role >= needed {
        Ok(())
    } else {
        Err(CimError::new(
            CimStatus::AccessDenied,
            format!(
                "{what} needs the {needed} role, and the caller is only a {}",
                auth.role
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Caller;

    #[test]
    fn api_errors_keep_their_meaning_as_cim_statuses() {
        let cases = [
            (Error::BadRequest("x".into()), CimStatus::InvalidParameter),
            (Error::ServiceDisabled("x".into()), CimStatus::AccessDenied),
            (Error::PolicyDenied("x".into()), CimStatus::AccessDenied),
            (Error::Internal("x".into()), CimStatus::Failed),
            (
                Error::from(crate::store::StoreError::UnknownVm("web1".into())),
                CimStatus::NotFound,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(cim_error(&e).status, status, "{e}");
        }
    }

    #[test]
    fn failed_operations_return_hyper_v_codes() {
        let cases = [
            (Error::ServiceDisabled("x".into()), 32775),
            (Error::PolicyDenied("x".into()), 32769),
            (Error::BadRequest("x".into()), 32773),
            (Error::Busy("x".into()), 32774),
            (Error::Internal("x".into()), 32768),
        ];
        for (e, code) in cases {
            assert_eq!(return_code(e.kind()).code(), code, "{e}");
        }
    }

    #[test]
    fn methods_need_the_role_they_name() {
        let auth = |role| Authorized {
            caller: Caller::default(),
            role,
            grants: crate::access::Grants::default(),
        };
        assert!(require(&auth(Role::Admin), Role::Admin, "m").is_ok());
        let err = require(&auth(Role::Viewer), Role::Admin, "X.RequestStateChange").unwrap_err();
        assert_eq!(err.status, CimStatus::AccessDenied);
        assert!(err.description.contains("needs the admin role"), "{err}");
    }
}
