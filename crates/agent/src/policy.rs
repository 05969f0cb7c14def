//! The guest owner's policy (`guestcomm-agent --policy FILE`): the same
//! document as the host's (`guestcomm_policy`), enforced here on
//! every request before it reaches a service. Copy paths are checked here
//! as written; the file service then opens them beneath the allowed
//! prefixes at the moment of use (module `files`), so that a symbolic link
//! on the way, there now or planted later, cannot lead out of them.

use std::path::Path;

use guestcomm_policy::{PolicyDocument, PolicyError, MAX_POLICY_BYTES};
use guestcomm_protocol::{ErrorCode, ErrorFrame, Request};

/// Why the policy file was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// It could not be read.
    #[error("cannot read the policy file {0}")]
    Read(String, #[source] std::io::Error),
    /// It is not a valid policy.
    #[error("invalid policy file {0}")]
    Invalid(String, #[source] PolicyError),
}

/// Reads and validates the policy at `path`.
pub fn load(path: &Path) -> Result<PolicyDocument, PolicyFileError> {
    use std::io::Read;
    let name = path.display().to_string();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_POLICY_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| PolicyFileError::Read(name.clone(), e))?;
    PolicyDocument::parse(&text).map_err(|e| PolicyFileError::Invalid(name, e))
}

/// Checks `request` against the guest's policy (rewriting a bare program
/// name to its allowed path); a refusal is the error frame to send.
pub(crate) fn check(doc: &PolicyDocument, request: &mut Request) -> Result<(), ErrorFrame> {
    let deny = |reason: String| {
        ErrorFrame::new(
            ErrorCode::PolicyDenied,
            format!("refused by the guest policy (guestcomm-agent --policy): {reason}"),
        )
    };
    doc.check(&mut request.call).map_err(deny)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_policy_file_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[exec]\nallow = [{ program = \"uptime\" }]\n").unwrap();
        let err = guestcomm_protocol::error_chain(&load(&path).unwrap_err());
        assert!(err.contains("p.toml") && err.contains("line 2"), "{err}");
    }
}
