//! The API over TCP with mutual TLS: client certificates map to roles
//! (admin adds a VM, a viewer may list but not exec, an operator execs
//! through the TLS connection's upgrade), unlisted certificates have no
//! role, certificates from another CA and clients without one are refused
//! at the handshake, and the audit log names each certificate.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::process::{Command, Output};

use rcgen::ExtendedKeyUsagePurpose;
use util::tls::{tls_config, Ca, RoleHolders, TlsDaemon};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails_on_one_line(out: &Output, code: i32, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(expected), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn client_certificates_map_to_roles_and_others_are_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::with_server(dir.path());
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    ca.issue("stranger", &[], client.clone());
    let rogue = Ca::new(dir.path(), "rogue");
    rogue.issue("intruder", &[], client);
    // The intruder presents its own CA's certificate but trusts ours.
    let (daemon, _agent, holders) = TlsDaemon::with_three_roles_and_vm1(dir, &ca);
    let RoleHolders {
        operator, viewer, ..
    } = holders;

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
