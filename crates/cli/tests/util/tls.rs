//! Test support for the API over TCP with mutual TLS: a CA that writes
//! PEM certificates and keys (rcgen), and guestcommd on 127.0.0.1 with
//! `[api.tls]`, killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA that writes certificates and keys as PEM files into a directory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Issues `name.crt` and `name.key`; returns the certificate's fingerprint.
    pub fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> String {
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
pub struct TlsDaemon {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

impl Ca {
    /// A CA in `dir` that issued the daemon's server certificate for 127.0.0.1.
    pub fn with_server(dir: &std::path::Path) -> Self {
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
    pub fn start(dir: tempfile::TempDir, config: &str) -> Self {
        let config_path = dir.path().join("guestcommd.toml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new(super::bin("guestcommd"))
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
            super::wait_until(super::STARTUP_DEADLINE, || {
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
    pub fn cli(&self, who: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(super::bin("guestcomm"));
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

/// The daemon's configuration: `[api.tls]` with the files in `d`, then `roles`.
pub fn tls_config(d: &Path, roles: &str) -> String {
    format!(
        "[api.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n[roles]\n{roles}",
        d.join("server.crt").display(),
        d.join("server.key").display(),
        d.join("ca.crt").display(),
    )
}

/// The holders of the three roles, with their certificates' fingerprints.
pub struct RoleHolders {
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl TlsDaemon {
    /// Issues `admin`, `operator` and `viewer` client certificates from
    /// `ca` (in `dir`, beside its server certificate), starts guestcommd
    /// mapping each to its role, starts an agent on `<dir>/agent.sock` and
    /// adds it as VM `vm1` as the admin.
    pub fn with_three_roles_and_vm1(
        dir: tempfile::TempDir,
        ca: &Ca,
    ) -> (Self, super::daemon::AgentAt, RoleHolders) {
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let holders = RoleHolders {
            admin: ca.issue("admin", &[], client.clone()),
            operator: ca.issue("operator", &[], client.clone()),
            viewer: ca.issue("viewer", &[], client),
        };
        let RoleHolders {
            admin,
            operator,
            viewer,
        } = &holders;
        let config = tls_config(
            dir.path(),
            &format!("admin = {{ certificates = [\"{admin}\"] }}\noperator = {{ certificates = [\"{operator}\"] }}\nviewer = {{ certificates = [\"{viewer}\"] }}\n"),
        );
        let socket = dir.path().join("agent.sock");
        let agent = super::daemon::AgentAt::start(&socket);
        let daemon = TlsDaemon::start(dir, &config);
        let endpoint = format!("unix://{}", socket.display());
        let out = daemon.cli(
            Some("admin"),
            &["vm", "add", "vm1", "--endpoint", &endpoint],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (daemon, agent, holders)
    }
}
