//! Argument-level policy through guestcommd and in the agent: a policy
//! allowing only /usr/bin/uptime refuses `sh` and runs `uptime`, a copy
//! outside the allowed prefix is refused, a malformed policy is refused
//! naming its line and the old one stays, read-only VMs refuse operator
//! calls; each denial names its side, and every request, allowed or
//! refused, is in `guestcomm audit --json`, also after a SIGKILL restart.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::process::Output;

use serde_json::Value;
use util::daemon::{AgentAt, Daemon};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn set_policy(d: &Daemon, vm: &str, doc: &str) -> Output {
    d.run_with_stdin(&["policy", "set", vm, "-"], doc.as_bytes().to_vec())
}

/// The audit records of `vm` (operation, outcome, record).
fn audit(d: &Daemon, vm: &str) -> Vec<Value> {
    d.audit_settled(&["--vm", vm])
}

fn find<'a>(records: &'a [Value], op: &str, args_contain: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["operation"] == op && r["arguments"].as_str().unwrap().contains(args_contain))
        .unwrap_or_else(|| panic!("no {op} record with {args_contain:?} in {records:#?}"))
}

#[test]
fn a_host_policy_allows_only_its_programs_and_paths_and_every_request_is_audited() {
    let mut d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let inbox = d.dir.path().join("in");
    std::fs::create_dir(&inbox).unwrap();
    let doc = format!(
        "[exec]\nallow = [{{ program = \"/usr/bin/uptime\" }}]\n[cp]\nto_guest = [\"{}\"]\n",
        inbox.display()
    );
    let out = set_policy(&d, "vm1", &doc);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = d.ok(&["policy", "show", "vm1"]);
    assert!(shown.contains("/usr/bin/uptime"), "{shown}");

    let sh = d.run(&["exec", "vm1", "--", "sh", "-c", "echo pwned"]);
    assert_eq!(sh.status.code(), Some(126), "{}", text(&sh.stderr));
    assert!(sh.stdout.is_empty());
    let err = text(&sh.stderr);
    assert!(
        err.contains("host policy of VM vm1") && err.contains("not in the exec allow-list"),
        "{err}"
    );
    let uptime = d.run(&["exec", "vm1", "--", "uptime"]);
    assert!(uptime.status.success(), "{}", text(&uptime.stderr));
    assert!(text(&uptime.stdout).contains("load average"));

    let src = d.dir.path().join("payload.txt");
    std::fs::write(&src, b"data").unwrap();
    let outside = d.dir.path().join("elsewhere.txt");
    let out = d.run(&[
        "cp",
        src.to_str().unwrap(),
        &format!("vm1:{}", outside.display()),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("outside the paths allowed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!outside.exists());
    let inside = inbox.join("payload.txt");
    d.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("vm1:{}", inside.display()),
    ]);
    assert_eq!(std::fs::read(&inside).unwrap(), b"data");

    // A malformed policy is refused naming its line; the old one stays.
    let out = set_policy(&d, "vm1", "[exec]\nallow = [\n  { program = \"sh\" },\n]\n");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("line 3") && err.contains("absolute"), "{err}");
    assert_eq!(d.ok(&["policy", "show", "vm1"]), shown);

    for round in ["before", "after"] {
        let records = audit(&d, "vm1");
        let refused = find(&records, "exec", "sh -c");
        assert_eq!(refused["outcome"], "refused", "{round}");
        assert!(refused["error"].as_str().unwrap().contains("host policy"));
        assert_eq!(refused["uid"], 0);
        assert!(refused["pid"].as_i64().unwrap() > 0);
        let ran = find(&records, "exec", "uptime");
        assert_eq!(
            (&ran["outcome"], &ran["exit_code"]),
            (&"ok".into(), &0.into())
        );
        let cp_refused = find(&records, "cp.to_guest", "elsewhere.txt");
        assert_eq!(cp_refused["outcome"], "refused");
        let cp_ok = find(&records, "cp.to_guest", "in/payload.txt");
        assert_eq!(cp_ok["outcome"], "ok");
        assert!(cp_ok["bytes"].as_u64().unwrap() > 4);
        let policy: Vec<_> = records
            .iter()
            .filter(|r| r["operation"] == "policy.set")
            .collect();
        let outcomes: Vec<_> = policy
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["ok", "failed"], "{round}");
        assert!(policy[0]["arguments"]
            .as_str()
            .unwrap()
            .contains("/usr/bin/uptime"));
        assert!(policy[1]["error"].as_str().unwrap().contains("line 3"));
        let added = find(&records, "vm.add", "--endpoint unix://");
        assert_eq!(added["outcome"], "ok");
        d.kill9_and_restart();
    }
}

#[test]
fn the_agents_own_policy_refuses_what_the_host_allows_and_says_so() {
    let d = Daemon::start("off");
    let policy = d.dir.path().join("guest-policy.toml");
    std::fs::write(
        &policy,
        "[exec]\nallow = [{ program = \"/usr/bin/uptime\" }]\n",
    )
    .unwrap();
    let socket = d.dir.path().join("agent.sock");
    let _agent = AgentAt::start_with(&socket, &["--policy", policy.to_str().unwrap()]);
    d.ok(&[
        "vm",
        "add",
        "vm1",
        "--endpoint",
        &format!("unix://{}", socket.display()),
    ]);

    let sh = d.run(&["exec", "vm1", "--", "sh", "-c", "echo pwned"]);
    assert_eq!(sh.status.code(), Some(126));
    assert!(sh.stdout.is_empty());
    let err = text(&sh.stderr);
    assert!(
        err.contains("guest policy") && !err.contains("host policy"),
        "{err}"
    );
    assert!(d.run(&["exec", "vm1", "--", "uptime"]).status.success());

    let records = audit(&d, "vm1");
    let refused = find(&records, "exec", "sh -c");
    assert_eq!(refused["outcome"], "failed");
    assert!(refused["error"].as_str().unwrap().contains("guest policy"));
}

#[test]
fn a_read_only_vm_refuses_changes_but_not_reads() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    assert!(set_policy(&d, "vm1", "read_only = true\n").status.success());
    // Refused by the relay's policy check (a policy_denied frame: 126).
    let out = d.run(&["exec", "vm1", "--", "uptime"]);
    assert_eq!(out.status.code(), Some(126));
    let err = text(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains("host policy"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let kvp = d.run(&["kvp", "set", "vm1", "color", "red"]);
    assert_eq!(kvp.status.code(), Some(1));
    assert!(
        text(&kvp.stderr).contains("read-only"),
        "{}",
        text(&kvp.stderr)
    );
    d.ok(&["vm", "show", "vm1"]);
    d.ok(&["info", "vm1"]);
    let records = audit(&d, "vm1");
    assert!(records
        .iter()
        .any(|r| r["operation"] == "kvp.set" && r["outcome"] == "refused"));
    let exec = records.iter().find(|r| r["operation"] == "exec").unwrap();
    assert_eq!(exec["outcome"], "refused");
    assert!(
        exec["error"].as_str().unwrap().contains("read-only"),
        "{exec}"
    );
}

#[test]
fn an_agent_with_a_malformed_policy_does_not_start_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "read_only = false\n[cp]\nto_guest = \"/srv\"\n").unwrap();
    let out = std::process::Command::new(util::bin("guestcomm-agent"))
        .arg("--listen")
        .arg(format!("unix://{}/a.sock", dir.path().display()))
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("p.toml") && err.contains("line 3"), "{err}");
    assert!(!dir.path().join("a.sock").exists(), "nothing was served");
}

#[test]
fn copies_out_of_the_guest_pass_only_from_allowed_paths() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("vm1");
    let out_dir = d.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("report.txt"), b"public").unwrap();
    std::fs::write(d.dir.path().join("secret.txt"), b"private").unwrap();
    let doc = format!("[cp]\nfrom_guest = [\"{}\"]\n", out_dir.display());
    assert!(set_policy(&d, "vm1", &doc).status.success());

    let local = tempfile::tempdir().unwrap();
    let secret = format!("vm1:{}", d.dir.path().join("secret.txt").display());
    let refused = d.run(&["cp", &secret, local.path().to_str().unwrap()]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(text(&refused.stderr).contains("outside the paths allowed for copies out of the guest"));
    assert!(!local.path().join("secret.txt").exists());
    let report = format!("vm1:{}", out_dir.join("report.txt").display());
    d.ok(&["cp", &report, local.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(local.path().join("report.txt")).unwrap(),
        b"public"
    );

    let records = audit(&d, "vm1");
    assert_eq!(
        find(&records, "cp.from_guest", "secret.txt")["outcome"],
        "refused"
    );
    assert_eq!(
        find(&records, "cp.from_guest", "report.txt")["outcome"],
        "ok"
    );
    // --since filters by time: nothing is newer than the far future.
    assert_eq!(d.audit_settled(&["--since", "@99999999999"]).len(), 0);
    assert!(d.audit_settled(&["--since", "1h"]).len() >= records.len());
}
