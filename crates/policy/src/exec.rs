//! Exec rules beyond the program: what each argument position may be, and
//! which environment variables a request may set, with the list of
//! variables that dynamic loaders, shells and interpreters read to run
//! code of the caller's choosing (refused unless a policy names them
//! exactly).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest argument a denial quotes; longer ones are cut with "...".
const QUOTED_ARGUMENT_CHARS: usize = 80;

/// Variables read by a dynamic loader, a shell, an interpreter or a common
/// tool to load or run code, or to read files that steer one, with who
/// reads them. `NAME*` stands for every name starting with `NAME`.
/// docs/SECURITY.md ("Exec environment") gives the reasons.
pub const LOADER_VARIABLES: &[(&str, &str)] = &[
    (
        "LD_*",
        "the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT load shared objects)",
    ),
    (
        "GCONV_PATH",
        "glibc's iconv, which loads conversion modules from it",
    ),
    (
        "GETCONF_DIR",
        "glibc's getconf, which runs programs from it",
    ),
    ("GLIBC_TUNABLES", "the dynamic loader's tunables parser"),
    ("MALLOC_*", "glibc's allocator (MALLOC_TRACE writes a file)"),
    ("LOCPATH", "glibc, which parses locale files from it"),
    ("NLSPATH", "glibc's message catalogs"),
    (
        "HOSTALIASES",
        "glibc's resolver, which reads the file it names",
    ),
    ("LOCALDOMAIN", "glibc's resolver"),
    ("RES_OPTIONS", "glibc's resolver"),
    (
        "RESOLV_HOST_CONF",
        "glibc's resolver, which reads the file it names",
    ),
    ("NIS_PATH", "glibc's NIS+ lookups"),
    (
        "TMPDIR",
        "glibc and most tools, which put their temporary files there",
    ),
    ("TZDIR", "glibc, which parses time zone files from it"),
    ("PATH", "every program that starts another by name"),
    (
        "HOME",
        "shells and tools, which read their start-up and configuration files there",
    ),
    (
        "XDG_CONFIG_*",
        "tools that read their configuration there (git's core.pager, ...)",
    ),
    (
        "BASH_*",
        "bash (BASH_ENV runs a file, BASH_FUNC_* define functions)",
    ),
    ("ENV", "sh and ksh, which run the file it names"),
    (
        "SHELLOPTS",
        "bash, which sets these options at start (xtrace)",
    ),
    ("BASHOPTS", "bash, which sets these options at start"),
    ("PS0", "shells, which expand it with command substitution"),
    ("PS1", "shells, which expand it with command substitution"),
    ("PS2", "shells, which expand it with command substitution"),
    ("PS3", "shells, which expand it with command substitution"),
    (
        "PS4",
        "shells, which expand it with command substitution under xtrace",
    ),
    ("PROMPT_COMMAND", "bash, which runs it"),
    ("IFS", "shells, which split unquoted expansions on it"),
    ("CDPATH", "shells' cd"),
    ("GLOBIGNORE", "bash's globbing"),
    ("FPATH", "ksh and zsh, which load functions from it"),
    ("ZDOTDIR", "zsh, which runs its start-up files from it"),
    (
        "TERMINFO*",
        "ncurses, which parses terminal descriptions from it",
    ),
    ("TERMCAP", "ncurses and termcap, which parse it"),
    (
        "PYTHON*",
        "Python (PYTHONSTARTUP, PYTHONPATH, PYTHONHOME run or load code)",
    ),
    (
        "PERL*",
        "Perl (PERL5OPT, PERL5LIB, PERLLIB, PERL5DB load code)",
    ),
    ("RUBY*", "Ruby (RUBYOPT, RUBYLIB load code)"),
    ("GEM_*", "RubyGems, which loads plugins from these paths"),
    ("NODE_*", "Node.js (NODE_OPTIONS --require, NODE_PATH)"),
    ("JAVA_TOOL_OPTIONS", "the JVM (-javaagent loads code)"),
    ("_JAVA_OPTIONS", "the JVM (-javaagent loads code)"),
    (
        "JDK_JAVA_OPTIONS",
        "the java launcher (-javaagent loads code)",
    ),
    ("CLASSPATH", "the JVM, which loads classes from it"),
    (
        "LUA_*",
        "Lua (LUA_INIT runs code, LUA_PATH and LUA_CPATH load it)",
    ),
    (
        "PHPRC",
        "PHP, which reads php.ini there (auto_prepend_file)",
    ),
    ("PHP_INI_SCAN_DIR", "PHP, which reads extra ini files there"),
    ("TCLLIBPATH", "Tcl, which loads packages from it"),
    (
        "GIT_*",
        "git (GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_* run commands)",
    ),
    (
        "OPENSSL_*",
        "OpenSSL (OPENSSL_CONF loads engines and providers)",
    ),
    ("EDITOR", "programs that start an editor"),
    ("VISUAL", "programs that start an editor"),
    ("PAGER", "programs that start a pager"),
    ("MANPAGER", "man, which runs it"),
    ("LESS*", "less (LESSOPEN and LESSCLOSE run commands)"),
    (
        "SYSTEMD_*",
        "systemd's tools (SYSTEMD_PAGER, SYSTEMD_EDITOR run commands)",
    ),
    ("SSH_ASKPASS", "ssh, which runs it"),
    ("SUDO_ASKPASS", "sudo, which runs it"),
];

/// What one argument position may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgRule {
    /// Exactly this (`"status"` or `{ exact = "status" }`).
    Exact(String),
    /// Starting with this (`{ prefix = "--unit=" }`).
    Prefix(String),
    /// Matching this glob (`{ glob = "*.service" }`; `*` and `?` do not
    /// match `/`).
    Glob(String),
}

impl fmt::Display for ArgRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(s) => write!(f, "exactly {s:?}"),
            Self::Prefix(s) => write!(f, "starting with {s:?}"),
            Self::Glob(s) => write!(f, "matching the glob {s:?}"),
        }
    }
}

impl ArgRule {
    /// The rule's text, as written.
    pub fn text(&self) -> &str {
        match self {
            Self::Exact(s) | Self::Prefix(s) | Self::Glob(s) => s,
        }
    }

    /// Whether `arg` satisfies the rule. A prefix or a glob never matches an
    /// argument with a `..` path component, so `/srv/in/` cannot be left
    /// with `/srv/in/../../etc/shadow`.
    pub fn matches(&self, arg: &str) -> bool {
        let climbs = || arg.split('/').any(|c| c == "..");
        match self {
            Self::Exact(s) => arg == s,
            Self::Prefix(p) => arg.starts_with(p.as_str()) && !climbs(),
            Self::Glob(g) => super::glob_match(g, arg) && !climbs(),
        }
    }
}

impl Serialize for ArgRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Exact(s) => serializer.serialize_str(s),
            Self::Prefix(s) | Self::Glob(s) => {
                let mut map = serializer.serialize_map(Some(1))?;
                let key = if matches!(self, Self::Prefix(_)) {
                    "prefix"
                } else {
                    "glob"
                };
                map.serialize_entry(key, s)?;
                map.end()
            }
        }
    }
}

const ARG_RULE_KINDS: &[&str] = &["exact", "prefix", "glob"];

impl<'de> Deserialize<'de> for ArgRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgRuleVisitor;

        impl<'de> Visitor<'de> for ArgRuleVisitor {
            type Value = ArgRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string (the exact argument) or a table with one of exact, prefix, glob",
                )
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ArgRule, E> {
                Ok(ArgRule::Exact(value.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ArgRule, A::Error> {
                let mut rule = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let made = match key.as_str() {
                        "exact" => ArgRule::Exact(value),
                        "prefix" => ArgRule::Prefix(value),
                        "glob" => ArgRule::Glob(value),
                        other => return Err(de::Error::unknown_field(other, ARG_RULE_KINDS)),
                    };
                    if rule.replace(made).is_some() {
                        return Err(de::Error::custom(
                            "an argument rule has one of exact, prefix, glob, not several",
                        ));
                    }
                }
                rule.ok_or_else(|| {
                    de::Error::custom("an argument rule needs one of exact, prefix, glob")
                })
            }
        }

        deserializer.deserialize_any(ArgRuleVisitor)
    }
}

/// Who reads `name` to run code, if it is one of [`LOADER_VARIABLES`].
pub fn loader_variable(name: &str) -> Option<(&'static str, &'static str)> {
    LOADER_VARIABLES
        .iter()
        .copied()
        .find(|(pattern, _)| name_matches(pattern, name))
}

/// Whether `pattern` (a name, or `PREFIX*`) matches `name`.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Why an environment pattern of a policy is malformed, if it is: a name
/// of printable ASCII without `=`, with at most a trailing `*`, and no
/// glob that could only match variables that must be named exactly.
pub(super) fn env_pattern_error(pattern: &str) -> Option<String> {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    if pattern.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'=' && b != b'*')
    {
        return Some(format!(
            "environment name {pattern:?} must be a variable name (printable ASCII, no = or spaces), with at most a trailing *"
        ));
    }
    if pattern.ends_with('*') {
        // A glob every match of which is a loader variable allows nothing.
        if let Some((covering, _)) = LOADER_VARIABLES.iter().find(|(p, _)| {
            p.strip_suffix('*')
                .is_some_and(|loader_prefix| name.starts_with(loader_prefix))
        }) {
            return Some(format!(
                "environment glob {pattern:?} could only match variables of {covering}, which pass only when named exactly"
            ));
        }
    }
    None
}

/// Checks the environment a request sets against the allowed patterns
/// `allowed` (`None`: any name but the loader variables) and the names
/// `extra` of the matching program rule. `Err` is the reason, naming the
/// variable (never its value).
pub(super) fn check_env(
    env: &BTreeMap<String, String>,
    allowed: Option<&[String]>,
    extra: &[String],
    program: &str,
) -> Result<(), String> {
    for name in env.keys() {
        let named = allowed
            .unwrap_or_default()
            .iter()
            .chain(extra)
            .any(|p| p == name);
        if named {
            continue;
        }
        if let Some((pattern, reader)) = loader_variable(name) {
            return Err(format!(
                "environment variable {name:?} is refused for {program}: {pattern} is read by {reader}; a policy allows it only by naming it exactly in env"
            ));
        }
        let Some(allowed) = allowed else {
            continue;
        };
        if !allowed.iter().chain(extra).any(|p| name_matches(p, name)) {
            let list = if allowed.is_empty() && extra.is_empty() {
                "none".to_string()
            } else {
                allowed
                    .iter()
                    .chain(extra)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "environment variable {name:?} is not in the exec environment allow-list for {program} (allowed: {list})"
            ));
        }
    }
    Ok(())
}

/// `arg` quoted for a denial, cut when long.
fn quoted(arg: &str) -> String {
    if arg.chars().count() <= QUOTED_ARGUMENT_CHARS {
        return format!("{arg:?}");
    }
    let cut: String = arg.chars().take(QUOTED_ARGUMENT_CHARS).collect();
    format!("{cut:?}...")
}

/// Checks a request's arguments against the rules of one program rule:
/// `rules` for the first positions (each required), then further
/// arguments only if `more`. `Err` names the argument (1-based).
pub(super) fn check_args(
    args: &[String],
    rules: &[ArgRule],
    more: bool,
    program: &str,
) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        let Some(arg) = args.get(i) else {
            return Err(format!(
                "argument {} of {program} is missing: the policy wants it {rule}",
                i + 1
            ));
        };
        if !rule.matches(arg) {
            let climbs = if !matches!(rule, ArgRule::Exact(_)) && arg.split('/').any(|c| c == "..")
            {
                "; a prefix or glob never matches a .. component"
            } else {
                ""
            };
            return Err(format!(
                "argument {} {} of {program} is not allowed: the policy wants it {rule}{climbs}",
                i + 1,
                quoted(arg)
            ));
        }
    }
    if !more && args.len() > rules.len() {
        let n = rules.len();
        return Err(format!(
            "argument {} {} of {program} is not allowed: the policy allows {n} argument{} and no more",
            n + 1,
            quoted(&args[n]),
            if n == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| ((*n).to_string(), "secret-value".to_string()))
            .collect()
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    #[test]
    fn loader_variables_are_refused_unless_named_exactly() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "GCONV_PATH",
            "GLIBC_TUNABLES",
            "MALLOC_CHECK_",
            "LOCPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "PERLLIB",
            "RUBYOPT",
            "NODE_OPTIONS",
            "BASH_ENV",
            "BASH_FUNC_uptime%%",
            "ENV",
            "SHELLOPTS",
            "PS4",
            "IFS",
            "PATH",
        ] {
            let err = check_env(&env(&[name]), None, &[], "/bin/x").unwrap_err();
            assert!(
                err.contains(&format!("{name:?}")) && !err.contains("secret"),
                "{err}"
            );
            assert!(check_env(&env(&[name]), Some(&list(&["*"])), &[], "/bin/x").is_err());
            assert!(check_env(&env(&[name]), Some(&list(&[name])), &[], "/bin/x").is_ok());
            assert!(check_env(&env(&[name]), Some(&[]), &list(&[name]), "/bin/x").is_ok());
        }
        assert!(check_env(&env(&["LANG", "APP_MODE"]), None, &[], "/bin/x").is_ok());
    }

    #[test]
    fn an_allow_list_passes_its_names_and_prefixes_only() {
        let allowed = list(&["LANG", "APP_*"]);
        assert!(check_env(&env(&["LANG", "APP_X"]), Some(&allowed), &[], "/bin/x").is_ok());
        let err = check_env(&env(&["LC_ALL"]), Some(&allowed), &[], "/bin/x").unwrap_err();
        assert!(
            err.contains("\"LC_ALL\"") && err.contains("LANG, APP_*"),
            "{err}"
        );
        let err = check_env(&env(&["X"]), Some(&[]), &[], "/bin/x").unwrap_err();
        assert!(err.contains("allowed: none"), "{err}");
    }

    #[test]
    fn env_patterns_are_names_and_globs_cannot_cover_loader_variables() {
        for good in ["LANG", "APP_*", "*", "LD_LIBRARY_PATH", "lower_case"] {
            assert_eq!(env_pattern_error(good), None, "{good}");
        }
        for bad in [
            "",
            "A=B",
            "A B",
            "*A",
            "A*B*",
            "LD_*",
            "LD_P*",
            "PYTHON_*",
            "BASH_FUNC_*",
        ] {
            assert!(env_pattern_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn argument_rules_hold_each_position_and_the_rest() {
        let rules = vec![
            ArgRule::Exact("status".into()),
            ArgRule::Glob("*.service".into()),
        ];
        let args = |a: &[&str]| list(a);
        assert!(check_args(
            &args(&["status", "nginx.service"]),
            &rules,
            false,
            "/bin/systemctl"
        )
        .is_ok());
        let err = check_args(
            &args(&["stop", "nginx.service"]),
            &rules,
            false,
            "/bin/systemctl",
        )
        .unwrap_err();
        assert!(err.starts_with("argument 1 \"stop\""), "{err}");
        let err = check_args(&args(&["status"]), &rules, false, "/bin/systemctl").unwrap_err();
        assert!(
            err.contains("argument 2 of /bin/systemctl is missing"),
            "{err}"
        );
        let extra = args(&["status", "a.service", "--now"]);
        let err = check_args(&extra, &rules, false, "/bin/systemctl").unwrap_err();
        assert!(
            err.contains("argument 3 \"--now\"") && err.contains("2 arguments and no more"),
            "{err}"
        );
        assert!(check_args(&extra, &rules, true, "/bin/systemctl").is_ok());
        let prefix = [ArgRule::Prefix("/srv/in/".into())];
        assert!(check_args(&args(&["/srv/in/a"]), &prefix, false, "/bin/cat").is_ok());
        for bad in ["/srv/in/../../etc/shadow", "/srv/inx", "-n"] {
            assert!(
                check_args(&args(&[bad]), &prefix, false, "/bin/cat").is_err(),
                "{bad}"
            );
        }
        let glob = [ArgRule::Glob("/srv/in/*".into())];
        assert!(check_args(&args(&["/srv/in/.."]), &glob, false, "/bin/cat").is_err());
        assert!(check_args(&args(&["/srv/in/a/b"]), &glob, false, "/bin/cat").is_err());
        let long = "x".repeat(1000);
        let err = check_args(&args(&[&long]), &[], false, "/bin/cat").unwrap_err();
        assert!(err.len() < 300, "{err}");
    }
}
