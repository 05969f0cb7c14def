//! The guest owner's policy (`guestcomm-agent --policy FILE`): the same
//! document as the host's (`guestcomm_protocol::policy`), enforced here on
//! every request before it reaches a service. Copy paths are checked twice:
//! as written, and with the symbolic links of their existing part resolved,
//! so a link inside an allowed directory cannot lead out of it.

use std::path::{Path, PathBuf};

use guestcomm_protocol::message::{ErrorCode, ErrorFrame, Request};
use guestcomm_protocol::policy::{Direction, PolicyDocument, PolicyError, MAX_POLICY_BYTES};
use guestcomm_protocol::Call;

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

/// `path` with the symbolic links of its longest existing ancestor
/// resolved; the missing rest is appended as written.
fn resolve(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Checks `request` against the guest's policy (rewriting a bare program
/// name to its allowed path); a refusal is the error frame to send.
pub fn check(doc: &PolicyDocument, request: &mut Request) -> Result<(), ErrorFrame> {
    let deny = |reason: String| {
        ErrorFrame::new(
            ErrorCode::PolicyDenied,
            format!("refused by the guest policy (guestcomm-agent --policy): {reason}"),
        )
    };
    doc.check(&mut request.call).map_err(deny)?;
    let (direction, path) = match &request.call {
        Call::CopyToGuest(c) => (Direction::ToGuest, &c.dst),
        Call::CopyFromGuest(c) => (Direction::FromGuest, &c.src),
        _ => return Ok(()),
    };
    let real = resolve(Path::new(path));
    match real.to_str() {
        Some(real) => doc
            .check_copy(direction, real)
            .map_err(|reason| deny(format!("{path:?} resolves to {real:?}: {reason}"))),
        None => Err(deny(format!(
            "{path:?} resolves to a path that is not UTF-8"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::files::CopyToGuest;
    use guestcomm_protocol::BuiltinService;

    fn copy_to(dst: &Path) -> Request {
        Request {
            service: BuiltinService::Files.id(),
            call: Call::CopyToGuest(CopyToGuest {
                dst: dst.display().to_string(),
                ..CopyToGuest::default()
            }),
        }
    }

    #[test]
    fn a_symlink_inside_an_allowed_directory_does_not_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let allowed = base.join("in");
        std::fs::create_dir(&allowed).unwrap();
        std::os::unix::fs::symlink(&base, allowed.join("up")).unwrap();
        let doc = PolicyDocument::parse(&format!("[cp]\nto_guest = [\"{}\"]\n", allowed.display()))
            .unwrap();
        assert!(check(&doc, &mut copy_to(&allowed.join("new/file"))).is_ok());
        let err = check(&doc, &mut copy_to(&allowed.join("up/escape"))).unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyDenied);
        assert!(
            err.message.contains("guest policy") && err.message.contains("resolves to"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_malformed_policy_file_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[exec]\nallow = [{ program = \"uptime\" }]\n").unwrap();
        let err = guestcomm_protocol::handshake::error_chain(&load(&path).unwrap_err());
        assert!(err.contains("p.toml") && err.contains("line 2"), "{err}");
    }
}
