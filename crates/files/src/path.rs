//! Validation of the names a sender puts in entries: relative, `/`-separated,
//! no `.` or `..`, no empty component, no NUL, bounded lengths. Pure
//! functions; the receiver also never follows a symlink on the way (see
//! [`crate::receive`]).

use std::path::{Path, PathBuf};

use guestcomm_protocol::limits::{MAX_COPY_NAME_BYTES, MAX_COPY_PATH_BYTES};

use crate::CopyError;

/// Splits an entry path into its components, refusing anything that could
/// name a place outside the destination or that Linux could not create.
pub fn components(path: &str) -> Result<Vec<&str>, CopyError> {
    let bad = |reason: &str| CopyError::BadEntry {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("empty name"));
    }
    if path.len() > MAX_COPY_PATH_BYTES {
        return Err(bad(&format!(
            "name of {} bytes exceeds the {MAX_COPY_PATH_BYTES}-byte limit",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(bad("name contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path (names must be relative)"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' or '..' component")),
            p if p.len() > MAX_COPY_NAME_BYTES => {
                return Err(bad(&format!(
                    "component of {} bytes exceeds the {MAX_COPY_NAME_BYTES}-byte limit",
                    p.len()
                )))
            }
            _ => {}
        }
    }
    Ok(parts)
}

/// Checks a symlink's target: non-empty, bounded, no NUL. Where it points
/// does not matter: the receiver never follows links.
pub fn check_target(path: &str, target: Option<&str>) -> Result<(), CopyError> {
    let bad = |reason: &str| CopyError::BadEntry {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    match target {
        None | Some("") => Err(bad("symlink without a target")),
        Some(t) if t.len() > MAX_COPY_PATH_BYTES => Err(bad("symlink target too long")),
        Some(t) if t.contains('\0') => Err(bad("symlink target contains a NUL byte")),
        Some(_) => Ok(()),
    }
}

/// The directory `path` is in: `.` for a bare name.
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_are_split() {
        assert_eq!(components("a").unwrap(), ["a"]);
        assert_eq!(components("a/b c/é").unwrap(), ["a", "b c", "é"]);
        assert_eq!(components("..a/b..").unwrap(), ["..a", "b.."]);
    }

    #[test]
    fn escaping_or_malformed_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(components(bad).is_err(), "{bad:?} accepted");
        }
        assert!(components(&"x".repeat(MAX_COPY_NAME_BYTES + 1)).is_err());
        assert!(components(&"a/".repeat(MAX_COPY_PATH_BYTES / 2 + 1)).is_err());
    }

    #[test]
    fn symlink_targets_need_content() {
        assert!(check_target("l", Some("../../etc")).is_ok());
        assert!(check_target("l", None).is_err());
        assert!(check_target("l", Some("a\0")).is_err());
    }
}
