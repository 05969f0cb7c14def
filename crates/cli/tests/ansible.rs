//! Ansible through guestcomm: the collection in contrib/ansible is built
//! with `ansible-galaxy collection build`, installed into a temporary
//! collections path, and real playbooks (`tests/ansible/site.yml`) run
//! through its connection plugin against a VM through guestcommd and
//! against an agent directly (every exec in the audit log), through a
//! remote guestcommd over mutual TLS (an operator served, a viewer
//! refused); a host policy, a disabled service and an unknown VM fail with
//! the daemon's message; the inventory plugin lists guestcommd's VMs; both
//! plugins document every option. The "guest" is this host (the agent runs
//! here), so Python is there.
//!
//! Needs ansible-core: GUESTCOMM_ANSIBLE_BIN names the directory of its
//! commands (else they are looked up in PATH). Without it the tests say
//! SKIPPED loudly, and fail when GUESTCOMM_ANSIBLE_REQUIRED is set (.ci/run
//! installs ansible-core into a venv under target/ and sets both).

mod util;

use std::process::Output;

use serde_json::Value;
use util::ansible::{fixtures, Ansible};
use util::daemon::Daemon;
use util::tls::{Ca, TlsDaemon};
use util::users::TestUser;
use util::{bin, wait_until, STARTUP_DEADLINE};

impl Ansible {
    /// Writes an INI inventory of `lines` and runs tests/ansible/site.yml
    /// against it at -vvv; returns stdout (each exec the connection makes
    /// is an "<host> EXEC " line of it).
    fn play(&self, lines: &str, user: &str, pipelining: bool) -> String {
        let inventory = self.path("hosts.ini");
        std::fs::write(&inventory, lines).expect("write the inventory");
        let extra = format!(
            "work={} become_test_user={user}",
            self.work().to_str().expect("utf-8 path")
        );
        let playbook = fixtures().join("site.yml");
        let out = self.run(
            "ansible-playbook",
            &[
                "-vvv".as_ref(),
                "-i".as_ref(),
                inventory.as_os_str(),
                "-e".as_ref(),
                extra.as_ref(),
                playbook.as_os_str(),
            ],
            &[(
                "ANSIBLE_PIPELINING",
                if pipelining { "True" } else { "False" },
            )],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the playbook failed (pipelining {pipelining}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// An INI inventory of VM web1 of `daemon`, through the connection plugin.
fn web1_inventory(daemon: &Daemon) -> String {
    format!(
        "web1 ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_api={}\n",
        daemon.api()
    )
}

impl Ansible {
    /// Runs the ad hoc `ansible PATTERN -m MODULE [-a ARGS]` against an INI
    /// inventory of `lines` (not asserting success).
    fn adhoc(&self, lines: &str, pattern: &str, module: &[&str], env: &[(&str, &str)]) -> Output {
        let inventory = self.path("adhoc.ini");
        std::fs::write(&inventory, lines).expect("write the inventory");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-i".as_ref(),
            inventory.as_os_str(),
            pattern.as_ref(),
            "-m".as_ref(),
        ];
        args.extend(module.iter().map(std::ffi::OsStr::new));
        self.run("ansible", &args, env)
    }
}

/// How many times the connection ran `guestcomm exec` for `host`.
fn execs_of(stdout: &str, host: &str) -> usize {
    stdout.matches(&format!("<{host}> EXEC ")).count()
}

/// The exec records of VM `vm` in the audit log.
fn audited_execs(daemon: &Daemon, vm: &str) -> Vec<Value> {
    daemon
        .audit_settled(&["--vm", vm])
        .into_iter()
        .filter(|r| r["operation"] == "exec")
        .collect()
}

/// The copies into VM `vm` of an Ansible module file (no pipelining).
fn module_uploads(daemon: &Daemon, vm: &str) -> usize {
    daemon
        .audit_settled(&["--vm", vm])
        .iter()
        .filter(|r| {
            r["operation"] == "cp.to_guest"
                && r["arguments"]
                    .as_str()
                    .is_some_and(|a| a.contains("AnsiballZ_"))
        })
        .count()
}

/// Waits until guestcommd has seen VM `vm`'s agent answer.
fn wait_for_ok(daemon: &Daemon, vm: &str) {
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            daemon.json(&["vm", "show", vm])["health"]["status"] == "OK"
        }),
        "VM {vm} never became OK"
    );
}

/// ansible-core 2.19 prints inventory strings as {"__ansible_unsafe": s}
/// (not to be templated); older versions print s.
fn plain(value: &Value) -> Value {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("__ansible_unsafe") => {
            plain(&map["__ansible_unsafe"])
        }
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), plain(v))).collect(),
        Value::Array(items) => items.iter().map(plain).collect(),
        other => other.clone(),
    }
}

#[test]
fn a_playbook_runs_in_a_vm_through_the_daemon_and_directly_to_its_agent() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let daemon = Daemon::start("1s");
    let (_agent, endpoint) = daemon.agent_vm("web1");
    let user = TestUser::create("ans");
    let user_name = user.as_ref().map_or("root", |u| u.name.as_str());
    let vm_line = web1_inventory(&daemon);

    let unpiped = ansible.play(&vm_line, user_name, false);
    let execs = audited_execs(&daemon, "web1");
    assert_eq!(
        execs.len(),
        execs_of(&unpiped, "web1"),
        "every exec of the play is in the audit log: {execs:#?}"
    );
    let uploads = module_uploads(&daemon, "web1");
    for record in &execs {
        // The caller: the guestcomm process the connection started, as root.
        assert_eq!(record["uid"], 0, "{record}");
        assert!(record["pid"].as_u64().is_some_and(|p| p > 0), "{record}");
        assert!(
            record["arguments"]
                .as_str()
                .is_some_and(|a| a.starts_with("/bin/sh -c ")),
            "{record}"
        );
    }
    let fetched = ansible.work().join("fetched/web1.txt");
    assert_eq!(
        std::fs::read_to_string(&fetched).expect("the fetched file"),
        "rendered for web1 on Linux\n"
    );

    let piped = ansible.play(&vm_line, user_name, true);
    let all = audited_execs(&daemon, "web1");
    assert_eq!(
        all.len() - execs.len(),
        execs_of(&piped, "web1"),
        "every exec of the pipelined play is in the audit log"
    );
    // ansible-core never pipelines `su` (its become plugin says so): only
    // the play's two su tasks still copy their module in.
    assert_eq!(
        module_uploads(&daemon, "web1") - uploads,
        2,
        "with pipelining, only the su tasks copy their module in"
    );
    assert!(uploads > 2);

    // The same play straight to the agent: guestcommd sees none of it.
    let direct_line = format!(
        "direct ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_agent_address={endpoint}\n"
    );
    std::fs::remove_file(&fetched).expect("remove the fetched file");
    for pipelining in [false, true] {
        let out = ansible.play(&direct_line, user_name, pipelining);
        assert!(execs_of(&out, "direct") > 0);
    }
    assert_eq!(
        std::fs::read_to_string(ansible.work().join("fetched/direct.txt"))
            .expect("the fetched file"),
        "rendered for direct on Linux\n"
    );
    assert_eq!(audited_execs(&daemon, "web1").len(), all.len());
}

#[test]
fn refusals_fail_the_task_with_the_daemons_message() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let daemon = Daemon::start("1s");
    let (_agent, _) = daemon.agent_vm("web1");
    let policy = ansible.path("policy.toml");
    std::fs::write(
        &policy,
        "[exec]\nallow = [{ program = \"/usr/bin/uptime\", args = [] }]\n",
    )
    .expect("write the policy");
    daemon.ok(&[
        "policy",
        "set",
        "web1",
        policy.to_str().expect("utf-8 path"),
    ]);
    let inventory = ansible.path("hosts.ini");
    std::fs::write(&inventory, web1_inventory(&daemon)).expect("write the inventory");
    let out = ansible.run(
        "ansible-playbook",
        &[
            "-i".as_ref(),
            inventory.as_os_str(),
            "-e".as_ref(),
            "work=/nonexistent become_test_user=root".as_ref(),
            fixtures().join("site.yml").as_os_str(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the play passed:\n{stdout}");
    assert!(
        stdout.contains(
            "refused by the host policy of VM web1: program \\\"/bin/sh\\\" is not in the exec allow-list"
        ),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = audited_execs(&daemon, "web1");
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r["outcome"] == "refused"),
        "{refused:#?}"
    );

    // The exec service disabled for the VM: the task fails with the daemon's word.
    daemon.ok(&["policy", "set", "web1", "/dev/null"]);
    daemon.ok(&["service", "disable", "exec", "--vm", "web1"]);
    let out = ansible.adhoc(&web1_inventory(&daemon), "web1", &["ping"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("web1 | FAILED!")
            && stdout.contains(
                "Command Execution (00004744-facb-11e6-bd58-64006a7986d3) is disabled for VM web1"
            ),
        "{stdout}"
    );

    // A VM guestcommd does not know, and one whose agent is gone: unreachable.
    daemon.add_unreachable_vm("gone");
    let lines = format!(
        "[all:vars]\nansible_connection=guestcomm.guestcomm.guestcomm\nansible_guestcomm_api={}\n[vms]\nnosuch\ngone\n",
        daemon.api()
    );
    let out = ansible.adhoc(&lines, "vms", &["ping"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nosuch | UNREACHABLE!") && stdout.contains(r#"no VM named \"nosuch\""#),
        "{stdout}"
    );
    assert!(
        stdout.contains("gone | UNREACHABLE!")
            && stdout.contains("cannot reach the agent of VM gone"),
        "{stdout}"
    );
}

#[test]
fn a_remote_daemon_over_mutual_tls_serves_an_operator_and_refuses_a_viewer() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::with_server(dir.path());
    let (daemon, _agent, holders) = TlsDaemon::with_three_roles_and_vm1(dir, &ca);

    let files = daemon.dir.path();
    let holder = |alias: &str, who: &str| {
        format!(
            "{alias} ansible_host=vm1 ansible_guestcomm_api_cert={} ansible_guestcomm_api_key={}\n",
            files.join(format!("{who}.crt")).display(),
            files.join(format!("{who}.key")).display()
        )
    };
    // The API and its CA from the environment, each holder's files from
    // the inventory.
    let lines = format!(
        "[all:vars]\nansible_connection=guestcomm.guestcomm.guestcomm\n[vms]\n{}{}",
        holder("as_operator", "operator"),
        holder("as_viewer", "viewer")
    );
    let ca_file = files.join("ca.crt");
    let out = ansible.adhoc(
        &lines,
        "vms",
        &["command", "-a", "whoami"],
        &[
            ("ANSIBLE_GUESTCOMM_API", daemon.addr.as_str()),
            (
                "ANSIBLE_GUESTCOMM_API_CA",
                ca_file.to_str().expect("utf-8 path"),
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("as_operator | CHANGED | rc=0 >>\nroot"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("as_viewer | UNREACHABLE!")
            && stdout.contains("needs the operator role")
            && stdout.contains(&holders.viewer),
        "{stdout}"
    );
}

#[test]
fn the_plugins_document_every_option_with_its_variable_environment_and_ini_key() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let doc = |kind: &str| -> Value {
        let out = ansible.ok(
            "ansible-doc",
            &[
                "-t".as_ref(),
                kind.as_ref(),
                "--json".as_ref(),
                "guestcomm.guestcomm.guestcomm".as_ref(),
            ],
        );
        let all: Value = serde_json::from_slice(&out.stdout).expect("ansible-doc JSON");
        all["guestcomm.guestcomm.guestcomm"]["doc"].clone()
    };
    let connection = doc("connection");
    let options = &connection["options"];
    for name in [
        "guestcomm_path",
        "api",
        "api_cert",
        "api_key",
        "api_ca",
        "agent_address",
        "identity",
        "remote_user",
        "pipelining",
    ] {
        let option = &options[name];
        assert!(option["description"].is_array(), "{name}: {option:#}");
        for source in ["vars", "env", "ini"] {
            assert!(
                option[source].as_array().is_some_and(|s| !s.is_empty()),
                "option {name} has no {source}: {option:#}"
            );
        }
    }
    let inventory = doc("inventory");
    for name in [
        "plugin",
        "guestcomm_path",
        "endpoints",
        "kvp",
        "timeout",
        "keyed_groups",
    ] {
        assert!(
            inventory["options"][name].is_object(),
            "{name}: {inventory:#}"
        );
    }
}

#[test]
fn the_inventory_lists_the_daemons_vms_with_their_guest_data() {
    let Some(ansible) = Ansible::install() else {
        return;
    };
    let daemon = Daemon::start("1s");
    let (_agent, endpoint) = daemon.agent_vm("web1");
    daemon.add_unreachable_vm("gone");
    wait_for_ok(&daemon, "web1");
    let id = daemon.json(&["vm", "show", "web1"])["id"].clone();
    let file = ansible.path("guestcomm.yml");
    // The same endpoint twice: its VMs are listed once.
    std::fs::write(
        &file,
        format!(
            "plugin: guestcomm.guestcomm.guestcomm\nguestcomm_path: {}\nendpoints:\n  - api: {api}\n  - {api}\n",
            bin("guestcomm").display(),
            api = daemon.api()
        ),
    )
    .expect("write guestcomm.yml");
    let out = ansible.ok(
        "ansible-inventory",
        &["-i".as_ref(), file.as_os_str(), "--list".as_ref()],
    );
    let list: Value = plain(&serde_json::from_slice(&out.stdout).expect("JSON inventory"));
    let web1 = &list["_meta"]["hostvars"]["web1"];
    assert_eq!(web1["guestcomm_id"], id, "{list:#}");
    assert_eq!(web1["guestcomm_status"], "OK");
    assert_eq!(web1["guestcomm_endpoint"], endpoint.as_str());
    assert_eq!(web1["ansible_connection"], "guestcomm.guestcomm.guestcomm");
    assert_eq!(web1["ansible_guestcomm_api"], daemon.api().as_str());
    let kvp = &web1["guestcomm_kvp"];
    assert!(
        kvp["OSName"].as_str().is_some_and(|s| !s.is_empty()),
        "{kvp:#}"
    );
    assert!(kvp.get("NetworkAddressIPv4").is_some(), "{kvp:#}");
    let gone = &list["_meta"]["hostvars"]["gone"];
    assert_eq!(gone["guestcomm_kvp"], Value::Null, "{list:#}");
    assert_ne!(gone["guestcomm_status"], "OK");
    let hosts = |group: &str| list[group]["hosts"].clone();
    assert_eq!(hosts("guestcomm_status_ok"), serde_json::json!(["web1"]));
    let mut every = hosts("guestcomm")
        .as_array()
        .expect("group guestcomm")
        .clone();
    every.sort_by_key(|h| h.to_string());
    assert_eq!(every, [Value::from("gone"), Value::from("web1")]);

    // The inventory's variables are enough to reach the VM.
    let ping = ansible.ok(
        "ansible",
        &[
            "-i".as_ref(),
            file.as_os_str(),
            "guestcomm_status_ok".as_ref(),
            "-m".as_ref(),
            "ansible.builtin.ping".as_ref(),
        ],
    );
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.contains("web1 | SUCCESS"), "{ping}");
}
