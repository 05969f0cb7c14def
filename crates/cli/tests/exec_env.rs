//! The exec policy covers the environment and the arguments, on both
//! sides: with `/usr/bin/printenv` allowed, `LD_PRELOAD` (and every other
//! loader or interpreter variable) is refused by the host policy and, on
//! its own, by the guest policy, unless a policy names it exactly; allowed
//! variables reach the program; per-position argument rules stop an allowed
//! `find` from running `-exec`; and the audit record of an exec holds the
//! variables' names and a digest, never a value.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::process::Output;

use serde_json::Value;
use sha2::{Digest, Sha256};
use util::daemon::Daemon;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn set_policy(d: &Daemon, vm: &str, doc: &str) -> Output {
    d.run_with_stdin(&["policy", "set", vm, "-"], doc.as_bytes().to_vec())
}

/// Asserts `out` is a policy denial (exit 126, nothing run) whose message
/// contains each of `words`.
fn assert_denied(out: &Output, words: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    for word in words {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
}

/// `guestcomm exec VM -e VARIABLE -- COMMAND...` through the daemon.
fn exec_env(d: &Daemon, variable: &str, command: &[&str]) -> Output {
    d.run(&[&["exec", "vm1", "-e", variable, "--"], command].concat())
}

/// The standard output of `out`, which must have succeeded.
fn ok_text(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The exec audit record whose command line contains `args_contain`.
fn exec_record<'a>(records: &'a [Value], args_contain: &str) -> &'a Value {
    records
        .iter()
        .find(|r| {
            r["operation"] == "exec" && r["arguments"].as_str().unwrap().contains(args_contain)
        })
        .unwrap_or_else(|| panic!("no exec record with {args_contain:?} in {records:#?}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_host_policy_refuses_ld_preload_and_lets_allowed_variables_reach_the_program() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let doc = "[exec]\nenv = [\"APP_*\", \"LD_LIBRARY_PATH\"]\nallow = [{ program = \"/usr/bin/printenv\" }]\n";
    let out = set_policy(&d, "vm1", doc);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let preload = exec_env(
        &d,
        "LD_PRELOAD=/srv/in/evil.so",
        &["printenv", "LD_PRELOAD"],
    );
    assert_denied(&preload, &["host policy of VM vm1", "\"LD_PRELOAD\""]);
    assert!(
        !text(&preload.stderr).contains("evil.so"),
        "a value is never echoed"
    );
    // Not an allowed name, though harmless.
    let other = exec_env(&d, "OTHER=1", &["printenv", "OTHER"]);
    assert_denied(&other, &["host policy of VM vm1", "\"OTHER\"", "APP_*"]);

    // An allowed variable reaches the program, and a loader variable named
    // exactly by the policy passes too.
    let secret = "s3cret-token-9f27c1";
    let app = ok_text(exec_env(
        &d,
        &format!("APP_TOKEN={secret}"),
        &["printenv", "APP_TOKEN"],
    ));
    assert_eq!(app.trim(), secret);
    let lib = ok_text(exec_env(
        &d,
        "LD_LIBRARY_PATH=/opt/lib",
        &["printenv", "LD_LIBRARY_PATH"],
    ));
    assert_eq!(lib.trim(), "/opt/lib");

    // The audit record: names and the digest of name=value, never a value.
    let records = d.audit_settled(&["--vm", "vm1"]);
    let refused = exec_record(&records, "printenv LD_PRELOAD");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(
        refused["environment"]["names"],
        serde_json::json!(["LD_PRELOAD"])
    );
    assert_eq!(
        refused["environment"]["sha256"],
        sha256_hex(b"LD_PRELOAD=/srv/in/evil.so\0")
    );
    let ran = exec_record(&records, "printenv APP_TOKEN");
    assert_eq!(
        (&ran["outcome"], &ran["exit_code"]),
        (&"ok".into(), &0.into())
    );
    assert_eq!(
        ran["environment"]["names"],
        serde_json::json!(["APP_TOKEN"])
    );
    assert_eq!(ran["environment"]["count"], 1);
    assert_eq!(
        ran["environment"]["sha256"],
        sha256_hex(format!("APP_TOKEN={secret}\0").as_bytes())
    );
    let json = d.ok(&["audit", "--vm", "vm1", "--json"]);
    let table = d.ok(&["audit", "--vm", "vm1"]);
    assert!(table.contains("[env APP_TOKEN; sha256 "), "{table}");
    for shown in [&json, &table] {
        assert!(
            !shown.contains(secret) && !shown.contains("evil.so"),
            "{shown}"
        );
    }
    // Nor is it anywhere in the daemon's database files.
    for entry in std::fs::read_dir(d.dir.path().join("state")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

#[test]
fn the_guest_policy_refuses_ld_preload_on_its_own_and_holds_arguments() {
    let d = Daemon::start("off");
    let policy = d.dir.path().join("guest-policy.toml");
    std::fs::write(
        &policy,
        "[exec]\nallow = [{ program = \"/usr/bin/printenv\", args = [{ glob = \"APP_*\" }] }]\n",
    )
    .unwrap();
    let (_agent, _) = d.agent_vm_with("vm1", &["--policy", policy.to_str().unwrap()]);

    // No host policy: the agent alone refuses, and says it is the guest's.
    let preload = exec_env(&d, "LD_PRELOAD=/srv/in/evil.so", &["printenv", "APP_X"]);
    assert_denied(&preload, &["guest policy", "\"LD_PRELOAD\""]);
    assert!(!text(&preload.stderr).contains("host policy"));
    for name in ["PATH", "BASH_ENV", "PYTHONSTARTUP", "GLIBC_TUNABLES"] {
        let out = exec_env(&d, &format!("{name}=/x"), &["printenv", "APP_X"]);
        assert_denied(&out, &["guest policy", &format!("\"{name}\"")]);
    }
    // Without an env list, other variables pass and reach the program.
    let app = ok_text(exec_env(&d, "APP_X=blue", &["printenv", "APP_X"]));
    assert_eq!(app.trim(), "blue");
    // The argument rule: printenv may only print APP_* variables.
    let home = d.run(&["exec", "vm1", "--", "printenv", "HOME"]);
    assert_denied(&home, &["guest policy", "argument 1 \"HOME\""]);
    let two = d.run(&["exec", "vm1", "--", "printenv", "APP_X", "HOME"]);
    assert_denied(&two, &["guest policy", "argument 2 \"HOME\"", "no more"]);

    let records = d.audit_settled(&["--vm", "vm1"]);
    let refused = exec_record(&records, "printenv APP_X");
    assert_eq!(refused["outcome"], "failed");
    assert!(refused["error"].as_str().unwrap().contains("LD_PRELOAD"));
    assert_eq!(
        refused["environment"]["names"],
        serde_json::json!(["LD_PRELOAD"])
    );
}

#[test]
fn a_loader_variable_passes_only_when_a_policy_names_it_exactly() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let run = |name: &str| exec_env(&d, &format!("{name}=/opt/x"), &["printenv", name]);
    // [exec] without env: any variable but the loader ones.
    let doc = "[exec]\nallow = [{ program = \"/usr/bin/printenv\" }]\n";
    assert!(set_policy(&d, "vm1", doc).status.success());
    assert_eq!(text(&run("APP_DIR").stdout).trim(), "/opt/x");
    assert_denied(
        &run("PYTHONPATH"),
        &["host policy of VM vm1", "\"PYTHONPATH\"", "PYTHON*"],
    );
    // A "*" list is the same; only an exact name lets a loader variable in,
    // and a program rule's own env does so for that program only.
    let doc = "[exec]\nenv = [\"*\"]\nallow = [\n  { program = \"/usr/bin/printenv\", env = [\"PYTHONPATH\"] },\n  { program = \"/usr/bin/env\" },\n]\n";
    assert!(set_policy(&d, "vm1", doc).status.success());
    assert_eq!(text(&run("PYTHONPATH").stdout).trim(), "/opt/x");
    assert_denied(&run("PYTHONHOME"), &["\"PYTHONHOME\""]);
    let env = exec_env(&d, "PYTHONPATH=/opt/x", &["env"]);
    assert_denied(&env, &["\"PYTHONPATH\"", "/usr/bin/env"]);
    // A glob over loader variables is a malformed policy, refused with its line.
    let out = set_policy(
        &d,
        "vm1",
        "[exec]\nenv = [\n  \"PYTHON*\",\n]\nallow = [{ program = \"/usr/bin/printenv\" }]\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("named exactly"),
        "{err}"
    );
}

#[test]
fn argument_rules_stop_an_allowed_find_from_running_commands() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let logs = d.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("app.log"), b"x").unwrap();
    let dir = format!("{}/", logs.display());
    let doc = format!(
        "[exec]\nallow = [{{ program = \"/usr/bin/find\", args = [{{ prefix = \"{dir}\" }}, \"-name\", {{ glob = \"*.log\" }}] }}]\n"
    );
    let out = set_policy(&d, "vm1", &doc);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = d.ok(&["exec", "vm1", "--", "find", &dir, "-name", "*.log"]);
    assert!(found.contains("app.log"), "{found}");

    let marker = d.dir.path().join("pwned");
    let touch = format!("touch {}", marker.display());
    let exec = d.run(&[
        "exec", "vm1", "--", "find", &dir, "-name", "*.log", "-exec", "sh", "-c", &touch, ";",
    ]);
    assert_denied(
        &exec,
        &["host policy of VM vm1", "argument 4 \"-exec\"", "no more"],
    );
    let wrong = d.run(&["exec", "vm1", "--", "find", &dir, "-newer", "x"]);
    assert_denied(&wrong, &["argument 2 \"-newer\"", "exactly \"-name\""]);
    let climb = format!("{dir}../..");
    let up = d.run(&["exec", "vm1", "--", "find", &climb, "-name", "*.log"]);
    assert_denied(&up, &["argument 1", "never matches a .. component"]);
    let short = d.run(&["exec", "vm1", "--", "find", &dir]);
    assert_denied(&short, &["argument 2 of /usr/bin/find is missing"]);
    assert!(!marker.exists(), "find ran its -exec");

    let records = d.audit_settled(&["--vm", "vm1"]);
    assert_eq!(exec_record(&records, "-exec")["outcome"], "refused");
    assert_eq!(exec_record(&records, "-exec")["environment"], Value::Null);
}
