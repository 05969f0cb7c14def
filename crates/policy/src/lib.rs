//! The argument-level policy document: which programs a VM's exec may run
//! (and as whom), which guest paths a copy may write or read, and read-only
//! VMs; its types, parsing (TOML or JSON) and matching. The same
//! document is the host's word (`guestcomm policy set VM FILE`, enforced by
//! guestcommd) and the guest owner's (`guestcomm-agent --policy FILE`,
//! enforced by the agent); a request passes only if both allow it.
//!
//! ```toml
//! read_only = false            # true: only reads (info, time, kvp get, fs status)
//!
//! [exec]                       # absent: any program; present: only these
//! env = ["LANG", "APP_*"]      # variables a request may set; absent: any but the loader variables
//! allow = [
//!   { program = "/usr/bin/uptime", args = [] },            # no argument at all
//!   { program = "/usr/local/bin/app-*", user = "app" },   # glob; only as user app
//!   { program = "/usr/bin/systemctl", args = ["status", { glob = "*.service" }] },
//!   { program = "/usr/bin/python3", args = ["/opt/tool.py"], more_args = true, env = ["PYTHONPATH"] },
//! ]
//!
//! [cp]                         # each list absent: any path; empty: none
//! to_guest = ["/srv/incoming"]
//! from_guest = ["/var/log"]
//! ```
//!
//! The same in JSON is accepted (a document starting with `{`). Programs
//! and prefixes are absolute paths without `.` or `..` components; in a
//! glob `*` and `?` match within one path component. A request naming a
//! program without a `/` is resolved against the allow-list's exact paths
//! (`uptime` becomes `/usr/bin/uptime`), so the guest's `PATH` plays no
//! part. Path checks here are lexical; the agent also checks the path with
//! its symbolic links resolved.
//!
//! Arguments and the environment of an exec are checked per rule (module
//! `exec`): `args` holds one rule per position (a string: exactly it;
//! `{ prefix = ".." }`, `{ glob = ".." }`), all required, and `more_args`
//! whether further arguments may follow (default: no when `args` is given,
//! yes when not). A variable passes if `[exec] env` or the rule's own
//! `env` names it exactly; otherwise it must not be one of
//! [`LOADER_VARIABLES`], and must match a pattern of `[exec] env` when
//! that list is given (a trailing `*` matches any rest).

use guestcomm_protocol::files::{CopyFromGuest, CopyToGuest};
use guestcomm_protocol::message::{Call, ExecRequest};
use serde::{Deserialize, Serialize};

mod exec;
mod limits;

pub use exec::{loader_variable, ArgRule, LOADER_VARIABLES};
pub use limits::{MAX_POLICY_BYTES, MAX_POLICY_RULES};

/// How many allowed programs a denial lists before "...".
const LISTED_IN_DENIAL: usize = 5;

/// Why a policy document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Over [`MAX_POLICY_BYTES`].
    #[error("the policy is {0} bytes, over the {MAX_POLICY_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not valid TOML or JSON of the expected shape, or a bad value.
    #[error("line {line}: {message}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A policy document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Only reads pass: no exec, copy, service stream, clock step, key-value
    /// change, shutdown or freeze.
    #[serde(default)]
    pub read_only: bool,
    /// Programs exec may run; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecRules>,
    /// Guest paths copies may use; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cp: Option<CopyRules>,
}

/// `[exec]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRules {
    /// Environment variables a request may set: names, or `PREFIX*`;
    /// absent: any but [`LOADER_VARIABLES`], which pass only when a list
    /// names them exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The allowed programs; empty: none.
    #[serde(default)]
    pub allow: Vec<ExecRule>,
}

/// One allowed program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    /// Absolute path, or a glob of one (`*`, `?` within a component).
    pub program: String,
    /// Only as this user (exactly as the request names it); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// One rule per argument position, each required; absent: any arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<ArgRule>>,
    /// Whether arguments after those of `args` may follow; absent: only
    /// when `args` is absent too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_args: Option<bool>,
    /// Variables this program may also be given (added to `[exec] env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl ExecRule {
    /// Checks a request's arguments and environment against this rule,
    /// whose program it runs as `program`; `[exec] env` is `env_allowed`.
    fn check_request(
        &self,
        exec: &ExecRequest,
        env_allowed: Option<&[String]>,
        program: &str,
    ) -> Result<(), String> {
        let more = self.more_args.unwrap_or(self.args.is_none());
        exec::check_args(
            &exec.args,
            self.args.as_deref().unwrap_or_default(),
            more,
            program,
        )?;
        exec::check_env(&exec.env, env_allowed, &self.env, program)
    }
}

/// `[cp]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRules {
    /// Prefixes a copy into the guest may write under; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_guest: Option<Vec<String>>,
    /// Prefixes a copy out of the guest may read under; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_guest: Option<Vec<String>>,
}

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to guest: the destination is checked.
    ToGuest,
    /// Guest to host: the source is checked.
    FromGuest,
}

/// The 1-based line holding byte `offset` of `text` (for errors that
/// name the line of a TOML or JSON file).
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `path` is absolute with no empty, `.` or `..` component (a trailing `/`
/// is allowed).
fn is_clean_absolute(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.is_empty()
        || rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// Whether `glob` matches `text` (`*`: any run of characters but `/`;
/// `?`: one character but `/`).
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    // Where the last `*` was and what it had consumed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some('?') if t[ti] != '/' => {
                gi += 1;
                ti += 1;
            }
            Some(&c) if c != '*' && c != '?' && c == t[ti] => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character, never a `/`.
                Some((sg, st)) if t[st] != '/' => {
                    star = Some((sg, st + 1));
                    gi = sg + 1;
                    ti = st + 1;
                }
                _ => return false,
            },
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// Whether `path` is `prefix` or below it, by whole components.
fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let path = path.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The shortest of `prefixes` that `path` is, or is below, by whole
/// components; `None` when there is none or `path` is not absolute without
/// `.` or `..` components.
pub fn covering_prefix<'a>(prefixes: &'a [String], path: &str) -> Option<&'a str> {
    if !is_clean_absolute(path) {
        return None;
    }
    prefixes
        .iter()
        .filter(|p| is_clean_absolute(p) && under(p, path))
        .min_by_key(|p| p.len())
        .map(String::as_str)
}

impl PolicyDocument {
    /// Parses and validates a TOML document, or a JSON one (starting with `{`).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(text.len()));
        }
        let doc: Self = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| PolicyError::Invalid {
                line: e.line().max(1),
                message: e.to_string(),
            })?
        } else {
            toml::from_str(text).map_err(|e| PolicyError::Invalid {
                line: e.span().map_or(1, |s| line_of(text, s.start)),
                message: e.message().trim().to_string(),
            })?
        };
        doc.validate(text)?;
        Ok(doc)
    }

    /// Checks every value; errors name the line where the value appears in `text`.
    fn validate(&self, text: &str) -> Result<(), PolicyError> {
        let at = |value: &str, message: String| PolicyError::Invalid {
            line: text.find(value).map_or(1, |i| line_of(text, i)),
            message,
        };
        let programs = self.exec.iter().flat_map(|e| &e.allow);
        let prefixes = self
            .cp
            .iter()
            .flat_map(|c| c.to_guest.iter().chain(&c.from_guest))
            .flatten();
        let env_patterns = self.exec.iter().flat_map(|e| {
            e.env
                .iter()
                .flatten()
                .chain(e.allow.iter().flat_map(|r| &r.env))
        });
        let arg_rules = programs.clone().flat_map(|r| r.args.iter().flatten());
        let rules = programs.clone().count()
            + prefixes.clone().count()
            + env_patterns.clone().count()
            + arg_rules.clone().count();
        if rules > MAX_POLICY_RULES {
            return Err(at("", format!("more than {MAX_POLICY_RULES} rules")));
        }
        for rule in programs {
            if !is_clean_absolute(&rule.program) || rule.program.ends_with('/') {
                return Err(at(
                    &rule.program,
                    format!(
                        "program {:?} must be an absolute path (or glob) without . or .. components",
                        rule.program
                    ),
                ));
            }
            if rule.user.as_deref() == Some("") {
                return Err(at(&rule.program, "user must not be empty".into()));
            }
        }
        for pattern in env_patterns {
            if let Some(message) = exec::env_pattern_error(pattern) {
                return Err(at(&format!("{pattern:?}"), message));
            }
        }
        if let Some(rules) = &self.exec {
            if rules.env.is_some() && rules.allow.is_empty() {
                return Err(at(
                    "env",
                    "[exec] has env but no allow: it lets no program run (list the programs in allow, or drop [exec] for any program)".into(),
                ));
            }
        }
        for rule in arg_rules {
            if rule.text().contains('\0') {
                return Err(at(
                    rule.text(),
                    "an argument rule must not contain NUL".into(),
                ));
            }
        }
        for prefix in prefixes {
            if !is_clean_absolute(prefix) {
                return Err(at(
                    prefix,
                    format!("path {prefix:?} must be absolute, without . or .. components"),
                ));
            }
        }
        Ok(())
    }

    /// The document as TOML (for `guestcomm policy show`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks a request, rewriting a bare program name to the allowed path
    /// it stands for. `Err` is the reason, one line.
    pub fn check(&self, call: &mut Call) -> Result<(), String> {
        if is_read(call) {
            return Ok(());
        }
        if self.read_only {
            return Err("the VM is read-only: only reads pass".into());
        }
        match call {
            Call::Exec(exec) => self.check_exec(exec),
            Call::CopyToGuest(CopyToGuest { dst, .. }) => self.check_copy(Direction::ToGuest, dst),
            Call::CopyFromGuest(CopyFromGuest { src, .. }) => {
                self.check_copy(Direction::FromGuest, src)
            }
            // Changes without arguments this document restricts: only
            // read_only stops them.
            _ => Ok(()),
        }
    }

    fn check_exec(&self, exec: &mut ExecRequest) -> Result<(), String> {
        let Some(rules) = &self.exec else {
            return Ok(());
        };
        let user_ok = |rule: &ExecRule| rule.user.is_none() || rule.user == exec.user;
        let program = exec.program.clone();
        // The rules that would run this program, each with the path it
        // stands for: a path matching the rule's glob, or a bare name that
        // is the last component of the rule's exact path.
        let candidates: Vec<(&ExecRule, String)> = if program.contains('/') {
            if is_clean_absolute(&program) {
                rules
                    .allow
                    .iter()
                    .filter(|r| user_ok(r) && glob_match(&r.program, &program))
                    .map(|r| (r, program.clone()))
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            rules
                .allow
                .iter()
                .filter(|r| {
                    user_ok(r)
                        && !r.program.contains(['*', '?'])
                        && r.program.rsplit('/').next() == Some(program.as_str())
                })
                .map(|r| (r, r.program.clone()))
                .collect()
        };
        // The first rule whose arguments and environment the request
        // satisfies runs it; otherwise the first rule's reason is given.
        let mut first_reason = None;
        for (rule, path) in &candidates {
            match rule.check_request(exec, rules.env.as_deref(), path) {
                Ok(()) => {
                    exec.program.clone_from(path);
                    return Ok(());
                }
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                }
            }
        }
        if let Some(reason) = first_reason {
            let others = if candidates.len() > 1 {
                format!(
                    " (nor do the {} other rules for it allow it)",
                    candidates.len() - 1
                )
            } else {
                String::new()
            };
            return Err(format!("{reason}{others}"));
        }
        let mut allowed: Vec<String> = rules
            .allow
            .iter()
            .take(LISTED_IN_DENIAL)
            .map(|r| match &r.user {
                Some(u) => format!("{} (as {u})", r.program),
                None => r.program.clone(),
            })
            .collect();
        if rules.allow.len() > LISTED_IN_DENIAL {
            allowed.push("...".into());
        }
        let allowed = if allowed.is_empty() {
            "none".into()
        } else {
            allowed.join(", ")
        };
        let user = exec
            .user
            .as_deref()
            .map_or(String::new(), |u| format!(" as user {u:?}"));
        Err(format!(
            "program {program:?}{user} is not in the exec allow-list (allowed: {allowed})"
        ))
    }

    /// The prefixes copies in `direction` are restricted to; `None`: any path.
    pub fn copy_prefixes(&self, direction: Direction) -> Option<&[String]> {
        let cp = self.cp.as_ref()?;
        match direction {
            Direction::ToGuest => cp.to_guest.as_deref(),
            Direction::FromGuest => cp.from_guest.as_deref(),
        }
    }

    /// Checks one guest path of a copy against the prefixes of `direction`.
    pub fn check_copy(&self, direction: Direction, path: &str) -> Result<(), String> {
        let what = match direction {
            Direction::ToGuest => "copies into the guest",
            Direction::FromGuest => "copies out of the guest",
        };
        let Some(prefixes) = self.copy_prefixes(direction) else {
            return Ok(());
        };
        if covering_prefix(prefixes, path).is_some() {
            return Ok(());
        }
        let allowed = if prefixes.is_empty() {
            "none".into()
        } else {
            prefixes.join(", ")
        };
        Err(format!(
            "guest path {path:?} is outside the paths allowed for {what} (allowed: {allowed}; absolute paths without . or ..)"
        ))
    }
}

/// Whether `call` only reads guest state (information, the clock, key-value
/// pools, what is frozen): what a read-only VM still answers.
pub fn is_read(call: &Call) -> bool {
    matches!(
        call,
        Call::GuestInfo
            | Call::TimeQuery
            | Call::KvpGet { .. }
            | Call::KvpList { .. }
            | Call::FsStatus
            | Call::Heartbeat { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[exec]
allow = [
  { program = "/usr/bin/uptime" },
  { program = "/opt/app/bin/*", user = "app" },
]
[cp]
to_guest = ["/srv/in/"]
"#;

    fn exec(program: &str, user: Option<&str>) -> Call {
        Call::Exec(ExecRequest {
            program: program.into(),
            user: user.map(Into::into),
            ..ExecRequest::default()
        })
    }

    #[test]
    fn only_allowed_programs_run_and_bare_names_become_their_paths() {
        let doc = PolicyDocument::parse(DOC).unwrap();
        let mut call = exec("uptime", None);
        assert_eq!(doc.check(&mut call), Ok(()));
        assert_eq!(call, exec("/usr/bin/uptime", None));
        assert!(doc.check(&mut exec("/usr/bin/uptime", None)).is_ok());
        let err = doc.check(&mut exec("sh", None)).unwrap_err();
        assert!(
            err.contains("\"sh\"") && err.contains("/usr/bin/uptime"),
            "{err}"
        );
        for bad in [
            "/bin/sh",
            "/usr/bin/../bin/sh",
            "./uptime",
            "/usr/bin/uptime/x",
        ] {
            assert!(doc.check(&mut exec(bad, None)).is_err(), "{bad}");
        }
        assert!(doc
            .check(&mut exec("/opt/app/bin/run", Some("app")))
            .is_ok());
        assert!(doc.check(&mut exec("/opt/app/bin/run", None)).is_err());
        assert!(doc
            .check(&mut exec("/opt/app/bin/x/run", Some("app")))
            .is_err());
        // A glob never stands for a bare name.
        assert!(doc.check(&mut exec("run", Some("app"))).is_err());
    }

    #[test]
    fn copies_pass_only_under_their_prefixes_by_whole_components() {
        let doc = PolicyDocument::parse(DOC).unwrap();
        let to = |p: &str| doc.check_copy(Direction::ToGuest, p);
        assert!(to("/srv/in").is_ok() && to("/srv/in/a/b").is_ok());
        for bad in [
            "/srv/inx",
            "/srv",
            "/srv/in/../etc",
            "srv/in/a",
            "/etc/passwd",
        ] {
            assert!(to(bad).is_err(), "{bad}");
        }
        assert!(doc.check_copy(Direction::FromGuest, "/etc/shadow").is_ok());
        let none = PolicyDocument::parse("[cp]\nfrom_guest = []\n").unwrap();
        let err = none.check_copy(Direction::FromGuest, "/tmp/x").unwrap_err();
        assert!(err.contains("allowed: none"), "{err}");
    }

    #[test]
    fn read_only_refuses_every_change_but_not_reads_and_empty_allows_all() {
        let ro = PolicyDocument::parse("read_only = true").unwrap();
        assert!(ro.check(&mut exec("/usr/bin/uptime", None)).is_err());
        assert!(ro.check(&mut Call::TimeStep { delta_ns: 1 }).is_err());
        assert!(ro
            .check(&mut Call::FsFreeze {
                mountpoints: vec![],
                timeout_s: None
            })
            .is_err());
        assert!(ro.check(&mut Call::GuestInfo).is_ok());
        assert!(ro.check(&mut Call::FsStatus).is_ok());
        let open = PolicyDocument::parse("").unwrap();
        assert!(open.check(&mut exec("anything", None)).is_ok());
    }

    #[test]
    fn malformed_documents_name_the_line() {
        let cases = [
            (
                "[exec]\nallow = [\n  { program = \"sh\" },\n]\n",
                3,
                "absolute",
            ),
            (
                "read_only = true\n[cp]\nto_guest = [\"/a/../b\"]\n",
                3,
                "absolute",
            ),
            ("read_only = true\nexecs = 1\n", 2, "execs"),
            (
                "[exec]\nallow = [{ program = \"/bin/x\", uid = 0 }]\n",
                2,
                "uid",
            ),
            ("{\n \"read_only\": true,\n \"x\": 1\n}", 3, "x"),
            ("[exec\n", 1, ""),
        ];
        for (text, line, word) in cases {
            let err = PolicyDocument::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("line {line}:")) && err.contains(word),
                "{text:?}: {err}"
            );
        }
        let big = "#".repeat(MAX_POLICY_BYTES + 1);
        assert!(matches!(
            PolicyDocument::parse(&big),
            Err(PolicyError::TooLarge(_))
        ));
    }

    #[test]
    fn json_and_toml_round_trip() {
        let doc = PolicyDocument::parse(DOC).unwrap();
        assert_eq!(PolicyDocument::parse(&doc.to_toml()).unwrap(), doc);
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(PolicyDocument::parse(&json).unwrap(), doc);
    }

    const ARGS_DOC: &str = r#"
[exec]
env = ["LANG", "APP_*"]
allow = [
  { program = "/usr/bin/uptime", args = [] },
  { program = "/usr/bin/systemctl", args = ["status", { glob = "*.service" }] },
  { program = "/usr/bin/systemctl", args = ["restart", { exact = "app.service" }] },
  { program = "/usr/bin/journalctl", args = [{ prefix = "--unit=" }], more_args = true },
  { program = "/usr/bin/python3", args = ["/opt/tool.py"], more_args = true, env = ["PYTHONPATH"] },
]
"#;

    fn exec_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Call {
        Call::Exec(ExecRequest {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            ..ExecRequest::default()
        })
    }

    #[test]
    fn arguments_and_environment_are_held_to_the_rules_of_the_program() {
        let doc = PolicyDocument::parse(ARGS_DOC).unwrap();
        let check = |program: &str, args: &[&str], env: &[(&str, &str)]| {
            doc.check(&mut exec_with(program, args, env))
        };
        assert!(check("uptime", &[], &[("LANG", "C"), ("APP_MODE", "x")]).is_ok());
        let err = check("uptime", &["-p"], &[]).unwrap_err();
        assert!(
            err.contains("argument 1 \"-p\" of /usr/bin/uptime"),
            "{err}"
        );
        let err = check("uptime", &[], &[("LD_PRELOAD", "/srv/in/evil.so")]).unwrap_err();
        assert!(
            err.contains("\"LD_PRELOAD\"") && !err.contains("evil"),
            "{err}"
        );
        let err = check("uptime", &[], &[("TZ", "UTC")]).unwrap_err();
        assert!(
            err.contains("\"TZ\"") && err.contains("LANG, APP_*"),
            "{err}"
        );
        // Two rules for one program: either may allow the request.
        assert!(check("systemctl", &["status", "nginx.service"], &[]).is_ok());
        assert!(check("/usr/bin/systemctl", &["restart", "app.service"], &[]).is_ok());
        let err = check("systemctl", &["stop", "app.service"], &[]).unwrap_err();
        assert!(
            err.contains("argument 1 \"stop\"") && err.contains("nor do the 1 other rules"),
            "{err}"
        );
        assert!(check("journalctl", &["--unit=a", "-n", "5"], &[]).is_ok());
        assert!(check("journalctl", &["-f"], &[]).is_err());
        // A program's own env adds exact names, loader variables included.
        assert!(check(
            "python3",
            &["/opt/tool.py", "-v"],
            &[("PYTHONPATH", "/opt")]
        )
        .is_ok());
        assert!(check("uptime", &[], &[("PYTHONPATH", "/opt")]).is_err());
        assert!(check("python3", &["/opt/tool.py"], &[("PYTHONSTARTUP", "/x")]).is_err());
        // A bare name is rewritten to the path of the rule that allowed it.
        let mut call = exec_with("systemctl", &["status", "a.service"], &[]);
        doc.check(&mut call).unwrap();
        assert!(matches!(&call, Call::Exec(e) if e.program == "/usr/bin/systemctl"));
    }

    #[test]
    fn without_an_env_list_loader_variables_are_refused_and_others_pass() {
        let doc = PolicyDocument::parse(DOC).unwrap();
        assert!(doc
            .check(&mut exec_with("uptime", &["-p"], &[("APP", "1")]))
            .is_ok());
        for name in [
            "LD_PRELOAD",
            "PATH",
            "BASH_ENV",
            "PYTHONPATH",
            "GLIBC_TUNABLES",
        ] {
            let err = doc
                .check(&mut exec_with("uptime", &[], &[(name, "v")]))
                .unwrap_err();
            assert!(err.contains(name), "{err}");
        }
        // Without [exec] any program runs, so the environment adds nothing.
        let open = PolicyDocument::parse("read_only = false").unwrap();
        assert!(open
            .check(&mut exec_with("uptime", &[], &[("LD_PRELOAD", "x")]))
            .is_ok());
    }

    #[test]
    fn malformed_exec_rules_name_the_line() {
        let cases = [
            ("[exec]\nenv = [\"LANG\"]\n", 2, "no allow"),
            (
                "[exec]\nenv = [\"LANG\",\n  \"LD_*\"]\nallow = [{ program = \"/bin/x\" }]\n",
                3,
                "named exactly",
            ),
            (
                "[exec]\nallow = [{ program = \"/bin/x\", env = [\"A=B\"] }]\n",
                2,
                "variable name",
            ),
            (
                "[exec]\nallow = [\n { program = \"/bin/x\", args = [{ regex = \"a\" }] },\n]\n",
                3,
                "regex",
            ),
            (
                "[exec]\nallow = [\n { program = \"/bin/x\", args = [{ glob = \"a\", prefix = \"b\" }] },\n]\n",
                3,
                "not several",
            ),
            (
                "[exec]\nallow = [\n { program = \"/bin/x\", args = [{}] },\n]\n",
                3,
                "needs one of",
            ),
            (
                "[exec]\nallow = [\n { program = \"/bin/x\", args = [1] },\n]\n",
                3,
                "string",
            ),
            (
                "[exec]\nallow = [\n { program = \"/bin/x\", more_args = \"yes\" },\n]\n",
                3,
                "",
            ),
            (
                "{\"exec\": {\"allow\": [{\"program\": \"/bin/x\",\n \"args\": [{\"glob\": 1}]}]}}",
                2,
                "",
            ),
        ];
        for (text, line, word) in cases {
            let err = PolicyDocument::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("line {line}:")) && err.contains(word),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn exec_rules_round_trip_through_toml_and_json() {
        let doc = PolicyDocument::parse(ARGS_DOC).unwrap();
        assert_eq!(
            PolicyDocument::parse(&doc.to_toml()).unwrap(),
            doc,
            "{}",
            doc.to_toml()
        );
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains(r#"{"glob":"*.service"}"#), "{json}");
        assert_eq!(PolicyDocument::parse(&json).unwrap(), doc);
    }

    #[test]
    fn globs_stay_within_a_component() {
        assert!(glob_match("/a/*", "/a/b"));
        assert!(glob_match("/a/b*c", "/a/bxxc"));
        assert!(glob_match("/a/?", "/a/b"));
        assert!(!glob_match("/a/*", "/a/b/c"));
        assert!(!glob_match("/a/?", "/a/bc"));
        assert!(glob_match("/a/*/c", "/a/b/c"));
        assert!(!glob_match("/a/b", "/a/bc"));
    }
}
