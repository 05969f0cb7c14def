//! The daemon's configuration file (default
//! [`DEFAULT_CONFIG_PATH`], `guestcommd --config PATH`): who holds which
//! role on the API, the API socket's group, and how long audit records are
//! kept.
//!
//! ```toml
//! [api]
//! socket_group = "guestcomm"        # group of the API socket (mode 0660)
//! [api.tls]                         # for --api tcp://IP:PORT (mutual TLS)
//! cert = "/etc/guestcomm/api.crt"   # must name the IP clients dial
//! key = "/etc/guestcomm/api.key"
//! client_ca = "/etc/guestcomm/clients-ca.crt"
//!
//! [roles]                           # users and groups: names or numeric ids
//! admin    = { users = ["alice"] }
//! operator = { groups = ["guestcomm-ops"] }
//! viewer   = { users = [1001], groups = ["guestcomm"],
//!              certificates = ["sha256:3f2a..."] }   # TCP API clients
//!
//! [[roles.vms]]                     # roles on these VMs only
//! names = ["web*", "db1"]           # VM names; * and ? globs
//! operator = { users = ["bob"] }
//!
//! [audit]
//! max_records = 1000000             # per chain (audit_chain); 0: no limit by count
//! max_age_days = 365                # 0: no limit by age
//!
//! [libvirt]
//! uri = "qemu:///system"            # follow this libvirt's domains (--libvirt)
//! key_dir = "/var/lib/guestcomm/libvirt-keys"  # write each domain's key here and add
//!                                   # its fwcfg entry (--libvirt-key-dir)
//!
//! [metrics]
//! listen = "tcp://127.0.0.1:9464"   # Prometheus metrics over plain HTTP (--metrics)
//! enabled = true                     # false: record no metrics (--no-metrics)
//! ```
//!
//! Every table is `deny_unknown_fields`; a parse error names the line.

use std::path::{Path, PathBuf};

use guestcomm_api::tls::normalize_fingerprint;
use guestcomm_policy::line_of;
use serde::Deserialize;

use crate::limits::{DEFAULT_AUDIT_MAX_AGE_DAYS, DEFAULT_AUDIT_MAX_RECORDS, MAX_CONFIG_BYTES};

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guestcomm/guestcommd.toml";

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {0}")]
    Read(String, #[source] std::io::Error),
    /// The file is too large to be a configuration.
    #[error("the configuration file {0} is over {MAX_CONFIG_BYTES} bytes")]
    TooLarge(String),
    /// The file is not valid TOML or not the expected shape.
    #[error("invalid configuration file {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The API socket.
    #[serde(default)]
    pub api: ApiSection,
    /// Role memberships.
    #[serde(default)]
    pub roles: RolesSection,
    /// Audit log retention.
    #[serde(default)]
    pub audit: AuditSection,
    /// The libvirt whose domains the inventory follows.
    #[serde(default)]
    pub libvirt: LibvirtSection,
    /// The Prometheus metrics listener.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where to serve `GET /metrics` over plain HTTP (`tcp://IP:PORT`);
    /// `--metrics` wins.
    #[serde(default)]
    pub listen: Option<String>,
    /// Record metrics at all (default true; `--no-metrics` says false).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `[libvirt]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSection {
    /// libvirt's connection URI (`qemu:///system`); `--libvirt` wins.
    #[serde(default)]
    pub uri: Option<String>,
    /// Where the daemon writes the key of each domain it adds (`UUID.key`,
    /// the directory's group, mode 0640) and names it in the domain's
    /// fwcfg entry; without it domains are not changed.
    /// `--libvirt-key-dir` wins.
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
}

/// `[api]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Group the API socket is given (name or id), so members can connect.
    #[serde(default)]
    pub socket_group: Option<Principal>,
    /// Mutual TLS, required for `--api tcp://...`.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[api.tls]`: the daemon's certificate and the CA its clients' certificates
/// must chain to (PEM files).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The daemon's certificate chain; it must name the address clients dial.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA of the client certificates.
    pub client_ca: PathBuf,
}

/// `[roles]`: one member list per role.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesSection {
    /// Everything, including VMs, services, policies and credentials.
    #[serde(default)]
    pub admin: Members,
    /// Operations on guests.
    #[serde(default)]
    pub operator: Members,
    /// Reads.
    #[serde(default)]
    pub viewer: Members,
    /// `[[roles.vms]]`: roles that hold on some VMs only.
    #[serde(default)]
    pub vms: Vec<VmRoles>,
}

/// `[[roles.vms]]`: roles that hold only on the VMs it names, for the
/// calls about one VM (and a list of those VMs, and their audit records).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRoles {
    /// VM names: `*` matches any run of characters, `?` one character.
    pub names: Vec<String>,
    /// Everything about these VMs: their policy, credentials, removal.
    #[serde(default)]
    pub admin: Members,
    /// Operations on these VMs' guests.
    #[serde(default)]
    pub operator: Members,
    /// Reads of these VMs.
    #[serde(default)]
    pub viewer: Members,
}

impl VmRoles {
    /// Whether it covers VM `vm`.
    pub fn covers(&self, vm: &str) -> bool {
        self.names
            .iter()
            .any(|glob| guestcomm_policy::glob_match(glob, vm))
    }
}

/// Users and groups holding a role.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// User names or uids.
    #[serde(default)]
    pub users: Vec<Principal>,
    /// Group names or gids (primary or supplementary, from the user database).
    #[serde(default)]
    pub groups: Vec<Principal>,
    /// Client certificates of the TCP API, by SHA-256 fingerprint
    /// (`sha256:` and hex; colons and upper case as openssl prints them are
    /// accepted), normalized at load.
    #[serde(default)]
    pub certificates: Vec<String>,
}

/// A user or group, by name or by numeric id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// A numeric id (also written as a string of digits).
    Id(u32),
    /// A name from the user or group database.
    Name(String),
}

impl Principal {
    /// Whether this names `id` (or `name`, when the database has one).
    pub fn matches(&self, id: u32, name: Option<&str>) -> bool {
        match self {
            Self::Id(n) => *n == id,
            Self::Name(text) => match text.parse::<u32>() {
                Ok(n) => n == id,
                Err(_) => name == Some(text.as_str()),
            },
        }
    }
}

/// `[audit]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Keep at most this many records in each chain (the oldest go first:
    /// operations, and refusals of callers without a role, apart); 0: no limit.
    #[serde(default = "default_max_records")]
    pub max_records: u64,
    /// Drop records older than this many days; 0: no limit.
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u64,
}

fn default_max_records() -> u64 {
    DEFAULT_AUDIT_MAX_RECORDS
}

fn default_max_age_days() -> u64 {
    DEFAULT_AUDIT_MAX_AGE_DAYS
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            max_records: DEFAULT_AUDIT_MAX_RECORDS,
            max_age_days: DEFAULT_AUDIT_MAX_AGE_DAYS,
        }
    }
}

impl FileConfig {
    /// Parses the text of a configuration file; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let roles = &mut config.roles;
        let line_of_text = |needle: &str| text.find(needle).map_or(1, |i| line_of(text, i));
        for scoped in &roles.vms {
            if scoped.names.is_empty() || scoped.names.iter().any(|n| n.is_empty()) {
                return Err(ConfigError::Parse {
                    path: path.into(),
                    line: line_of_text("[[roles.vms]]"),
                    message: "[[roles.vms]] needs `names`, a list of VM names or globs, none empty"
                        .into(),
                });
            }
        }
        let scoped = roles
            .vms
            .iter_mut()
            .flat_map(|v| [&mut v.admin, &mut v.operator, &mut v.viewer]);
        let host_wide = [&mut roles.admin, &mut roles.operator, &mut roles.viewer];
        for members in host_wide.into_iter().chain(scoped) {
            for fp in &mut members.certificates {
                *fp = normalize_fingerprint(fp).ok_or_else(|| ConfigError::Parse {
                    path: path.into(),
                    line: line_of_text(fp.as_str()),
                    message: format!(
                        "certificate {fp:?} is not a SHA-256 fingerprint (sha256: and 64 hex digits)"
                    ),
                })?;
            }
        }
        Ok(config)
    }

    /// Reads the file at `path`. A missing file is an empty configuration
    /// unless `required` (given explicitly with `--config`).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default())
            }
            Err(e) => return Err(ConfigError::Read(name, e)),
        };
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(name));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(name.clone(), e))?;
        Self::parse(&text, &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_configuration_loads_and_names_no_role() {
        // contrib/guestcommd.toml is the package's conffile.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/guestcommd.toml");
        let config = FileConfig::load(&path, true).expect("contrib/guestcommd.toml loads");
        assert_eq!(
            config.api.socket_group,
            Some(Principal::Name("guestcomm".into()))
        );
        assert!(config.api.tls.is_none());
        let roles = &config.roles;
        for members in [&roles.admin, &roles.operator, &roles.viewer] {
            assert!(members.users.is_empty() && members.groups.is_empty());
            assert!(members.certificates.is_empty());
        }
        assert!(roles.vms.is_empty());
    }

    #[test]
    fn a_full_file_parses_with_names_and_ids() {
        let text = r#"
[api]
socket_group = "guestcomm"
[roles]
admin = { users = ["alice", 0] }
viewer = { users = ["1001"], groups = ["adm", 4] }
[audit]
max_records = 10
[libvirt]
uri = "qemu:///system"
key_dir = "/var/lib/guestcomm/libvirt-keys"
[metrics]
listen = "tcp://127.0.0.1:9464"
"#;
        let c = FileConfig::parse(text, "t.toml").unwrap();
        assert_eq!(
            c.api.socket_group,
            Some(Principal::Name("guestcomm".into()))
        );
        assert!(c.roles.admin.users[0].matches(7, Some("alice")));
        assert!(c.roles.admin.users[1].matches(0, None));
        assert!(c.roles.viewer.users[0].matches(1001, Some("bob")));
        assert!(!c.roles.viewer.users[0].matches(1002, Some("1001")));
        assert!(c.roles.operator.users.is_empty());
        assert_eq!(c.audit.max_records, 10);
        assert_eq!(c.audit.max_age_days, DEFAULT_AUDIT_MAX_AGE_DAYS);
        assert_eq!(c.libvirt.uri.as_deref(), Some("qemu:///system"));
        assert_eq!(
            c.libvirt.key_dir.as_deref(),
            Some(Path::new("/var/lib/guestcomm/libvirt-keys"))
        );
        assert_eq!(FileConfig::default().libvirt.uri, None);
        assert_eq!(c.metrics.listen.as_deref(), Some("tcp://127.0.0.1:9464"));
    }

    #[test]
    fn unknown_fields_and_roles_are_refused_naming_the_line() {
        let err = FileConfig::parse(
            "[roles]\nviewer = {}\nsuperuser = { users = [\"x\"] }\n",
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("superuser"), "{err}");
        let err = FileConfig::parse("[roles]\nadmin = { user = [\"x\"] }\n", "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("user"), "{err}");
        let err = FileConfig::parse("[audit\n", "c").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn certificate_fingerprints_are_normalized_or_refused_naming_the_line() {
        let hex = "AB:".repeat(31) + "AB";
        let text = format!("[roles]\nviewer = {{ certificates = [\"{hex}\"] }}\n");
        let c = FileConfig::parse(&text, "c").unwrap();
        assert_eq!(
            c.roles.viewer.certificates[0],
            format!("sha256:{}", "ab".repeat(32))
        );
        let err = FileConfig::parse("[roles]\n\nadmin = { certificates = [\"abc\"] }\n", "c")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("fingerprint"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_given_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.toml");
        assert_eq!(
            FileConfig::load(&path, false).unwrap(),
            FileConfig::default()
        );
        assert!(matches!(
            FileConfig::load(&path, true),
            Err(ConfigError::Read(..))
        ));
    }
}
