//! Who may call what on the API: a caller's ([`crate::caller::Caller`])
//! roles from the configuration file ([`Access`], [`Grants`]), and the one
//! table of routes and the role each needs ([`ROUTES`]). The middleware that
//! applies them to every call is `http::authorize`.
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

/// One route of the API and what calling it takes.
#[derive(Clone, Debug)]
pub(crate) struct RouteRule {
    /// HTTP method.
    pub(crate) method: Method,
    /// The route as registered (`/v1/vms/{name}`).
    pub(crate) path: &'static str,
    /// The operation's name in the audit log and in refusals.
    pub(crate) operation: &'static str,
    /// The lowest role allowed.
    pub(crate) role: Role,
    /// When it is audited.
    pub(crate) audited: Audited,
    /// Its handler applies a VM's read-only policy to each request itself
    /// (the exec/cp relay, module relay), so the middleware does not.
    pub(crate) checks_read_only: bool,
}

impl RouteRule {
    /// Whether its answer lists things of many VMs, which a caller with
    /// roles on some VMs only sees limited to those (`vm.list`, `audit.read`).
    pub(crate) fn lists_per_vm(&self) -> bool {
        matches!(self.operation, "vm.list" | "audit.read")
    }

    /// Whether its handler asks the VM's agent (a connection per call):
    /// such calls are bounded per VM (module `agent_calls`).
    pub(crate) fn reaches_agent(&self) -> bool {
        matches!(
            self.operation,
            "info"
                | "time.show"
                | "time.sync"
                | "kvp.list"
                | "kvp.get"
                | "kvp.set"
                | "kvp.rm"
                | "shutdown"
                | "fs.status"
                | "fs.freeze"
                | "fs.thaw"
        )
    }
}

/// A route of [`ROUTES`]: `role` needed, `audited` when.
const fn rule(
    method: Method,
    path: &'static str,
    operation: &'static str,
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
    operation: &'static str,
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
use Role::{Admin, Operator, Viewer};

/// Every route, the role it needs and whether it is audited: the one place
/// where access is decided. New routes add a line here (and to openapi.json).
#[rustfmt::skip] // One line per route reads as a table.
pub(crate) const ROUTES: &[RouteRule] = &[
    rule(Method::GET, "/openapi.json", "openapi", Viewer, Failures),
    rule(Method::GET, "/v1/vms", "vm.list", Viewer, Failures),
    rule(Method::POST, "/v1/vms", "vm.add", Admin, Always),
    rule(Method::GET, "/v1/vms/{name}", "vm.show", Viewer, Failures),
    rule(Method::DELETE, "/v1/vms/{name}", "vm.rm", Admin, Always),
    rule(Method::PATCH, "/v1/vms/{name}", "vm.set", Admin, Always),
    route(Method::POST, "/v1/vms/{name}/connect", "vm.connect", Operator, Always, true),
    rule(Method::GET, "/v1/vms/{name}/credentials", "vm.credentials", Admin, Always),
    rule(Method::GET, "/v1/vms/{name}/policy", "policy.show", Viewer, Failures),
    rule(Method::PUT, "/v1/vms/{name}/policy", "policy.set", Admin, Always),
    rule(Method::GET, "/v1/vms/{name}/services", "service.list", Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/integration-services", "service.list", Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/info", "info", Viewer, Failures),
    rule(Method::GET, "/v1/vms/{name}/time", "time.show", Operator, Failures),
    rule(Method::POST, "/v1/vms/{name}/time/sync", "time.sync", Operator, Always),
    rule(Method::GET, "/v1/vms/{name}/kvp/{pool}", "kvp.list", Operator, Failures),
    rule(Method::GET, "/v1/vms/{name}/kvp/{pool}/{key}", "kvp.get", Operator, Failures),
    rule(Method::PUT, "/v1/vms/{name}/kvp/{pool}/{key}", "kvp.set", Operator, Always),
    rule(Method::DELETE, "/v1/vms/{name}/kvp/{pool}/{key}", "kvp.rm", Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/shutdown", "shutdown", Operator, Always),
    rule(Method::GET, "/v1/vms/{name}/fs", "fs.status", Operator, Failures),
    rule(Method::POST, "/v1/vms/{name}/fs/freeze", "fs.freeze", Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/fs/thaw", "fs.thaw", Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/RequestStateChange", "service.state", Admin, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/connect", "service.connect", Operator, Always),
    rule(Method::POST, "/v1/vms/{name}/services/{id}/{method}", "service.method", Admin, Always),
    rule(Method::GET, "/v1/services", "service.list", Viewer, Failures),
    rule(Method::POST, "/v1/services", "service.register", Admin, Always),
    rule(Method::DELETE, "/v1/services/{id}", "service.unregister", Admin, Always),
    rule(Method::PUT, "/v1/services/{id}/policy", "service.enable", Admin, Always),
    rule(Method::GET, "/v1/services/instances", "service.list", Viewer, Failures),
    rule(Method::GET, "/v1/audit", "audit.read", Viewer, Failures),
    rule(Method::GET, "/v1/audit/verify", "audit.verify", Admin, Failures),
    // WBEM (CIM-XML): reads are viewer's; the handler asks more for each
    // method it runs (crate::wbem) and audits those calls itself.
    rule(Method::POST, "/cimom", "wbem", Viewer, Failures),
];

/// What a route missing from [`ROUTES`] takes: admin, audited.
static UNLISTED: RouteRule = rule(Method::GET, "?", "unlisted", Admin, Always);

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
                    op["x-guestcomm-operation"], rule.operation,
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
    fn operator_routes_act_on_guests_and_admin_routes_change_the_host() {
        let role = |m: Method, p: &str| route_rule(&m, p).role;
        assert_eq!(role(Method::POST, "/v1/vms/{name}/connect"), Operator);
        assert_eq!(role(Method::POST, "/v1/services"), Admin);
        assert_eq!(role(Method::GET, "/v1/vms/{name}/credentials"), Admin);
        assert_eq!(role(Method::GET, "/v1/audit"), Viewer);
    }
}
