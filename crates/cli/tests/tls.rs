//! The API over TCP with mutual TLS: client certificates map to roles
//! (admin adds a VM, a viewer may list but not exec, an operator execs
//! through the TLS connection's upgrade), unlisted certificates have no
//! role, certificates from another CA and clients without one are refused
//! at the handshake, and the audit log names each certificate.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use util::daemon::AgentAt;

/// A CA that writes certificates and keys as PEM files into a directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Issues `name.crt` and `name.key`; returns the certificate's fingerprint.
    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> String {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        let key_path = self.path(&format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&key_path, private).unwrap();
        guestcomm_api::tls::fingerprint(cert.der())
    }
}

/// guestcommd on 127.0.0.1 with mutual TLS, killed by PID when dropped.
struct TlsDaemon {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

impl Ca {
    /// A CA in `dir` that issued the daemon's server certificate for 127.0.0.1.
    fn with_server(dir: &std::path::Path) -> Self {
        let ca = Ca::new(dir, "ca");
        ca.issue(
            "server",
            &["127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        ca
    }
}

impl TlsDaemon {
    fn start(dir: tempfile::TempDir, config: &str) -> Self {
        let config_path = dir.path().join("guestcommd.toml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new(util::bin("guestcommd"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .args([
                "--api",
                &format!("tcp://127.0.0.1:{port}"),
                "--heartbeat-interval",
                "off",
            ])
            .arg("--config")
            .arg(&config_path)
            .env("GUESTCOMM_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            util::wait_until(util::STARTUP_DEADLINE, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "guestcommd did not start listening"
        );
        TlsDaemon {
            child,
            addr: format!("tcp://127.0.0.1:{port}"),
            dir,
        }
    }

    /// `guestcomm ARGS...` as the holder of certificate `who`.
    fn cli(&self, who: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(util::bin("guestcomm"));
        c.env("GUESTCOMM_API", &self.addr)
            .args(args)
            .stdin(Stdio::null());
        if let Some(who) = who {
            let p = |ext: &str| self.dir.path().join(format!("{who}.{ext}"));
            c.env("GUESTCOMM_API_CERT", p("crt"))
                .env("GUESTCOMM_API_KEY", p("key"))
                .env("GUESTCOMM_API_CA", self.dir.path().join("ca.crt"));
        }
        c.output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails_on_one_line(out: &Output, code: i32, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(expected), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// The daemon's configuration: `[api.tls]` with the files in `d`, then `roles`.
fn tls_config(d: &Path, roles: &str) -> String {
    format!(
        "[api.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n[roles]\n{roles}",
        d.join("server.crt").display(),
        d.join("server.key").display(),
        d.join("ca.crt").display(),
    )
}

#[test]
fn client_certificates_map_to_roles_and_others_are_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::with_server(dir.path());
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let admin = ca.issue("admin", &[], client.clone());
    let viewer = ca.issue("viewer", &[], client.clone());
    let operator = ca.issue("operator", &[], client.clone());
    ca.issue("stranger", &[], client.clone());
    let rogue = Ca::new(dir.path(), "rogue");
    rogue.issue("intruder", &[], client);
    // The intruder presents its own CA's certificate but trusts ours.
    let d = dir.path();
    let config = tls_config(
        d,
        &format!("admin = {{ certificates = [\"{admin}\"] }}\noperator = {{ certificates = [\"{operator}\"] }}\nviewer = {{ certificates = [\"{viewer}\"] }}\n"),
    );
    let socket = d.join("agent.sock");
    let _agent = AgentAt::start(&socket);
    let daemon = TlsDaemon::start(dir, &config);
    let endpoint = format!("unix://{}", socket.display());

    let out = daemon.cli(
        Some("admin"),
        &["vm", "add", "vm1", "--endpoint", &endpoint],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = daemon.cli(Some("viewer"), &["vm", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vm1"),
        "{}",
        stderr(&out)
    );
    let out = daemon.cli(Some("viewer"), &["exec", "vm1", "--", "echo", "hi"]);
    assert_fails_on_one_line(&out, 125, "needs the operator role");
    assert!(stderr(&out).contains(&viewer));

    let out = daemon.cli(Some("operator"), &["exec", "vm1", "--", "echo", "hi"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "{}",
        stderr(&out)
    );

    let out = daemon.cli(Some("stranger"), &["vm", "list"]);
    assert_fails_on_one_line(&out, 1, "has no role");

    let out = daemon.cli(Some("intruder"), &["vm", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let out = daemon.cli(None, &["vm", "list"]);
    assert_fails_on_one_line(&out, 1, "--api-cert");

    // Refusals did not stop the daemon; the audit log names certificates.
    // The exec's record is completed just after its client saw the end.
    let mut records = Vec::new();
    assert!(util::wait_until(util::STARTUP_DEADLINE, || {
        let out = daemon.cli(Some("admin"), &["audit", "--json"]);
        records = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap();
        records.iter().all(|r| r["outcome"] != "running")
    }));
    let exec = records
        .iter()
        .find(|r| r["operation"] == "exec" && r["outcome"] == "ok")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(exec["certificate"], operator.as_str());
    assert_eq!(exec["uid"], serde_json::Value::Null);
    assert!(records
        .iter()
        .any(|r| r["operation"] == "vm.connect" && r["certificate"] == viewer.as_str()));
    assert!(records
        .iter()
        .any(|r| r["operation"] == "api.tls" && r["outcome"] == "refused"));
}

#[test]
fn refused_tls_handshakes_are_counted_apart_from_the_operations() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::with_server(dir.path());
    let admin = ca.issue("admin", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let d = dir.path();
    let config = tls_config(d, &format!("admin = {{ certificates = [\"{admin}\"] }}\n"));
    let daemon = TlsDaemon::start(dir, &config);
    let out = daemon.cli(
        Some("admin"),
        &["vm", "add", "keep-me", "--endpoint", "unix:///nowhere.sock"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Plain text where a ClientHello belongs: each a refused handshake.
    const FLOOD: u64 = 30;
    let port = daemon
        .addr
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    for _ in 0..FLOOD {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(util::STARTUP_DEADLINE)).unwrap();
        let _ = sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = sock.read_to_end(&mut Vec::new());
    }
    let mut records = Vec::new();
    let counted = util::wait_until(util::STARTUP_DEADLINE, || {
        let out = daemon.cli(Some("admin"), &["audit", "--json"]);
        records = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default();
        let full = records
            .iter()
            .filter(|r| r["operation"] == "api.tls")
            .count() as u64;
        let count = util::refusals_counted(&records, |_| true);
        count.map(|c| c + full) == Some(FLOOD)
    });
    assert!(counted, "{records:#?}");
    let out = daemon.cli(Some("admin"), &["audit", "--verify", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The operations chain holds the admin's record alone.
    assert_eq!(report["chains"][0]["chain"], "operations");
    assert_eq!(report["chains"][0]["records"], 1, "{report:#}");
    assert_eq!(report["chains"][1]["chain"], "refusals-without-role");
    assert!(
        report["chains"][1]["records"].as_u64() < Some(FLOOD),
        "{report:#}"
    );
}

#[test]
fn a_tcp_api_without_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(util::bin("guestcommd"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .args(["--api", "tcp://127.0.0.1:1"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("[api.tls]") && err.contains("mutual TLS"),
        "{err}"
    );
}

#[test]
fn stalled_tcp_connections_do_not_lock_certificate_holders_out() {
    guestcomm_observability::raise_open_files_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::with_server(dir.path());
    let viewer = ca.issue("viewer", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let config = tls_config(
        dir.path(),
        &format!("viewer = {{ certificates = [\"{viewer}\"] }}\n"),
    );
    let daemon = TlsDaemon::start(dir, &config);
    let port: u16 = daemon.addr.rsplit(':').next().unwrap().parse().unwrap();
    // More stalled connections (no ClientHello, or half of one) than the
    // daemon takes handshakes at once, from one address and from many
    // addresses of the loopback range.
    let stalled: Vec<std::net::TcpStream> = (0..200u32)
        .map(|i| {
            let mut sock = if i % 2 == 0 {
                std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
            } else {
                let from = std::net::Ipv4Addr::new(127, 0, 1, (i / 2) as u8 + 1);
                connect_from(from, port)
            };
            if i % 4 == 1 {
                std::io::Write::write_all(&mut sock, &[0x16, 0x03, 0x01]).unwrap();
            }
            sock
        })
        .collect();
    for _ in 0..3 {
        let out = daemon.cli(Some("viewer"), &["vm", "list"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    drop(stalled);
}

/// A TCP connection to 127.0.0.1:`port` from `from` (another address of
/// the loopback range).
fn connect_from(from: std::net::Ipv4Addr, port: u16) -> std::net::TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    let daemon = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    connect(fd.as_raw_fd(), &daemon).unwrap();
    std::net::TcpStream::from(fd)
}
