//! Who may call what on the API: a caller's ([`crate::caller::Caller`])
//! roles from the configuration file ([`Access`], [`Grants`]), and the one
//! table of routes and the role each needs ([`ROUTES`]), each naming its
//! [`Operation`] (its audit name and what the middleware must know of it).
//! The middleware that applies them to every call is `http::authorize`.
//!
//! A route missing from [`ROUTES`] needs `admin` (fail closed); a unit test
//! checks the table against openapi.json.

use axum::http::Method;
use guestcomm_api::Role;

use crate::caller::Caller;
use crate::config::{Members, Principal, RolesSection};

/// When a call goes into the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Audited {
    /// Always: changes, guest operations, reading secrets.
    Always,
    /// Only when refused or failed: plain reads.
    Failures,
}

/// What a route does: its name in the audit log and in refusals
/// ([`Operation::as_str`]), and what the middleware must know of it
/// ([`Operation::lists_per_vm`], [`Operation::reaches_agent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `GET /openapi.json`.
    Openapi,
    /// List the VMs.
    VmList,
    /// Add a VM.
    VmAdd,
    /// Show a VM.
    VmShow,
    /// Remove a VM.
    VmRm,
    /// Change a VM's settings.
    VmSet,
    /// Relay exec and copy requests to a VM's agent.
    VmConnect,
    /// Read a VM's key.
    VmCredentials,
    /// Show a VM's argument policy.
    PolicyShow,
    /// Set a VM's argument policy.
    PolicySet,
    /// List services, registrations or instances.
    ServiceList,
    /// The guest's information.
    Info,
    /// The guest's clock.
    TimeShow,
    /// Set the guest's clock.
    TimeSync,
    /// List a key-value pool.
    KvpList,
    /// Read a key.
    KvpGet,
    /// Write a key.
    KvpSet,
    /// Delete a key.
    KvpRm,
    /// Shut the guest down.
    Shutdown,
    /// The guest's file systems' freeze state.
    FsStatus,
    /// Freeze the guest's file systems.
    FsFreeze,
    /// Thaw the guest's file systems.
    FsThaw,
    /// RequestStateChange of a service on a VM.
    ServiceState,
    /// A byte stream to a service in a VM.
    ServiceConnect,
    /// StartService or StopService of a service on a VM.
    ServiceMethod,
    /// Register a service.
    ServiceRegister,
    /// Unregister a service.
    ServiceUnregister,
    /// Set a service's policy, host-wide or on a VM.
    ServiceEnable,
    /// Read the audit log.
    AuditRead,
    /// Verify the audit log's hash chains.
    AuditVerify,
    /// A CIM-XML operation.
    Wbem,
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// A route missing from [`ROUTES`].
    Unlisted,
}

impl Operation {
    /// Every operation, in the order of [`ROUTES`].
    #[cfg(test)]
    const ALL: [Operation; 33] = [
        Self::Openapi,
        Self::VmList,
        Self::VmAdd,
        Self::VmShow,
        Self::VmRm,
        Self::VmSet,
        Self::VmConnect,
        Self::VmCredentials,
        Self::PolicyShow,
        Self::PolicySet,
        Self::ServiceList,
        Self::Info,
        Self::TimeShow,
        Self::TimeSync,
        Self::KvpList,
        Self::KvpGet,
        Self::KvpSet,
        Self::KvpRm,
        Self::Shutdown,
        Self::FsStatus,
        Self::FsFreeze,
        Self::FsThaw,
        Self::ServiceState,
        Self::ServiceConnect,
        Self::ServiceMethod,
        Self::ServiceRegister,
        Self::ServiceUnregister,
        Self::ServiceEnable,
        Self::AuditRead,
        Self::AuditVerify,
        Self::Wbem,
        Self::Metrics,
        Self::Unlisted,
    ];

    /// Everything known of it, one line per operation: the one table.
    const fn facts(self) -> Facts {
        match self {
            Self::Openapi => plain("openapi"),
            Self::VmList => per_vm_list("vm.list"),
            Self::VmAdd => plain("vm.add"),
            Self::VmShow => plain("vm.show"),
            Self::VmRm => plain("vm.rm"),
            Self::VmSet => plain("vm.set"),
            Self::VmConnect => plain("vm.connect"),
            Self::VmCredentials => plain("vm.credentials"),
            Self::PolicyShow => plain("policy.show"),
            Self::PolicySet => plain("policy.set"),
            Self::ServiceList => plain("service.list"),
            Self::Info => agent_call("info"),
            Self::TimeShow => agent_call("time.show"),
            Self::TimeSync => agent_call("time.sync"),
            Self::KvpList => agent_call("kvp.list"),
            Self::KvpGet => agent_call("kvp.get"),
            Self::KvpSet => agent_call("kvp.set"),
            Self::KvpRm => agent_call("kvp.rm"),
            Self::Shutdown => agent_call("shutdown"),
            Self::FsStatus => agent_call("fs.status"),
            Self::FsFreeze => agent_call("fs.freeze"),
            Self::FsThaw => agent_call("fs.thaw"),
            Self::ServiceState => plain("service.state"),
            Self::ServiceConnect => plain("service.connect"),
            Self::ServiceMethod => plain("service.method"),
            Self::ServiceRegister => plain("service.register"),
            Self::ServiceUnregister => plain("service.unregister"),
            Self::ServiceEnable => plain("service.enable"),
            Self::AuditRead => per_vm_list("audit.read"),
            Self::AuditVerify => plain("audit.verify"),
            Self::Wbem => plain("wbem"),
            Self::Metrics => plain("metrics"),
            Self::Unlisted => plain("unlisted"),
        }
    }

    /// Its name in the audit log and in refusals.
    pub(crate) const fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// Whether its answer lists things of many VMs, which a caller with
    /// roles on some VMs only sees limited to those (`vm.list`, `audit.read`).
    pub(crate) const fn lists_per_vm(self) -> bool {
        self.facts().lists_per_vm
    }

    /// Whether its handler asks the VM's agent (a connection per call):
    /// such calls are bounded per VM (module `agent_calls`).
    pub(crate) const fn reaches_agent(self) -> bool {
        self.facts().reaches_agent
    }
}

/// What the middleware must know of an operation.
struct Facts {
    /// Its name in the audit log and in refusals.
    name: &'static str,
    /// See [`Operation::lists_per_vm`].
    lists_per_vm: bool,
    /// See [`Operation::reaches_agent`].
    reaches_agent: bool,
}

/// An operation on one thing, or on the host, that asks no agent.
const fn plain(name: &'static str) -> Facts {
    Facts {
        name,
        lists_per_vm: false,
        reaches_agent: false,
    }
}

/// A list of many VMs' things, limited to the caller's VMs.
const fn per_vm_list(name: &'static str) -> Facts {
    Facts {
        lists_per_vm: true,
        ..plain(name)
    }
}

/// A call that asks the VM's agent.
const fn agent_call(name: &'static str) -> Facts {
    Facts {
        reaches_agent: true,
        ..plain(name)
    }
}

/// One route of the API and what calling it takes.
#[derive(Clone, Debug)]
pub(crate) struct RouteRule {
    /// HTTP method.
    pub(crate) method: Method,
    /// The route as registered (`/v1/vms/{name}`).
    pub(crate) path: &'static str,
    /// What it does; its name in the audit log and in refusals.
    pub(crate) operation: Operation,
    /// The lowest role allowed.
    pub(crate) role: Role,
    /// When it is audited.
    pub(crate) audited: Audited,
    /// Its handler applies a VM's read-only policy to each request itself
    /// (the exec/cp relay, module relay), so the middleware does not.
    pub(crate) checks_read_only: bool,
}

impl RouteRule {
    /// Whether its answer lists things of many VMs (see [`Operation::lists_per_vm`]).
    pub(crate) fn lists_per_vm(&self) -> bool {
        self.operation.lists_per_vm()
    }

    /// Whether its handler asks the VM's agent (see [`Operation::reaches_agent`]).
    pub(crate) fn reaches_agent(&self) -> bool {
        self.operation.reaches_agent()
    }
}

/// A route of [`ROUTES`]: `role` needed, `audited` when.
const fn rule(
    method: Method,
    path: &'static str,
    operation: Operation,
    role: Role,
    audited: Audited,
) -> RouteRule {
    route(method, path, operation, role, audited, false)
}

/// [`rule`] with `checks_read_only`: true for a route whose handler relays
/// requests and checks a VM's read-only policy on each itself.
const fn route(
    method: Method,
    path: &'static str,
    operation: Operation,
    role: Role,
    audited: Audited,
    checks_read_only: bool,
) -> RouteRule {
    RouteRule {
        method,
        path,
        operation,
        role,
        audited,
        checks_read_only,
    }
}

use Audited::{Always, Failures};
use Operation as Op;
use Role::{Admin, Operator, Viewer};

/// Every route, the role it needs and whether it is audited: the one place
/// where access is decided. New routes add a line here (and to openapi.json).
#[rustfmt::skip] // One line per route reads as a table.
pub(crate) const ROUTES: &[RouteRule] = &[
    rule(Method::GET, "/openapi.json", Op::Openapi, Viewer, Failures),
    rule(Method::GET, "/v1/vms", Op::VmList, Viewer, Failures),
    rule(Method::POST, "/v1/vms", Op::VmAdd, Admin, Always),
    rule(Method::GET, "/v1/vms/{name}", Op::VmShow, Viewer, Failures),
    rule(Method::DELETE, "/v1/vms/{name}", Op::VmRm, Admin, Always),
    rule(Method::PATCH, "/v1/vms/{name}", Op::VmSet, Admin, Always),
    route(Method::POST, "/v1/vms/{name}/connect", Op::VmConnect, Operator, Always, true),
    rule(Method::GET, "/v1/vms/{name}/credentials", Op::VmCredentials, Admin, Always),
    rule(Method::GET, "/v1/vms/{name}/policy", Op::PolicyShow, Viewer, Failures),
    rule(Method::PUT, "/v1/vms/{name}/policy", Op::PolicySet, Admin, Always),
    rule(Method::GET, "/v1/vms/{name}/services", Op::ServiceList, Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/integration-services", Op::ServiceList, Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/info", Op::Info, Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/time", Op::TimeShow, Operator, Failures),
    rule(Method::POST, "/v1/vms/{name}/time/sync", Op::TimeSync, Operator, Always),
    rule(Method::GET, "/v1/vms/{name}/kvp/{pool}", Op::KvpList, Operator, Failures),
    rule(Method::GET, "/v1/vms/{name}/kvp/{pool}/{key}", Op::KvpGet, Operator, Failures),
    rule(Method::PUT, "/v1/vms/{name}/kvp/{pool}/{key}", Op::KvpSet, Operator, Always),
    rule(Method::DELETE, "/v1/vms/{name}/kvp/{pool}/{key}", Op::KvpRm, Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/shutdown", Op::Shutdown, Operator, Always),
    rule(Method::GET, "/v1/vms/{name}/fs", Op::FsStatus, Operator, Failures),
    rule(Method::POST, "/v1/vms/{name}/fs/freeze", Op::FsFreeze, Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/fs/thaw", Op::FsThaw, Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/RequestStateChange", Op::ServiceState, Admin, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/connect", Op::ServiceConnect, Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/{method}", Op::ServiceMethod, Admin, Always),
    rule(Method::GET, "/v1/services", Op::ServiceList, Viewer, Failures),
    rule(Method::POST, "/v1/services", Op::ServiceRegister, Admin, Always),
    rule(Method::DELETE, "/v1/services/{id}", Op::ServiceUnregister, Admin, Always),
    rule(Method::PUT, "/v1/services/{id}/policy", Op::ServiceEnable, Admin, Always),
    rule(Method::GET, "/v1/services/instances", Op::ServiceList, Viewer, Failures),
    rule(Method::GET, "/v1/audit", Op::AuditRead, Viewer, Failures),
    rule(Method::GET, "/v1/audit/verify", Op::AuditVerify, Admin, Failures),
    // WBEM (CIM-XML): reads are viewer's; the handler asks more for each
    // method it runs (crate::wbem) and audits those calls itself.
    rule(Method::POST, "/cimom", Op::Wbem, Viewer, Failures),
    // Read-only counters (no secrets): every role may scrape.
    rule(Method::GET, "/metrics", Op::Metrics, Viewer, Failures),
];

/// What a route missing from [`ROUTES`] takes: admin, audited.
static UNLISTED: RouteRule = rule(Method::GET, "?", Op::Unlisted, Admin, Always);

/// The rule of `method path`; a route missing from the table needs admin.
pub(crate) fn route_rule(method: &Method, path: &str) -> &'static RouteRule {
    ROUTES
        .iter()
        .find(|r| r.method == *method && r.path == path)
        .unwrap_or(&UNLISTED)
}

/// A caller as the user and group databases know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    /// User id.
    pub(crate) uid: u32,
    /// User name, if the database has one.
    pub(crate) user: Option<String>,
    /// Primary group (from the socket) and the user's supplementary groups,
    /// with their names.
    pub(crate) groups: Vec<(u32, Option<String>)>,
}

impl Identity {
    /// Looks `caller` up in the user and group databases (blocking: NSS).
    pub(crate) fn lookup(uid: u32, gid: Option<u32>) -> Self {
        use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let mut gids: Vec<u32> = gid.into_iter().collect();
        if let Some(user) = &user {
            if let Ok(name) = std::ffi::CString::new(user.name.clone()) {
                let primary = Gid::from_raw(gid.unwrap_or(user.gid.as_raw()));
                if let Ok(list) = getgrouplist(&name, primary) {
                    gids.extend(list.into_iter().map(Gid::as_raw));
                }
            }
        }
        gids.sort_unstable();
        gids.dedup();
        let groups = gids
            .into_iter()
            .map(|g| {
                let name = Group::from_gid(Gid::from_raw(g)).ok().flatten();
                (g, name.map(|n| n.name))
            })
            .collect();
        Self {
            uid,
            user: user.map(|u| u.name),
            groups,
        }
    }

    /// `uid 1001 (alice)`, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.user {
            Some(name) => format!("uid {} ({name})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

impl Members {
    /// Whether the list names this user or one of its groups.
    fn includes(&self, who: &Identity) -> bool {
        self.users
            .iter()
            .any(|p| p.matches(who.uid, who.user.as_deref()))
            || self.groups.iter().any(|p: &Principal| {
                who.groups
                    .iter()
                    .any(|(gid, name)| p.matches(*gid, name.as_deref()))
            })
    }
}

/// Role memberships and the users who are always admin.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    roles: RolesSection,
    daemon_uid: u32,
    /// The configuration file, named in refusals.
    pub(crate) config_path: String,
}

impl Access {
    /// Access by `roles`, read from `config_path`.
    pub(crate) fn new(roles: RolesSection, config_path: String) -> Self {
        Self {
            roles,
            daemon_uid: nix::unistd::geteuid().as_raw(),
            config_path,
        }
    }

    /// root and the daemon's own user, admin whatever the configuration says.
    pub(crate) fn always_admin(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon_uid
    }

    #[cfg(test)]
    /// The highest host-wide role `who` holds: root and the daemon's own
    /// user are admin; otherwise the highest role listing the user or a
    /// group of it.
    pub(crate) fn role_of(&self, who: &Identity) -> Option<Role> {
        self.grants_of(who).host
    }

    /// Every role `who` holds, host-wide and per VM.
    pub(crate) fn grants_of(&self, who: &Identity) -> Grants {
        if self.always_admin(who.uid) {
            return Grants {
                host: Some(Admin),
                vms: Vec::new(),
            };
        }
        self.grants(|members| members.includes(who))
    }

    /// Every role a TCP API client certificate (`sha256:...`) holds.
    pub(crate) fn grants_of_certificate(&self, fingerprint: &str) -> Grants {
        self.grants(|members| members.certificates.iter().any(|c| c == fingerprint))
    }

    fn grants(&self, listed: impl Fn(&Members) -> bool) -> Grants {
        let highest = |admin: &Members, operator: &Members, viewer: &Members| {
            [(Admin, admin), (Operator, operator), (Viewer, viewer)]
                .into_iter()
                .find(|(_, members)| listed(members))
                .map(|(role, _)| role)
        };
        let roles = &self.roles;
        Grants {
            host: highest(&roles.admin, &roles.operator, &roles.viewer),
            vms: roles
                .vms
                .iter()
                .filter_map(|v| {
                    highest(&v.admin, &v.operator, &v.viewer).map(|role| (v.names.clone(), role))
                })
                .collect(),
        }
    }
}

/// The roles a caller holds: one on the whole host, and roles on the VMs
/// that `[[roles.vms]]` tables name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    /// The host-wide role.
    pub(crate) host: Option<Role>,
    /// VM name globs and the role held on the VMs they match.
    pub(crate) vms: Vec<(Vec<String>, Role)>,
}

impl Grants {
    /// The highest role held on VM `vm`: the host-wide one or one of a
    /// table naming it.
    pub(crate) fn on_vm(&self, vm: &str) -> Option<Role> {
        let scoped = self
            .vms
            .iter()
            .filter(|(names, _)| {
                names
                    .iter()
                    .any(|glob| guestcomm_policy::glob_match(glob, vm))
            })
            .map(|(_, role)| *role);
        self.host.into_iter().chain(scoped).max()
    }

    /// Whether the caller may see VM `vm` at all.
    pub(crate) fn sees_vm(&self, vm: &str) -> bool {
        self.on_vm(vm).is_some()
    }

    /// Whether every role held is limited to some VMs.
    pub(crate) fn vms_only(&self) -> bool {
        self.host.is_none() && !self.vms.is_empty()
    }

    /// The role a call needs checked against: the one on the call's VM,
    /// the host-wide one for calls about no VM; a caller with roles on some
    /// VMs only is a viewer of the calls that list per VM (`vm list`, the
    /// audit log), which then show only those VMs.
    pub(crate) fn for_call(&self, rule: &RouteRule, vm: Option<&str>) -> Option<Role> {
        match vm {
            Some(vm) => self.on_vm(vm),
            None if self.vms_only() && rule.lists_per_vm() => Some(Viewer),
            None => self.host,
        }
    }
}

impl Default for Access {
    fn default() -> Self {
        Self::new(
            RolesSection::default(),
            crate::config::DEFAULT_CONFIG_PATH.into(),
        )
    }
}

/// What an authorized request carries to its handler (request extension).
#[derive(Clone, Debug)]
pub(crate) struct Authorized {
    /// Who called.
    pub(crate) caller: Caller,
    /// The caller's role for this call.
    pub(crate) role: Role,
    /// Every role the caller holds: a call listing many VMs' things shows
    /// only those of VMs the caller may see ([`Grants::sees_vm`]).
    pub(crate) grants: Grants,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, user: &str, groups: &[(u32, &str)]) -> Identity {
        Identity {
            uid,
            user: Some(user.into()),
            groups: groups
                .iter()
                .map(|(g, n)| (*g, Some(n.to_string())))
                .collect(),
        }
    }

    fn access(text: &str) -> Access {
        let config = crate::config::FileConfig::parse(text, "t").unwrap();
        Access::new(config.roles, "t".into())
    }

    #[test]
    fn root_is_admin_and_strangers_have_no_role() {
        let a = access("");
        assert_eq!(a.role_of(&who(0, "root", &[])), Some(Admin));
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(a.role_of(&who(me, "me", &[])), Some(Admin));
        assert_eq!(a.role_of(&who(54321, "nobody2", &[(54321, "x")])), None);
    }

    #[test]
    fn the_highest_role_naming_the_user_or_a_group_wins() {
        let a = access(
            "[roles]\nviewer = { groups = [\"staff\"] }\noperator = { users = [\"bob\", 2002] }\nadmin = { groups = [3003] }\n",
        );
        assert_eq!(a.role_of(&who(2001, "ann", &[(50, "staff")])), Some(Viewer));
        assert_eq!(
            a.role_of(&who(2001, "bob", &[(50, "staff")])),
            Some(Operator)
        );
        assert_eq!(a.role_of(&who(2002, "carl", &[])), Some(Operator));
        assert_eq!(
            a.role_of(&who(2003, "dora", &[(50, "staff"), (3003, "ops")])),
            Some(Admin)
        );
        assert_eq!(a.role_of(&who(2004, "eve", &[(51, "users")])), None);
    }

    #[test]
    fn roles_on_some_vms_add_to_the_host_wide_role_on_those_vms_only() {
        let a = access(
            "[roles]\nviewer = { users = [\"ann\"] }\n[[roles.vms]]\nnames = [\"web*\", \"db1\"]\noperator = { users = [\"ann\", \"bob\"] }\n[[roles.vms]]\nnames = [\"web2\"]\nadmin = { groups = [\"webadm\"] }\n",
        );
        let ann = a.grants_of(&who(2001, "ann", &[]));
        assert_eq!(ann.on_vm("web1"), Some(Operator));
        assert_eq!(ann.on_vm("db1"), Some(Operator));
        assert_eq!(ann.on_vm("db2"), Some(Viewer), "her host-wide role");
        assert!(!ann.vms_only());
        let bob = a.grants_of(&who(2002, "bob", &[(60, "webadm")]));
        assert_eq!(
            bob.on_vm("web2"),
            Some(Admin),
            "the highest table naming it"
        );
        assert_eq!(bob.on_vm("web1"), Some(Operator));
        assert_eq!(bob.on_vm("xweb1"), None, "globs match the whole name");
        assert!(bob.vms_only() && bob.sees_vm("web1") && !bob.sees_vm("db2"));
        let list = route_rule(&Method::GET, "/v1/vms");
        assert_eq!(bob.for_call(list, None), Some(Viewer), "a list of his VMs");
        let add = route_rule(&Method::POST, "/v1/vms");
        assert_eq!(bob.for_call(add, None), None, "nothing host-wide");
    }

    #[test]
    fn a_vm_roles_table_without_names_is_refused() {
        for text in [
            "[[roles.vms]]\noperator = { users = [\"bob\"] }\n",
            "[[roles.vms]]\nnames = []\n",
            "[[roles.vms]]\nnames = [\"\"]\n",
        ] {
            assert!(
                crate::config::FileConfig::parse(text, "t").is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn unlisted_routes_need_admin_and_every_documented_route_is_listed() {
        assert_eq!(route_rule(&Method::GET, "/v1/new").role, Admin);
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let mut documented = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method == "parameters" {
                    continue;
                }
                let m: Method = method.to_uppercase().parse().unwrap();
                documented += 1;
                let rule = ROUTES.iter().find(|r| r.method == m && r.path == path);
                let Some(rule) = rule else {
                    panic!("{method} {path} is in openapi.json but not in access::ROUTES")
                };
                let op = &item[method];
                assert_eq!(op["x-guestcomm-role"], rule.role.name(), "{method} {path}");
                assert_eq!(
                    op["x-guestcomm-operation"],
                    rule.operation.as_str(),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(
            documented,
            ROUTES.len(),
            "a route in ROUTES is not documented"
        );
    }

    #[test]
    fn operations_keep_their_audit_names_and_classes() {
        let names: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "two operations share a name");
        let per_vm: Vec<&str> = Operation::ALL
            .into_iter()
            .filter(|op| op.lists_per_vm())
            .map(Operation::as_str)
            .collect();
        assert_eq!(per_vm, ["vm.list", "audit.read"]);
        let reaching: Vec<&str> = Operation::ALL
            .into_iter()
            .filter(|op| op.reaches_agent())
            .map(Operation::as_str)
            .collect();
        assert_eq!(
            reaching,
            [
                "info",
                "time.show",
                "time.sync",
                "kvp.list",
                "kvp.get",
                "kvp.set",
                "kvp.rm",
                "shutdown",
                "fs.status",
                "fs.freeze",
                "fs.thaw"
            ]
        );
        // Every operation but `unlisted` names a route.
        for op in Operation::ALL {
            let routed = ROUTES.iter().any(|r| r.operation == op);
            assert_eq!(routed, op != Operation::Unlisted, "{}", op.as_str());
        }
    }

    #[test]
    fn operator_routes_act_on_guests_and_admin_routes_change_the_host() {
        let role = |m: Method, p: &str| route_rule(&m, p).role;
        assert_eq!(role(Method::POST, "/v1/vms/{name}/connect"), Operator);
        assert_eq!(role(Method::POST, "/v1/services"), Admin);
        assert_eq!(role(Method::GET, "/v1/vms/{name}/credentials"), Admin);
        assert_eq!(role(Method::GET, "/v1/audit"), Viewer);
    }
}
