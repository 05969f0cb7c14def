//! Mutual TLS for the API over TCP (`tcp://IP:PORT`): PEM files into
//! rustls configurations, TLS 1.3 only, and the SHA-256 fingerprints that
//! name client certificates in guestcommd's roles.
//!
//! The client verifies the daemon's certificate against a CA file (for the
//! IP address it dials, so the certificate needs that IP in its subject
//! alternative names) and presents its own; the daemon accepts only clients
//! whose certificate chains to its client CA, then maps the certificate's
//! fingerprint to a role.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM object.
    #[error("cannot load {what} from {path}")]
    Pem {
        /// What was expected: "certificates", "a private key".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A private key file that others may read.
    #[error("private key {path} has mode {mode:04o}: others could read it; run chmod 600 {path}")]
    KeyTooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    /// rustls refused the material (a key that does not match, a bad CA).
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used to verify clients.
    #[error("invalid client CA")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The files a TLS client of the API needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The client's certificate chain (PEM).
    pub cert: PathBuf,
    /// The client's private key (PEM).
    pub key: PathBuf,
    /// The CA that signed the daemon's certificate (PEM).
    pub ca: PathBuf,
}

/// The crypto provider and protocol versions every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let name = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "certificates",
            path: name.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(name));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`, which only its owner may
/// read (as the agent's credentials file).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use std::os::unix::fs::MetadataExt;
    let name = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.mode() & 0o077 != 0 {
            return Err(TlsError::KeyTooOpen {
                mode: meta.mode() & 0o7777,
                path: name,
            });
        }
    }
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "a private key",
        path: name,
        source,
    })
}

/// The certificates of `path` as a trust store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// A TLS 1.3 client configuration that trusts `files.ca` and presents
/// `files.cert`.
pub fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?)
}

/// `sha256:` and the lower-case hex SHA-256 of a certificate (DER): how
/// roles name client certificates (`openssl x509 -noout -fingerprint
/// -sha256` prints the same digest in upper case with colons).
pub fn fingerprint(cert: &[u8]) -> String {
    format_fingerprint(&digest(cert))
}

/// The SHA-256 of a certificate (DER).
pub fn digest(cert: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(cert).into()
}

/// A digest from [`digest`] in the form of [`fingerprint`].
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A fingerprint as written in a configuration (`sha256:` optional, hex in
/// either case, colons allowed) in the form of [`fingerprint`].
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalized_from_openssl_style() {
        let fp = fingerprint(b"x");
        assert_eq!(fp.len(), 7 + 64);
        let openssl: String = fp[7..]
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(normalize_fingerprint(&openssl), Some(fp.clone()));
        assert_eq!(normalize_fingerprint(&fp), Some(fp));
        assert_eq!(normalize_fingerprint("sha256:abc"), None);
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load_certs(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem"), "{err}");
        let err = load_key(&dir.path().join("none.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.pem"), "{err}");
    }
}
