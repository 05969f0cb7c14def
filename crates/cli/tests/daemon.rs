//! guestcommd with the real CLI and agents on Unix sockets: inventory and
//! registry persistence across SIGKILL, policy enforcement, exec through
//! the daemon, health transitions, the API's socket and documents, scale.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;
use util::daemon::{fake_vmm, AgentAt, Daemon};
use util::{pseudo_random, wait_until};

const EXEC_GUID: &str = "00004744-facb-11e6-bd58-64006a7986d3";
const MY_GUID: &str = "0e0b6031-5213-4934-818b-38d90ced39db";

/// Generous: only a bound on how long a broken test hangs, never an assertion on speed.
const POLL_DEADLINE: Duration = Duration::from_secs(60);

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vm_inventory_survives_a_sigkill_restart() {
    // No monitor: the vsock endpoint below must never be dialled on this machine.
    let mut d = Daemon::start("off");
    let id = d.ok(&["vm", "add", "web1", "--endpoint", "vsock://3:1024"]);
    d.ok(&[
        "vm",
        "add",
        "fc1",
        "--endpoint",
        "hvsock-uds:///run/fc/v.sock",
    ]);
    d.ok(&["vm", "add", "gone", "--endpoint", "unix:///run/x.sock"]);
    d.ok(&["vm", "rm", "gone"]);
    d.kill9_and_restart();
    let list = d.json(&["vm", "list"]);
    assert_eq!(names(&list), ["fc1", "web1"]);
    let web1 = d.json(&["vm", "show", "web1"]);
    assert_eq!(web1["id"].as_str().unwrap(), id.trim());
    assert_eq!(web1["endpoint"], "vsock://3:1024");
    assert_eq!(
        list[0]["endpoint"],
        "hvsock-uds:///run/fc/v.sock?port=18243"
    );
    assert_eq!(web1["health"]["status"], "No Contact");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_and_the_first_keeps_serving() {
    let d = Daemon::start("60s");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///nowhere.sock"]);
    let other = d.dir.path().join("other.sock");
    let second = std::process::Command::new(util::bin("guestcommd"))
        .arg("--state")
        .arg(d.dir.path().join("state"))
        .arg("--api")
        .arg(format!("unix://{}", other.display()))
        .env("GUESTCOMM_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its refusal comes after SQLite's busy timeout; a second daemon that
    // started serving is killed here and fails the test.
    let (exited, out) = util::output_within(second, POLL_DEADLINE);
    assert!(
        exited,
        "a second daemon started on the same state directory"
    );
    assert!(!out.status.success(), "the second daemon must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another process"),
        "unclear error: {stderr}"
    );
    assert!(!other.exists(), "it must not have listened");
    assert_eq!(names(&d.json(&["vm", "list"])), ["web1"]);
}

#[test]
fn bad_vm_names_and_duplicates_get_one_line_errors() {
    let d = Daemon::start("off");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///a.sock"]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["vm", "add", "web1", "--endpoint", "unix:///b.sock"],
            "already exists",
        ),
        (
            &["vm", "add", "a/b", "--endpoint", "unix:///b.sock"],
            "invalid VM name",
        ),
        (
            &["vm", "add", &"x".repeat(64), "--endpoint", "unix:///b.sock"],
            "1 to 63",
        ),
        (&["vm", "rm", "nosuch"], "no VM named \"nosuch\""),
    ];
    for (args, expected) in cases {
        assert_fails_on_one_line(&d, args, 1, expected);
    }
    let out = d.run(&["vm", "add", "x", "--endpoint", "vsock://nope"]);
    assert_eq!(out.status.code(), Some(2), "a bad address is a usage error");
}

/// The instance of service `guid` on `vm`, from `service list --vm VM --json`.
fn on(d: &Daemon, vm: &str, guid: &str) -> Value {
    let list = d.json(&["service", "list", "--vm", vm]);
    let found = list.as_array().unwrap().iter().find(|s| s["Name"] == guid);
    found.unwrap().clone()
}

#[test]
fn service_registration_and_policies_survive_a_sigkill_restart() {
    let mut d = Daemon::start("off");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///a.sock"]);
    d.ok(&["vm", "add", "web2", "--endpoint", "unix:///b.sock"]);
    d.ok(&[
        "service",
        "register",
        MY_GUID,
        "--name",
        "My Service",
        "--description",
        "mine",
    ]);
    d.ok(&["service", "disable", MY_GUID, "--vm", "web1"]);
    d.ok(&["service", "disable", "exec"]);
    d.kill9_and_restart();

    let regs = d.json(&["service", "list"]);
    let mine = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == MY_GUID)
        .unwrap();
    assert_eq!(mine["element_name"], "My Service");
    assert_eq!(mine["description"], "mine");
    let exec = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == EXEC_GUID)
        .unwrap();
    assert_eq!(exec["enabled"], false);
    assert_eq!(exec["builtin"], true);

    let web1 = on(&d, "web1", MY_GUID);
    assert_eq!(
        (
            web1["EnabledState"].as_u64(),
            web1["RequestedState"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(web1["CreationClassName"], "Msvm_GuestCommunicationService");
    assert_eq!(web1["SystemCreationClassName"], "Msvm_ComputerSystem");
    assert_eq!(web1["SystemName"], d.json(&["vm", "show", "web1"])["id"]);
    assert_eq!(web1["ElementName"], "My Service");
    let web2 = on(&d, "web2", MY_GUID);
    assert_eq!(
        (
            web2["EnabledState"].as_u64(),
            web2["RequestedState"].as_u64()
        ),
        (Some(2), Some(8))
    );
    assert_eq!(
        on(&d, "web2", EXEC_GUID)["EnabledState"],
        3,
        "host-wide disable"
    );

    d.ok(&["service", "enable", "exec"]);
    d.ok(&["service", "enable", MY_GUID, "--vm", "web1"]);
    d.ok(&["service", "unregister", MY_GUID]);
    d.kill9_and_restart();
    let regs = d.json(&["service", "list"]);
    assert!(regs.as_array().unwrap().iter().all(|s| s["id"] != MY_GUID));
    assert_eq!(on(&d, "web2", EXEC_GUID)["EnabledState"], 2);

    let out = d.run(&["service", "unregister", EXEC_GUID]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("disable it instead"));
}

#[test]
fn exec_through_the_daemon_is_byte_exact_and_propagates_exit_codes() {
    let d = Daemon::start("off");
    let (_agent, endpoint) = d.agent_vm("web1");

    let data = pseudo_random(5_000_000, 7);
    let script = "cat; echo done >&2; exit 3";
    let output = d.run_with_stdin(&["exec", "web1", "--", "sh", "-c", script], data.clone());
    let out = output.stdout;
    assert_eq!(output.status.code(), Some(3));
    assert!(out == data, "stdout differs ({} bytes)", out.len());
    assert_eq!(output.stderr, b"done\n");

    // Same codes as direct mode.
    let missing = d.run(&["exec", "web1", "--", "/no/such/program"]);
    assert_eq!(missing.status.code(), Some(127));
    let direct = d.run(&["exec", &endpoint, "--", "/no/such/program"]);
    assert_eq!(direct.status.code(), Some(127));
}

#[test]
fn a_disabled_builtin_service_is_refused_with_a_clear_error() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    d.ok(&["service", "disable", EXEC_GUID, "--vm", "web1"]);
    let out = d.run(&["exec", "web1", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(
        err.contains("disabled for VM web1") && err.contains(EXEC_GUID),
        "{err}"
    );
    assert!(
        err.contains("service_disabled") || err.contains("guestcomm service enable"),
        "{err}"
    );
    d.ok(&["service", "enable", EXEC_GUID, "--vm", "web1"]);
    assert_eq!(
        d.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(0)
    );
}

#[test]
fn unknown_vm_and_unreachable_agent_fail_with_125_and_one_line() {
    let d = Daemon::start("off");
    d.add_unreachable_vm("dead");
    for (vm, expected) in [
        ("nosuch", "no VM named \"nosuch\""),
        ("dead", "cannot reach the agent of VM dead"),
    ] {
        assert_fails_on_one_line(&d, &["exec", vm, "--", "true"], 125, expected);
    }
}

#[test]
fn an_agent_restart_between_two_execs_costs_no_failure() {
    // The first exec leaves a warm spare connection to the agent; the
    // restart closes it; the second exec must still succeed.
    let d = Daemon::start("off");
    let agent_sock = d.dir.path().join("agent.sock");
    let log = d.dir.path().join("agent.log");
    let agent = AgentAt::start_logging(&agent_sock, &log);
    let endpoint = format!("unix://{}", agent_sock.display());
    d.ok(&["vm", "add", "web1", "--endpoint", &endpoint]);
    assert_eq!(d.ok(&["exec", "web1", "--", "echo", "one"]), "one\n");
    // The spare is made once the agent has seen a second handshake (no
    // heartbeat probes with "off").
    let handshakes = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("handshake done")
            .count()
    };
    assert!(
        wait_until(POLL_DEADLINE, || handshakes() >= 2),
        "no spare connection was made after the first exec"
    );
    drop(agent);
    let _ = std::fs::remove_file(&agent_sock);
    let _agent = AgentAt::start(&agent_sock);
    for round in ["two", "three"] {
        assert_eq!(
            d.ok(&["exec", "web1", "--", "echo", round]),
            format!("{round}\n")
        );
    }
}

#[test]
fn heartbeat_marks_a_killed_agent_lost_comm_and_ok_after_it_returns() {
    let d = Daemon::start("200ms");
    let agent_sock = d.dir.path().join("agent.sock");
    let endpoint = format!("unix://{}", agent_sock.display());
    let agent = AgentAt::start(&agent_sock);
    d.ok(&["vm", "add", "web1", "--endpoint", &endpoint]);
    let status = || d.json(&["status", "web1"]);
    assert!(wait_until(POLL_DEADLINE, || status()["status"] == "OK"));
    let ok = status();
    assert!(ok["agent_version"]
        .as_str()
        .unwrap()
        .starts_with("guestcomm-agent "));
    assert!(ok["rtt_us"].is_u64() && ok["last_contact_ms"].is_u64());

    drop(agent);
    assert!(wait_until(POLL_DEADLINE, || status()["status"] == "Lost Comm"));
    let _agent = AgentAt::start(&agent_sock);
    assert!(wait_until(POLL_DEADLINE, || status()["status"] == "OK"));
    let text = d.ok(&["status", "web1"]);
    assert!(text.contains("Status:        OK"), "{text}");
}

#[test]
fn the_health_monitor_keeps_one_connection_per_vm_across_its_probes() {
    let d = Daemon::start("100ms");
    let agent_sock = d.dir.path().join("agent.sock");
    let endpoint = format!("unix://{}", agent_sock.display());
    let _agent = AgentAt::start(&agent_sock);
    for vm in ["web1", "web2"] {
        d.ok(&["vm", "add", vm, "--endpoint", &endpoint]);
        assert!(wait_until(POLL_DEADLINE, || d.json(&["status", vm])
            ["status"]
            == "OK"));
    }
    // The agent's own counters, asked on a connection of the test's own
    // (each ask is one connection and one heartbeat of ours).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: guestcomm_transport::Address = endpoint.parse().unwrap();
    let counters = || {
        rt.block_on(async {
            let session = guestcomm_client::connect(&addr, "test").await.unwrap();
            let answer = guestcomm_client::integration::call(
                session,
                guestcomm_protocol::Call::Heartbeat { counters: true },
            )
            .await
            .unwrap();
            match answer {
                guestcomm_protocol::Control::AgentCounters(c) => (
                    c.connections,
                    c.requests.get("heartbeat").copied().unwrap_or(0),
                ),
                other => panic!("not the agent's counters: {other:?}"),
            }
        })
    };
    let (connections_before, heartbeats_before) = counters();
    // What the daemon opened and asked since, ours (one connection and
    // one heartbeat per ask after the first) taken out.
    let mut asked_since = 0u64;
    let mut daemon = (0, 0);
    assert!(
        wait_until(POLL_DEADLINE, || {
            let (connections, heartbeats) = counters();
            asked_since += 1;
            daemon = (
                connections - connections_before - asked_since,
                heartbeats - heartbeats_before - asked_since,
            );
            daemon.1 >= 20
        }),
        "the daemon's probes send no heartbeats: {daemon:?}"
    );
    let (daemon_connections, daemon_heartbeats) = daemon;
    assert!(
        daemon_connections <= 2,
        "{daemon_connections} new connections for {daemon_heartbeats} heartbeats: the probes' connections are not kept"
    );
    // The VMs stay OK on their kept connections.
    for vm in ["web1", "web2"] {
        assert_eq!(d.json(&["status", vm])["status"], "OK");
    }
}

#[test]
fn a_thousand_vms_are_listed() {
    let d = Daemon::start("1s");
    let (_agent, endpoint) = d.agent_vm("vm0000");
    // Through the API client directly: 1,000 CLI processes would only test process start-up.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = guestcomm_api::ApiClient::new(&d.api()).unwrap();
    rt.block_on(async {
        for i in 1..1000 {
            let body = guestcomm_api::AddVm {
                name: format!("vm{i:04}"),
                endpoint: endpoint.clone(),
                credentials: guestcomm_api::NewCredentials::Auto,
            };
            let _: guestcomm_api::Vm = client
                .send(guestcomm_api::Method::POST, "/v1/vms", &body)
                .await
                .unwrap();
        }
    });
    let list = d.json(&["vm", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1000);
    assert_eq!(list[999]["name"], "vm0999");
    let table = d.ok(&["vm", "list"]);
    assert_eq!(table.lines().count(), 1001);
}

#[test]
fn api_socket_is_0660_and_serves_its_openapi_document() {
    let d = Daemon::start("off");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = guestcomm_api::ApiClient::new(&d.api()).unwrap();
    let doc: Value = rt.block_on(client.get("/openapi.json")).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/vms",
        "/v1/vms/{name}/connect",
        "/v1/vms/{name}/services/{id}/connect",
        "/v1/services",
        "/v1/services/{id}/policy",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
}

#[test]
fn request_state_change_answers_cim_return_codes() {
    let d = Daemon::start("off");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///a.sock"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = guestcomm_api::ApiClient::new(&d.api()).unwrap();
    let path = format!("/v1/vms/web1/services/{EXEC_GUID}/RequestStateChange");
    let call = |state: u16| -> u64 {
        let body = serde_json::json!({ "RequestedState": state });
        let r: Value = rt
            .block_on(client.send(guestcomm_api::Method::POST, &path, &body))
            .unwrap();
        r["ReturnValue"].as_u64().unwrap()
    };
    assert_eq!(call(3), 0);
    assert_eq!(
        d.json(&["service", "list", "--vm", "web1"])[1]["EnabledState"],
        3
    );
    assert_eq!(call(11), 32775, "Reset is not a state of a guest service");
    assert_eq!(call(8), 0, "Defer: the VM's default policy decides");
    assert_eq!(
        d.json(&["service", "list", "--vm", "web1"])[1]["RequestedState"],
        8
    );
    d.ok(&["service", "disable", EXEC_GUID]);
    assert_eq!(call(2), 32775, "host-wide disabled: invalid state");
    d.ok(&["service", "enable", EXEC_GUID]);
    assert_eq!(call(2), 0);
}

#[test]
fn interface_switch_and_default_policy_drive_deferred_services() {
    let mut d = Daemon::start("off");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///a.sock"]);
    d.ok(&["service", "register", MY_GUID, "--name", "Mine"]);
    d.ok(&["service", "enable", "files", "--vm", "web1"]);
    d.ok(&["vm", "set", "web1", "--default-policy", "disabled"]);
    d.kill9_and_restart();
    assert_eq!(
        on(&d, "web1", MY_GUID)["EnabledState"],
        3,
        "deferred follows the default"
    );
    assert_eq!(on(&d, "web1", EXEC_GUID)["EnabledState"], 3);
    let files = "00004745-facb-11e6-bd58-64006a7986d3";
    assert_eq!(
        on(&d, "web1", files)["EnabledState"],
        2,
        "explicit policy wins"
    );
    d.ok(&["vm", "set", "web1", "--interface", "disabled"]);
    assert_eq!(on(&d, "web1", files)["EnabledState"], 3, "interface off");
    let vm = d.json(&["vm", "show", "web1"]);
    assert_eq!(
        (
            vm["interface_enabled"].as_bool(),
            vm["default_enabled_state_policy"].as_u64()
        ),
        (Some(false), Some(3))
    );
}

#[test]
fn start_stop_service_are_not_supported_and_every_refusal_has_a_json_body() {
    let d = Daemon::start("off");
    d.ok(&["vm", "add", "web1", "--endpoint", "unix:///a.sock"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = guestcomm_api::ApiClient::new(&d.api()).unwrap();
    for method in ["StartService", "StopService"] {
        let path = format!("/v1/vms/web1/services/{EXEC_GUID}/{method}");
        let r: Value = rt
            .block_on(client.send(guestcomm_api::Method::POST, &path, &serde_json::json!({})))
            .unwrap();
        assert_eq!(r["ReturnValue"], 1, "{method}");
    }
    let err = rt
        .block_on(client.send::<_, Value>(
            guestcomm_api::Method::POST,
            "/v1/vms",
            &serde_json::json!({"name": 5}),
        ))
        .unwrap_err();
    let guestcomm_api::ApiError::Status { status, body } = err else {
        panic!("{err}")
    };
    assert_eq!(
        (status, body.code),
        (400, guestcomm_api::ApiErrorCode::InvalidArgument)
    );
    assert!(body.error.contains("name"), "{}", body.error);
    // The framework's own refusals carry the same JSON body.
    for (method, path, code) in [
        (guestcomm_api::Method::GET, "/v1/nothing", 404),
        (guestcomm_api::Method::PUT, "/v1/vms", 404),
        (
            guestcomm_api::Method::GET,
            "/v1/services/instances?bogus=1",
            400,
        ),
    ] {
        let err = rt
            .block_on(client.send::<_, Value>(method, path, &serde_json::json!({})))
            .unwrap_err();
        let guestcomm_api::ApiError::Status { status, body } = err else {
            panic!("{err}")
        };
        assert_eq!(status, code, "{path}: {}", body.error);
        assert!(!body.chain.is_empty(), "{path}");
    }
}

#[test]
fn killing_the_cli_through_the_daemon_kills_the_guest_process() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let pidfile = d.dir.path().join("pid");
    let script = util::guest_loop_script(&pidfile, "");
    let child = util::spawn_until_ready(d.cli(&["exec", "web1", "--", "sh", "-c", &script]));
    util::kill_caller_and_expect_guest_gone(child, &pidfile);
    assert_eq!(
        d.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(0)
    );
}

#[test]
fn pty_mode_works_through_the_daemon() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let out = d.run(&["exec", "-t", "web1", "--", "tty"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim().starts_with("/dev/pts/"), "{text}");
}

/// Adds VM `name` behind a hybrid vsock socket `<dir>/vmm.sock`; returns its path.
fn hybrid_vm(d: &Daemon, name: &str) -> std::path::PathBuf {
    let vmm = d.dir.path().join("vmm.sock");
    let endpoint = format!("hvsock-uds://{}", vmm.display());
    d.ok(&["vm", "add", name, "--endpoint", &endpoint]);
    vmm
}

/// Asserts that `guestcomm ARGS` exits with `code` and one line containing `expected`.
fn assert_fails_on_one_line(d: &Daemon, args: &[&str], code: i32, expected: &str) {
    let out = d.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(expected), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn connect_relays_bytes_both_ways_to_a_registered_enabled_service() {
    let d = Daemon::start("off");
    let echo = fake_vmm(&hybrid_vm(&d, "fc1"));
    // Port 2761 = 0xac9.
    d.ok(&[
        "service",
        "register",
        "00000ac9-facb-11e6-bd58-64006a7986d3",
        "--name",
        "Echo",
    ]);
    let out = d.run_with_stdin(
        &["connect", "fc1", "Echo"],
        b"hello\nworld\nquit\n".to_vec(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello\nworld\n");
    assert_eq!(echo.join().unwrap(), "CONNECT 2761\n");
}

#[test]
fn connect_refuses_unregistered_disabled_and_portless_services() {
    let d = Daemon::start("off");
    hybrid_vm(&d, "fc1");
    d.ok(&["vm", "add", "plain", "--endpoint", "unix:///a.sock"]);
    let echo = "00000ac9-facb-11e6-bd58-64006a7986d3";
    d.ok(&["service", "register", echo, "--name", "Echo"]);
    d.ok(&["service", "register", MY_GUID, "--name", "No port"]);
    d.ok(&["service", "disable", echo, "--vm", "fc1"]);
    let cases: [(&[&str], &str); 5] = [
        (
            &["connect", "fc1", "00000bbb-facb-11e6-bd58-64006a7986d3"],
            "is registered",
        ),
        (&["connect", "fc1", echo], "disabled for VM fc1"),
        (&["connect", "fc1", MY_GUID], "has no vsock port"),
        (&["connect", "plain", "exec"], "only the agent's protocol"),
        (
            &["connect", "fc1", "Nope"],
            "no registered service named \"Nope\"",
        ),
    ];
    for (args, expected) in cases {
        assert_fails_on_one_line(&d, args, 1, expected);
    }
}

/// A line echo server on `path` for any number of connections at once.
fn echo_server(path: &std::path::Path) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Registers the echo service (port 2761) with an echo server as its host
/// endpoint, and returns where the VMM behind `vmm` delivers a guest's
/// connections to it once the daemon listens there.
fn echo_service(d: &Daemon, vmm: &std::path::Path) -> std::path::PathBuf {
    let host = d.dir.path().join("host.sock");
    if !host.exists() {
        echo_server(&host);
        d.ok(&[
            "service",
            "register",
            "00000ac9-facb-11e6-bd58-64006a7986d3",
            "--name",
            "Echo",
            "--host-endpoint",
            &format!("unix://{}", host.display()),
        ]);
    }
    let guest_side = std::path::PathBuf::from(format!("{}_2761", vmm.display()));
    assert!(wait_until(POLL_DEADLINE, || guest_side.exists()));
    guest_side
}

/// A guest's connection to the echo service through `guest_side`: the
/// line echoed, or `None` when the daemon closed it.
fn guest_ping(guest_side: &std::path::Path) -> (std::os::unix::net::UnixStream, Option<String>) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(guest_side).unwrap();
    s.set_read_timeout(Some(POLL_DEADLINE)).unwrap();
    let _ = s.write_all(b"ping\n");
    let mut line = String::new();
    let echoed = BufReader::new(&s)
        .read_line(&mut line)
        .ok()
        .filter(|n| *n > 0)
        .map(|_| line);
    (s, echoed)
}

#[test]
fn a_guest_flooding_its_host_connections_takes_neither_the_operators_relays_nor_another_vms() {
    // More than the daemon's 1,024 operator relay slots, from one guest.
    const FLOOD: usize = 1_030;
    const PER_VM: usize = 64;
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard < 4 * FLOOD as u64 {
        eprintln!("SKIPPED: the hard limit on open files ({hard}) is too low for the flood");
        return;
    }
    if soft < 4 * FLOOD as u64 {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
            .unwrap();
    }
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let hostile = echo_service(&d, &hybrid_vm(&d, "fc1"));
    let vmm2 = d.dir.path().join("vmm2.sock");
    let endpoint2 = format!("hvsock-uds://{}", vmm2.display());
    d.ok(&["vm", "add", "fc2", "--endpoint", &endpoint2]);
    let other = echo_service(&d, &vmm2);

    let flood: Vec<_> = (0..FLOOD).map(|_| guest_ping(&hostile)).collect();
    let relayed = flood.iter().filter(|(_, echoed)| echoed.is_some()).count();
    assert_eq!(
        relayed, PER_VM,
        "one VM's guest gets its own budget, no more"
    );

    assert_eq!(
        guest_ping(&other).1.as_deref(),
        Some("ping\n"),
        "another VM's guest"
    );
    assert_eq!(
        d.ok(&["exec", "web1", "--", "echo", "operator"]),
        "operator\n"
    );

    // A slot freed is a slot the guest gets again.
    drop(flood);
    assert!(wait_until(POLL_DEADLINE, || guest_ping(&hostile)
        .1
        .is_some()));
    let records = d.json(&["audit", "--vm", "fc1", "--limit", "2000"]);
    let guest_connects = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "service.guest_connect")
        .count();
    assert!(
        guest_connects > PER_VM,
        "each relayed guest connection is audited"
    );
}

#[test]
fn only_the_vmm_user_can_speak_for_the_guest() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start("off");
    let guest_side = echo_service(&d, &hybrid_vm(&d, "fc1"));
    let meta = std::fs::metadata(&guest_side).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the VMM's user only"
    );
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());

    let (vmm, echoed) = guest_ping(&guest_side);
    assert_eq!(
        echoed.as_deref(),
        Some("ping\n"),
        "the VMM (this test, as root)"
    );
    drop(vmm);
    let Some(user) = util::users::TestUser::create("gl") else {
        return;
    };
    // Even with the socket's mode opened up, another user is refused and audited.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&guest_side, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Connects (the mode lets it), says ping, prints what comes back.
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.settimeout(30)\ntry:\n    s.sendall(b'ping\\n')\nexcept OSError:\n    pass\ntry:\n    print(repr(s.recv(100)))\nexcept ConnectionResetError:\n    print(repr(b''))\n",
        guest_side.display().to_string()
    );
    let out = user.run(
        std::path::Path::new("/usr/bin/python3"),
        &["-c", &script],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "b''",
        "closed unanswered"
    );
    let refused = d.audit_settled(&["--vm", "fc1"]);
    let record = refused
        .iter()
        .find(|r| r["operation"] == "service.guest_connect" && r["outcome"] == "refused")
        .expect("the refused connection is audited");
    assert_eq!(record["uid"], user.uid);
    assert!(
        record["error"].as_str().unwrap().contains("VMM"),
        "{record}"
    );
}

#[test]
fn guest_initiated_connections_reach_the_host_endpoint_only_while_enabled() {
    use std::io::{BufRead, BufReader, Write};
    let mut d = Daemon::start("off");
    let vmm = hybrid_vm(&d, "fc1");
    let host = d.dir.path().join("host.sock");
    echo_server(&host);
    let echo = "00000ac9-facb-11e6-bd58-64006a7986d3";
    let host_endpoint = format!("unix://{}", host.display());
    d.ok(&[
        "service",
        "register",
        echo,
        "--name",
        "Echo",
        "--host-endpoint",
        &host_endpoint,
    ]);
    // Where the VMM delivers a guest's connection to host port 2761.
    let guest_side = std::path::PathBuf::from(format!("{}_2761", vmm.display()));
    let ping = || -> Option<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&guest_side).ok()?;
        s.write_all(b"ping\n").ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line)
    };
    assert!(wait_until(POLL_DEADLINE, || guest_side.exists()));
    assert_eq!(ping().as_deref(), Some("ping\n"));

    d.kill9_and_restart();
    assert!(wait_until(POLL_DEADLINE, || ping().as_deref() == Some("ping\n")));
    let regs = d.json(&["service", "list"]);
    let mine = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == echo)
        .unwrap();
    assert_eq!(mine["host_endpoint"], host_endpoint.as_str());

    d.ok(&["service", "disable", echo, "--vm", "fc1"]);
    assert!(wait_until(POLL_DEADLINE, || !guest_side.exists()));
    assert_eq!(ping(), None, "disabled: refused");
    d.ok(&["service", "enable", echo, "--vm", "fc1"]);
    assert!(wait_until(POLL_DEADLINE, || ping().as_deref() == Some("ping\n")));
}

#[test]
fn the_daemon_authenticates_to_agents_with_each_vms_key() {
    let d = Daemon::start("off");
    // A new key for the VM; the guest side goes to the agent's --credentials.
    let (_agent, socket, guest_file) = d.keyed_agent_vm("keyed");
    let endpoint = format!("unix://{}", socket.display());
    let guest = guest_file.to_str().unwrap();
    assert_eq!(
        std::fs::metadata(&guest_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(d.json(&["vm", "show", "keyed"])["authenticated"], true);
    assert_eq!(
        d.ok(&["exec", "keyed", "--", "echo", "authenticated"]),
        "authenticated\n"
    );

    // The same agent under a VM entry with another key: refused, nothing runs.
    d.ok(&[
        "vm",
        "add",
        "stranger",
        "--endpoint",
        &endpoint,
        "--generate-credentials",
    ]);
    let refused = d.run(&["exec", "stranger", "--", "echo", "inside"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("authentication failed"));

    // Importing the key file that the guest holds works too.
    d.ok(&[
        "vm",
        "add",
        "imported",
        "--endpoint",
        &endpoint,
        "--credentials",
        guest,
    ]);
    assert_eq!(
        d.ok(&["exec", "imported", "--", "echo", "imported"]),
        "imported\n"
    );

    // A vsock VM cannot go without a key, and a key is never written over a file.
    let no_key = d.run(&[
        "vm",
        "add",
        "bare",
        "--endpoint",
        "hvsock-uds:///run/x.vsock",
        "--no-credentials",
    ]);
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("must have credentials"));
    let again = d.run(&["vm", "credentials", "keyed", "--guest-file", guest]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));
    // A VM added without a key has no guest side to give.
    d.ok(&["vm", "add", "open", "--endpoint", &endpoint]);
    let none = d.run(&[
        "vm",
        "credentials",
        "open",
        "--guest-file",
        &format!("{guest}.2"),
    ]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("has no key"));
}

#[test]
fn cp_through_the_daemon_is_byte_exact_both_ways_and_obeys_the_files_policy() {
    let d = Daemon::start("off");
    let (_agent, _endpoint) = d.agent_vm("web1");
    let data = pseudo_random(3_000_000, 11);
    let src = d.dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let in_guest = d.dir.path().join("in-guest.bin");
    let back = d.dir.path().join("back.bin");

    d.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("web1:{}", in_guest.display()),
    ]);
    assert!(
        std::fs::read(&in_guest).unwrap() == data,
        "host to guest differs"
    );
    d.ok(&[
        "cp",
        &format!("web1:{}", in_guest.display()),
        back.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "guest to host differs"
    );

    // The files service disabled for this VM: refused, nothing written.
    d.ok(&[
        "service",
        "disable",
        "00004745-facb-11e6-bd58-64006a7986d3",
        "--vm",
        "web1",
    ]);
    let refused_dst = d.dir.path().join("refused.bin");
    let out = d.run(&[
        "cp",
        src.to_str().unwrap(),
        &format!("web1:{}", refused_dst.display()),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("disabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!refused_dst.exists());
}

#[test]
fn connect_with_the_plain_upgrade_token_relays_raw_bytes() {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::start("off");
    let echo = fake_vmm(&hybrid_vm(&d, "fc1"));
    let id = "00000ac9-facb-11e6-bd58-64006a7986d3";
    d.ok(&["service", "register", id, "--name", "Echo"]);
    let mut api = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        api,
        "POST /v1/vms/fc1/services/{id}/connect HTTP/1.1\r\nHost: guestcommd\r\nConnection: upgrade\r\nUpgrade: guestcomm\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(api.try_clone().unwrap());
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).unwrap() > 0, "closed: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: guestcomm\r\n"),
        "{head}"
    );
    api.write_all(b"raw\nquit\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "raw\n");
    assert_eq!(echo.join().unwrap(), "CONNECT 2761\n");
}

#[test]
fn a_client_cannot_mark_its_own_relayed_operation_done() {
    use guestcomm_protocol::message::{Call, ExecRequest, ExitStatus, Welcome};
    use guestcomm_protocol::{BuiltinService, Control, Frame, FrameCodec};
    use std::io::{Read, Write};
    use tokio_util::codec::Decoder;
    use util::wire::{encode, hello, request};

    // An agent that takes the exec and says nothing more: it tells the
    // test once the client's forged ending reached it through the relay.
    let d = Daemon::start("off");
    let socket = d.dir.path().join("quiet.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let (reached, forged_arrived) = std::sync::mpsc::channel();
    let agent = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(POLL_DEADLINE)).unwrap();
        let welcome = Welcome {
            version: guestcomm_protocol::message::ProtocolVersion::CURRENT,
            features: vec![],
            auth: "none".into(),
            agent: "quiet".into(),
        };
        let mut codec = FrameCodec::new();
        let mut buf = bytes::BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut welcomed = false;
        while let Ok(n @ 1..) = sock.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                match frame {
                    Frame::Control(Control::Hello(_)) if !welcomed => {
                        welcomed = true;
                        let welcome =
                            encode(vec![Frame::Control(Control::Welcome(welcome.clone()))]);
                        sock.write_all(&welcome).unwrap();
                    }
                    Frame::Control(Control::CopySummary(_)) => {
                        let _ = reached.send(());
                    }
                    _ => {}
                }
            }
        }
    });
    let endpoint = format!("unix://{}", socket.display());
    d.ok(&["vm", "add", "quiet", "--endpoint", &endpoint]);

    let mut client = d.raw_connect("quiet");
    let exec = Call::Exec(ExecRequest {
        program: "/usr/bin/false".into(),
        ..Default::default()
    });
    let success = ExitStatus {
        code: Some(0),
        signal: None,
        timed_out: false,
    };
    client
        .write_all(&encode(vec![
            hello(),
            request(BuiltinService::Exec.id(), exec),
            Frame::Control(Control::Exited(success)),
            Frame::Control(Control::CopySummary(Default::default())),
        ]))
        .unwrap();
    forged_arrived
        .recv_timeout(POLL_DEADLINE)
        .expect("the forged frames reach the agent");
    drop(client);

    let records = d.audit_settled(&["--vm", "quiet"]);
    let exec = records
        .iter()
        .find(|r| r["operation"] == "exec")
        .expect("the exec is audited");
    assert_eq!(exec["outcome"], "failed", "{exec}");
    assert_eq!(exec["exit_code"], Value::Null, "{exec}");
    drop(d);
    agent.join().unwrap();
}

#[test]
fn a_second_request_down_a_relayed_connection_never_reaches_the_agent() {
    use guestcomm_protocol::handshake::{reusable_hello, FEATURE_REUSE};
    use guestcomm_protocol::{Control, Frame};
    use std::io::Write;
    use util::wire::{encode, exec_request, frames_until_exited, read_until_final};
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let marker = d.dir.path().join("smuggled");
    // A caller that offers reuse, one admitted and audited exec, then a
    // second request where a reused connection would carry one: the relay
    // checked only the first, so the second must go nowhere.
    let mut sock = d.raw_connect("web1");
    sock.write_all(&encode(vec![
        Frame::Control(Control::Hello(reusable_hello("test"))),
        exec_request("true", &[]),
    ]))
    .unwrap();
    let frames = frames_until_exited(&mut sock, &mut bytes::BytesMut::new());
    let Some(Frame::Control(Control::Welcome(welcome))) = frames.first() else {
        panic!("no welcome first: {frames:?}");
    };
    assert!(
        !welcome.features.iter().any(|f| f == FEATURE_REUSE),
        "the relay offers reuse: {welcome:?}"
    );
    let smuggled = exec_request("touch", &[marker.to_str().unwrap()]);
    sock.write_all(&encode(vec![smuggled])).unwrap();
    let (after, _) = read_until_final(&mut sock);
    assert!(
        !after.iter().any(|f| matches!(
            f,
            Frame::Control(Control::ExecStarted { .. } | Control::Exited(_))
        )),
        "a second request was served: {after:?}"
    );
    drop(sock);
    assert!(!marker.exists(), "the smuggled command ran");
    let execs = d
        .audit_settled(&["--vm", "web1"])
        .into_iter()
        .filter(|r| r["operation"] == "exec")
        .count();
    assert_eq!(execs, 1, "one exec audited");
}

#[test]
fn a_relay_session_that_breaks_after_the_upgrade_is_audited() {
    use std::io::Write;
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    // A first frame that is no hello, then a client that leaves at once.
    let mut garbage = d.raw_connect("web1");
    garbage.write_all(&[0, 0, 0, 2, 0x09, b'{', b'}']).unwrap();
    let (_, end) = util::wire::read_until_final(&mut garbage);
    assert_eq!(end, util::wire::End::Final);
    drop(garbage);
    drop(d.raw_connect("web1"));

    let broken = || {
        d.audit_settled(&["--vm", "web1"])
            .into_iter()
            .filter(|r| r["operation"] == "vm.connect" && r["outcome"] == "failed")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(POLL_DEADLINE, || broken().len() == 2),
        "{:#?}",
        broken()
    );
    let errors: Vec<String> = broken()
        .iter()
        .map(|r| r["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        errors.iter().all(|e| e.contains("client handshake failed")),
        "{errors:?}"
    );
}

#[test]
fn reads_that_ask_the_agent_are_bounded_per_vm() {
    // The daemon's MAX_AGENT_CALLS_PER_VM.
    const BOUND: usize = 8;
    let d = Daemon::start("off");
    let socket = d.dir.path().join("silent.sock");
    let requests = util::wire::silent_agent(&socket);
    let endpoint = format!("unix://{}", socket.display());
    d.ok(&["vm", "add", "mute", "--endpoint", &endpoint]);

    // Calls that hang, each until its process is killed.
    let hanging: Vec<_> = (0..BOUND)
        .map(|_| {
            d.cli(&["info", "mute"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for _ in 0..BOUND {
        requests
            .recv_timeout(POLL_DEADLINE)
            .expect("each call reaches the agent");
    }
    let busy = d
        .cli(&["info", "mute"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (done, out) = util::output_within(busy, POLL_DEADLINE);
    assert!(done, "the call over the bound is answered at once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in flight"), "{err}");
    assert!(
        requests.try_recv().is_err(),
        "the call over the bound never reached the agent"
    );

    for mut call in hanging {
        call.kill().unwrap();
        call.wait().unwrap();
    }
    // The slots come back as the daemon notices the callers gone.
    let again = || {
        let mut call = d
            .cli(&["info", "mute"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let reached = requests.recv_timeout(Duration::from_secs(2)).is_ok();
        let _ = call.kill();
        let _ = call.wait();
        reached
    };
    assert!(wait_until(POLL_DEADLINE, again));
}
