//! Transport addresses: the one place where `scheme://...` strings are parsed.
//!
//! ```text
//! unix:///run/guestcomm/agent.sock        Unix stream socket (absolute path)
//! tcp://127.0.0.1:18243, tcp://[::1]:18243 TCP (loopback for tests and containers)
//! vsock://CID:PORT, vsock://any:PORT      AF_VSOCK; PORT defaults to 18243
//! hvsock-uds:///path/vm.vsock?port=PORT   hybrid vsock (Firecracker, Cloud Hypervisor,
//!                                         vhost-device-vsock); PORT defaults to 18243
//! ```
//!
//! In JSON (serde) an address is that same string, parsed when read.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use guestcomm_protocol::service::AGENT_VSOCK_PORT;

/// The vsock CID meaning "any local CID" when listening.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// The vsock CID of the host, as seen from a guest.
pub const VSOCK_CID_HOST: u32 = 2;

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// A TCP socket.
    Tcp(SocketAddr),
    /// AF_VSOCK: a context id and a port.
    Vsock {
        /// Context id ([`VSOCK_CID_ANY`] to listen on every local CID).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// Hybrid vsock: a VMM's Unix socket, then `CONNECT <port>`.
    HybridVsock {
        /// The VMM's vsock Unix socket.
        path: PathBuf,
        /// The guest port to reach.
        port: u32,
    },
}

/// Why a string is not an address; each variant names the expected form.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `scheme://` prefix, or a scheme we do not know.
    #[error("unknown address {0:?}: expected unix:///PATH, tcp://IP:PORT, vsock://CID:PORT or hvsock-uds:///PATH[?port=PORT]")]
    UnknownScheme(String),
    /// `unix://` without an absolute path.
    #[error("invalid unix address {0:?}: expected unix:///ABSOLUTE/PATH")]
    Unix(String),
    /// `tcp://` without an IP and port.
    #[error("invalid tcp address {0:?}: expected tcp://IP:PORT, e.g. tcp://127.0.0.1:18243 or tcp://[::1]:18243")]
    Tcp(String),
    /// `vsock://` without a valid CID (and port).
    #[error("invalid vsock address {0:?}: expected vsock://CID:PORT with CID a number or `any` and PORT a number (default 18243)")]
    Vsock(String),
    /// `hvsock-uds://` without an absolute path (or with a bad port).
    #[error("invalid hybrid vsock address {0:?}: expected hvsock-uds:///ABSOLUTE/PATH or hvsock-uds:///ABSOLUTE/PATH?port=PORT")]
    HybridVsock(String),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(AddressError::UnknownScheme(s.into()));
        };
        match scheme {
            "unix" => parse_abs_path(rest)
                .map(Address::Unix)
                .ok_or_else(|| AddressError::Unix(s.into())),
            "tcp" => rest
                .parse::<SocketAddr>()
                .map(Address::Tcp)
                .map_err(|_| AddressError::Tcp(s.into())),
            "vsock" => parse_vsock(rest).ok_or_else(|| AddressError::Vsock(s.into())),
            "hvsock-uds" => parse_hybrid(rest).ok_or_else(|| AddressError::HybridVsock(s.into())),
            _ => Err(AddressError::UnknownScheme(s.into())),
        }
    }
}

fn parse_abs_path(rest: &str) -> Option<PathBuf> {
    (rest.starts_with('/') && rest.len() > 1).then(|| PathBuf::from(rest))
}

fn parse_port(text: &str) -> Option<u32> {
    // Digits only: `+5` or ` 5` are typos, not ports.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_vsock(rest: &str) -> Option<Address> {
    let (cid_text, port) = match rest.split_once(':') {
        Some((cid, port)) => (cid, parse_port(port)?),
        None => (rest, AGENT_VSOCK_PORT),
    };
    let cid = match cid_text {
        "any" => VSOCK_CID_ANY,
        "host" => VSOCK_CID_HOST,
        n => parse_port(n)?,
    };
    Some(Address::Vsock { cid, port })
}

fn parse_hybrid(rest: &str) -> Option<Address> {
    let (path, port) = match rest.split_once('?') {
        Some((path, query)) => (path, parse_port(query.strip_prefix("port=")?)?),
        None => (rest, AGENT_VSOCK_PORT),
    };
    Some(Address::HybridVsock {
        path: parse_abs_path(path)?,
        port,
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Vsock { cid, port } if *cid == VSOCK_CID_ANY => write!(f, "vsock://any:{port}"),
            Self::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Self::HybridVsock { path, port } => {
                write!(f, "hvsock-uds://{}?port={port}", path.display())
            }
        }
    }
}

impl Address {
    /// True when this address is a transport address rather than, say, a VM name.
    pub fn looks_like_address(text: &str) -> bool {
        text.contains("://")
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            parse("unix:///tmp/a.sock"),
            Address::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            parse("tcp://127.0.0.1:5000"),
            Address::Tcp("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(
            parse("tcp://[::1]:5000"),
            Address::Tcp("[::1]:5000".parse().unwrap())
        );
        assert_eq!(
            parse("vsock://3:1024"),
            Address::Vsock { cid: 3, port: 1024 }
        );
        assert_eq!(
            parse("vsock://any:1024"),
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 1024
            }
        );
        assert_eq!(
            parse("hvsock-uds:///run/vm.vsock?port=52"),
            Address::HybridVsock {
                path: "/run/vm.vsock".into(),
                port: 52
            }
        );
    }

    #[test]
    fn vsock_and_hybrid_default_to_the_agent_port() {
        assert_eq!(
            parse("vsock://3"),
            Address::Vsock {
                cid: 3,
                port: AGENT_VSOCK_PORT
            }
        );
        assert_eq!(
            parse("hvsock-uds:///run/vm.vsock"),
            Address::HybridVsock {
                path: "/run/vm.vsock".into(),
                port: AGENT_VSOCK_PORT
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "unix:///tmp/a.sock",
            "tcp://127.0.0.1:5000",
            "tcp://[::1]:5000",
            "vsock://3:1024",
            "vsock://any:18243",
            "hvsock-uds:///run/vm.vsock?port=52",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn json_is_the_display_string_and_is_checked_when_read() {
        for s in [
            "unix:///tmp/a.sock",
            "vsock://3:1024",
            "hvsock-uds:///v?port=52",
        ] {
            let json = serde_json::to_string(&parse(s)).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), parse(s));
        }
        let err = serde_json::from_str::<Address>("\"vsock://x\"").unwrap_err();
        assert!(
            err.to_string().contains("expected vsock://CID:PORT"),
            "{err}"
        );
        assert!(serde_json::from_str::<Address>("3").is_err());
    }

    #[test]
    fn errors_name_the_expected_form() {
        let cases = [
            ("/tmp/a.sock", "expected unix:///PATH"),
            ("http://x", "expected unix:///PATH"),
            ("unix://relative", "unix:///ABSOLUTE/PATH"),
            ("unix://", "unix:///ABSOLUTE/PATH"),
            ("tcp://localhost", "tcp://IP:PORT"),
            ("tcp://127.0.0.1", "tcp://IP:PORT"),
            ("vsock://x:1", "vsock://CID:PORT"),
            ("vsock://3:", "vsock://CID:PORT"),
            ("vsock://3:+1", "vsock://CID:PORT"),
            ("vsock://3:99999999999", "vsock://CID:PORT"),
            ("hvsock-uds://rel?port=1", "hvsock-uds:///ABSOLUTE/PATH"),
            ("hvsock-uds:///p?prt=1", "hvsock-uds:///ABSOLUTE/PATH"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
            assert!(err.contains(input), "{input}: {err}");
        }
    }
}
