//! Roles on guestcommd's API and the audit log, with a real second local
//! user (created with `useradd`, used through `setpriv`, removed at the
//! end): no role, viewer, operator; every refusal and operation is in
//! `guestcomm audit --json` with that user's uid, also after a SIGKILL.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use util::daemon::Daemon;
use util::users::TestUser;

const MY_GUID: &str = "0e0b6031-5213-4934-818b-38d90ced39db";

/// The API socket's group is the user's, and the directory is traversable.
fn config(user: &TestUser, roles: &str) -> String {
    format!(
        "[api]\nsocket_group = \"{}\"\n[roles]\n{roles}\n",
        user.name
    )
}

fn as_user(d: &Daemon, user: &TestUser, args: &[&str]) -> std::process::Output {
    let api = d.api();
    user.run(&util::bin("guestcomm"), args, &[("GUESTCOMM_API", &api)])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a refusal: exit `code`, one line naming the role needed.
fn assert_refused(out: &std::process::Output, code: i32, role: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("permission denied") && err.contains(&format!("needs the {role} role")),
        "{err}"
    );
}

/// The audit records of `uid`, as (operation, outcome).
fn audited(d: &Daemon, uid: u32) -> Vec<(String, String, Value)> {
    d.audit_settled(&[])
        .iter()
        .filter(|r| r["uid"] == uid)
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn roles_decide_what_a_second_user_may_do_and_the_audit_log_names_it() {
    let Some(user) = TestUser::create("r") else {
        return;
    };
    let mut d = Daemon::start_with_config("off", &config(&user, ""));
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let (_agent, _) = d.agent_vm("vm1");

    // No role: nothing, not even a list.
    let out = as_user(&d, &user, &["vm", "list"]);
    assert_refused(&out, 1, "viewer");
    assert!(stderr(&out).contains("has no role"));

    // Viewer: reads, but no exec.
    d.set_config(&config(
        &user,
        &format!("viewer = {{ users = [\"{}\"] }}", user.name),
    ));
    d.kill9_and_restart();
    let out = as_user(&d, &user, &["vm", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm1"));
    let out = as_user(&d, &user, &["exec", "vm1", "--", "echo", "hi"]);
    assert_refused(&out, 125, "operator");
    assert!(out.stdout.is_empty());

    // Operator (through the user's group): exec, but no registration.
    d.set_config(&config(
        &user,
        &format!("operator = {{ groups = [{}] }}", user.gid),
    ));
    d.kill9_and_restart();
    let out = as_user(
        &d,
        &user,
        &["exec", "vm1", "--", "sh", "-c", "echo hi; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = as_user(&d, &user, &["service", "register", MY_GUID, "--name", "X"]);
    assert_refused(&out, 1, "admin");
    let out = as_user(&d, &user, &["audit"]);
    assert!(
        out.status.success(),
        "an operator is a viewer too: {}",
        stderr(&out)
    );

    for round in ["before", "after"] {
        let records = audited(&d, user.uid);
        let ops: Vec<(&str, &str)> = records
            .iter()
            .map(|(op, outcome, _)| (op.as_str(), outcome.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("vm.list", "refused"),
                ("vm.connect", "refused"),
                ("exec", "ok"),
                ("service.register", "refused"),
            ],
            "{round} a SIGKILL"
        );
        let exec = &records[2].2;
        assert_eq!(exec["vm"], "vm1");
        assert_eq!(exec["exit_code"], 3);
        assert_eq!(exec["arguments"], r#"sh -c "echo hi; exit 3""#);
        assert!(exec["pid"].as_i64().unwrap() > 0);
        assert!(exec["bytes"].as_u64().unwrap() > 0);
        assert!(records[1].2["error"].as_str().unwrap().contains("operator"));
        d.kill9_and_restart();
    }
}

#[test]
fn a_malformed_config_stops_the_daemon_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[roles]\nviewer = { users = [\"a\"] }\nroot = {}\n").unwrap();
    let out = std::process::Command::new(util::bin("guestcommd"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--api")
        .arg(format!("unix://{}/api.sock", dir.path().display()))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_state_database_holding_the_keys_is_private() {
    let d = Daemon::start("off");
    d.ok(&[
        "vm",
        "add",
        "vm1",
        "--endpoint",
        "unix:///nowhere.sock",
        "--generate-credentials",
    ]);
    let state = d.dir.path().join("state");
    let mut seen = 0;
    for entry in std::fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{:?} has mode {mode:o}", entry.file_name());
        seen += 1;
    }
    assert!(seen >= 2, "the database and its WAL");
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn roles_on_some_vms_hold_on_those_vms_only() {
    let Some(user) = TestUser::create("s") else {
        return;
    };
    let roles = format!(
        "[[roles.vms]]\nnames = [\"web*\"]\noperator = {{ users = [\"{}\"] }}\n",
        user.name
    );
    let d = Daemon::start_with_config("off", &config(&user, &roles));
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let (_agent, endpoint) = d.agent_vm("web1");
    d.ok(&["vm", "add", "db1", "--endpoint", &endpoint]);

    // Only the VMs the table names are listed, and acted on.
    let out = as_user(&d, &user, &["vm", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web1"]);
    let out = as_user(&d, &user, &["exec", "web1", "--", "echo", "mine"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mine\n",
        "{}",
        stderr(&out)
    );
    let out = as_user(&d, &user, &["exec", "db1", "--", "echo", "theirs"]);
    assert_refused(&out, 125, "operator");
    assert!(stderr(&out).contains("has no role"), "{}", stderr(&out));
    assert_refused(&as_user(&d, &user, &["vm", "show", "db1"]), 1, "viewer");

    // An operator of web* is no admin of it, nor of the host.
    assert_refused(&as_user(&d, &user, &["vm", "rm", "web1"]), 1, "admin");
    let out = as_user(&d, &user, &["vm", "add", "web9", "--endpoint", &endpoint]);
    assert_refused(&out, 1, "admin");

    // The audit log: one of its VMs at a time.
    let out = as_user(&d, &user, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--vm"), "{}", stderr(&out));
    let out = as_user(&d, &user, &["audit", "--vm", "web1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(records.iter().all(|r| r["vm"] == "web1"));
    assert!(records.iter().any(|r| r["operation"] == "exec"));
    assert_eq!(
        as_user(&d, &user, &["audit", "--vm", "db1"]).status.code(),
        Some(1)
    );
}
