//! What commands share about the daemon's API besides its client (which
//! [`crate::context::Context`] makes): the path of a VM, errors found before
//! asking the daemon shaped as the daemon's, and an API error as one line.

use guestcomm_api::{validate_vm_name, ApiError, ApiErrorCode};

/// The API path of a VM, after checking its name (so it is URL-safe).
pub(crate) fn vm_path(name: &str) -> Result<String, ApiError> {
    validate_vm_name(name)
        .map_err(|error| local_error(400, ApiErrorCode::InvalidArgument, error))?;
    Ok(format!("/v1/vms/{name}"))
}

/// An error found before asking the daemon, shaped as the daemon's.
pub(crate) fn local_error(status: u16, code: ApiErrorCode, error: String) -> ApiError {
    ApiError::Status {
        status,
        body: guestcomm_api::ErrorBody {
            code,
            chain: vec![error.clone()],
            error,
            required_role: None,
        },
    }
}

/// An API error as an anyhow error of one line: the error and its causes,
/// joined by ": " (the daemon's body is already one line).
pub(crate) fn one_line(err: &ApiError) -> anyhow::Error {
    anyhow::Error::msg(guestcomm_protocol::error_chain(err))
}
