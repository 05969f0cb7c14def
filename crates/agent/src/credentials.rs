//! Where the agent finds the VM's key: the means a hypervisor already has
//! to hand a guest a secret at boot, in systemd's credential conventions, so
//! a guest needs nothing on its disk but the agent.
//!
//! ```text
//! 1. --credentials PATH                                   (only it, when given)
//! 2. $CREDENTIALS_DIRECTORY/guestcomm.key                 systemd LoadCredential= / ImportCredential=
//! 3. /sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials/guestcomm.key/raw
//!                                                         QEMU -fw_cfg (the qemu_fw_cfg driver: udev loads
//!                                                         it on QEMU; a unit can `modprobe` it first)
//! 4. /sys/firmware/dmi/entries/11-*/raw                   SMBIOS type 11 OEM string
//!    io.systemd.credential:guestcomm.key=TEXT  or  io.systemd.credential.binary:guestcomm.key=BASE64
//! ```
//!
//! The first place that holds a key is used, and a key found there that is
//! malformed or readable by other users is an error, never a reason to try
//! the next place. Each holds the text of a credentials file
//! (`guestcomm identity new`). The kernel command line is not a place: any
//! guest user can read /proc/cmdline.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use guestcomm_protocol::auth::{
    load_credentials, parse_credentials, CredentialsError, Psk, CREDENTIAL_NAME, FW_CFG_CREDENTIAL,
    MAX_CREDENTIALS_FILE_BYTES, SMBIOS_CREDENTIAL_BINARY, SMBIOS_CREDENTIAL_TEXT,
};

/// Where the kernel shows QEMU's firmware configuration entries.
pub(crate) const FW_CFG_ROOT: &str = "/sys/firmware/qemu_fw_cfg";
/// The entry's path below [`FW_CFG_ROOT`] (QEMU: `-fw_cfg name=opt/io.systemd.credentials/guestcomm.key,file=...`).
fn fw_cfg_entry() -> String {
    format!("by_name/{FW_CFG_CREDENTIAL}/raw")
}
/// Where the kernel shows the SMBIOS structures.
pub(crate) const DMI_ENTRIES: &str = "/sys/firmware/dmi/entries";
/// Most bytes read of one SMBIOS structure (a structure and its strings).
const MAX_SMBIOS_BYTES: u64 = 64 * 1024;

/// The places searched, the system's by default (tests point them elsewhere).
#[derive(Clone, Debug)]
pub struct Places {
    /// systemd's `$CREDENTIALS_DIRECTORY`, when set.
    pub credentials_directory: Option<PathBuf>,
    /// [`FW_CFG_ROOT`].
    pub fw_cfg: PathBuf,
    /// [`DMI_ENTRIES`].
    pub dmi: PathBuf,
}

impl Places {
    /// The system's places.
    pub fn system() -> Self {
        Self {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            fw_cfg: PathBuf::from(FW_CFG_ROOT),
            dmi: PathBuf::from(DMI_ENTRIES),
        }
    }
}

/// Where a key was found (logged at start; never the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--credentials PATH`.
    Option(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/guestcomm.key`.
    SystemdCredential(PathBuf),
    /// A QEMU firmware configuration entry.
    FwCfg(PathBuf),
    /// An SMBIOS type 11 OEM string.
    Smbios(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Option(p) => write!(f, "--credentials {}", p.display()),
            Self::SystemdCredential(p) => write!(f, "systemd credential {}", p.display()),
            Self::FwCfg(p) => write!(f, "QEMU firmware configuration {}", p.display()),
            Self::Smbios(p) => write!(f, "SMBIOS type 11 string in {}", p.display()),
        }
    }
}

/// Why a key that was found cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The place holds a key that is unreadable, malformed or too open.
    #[error("the key from {source_name} cannot be used")]
    Unusable {
        /// Where it was.
        source_name: String,
        /// Why.
        #[source]
        source: CredentialsError,
    },
    /// An SMBIOS string names the credential but does not decode.
    #[error("the SMBIOS type 11 string in {0} names {CREDENTIAL_NAME} but its value is not valid base64")]
    BadBase64(String),
}

fn unusable(source: &Source, e: CredentialsError) -> FindError {
    FindError::Unusable {
        source_name: source.to_string(),
        source: e,
    }
}

/// The VM's key and where it came from; `None` when no place holds one.
pub fn find(option: Option<&Path>, places: &Places) -> Result<Option<(Psk, Source)>, FindError> {
    if let Some(path) = option {
        let source = Source::Option(path.to_path_buf());
        return load_credentials(path)
            .map(|psk| Some((psk, source.clone())))
            .map_err(|e| unusable(&source, e));
    }
    if let Some(dir) = &places.credentials_directory {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            let source = Source::SystemdCredential(path.clone());
            return load_credentials(&path)
                .map(|psk| Some((psk, source.clone())))
                .map_err(|e| unusable(&source, e));
        }
    }
    let entry = places.fw_cfg.join(fw_cfg_entry());
    if entry.exists() {
        let source = Source::FwCfg(entry.clone());
        return load_credentials(&entry)
            .map(|psk| Some((psk, source.clone())))
            .map_err(|e| unusable(&source, e));
    }
    smbios(&places.dmi)
}

/// The key from an SMBIOS type 11 structure, if one names it.
fn smbios(dmi: &Path) -> Result<Option<(Psk, Source)>, FindError> {
    let Ok(entries) = std::fs::read_dir(dmi) else {
        return Ok(None);
    };
    let mut oem: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("11-"))
        .map(|e| e.path().join("raw"))
        .collect();
    oem.sort();
    for raw in oem {
        let source = Source::Smbios(raw.clone());
        let Ok(meta) = std::fs::metadata(&raw) else {
            continue;
        };
        if meta.mode() & 0o077 != 0 {
            return Err(unusable(
                &source,
                CredentialsError::TooOpen {
                    path: raw.display().to_string(),
                    mode: meta.mode() & 0o7777,
                },
            ));
        }
        let bytes = read_bounded(&raw).map_err(|e| {
            unusable(
                &source,
                CredentialsError::Io {
                    path: raw.display().to_string(),
                    source: e,
                },
            )
        })?;
        if let Some(text) = credential_in(&bytes, &raw)? {
            let name = source.to_string();
            return parse_credentials(&text, &name)
                .map(|psk| Some((psk, source.clone())))
                .map_err(|e| unusable(&source, e));
        }
    }
    Ok(None)
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SMBIOS_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The credential's text among the strings of an SMBIOS type 11 structure:
/// a header (type, length, handle, count) of `length` bytes, then
/// NUL-terminated strings ending with an empty one.
fn credential_in(structure: &[u8], raw: &Path) -> Result<Option<String>, FindError> {
    let (Some(&11), Some(&length)) = (structure.first(), structure.get(1)) else {
        return Ok(None);
    };
    let Some(strings) = structure.get(usize::from(length)..) else {
        return Ok(None);
    };
    for string in strings.split(|b| *b == 0).take_while(|s| !s.is_empty()) {
        let Ok(string) = std::str::from_utf8(string) else {
            continue;
        };
        if let Some(text) = string.strip_prefix(SMBIOS_CREDENTIAL_TEXT) {
            return Ok(Some(text.to_string()));
        }
        if let Some(encoded) = string.strip_prefix(SMBIOS_CREDENTIAL_BINARY) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .filter(|d| d.len() as u64 <= MAX_CREDENTIALS_FILE_BYTES)
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| FindError::BadBase64(raw.display().to_string()))?;
            return Ok(Some(decoded));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use guestcomm_protocol::auth::write_credentials;

    use super::*;

    /// Places under `root`.
    fn places(root: &Path) -> Places {
        Places {
            credentials_directory: Some(root.join("creds")),
            fw_cfg: root.join("fw_cfg"),
            dmi: root.join("dmi"),
        }
    }

    /// A key file's text.
    fn key_text(root: &Path, name: &str) -> (Psk, String) {
        let path = root.join(name);
        let psk = Psk::generate().unwrap();
        write_credentials(&path, &psk).unwrap();
        (psk, std::fs::read_to_string(path).unwrap())
    }

    fn put(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// An SMBIOS type 11 structure holding `strings`.
    fn oem_strings(strings: &[&str]) -> Vec<u8> {
        let mut s = vec![11, 5, 0x00, 0x11, strings.len() as u8];
        for string in strings {
            s.extend_from_slice(string.as_bytes());
            s.push(0);
        }
        s.push(0);
        s
    }

    #[test]
    fn the_first_place_that_holds_a_key_wins() {
        let root = tempfile::tempdir().unwrap();
        let p = places(root.path());
        assert!(find(None, &p).unwrap().is_none());

        let (smbios_key, text) = key_text(root.path(), "k1");
        let binary = base64::engine::general_purpose::STANDARD.encode(&text);
        let raw = p.dmi.join("11-0/raw");
        put(
            &raw,
            &oem_strings(&[
                "other=1",
                &format!("io.systemd.credential.binary:guestcomm.key={binary}"),
            ]),
            0o400,
        );
        let (psk, source) = find(None, &p).unwrap().unwrap();
        assert_eq!(
            (psk.secret_hex(), source),
            (smbios_key.secret_hex(), Source::Smbios(raw))
        );

        let (fw_key, text) = key_text(root.path(), "k2");
        let entry = p.fw_cfg.join(fw_cfg_entry());
        put(&entry, text.as_bytes(), 0o400);
        let (psk, source) = find(None, &p).unwrap().unwrap();
        assert_eq!(
            (psk.secret_hex(), source),
            (fw_key.secret_hex(), Source::FwCfg(entry))
        );

        let (systemd_key, text) = key_text(root.path(), "k3");
        let credential = root.path().join("creds").join(CREDENTIAL_NAME);
        put(&credential, text.as_bytes(), 0o400);
        let (psk, source) = find(None, &p).unwrap().unwrap();
        assert_eq!(
            (psk.secret_hex(), source),
            (
                systemd_key.secret_hex(),
                Source::SystemdCredential(credential)
            )
        );

        let (option_key, _) = key_text(root.path(), "k4");
        let option = root.path().join("k4");
        let (psk, source) = find(Some(&option), &p).unwrap().unwrap();
        assert_eq!(
            (psk.secret_hex(), source),
            (option_key.secret_hex(), Source::Option(option))
        );
    }

    #[test]
    fn a_key_others_can_read_is_refused_not_skipped() {
        let root = tempfile::tempdir().unwrap();
        let p = places(root.path());
        let (_, text) = key_text(root.path(), "k");
        put(&p.fw_cfg.join(fw_cfg_entry()), text.as_bytes(), 0o400);
        let credential = root.path().join("creds").join(CREDENTIAL_NAME);
        put(&credential, text.as_bytes(), 0o644);
        let err = find(None, &p).unwrap_err();
        let chain = guestcomm_protocol::error_chain(&err);
        assert!(chain.contains("systemd credential"), "{chain}");
        assert!(chain.contains("0644") || chain.contains("644"), "{chain}");
    }

    #[test]
    fn smbios_strings_in_text_or_base64_and_bad_ones() {
        let root = tempfile::tempdir().unwrap();
        let p = places(root.path());
        let (key, text) = key_text(root.path(), "k");
        let raw = p.dmi.join("11-1/raw");
        put(
            &raw,
            &oem_strings(&[&format!(
                "io.systemd.credential:guestcomm.key={}",
                text.trim()
            )]),
            0o400,
        );
        let (psk, _) = find(None, &p).unwrap().unwrap();
        assert_eq!(psk.secret_hex(), key.secret_hex());

        put(
            &raw,
            &oem_strings(&["io.systemd.credential.binary:guestcomm.key=***"]),
            0o400,
        );
        let err = find(None, &p).unwrap_err();
        assert!(err.to_string().contains("not valid base64"), "{err}");

        // A truncated structure, or another type's, is no key and no panic.
        put(&raw, &[11, 200, 0], 0o400);
        assert!(find(None, &p).unwrap().is_none());
        put(&raw, &oem_strings(&["x"])[..3], 0o400);
        assert!(find(None, &p).unwrap().is_none());
    }
}
