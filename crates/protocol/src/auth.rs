//! Mutual authentication with a per-VM pre-shared key: `"psk-hmac-sha256"`.
//!
//! ```text
//! client                                          server (agent)
//!   | -- hello {auth:["psk-hmac-sha256"], auth_nonce: Nc} -->  |
//!   | <-- auth_challenge {method, nonce: Ns, proof: Ps} -----  |  Ps proves the agent has K
//!   | -- auth_response {proof: Pc} ------------------------>  |  Pc proves the client has K
//!   | <-- welcome ------------------------------------------  |
//! Ps = HMAC-SHA256(K, "guestcomm psk-hmac-sha256 server" 0 T)
//! Pc = HMAC-SHA256(K, "guestcomm psk-hmac-sha256 client" 0 T)
//! T  = Nc 0 Ns 0 offered-methods-joined-by-"," 0 "major.minor"
//! ```
//!
//! Fresh nonces on both sides ([`crate::nonce`]: never repeated, never
//! predictable without K, never waiting for the kernel's random pool) make
//! a recorded handshake useless for a replay; the direction labels stop a
//! proof from being reflected; the offered methods in `T` detect a
//! downgrade. After the handshake the
//! stream is not encrypted: vsock and Unix sockets are local to the machine,
//! and bulk throughput stays unchanged (docs/SECURITY.md).
//!
//! A credentials file holds one key: `{"method":"psk-hmac-sha256","key":"<64 hex>"}`,
//! mode 0600; the same file serves the host side and the guest side.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::entropy::{self, PoolState};
use crate::message::ProtocolVersion;

/// The method name in `hello.auth` and `welcome.auth`.
pub const AUTH_PSK: &str = "psk-hmac-sha256";

/// Key size: 256 bits, HMAC-SHA256's block-size-independent strength.
pub const KEY_BYTES: usize = 32;

/// Nonce size: 256 bits, so a nonce never repeats by chance (how they are
/// made: [`crate::nonce`]).
pub const NONCE_BYTES: usize = 32;

/// Largest credentials file read (a valid one is under 100 bytes).
pub const MAX_CREDENTIALS_FILE_BYTES: u64 = 4096;

/// Why authentication material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key, nonce or proof is not the expected number of hex digits.
    #[error("{what} must be {digits} lower-case hex digits")]
    BadHex {
        /// Which value.
        what: &'static str,
        /// How many digits it must have.
        digits: usize,
    },
    /// The kernel's random number generator refused to answer.
    #[error("cannot get random bytes from the kernel")]
    Random(#[source] std::io::Error),
    /// The kernel's random pool is not initialized yet: a key made now
    /// could be guessed, and waiting could take minutes.
    #[error("the kernel's random pool is not initialized yet, so no key can be made safely now: give the machine an entropy source (a virtio-rng device, or a CPU with RDRAND) or wait until `dmesg` shows \"crng init done\", then try again")]
    PoolNotInitialized,
}

/// Why a credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read or written.
    #[error("cannot access credentials file {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error("credentials file {path} has mode {mode:04o}: others could read the key; run chmod 600 {path}")]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a credentials file.
    #[error("credentials file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A pre-shared key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk([u8; KEY_BYTES]);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// `bytes` as lower-case hex (keys, proofs, and the digests the host
/// records).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], AuthError> {
    let bad = AuthError::BadHex {
        what,
        digits: 2 * N,
    };
    let digits = text.as_bytes();
    if digits.len() != 2 * N
        || !digits
            .iter()
            .all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad);
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| AuthError::BadHex {
            what,
            digits: 2 * N,
        })?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| AuthError::BadHex {
            what,
            digits: 2 * N,
        })?;
    }
    Ok(out)
}

/// Checks that a nonce from the peer has the right form.
pub fn check_nonce(text: &str) -> Result<(), AuthError> {
    from_hex::<NONCE_BYTES>(text, "an authentication nonce").map(|_| ())
}

/// What both proofs cover.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// The client's nonce (hex).
    pub client_nonce: &'a str,
    /// The server's nonce (hex).
    pub server_nonce: &'a str,
    /// The methods the client offered, in its order.
    pub offered: &'a [String],
    /// The version the client announced.
    pub version: ProtocolVersion,
}

const SERVER_LABEL: &[u8] = b"guestcomm psk-hmac-sha256 server";
const CLIENT_LABEL: &[u8] = b"guestcomm psk-hmac-sha256 client";

impl Psk {
    /// A new random key, from the kernel's generator. Never blocks: if the
    /// kernel's random pool is not initialized yet (a VM without an entropy
    /// source, early in its boot) this fails with
    /// [`AuthError::PoolNotInitialized`] instead of waiting for it.
    pub fn generate() -> Result<Self, AuthError> {
        Self::generate_with(entropy::fill_if_initialized)
    }

    /// [`Psk::generate`] with the kernel's generator given as `fill`.
    fn generate_with(
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<PoolState>,
    ) -> Result<Self, AuthError> {
        let mut key = [0u8; KEY_BYTES];
        match fill(&mut key).map_err(AuthError::Random)? {
            PoolState::Initialized => Ok(Self(key)),
            PoolState::NotInitialized => Err(AuthError::PoolNotInitialized),
        }
    }

    /// The key as hex, for the daemon's state database and credentials
    /// files. It is the secret itself: never log it.
    pub fn secret_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The key from its hex form.
    pub fn from_hex(text: &str) -> Result<Self, AuthError> {
        from_hex(text, "a key").map(Self)
    }

    /// HMAC-SHA256 keyed with this key, for the proofs and the nonces.
    pub(crate) fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail for 32 bytes.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }

    fn mac(&self, label: &[u8], t: &Transcript<'_>) -> Hmac<Sha256> {
        let mut mac = self.hmac();
        for part in [
            label,
            t.client_nonce.as_bytes(),
            t.server_nonce.as_bytes(),
            t.offered.join(",").as_bytes(),
            t.version.to_string().as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\0");
        }
        mac
    }

    /// The server's proof, as hex.
    pub fn server_proof(&self, t: &Transcript<'_>) -> String {
        to_hex(&self.mac(SERVER_LABEL, t).finalize().into_bytes())
    }

    /// The client's proof, as hex.
    pub fn client_proof(&self, t: &Transcript<'_>) -> String {
        to_hex(&self.mac(CLIENT_LABEL, t).finalize().into_bytes())
    }

    /// Checks the server's proof in constant time.
    pub fn verify_server(&self, t: &Transcript<'_>, proof: &str) -> bool {
        from_hex::<32>(proof, "a proof")
            .is_ok_and(|p| self.mac(SERVER_LABEL, t).verify_slice(&p).is_ok())
    }

    /// Checks the client's proof in constant time.
    pub fn verify_client(&self, t: &Transcript<'_>, proof: &str) -> bool {
        from_hex::<32>(proof, "a proof")
            .is_ok_and(|p| self.mac(CLIENT_LABEL, t).verify_slice(&p).is_ok())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    method: String,
    key: String,
}

/// Reads a credentials file, refusing one that others can read.
pub fn load_credentials(path: &Path) -> Result<Psk, CredentialsError> {
    let name = path.display().to_string();
    let io = |source| CredentialsError::Io {
        path: name.clone(),
        source,
    };
    let malformed = |reason: String| CredentialsError::Malformed {
        path: name.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.mode() & 0o077 != 0 {
        return Err(CredentialsError::TooOpen {
            path: name.clone(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() > MAX_CREDENTIALS_FILE_BYTES {
        return Err(malformed(format!(
            "larger than {MAX_CREDENTIALS_FILE_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_credentials(&text, &name)
}

/// Reads the text of a credentials file that came from `name` (a file, a
/// firmware entry): `{"method": "psk-hmac-sha256", "key": "<64 hex digits>"}`.
pub fn parse_credentials(text: &str, name: &str) -> Result<Psk, CredentialsError> {
    let malformed = |reason: String| CredentialsError::Malformed {
        path: name.to_string(),
        reason,
    };
    if text.len() as u64 > MAX_CREDENTIALS_FILE_BYTES {
        return Err(malformed(format!(
            "larger than {MAX_CREDENTIALS_FILE_BYTES} bytes"
        )));
    }
    let file: CredentialsFile = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if file.method != AUTH_PSK {
        return Err(malformed(format!(
            "unknown method {:?}, expected {AUTH_PSK:?}",
            file.method
        )));
    }
    Psk::from_hex(&file.key).map_err(|e| malformed(e.to_string()))
}

/// The name of the VM's key as a systemd credential, in every place it is
/// delivered (`$CREDENTIALS_DIRECTORY/`, fw_cfg, SMBIOS, `/etc/credstore/`).
pub const CREDENTIAL_NAME: &str = "guestcomm.key";

/// The QEMU firmware configuration entry that carries the key, where
/// systemd looks for credentials (`-fw_cfg name=...,file=...`).
pub const FW_CFG_CREDENTIAL: &str = "opt/io.systemd.credentials/guestcomm.key";

/// The start of an SMBIOS type 11 OEM string carrying the key as text.
pub const SMBIOS_CREDENTIAL_TEXT: &str = "io.systemd.credential:guestcomm.key=";

/// The start of an SMBIOS type 11 OEM string carrying the key in base64.
pub const SMBIOS_CREDENTIAL_BINARY: &str = "io.systemd.credential.binary:guestcomm.key=";

/// The text of a credentials file holding `psk` (what
/// [`parse_credentials`] reads), ending in a newline.
pub fn credentials_text(psk: &Psk) -> String {
    // Both values are plain ASCII (a method name, hex digits): nothing to
    // escape, and the same text as serializing `CredentialsFile`.
    format!(
        "{{\"method\":\"{AUTH_PSK}\",\"key\":\"{}\"}}\n",
        psk.secret_hex()
    )
}

/// Writes `psk` to a new file with mode 0600; an existing file is an error.
pub fn write_credentials(path: &Path, psk: &Psk) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        path: path.display().to_string(),
        source,
    };
    write_private_file(path, credentials_text(psk).as_bytes()).map_err(io)
}

/// Writes `bytes` to a new file with mode 0600 (a key in any form); an
/// existing file is an error, never overwritten.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    out.write_all(bytes)?;
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(offered: &'a [String]) -> Transcript<'a> {
        Transcript {
            client_nonce: "aa",
            server_nonce: "bb",
            offered,
            version: ProtocolVersion::CURRENT,
        }
    }

    #[test]
    fn proofs_verify_with_the_same_key_only() {
        let offered = vec![AUTH_PSK.to_string()];
        let t = transcript(&offered);
        let key = Psk::generate().unwrap();
        let other = Psk::generate().unwrap();
        assert!(key.verify_server(&t, &key.server_proof(&t)));
        assert!(key.verify_client(&t, &key.client_proof(&t)));
        assert!(!key.verify_server(&t, &other.server_proof(&t)));
        assert!(!key.verify_client(&t, &other.client_proof(&t)));
    }

    #[test]
    fn a_proof_cannot_be_reflected_or_moved_to_another_transcript() {
        let offered = vec![AUTH_PSK.to_string()];
        let t = transcript(&offered);
        let key = Psk::generate().unwrap();
        // The server's proof is not a valid client proof (reflection).
        assert!(!key.verify_client(&t, &key.server_proof(&t)));
        // A proof for other nonces or other offered methods does not verify.
        let t2 = Transcript {
            server_nonce: "bc",
            ..t
        };
        assert!(!key.verify_client(&t2, &key.client_proof(&t)));
        let downgraded = vec![AUTH_PSK.to_string(), "none".to_string()];
        let t3 = Transcript {
            offered: &downgraded,
            ..t
        };
        assert!(!key.verify_server(&t3, &key.server_proof(&t)));
    }

    #[test]
    fn garbage_proofs_are_rejected_without_panicking() {
        let offered = vec![];
        let t = transcript(&offered);
        let key = Psk::generate().unwrap();
        for bad in ["", "zz", &"0".repeat(63), &"A".repeat(64), "é"] {
            assert!(!key.verify_client(&t, bad), "{bad:?}");
        }
    }

    #[test]
    fn a_key_is_refused_not_awaited_while_the_pool_is_not_initialized() {
        let mut asked = false;
        let err = Psk::generate_with(|_| {
            asked = true;
            Ok(PoolState::NotInitialized)
        })
        .unwrap_err();
        assert!(asked);
        assert!(matches!(err, AuthError::PoolNotInitialized));
        let text = err.to_string();
        for hint in [
            "not initialized yet",
            "virtio-rng",
            "RDRAND",
            "crng init done",
        ] {
            assert!(text.contains(hint), "{text}");
        }
        let failed = Psk::generate_with(|_| Err(std::io::Error::from_raw_os_error(libc::ENOSYS)))
            .unwrap_err();
        assert!(matches!(failed, AuthError::Random(_)), "{failed}");
        // An initialized pool gives the key its bytes, and distinct keys.
        let key = Psk::generate_with(|buf| {
            buf.fill(0xab);
            Ok(PoolState::Initialized)
        })
        .unwrap();
        assert_eq!(key.secret_hex(), "ab".repeat(32));
        assert_ne!(Psk::generate().unwrap(), Psk::generate().unwrap());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = Psk::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{key:?}"), "Psk(<redacted>)");
    }

    #[test]
    fn credentials_round_trip_with_mode_0600_and_open_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm1.key");
        let key = Psk::generate().unwrap();
        write_credentials(&path, &key).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load_credentials(&path).unwrap(), key);
        assert!(
            write_credentials(&path, &key).is_err(),
            "must not overwrite"
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let err = load_credentials(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn malformed_credentials_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        for (text, expected) in [
            ("not json", "malformed"),
            (
                r#"{"method":"psk-hmac-sha256","key":"abc"}"#,
                "64 lower-case hex digits",
            ),
            (r#"{"method":"rot13","key":"00"}"#, "unknown method"),
            (
                r#"{"method":"psk-hmac-sha256","key":"00","extra":1}"#,
                "unknown field",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let err = load_credentials(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_credentials_text_reads_back_as_the_same_key() {
        let psk = Psk::generate().unwrap();
        let text = credentials_text(&psk);
        assert!(
            text.starts_with("{\"method\":\"psk-hmac-sha256\",\"key\":\""),
            "{text}"
        );
        assert!(text.ends_with("\"}\n"), "{text}");
        let back = parse_credentials(&text, "test").unwrap();
        assert_eq!(back.secret_hex(), psk.secret_hex());
    }
}
