//! A libvirt domain's key, delivered by guestcommd: the credentials file it
//! writes for a domain it follows (`KEY_DIR/UUID.key`, owner root, the
//! directory's group, mode 0640, which QEMU reads through the fwcfg
//! `<entry file=...>`), the key of an entry the domain already has, and
//! whether the domain carries it ([`DomainKey`], `vm show`).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use guestcomm_api::DomainKey;
use guestcomm_protocol::auth::{
    credentials_text, parse_credentials, CredentialsError, Psk, MAX_CREDENTIALS_FILE_BYTES,
};
use uuid::Uuid;

use super::domain_xml::Credential;
use crate::health::Power;
use crate::limits::DOMAIN_KEY_FILE_MODE;

/// Why a domain's key could not be written or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DomainKeyError {
    /// The key directory is not a directory.
    #[error("the key directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A file could not be written, read or renamed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The entry's key does not parse.
    #[error("the key in the domain's fwcfg entry is not a credentials file")]
    Credentials(#[source] CredentialsError),
    /// The entry's value holds an entity the reader does not resolve.
    #[error("the domain's fwcfg entry holds an XML entity guestcommd does not read")]
    Unreadable,
}

/// Whether a domain in `power` carries the key: `live` when its live XML
/// has the entry, `defined` when its definition (persistent) has it.
pub(crate) fn delivery(power: Power, live: bool, defined: bool) -> DomainKey {
    match power {
        Power::Running | Power::Paused if live => DomainKey::InRunningDomain,
        Power::Running | Power::Paused if defined => DomainKey::RestartNeeded,
        Power::Off if defined => DomainKey::AtNextStart,
        _ => DomainKey::NotInDomain,
    }
}

/// Writes `psk` as a credentials file `dir/UUID.key`, owned by the
/// daemon's user and `dir`'s group, mode 0640, replacing one left by an
/// earlier attempt (written beside, then renamed); returns its path.
pub(crate) fn write_key_file(dir: &Path, uuid: Uuid, psk: &Psk) -> Result<PathBuf, DomainKeyError> {
    let io = |what: String| move |e| DomainKeyError::Io(what, e);
    let meta = std::fs::metadata(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(DomainKeyError::NotADirectory(dir.to_path_buf()));
    }
    let path = dir.join(format!("{uuid}.key"));
    let temp = dir.join(format!(".{uuid}.key.new"));
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("cannot remove {}", temp.display()))(e))
        }
        _ => {}
    }
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&temp)?;
        std::os::unix::fs::fchown(&file, None, Some(meta.gid()))?;
        file.set_permissions(std::fs::Permissions::from_mode(DOMAIN_KEY_FILE_MODE))?;
        file.write_all(credentials_text(psk).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(format!("cannot write {}", path.display()))(e));
    }
    Ok(path)
}

/// Removes the key file written for domain `uuid` in `dir`; its path, or
/// `None` when there was none.
pub(crate) fn remove_key_file(dir: &Path, uuid: Uuid) -> Result<Option<PathBuf>, DomainKeyError> {
    let path = dir.join(format!("{uuid}.key"));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DomainKeyError::Io(
            format!("cannot remove {}", path.display()),
            e,
        )),
    }
}

/// The key of a credential entry a domain already has.
pub(crate) fn key_of(credential: &Credential) -> Result<Psk, DomainKeyError> {
    let text = match credential {
        Credential::File(path) => {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| {
                    f.take(MAX_CREDENTIALS_FILE_BYTES + 1)
                        .read_to_string(&mut text)
                })
                .map_err(|e| DomainKeyError::Io(format!("cannot read {path}"), e))?;
            text
        }
        Credential::Value(text) => text.clone(),
        Credential::Unreadable => return Err(DomainKeyError::Unreadable),
    };
    parse_credentials(&text, "the domain's fwcfg entry").map_err(DomainKeyError::Credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Psk {
        Psk::from_hex(&"cd".repeat(32)).unwrap()
    }

    #[test]
    fn the_key_file_is_the_directorys_group_0640_and_replaces_a_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = Uuid::new_v4();
        std::fs::write(dir.path().join(format!("{uuid}.key")), "old").unwrap();
        let path = write_key_file(dir.path(), uuid, &key()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), std::fs::metadata(dir.path()).unwrap().gid());
        let read = key_of(&Credential::File(path.display().to_string())).unwrap();
        assert_eq!(read.secret_hex(), key().secret_hex());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert_eq!(remove_key_file(dir.path(), uuid).unwrap(), Some(path));
        assert_eq!(remove_key_file(dir.path(), uuid).unwrap(), None);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            write_key_file(&file, uuid, &key()),
            Err(DomainKeyError::NotADirectory(_))
        ));
    }

    #[test]
    fn an_entrys_key_is_read_from_its_value_or_refused() {
        let inline = Credential::Value(credentials_text(&key()));
        assert_eq!(key_of(&inline).unwrap().secret_hex(), key().secret_hex());
        assert!(matches!(
            key_of(&Credential::Value("not a key".into())),
            Err(DomainKeyError::Credentials(_))
        ));
        assert!(matches!(
            key_of(&Credential::Unreadable),
            Err(DomainKeyError::Unreadable)
        ));
    }

    #[test]
    fn delivery_says_where_the_key_is() {
        assert_eq!(
            delivery(Power::Running, true, true),
            DomainKey::InRunningDomain
        );
        assert_eq!(
            delivery(Power::Paused, false, true),
            DomainKey::RestartNeeded
        );
        assert_eq!(delivery(Power::Off, false, true), DomainKey::AtNextStart);
        assert_eq!(delivery(Power::Off, false, false), DomainKey::NotInDomain);
        assert_eq!(
            delivery(Power::Running, false, false),
            DomainKey::NotInDomain
        );
    }
}
