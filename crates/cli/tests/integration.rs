//! The integration services with the real CLI, agents and guestcommd:
//! guest info against this machine, time with a simulated guest clock, the
//! key-value pools both ways and across restarts, shutdown with an
//! injected command, and filesystem freeze with a simulated freezer (no
//! clock is set, nothing is powered off or frozen on this machine).

#![allow(clippy::unwrap_used)]

mod util;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use util::daemon::{AgentAt, Daemon};
use util::{bin, kvp_socket_of, wait_until, Agent};

/// Generous: only a bound on how long a broken test hangs.
const POLL_DEADLINE: Duration = Duration::from_secs(60);

fn cli(args: &[&str]) -> Output {
    Command::new(bin("guestcomm"))
        .args(args)
        .env_remove("GUESTCOMM_API")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails_with(out: Output, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expected), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// `guestcomm-agent kvp ARGS...` against the agent on `socket`.
fn guest_kvp(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("guestcomm-agent"))
        .arg("kvp")
        .arg("--socket")
        .arg(kvp_socket_of(socket))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn proc_text(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn guest_info_reports_this_machines_hostname_and_kernel() {
    let agent = Agent::start();
    let info: Value = serde_json::from_str(&ok(cli(&["info", &agent.addr(), "--json"]))).unwrap();
    assert_eq!(info["hostname"], proc_text("/proc/sys/kernel/hostname"));
    assert_eq!(
        info["kernel"]["release"],
        proc_text("/proc/sys/kernel/osrelease")
    );
    assert!(info["cpus"].as_u64().unwrap() >= 1);
    assert!(info["memory"]["total_bytes"].as_u64().unwrap() > 0);
    let services = info["services"].as_array().unwrap();
    assert!(services.iter().any(|s| s == "kvp") && services.iter().any(|s| s == "fsfreeze"));
    assert!(info["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "lo"));
    let text = ok(cli(&["info", &agent.addr()]));
    assert!(
        text.contains("Kernel:") && text.contains("MOUNTPOINT"),
        "{text}"
    );
}

#[test]
fn time_shows_the_offset_and_sync_steps_a_simulated_guest_clock() {
    let agent = Agent::start_with(&["--simulated-clock-offset", "3600"]);
    let before: Value = serde_json::from_str(&ok(cli(&["time", &agent.addr(), "--json"]))).unwrap();
    let offset_s = before["offset_ns"].as_i64().unwrap() as f64 / 1e9;
    // Only a sanity bound: the sample's uncertainty is far below a minute.
    assert!((offset_s - 3600.0).abs() < 60.0, "{before}");
    let after: Value =
        serde_json::from_str(&ok(cli(&["time", &agent.addr(), "--sync", "--json"]))).unwrap();
    assert_eq!(after["synced"], true);
    assert!(
        (after["offset_ns"].as_i64().unwrap() as f64 / 1e9).abs() < 60.0,
        "{after}"
    );
}

#[test]
fn kvp_limits_are_enforced_at_exactly_512_and_2048_bytes() {
    let agent = Agent::start();
    let addr = agent.addr();
    let key = "k".repeat(512);
    let value = "v".repeat(2048);
    ok(cli(&["kvp", "set", &addr, &key, &value]));
    assert_eq!(ok(cli(&["kvp", "get", &addr, &key])).trim_end(), value);
    fails_with(
        cli(&["kvp", "set", &addr, &"k".repeat(513), "v"]),
        "exceeds the 512-byte limit",
    );
    fails_with(
        cli(&["kvp", "set", &addr, "k", &"v".repeat(2049)]),
        "exceeds the 2048-byte limit",
    );
    // The guest side checks too (its agent refuses, not only the CLI).
    let out = guest_kvp(&agent.socket, &["set", "g", &"v".repeat(2049)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2048-byte limit"));
    fails_with(
        cli(&["kvp", "get", &addr, "nope"]),
        "no key \"nope\" in pool external",
    );
    let out = cli(&["kvp", "get", &addr, "--pool", "intrinsic", "k"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown pool is a usage error"
    );
    fails_with(
        cli(&["kvp", "set", &addr, "--pool", "auto", "k", "v"]),
        "read-only",
    );
    let auto = ok(cli(&["kvp", "list", &addr, "--pool", "auto"]));
    assert!(
        auto.contains("IntegrationServicesVersion=guestcomm-agent"),
        "{auto}"
    );
}

#[test]
fn kvp_round_trips_both_ways_through_the_daemon_across_restarts() {
    let mut d = Daemon::start("200ms");
    let socket = d.dir.path().join("agent.sock");
    let state = d.dir.path().join("agent-state");
    let state_arg = state.to_str().unwrap().to_string();
    let endpoint = format!("unix://{}", socket.display());
    let mut agent = AgentAt::start_with(&socket, &["--state-dir", &state_arg]);
    d.ok(&["vm", "add", "web1", "--endpoint", &endpoint]);

    // Host to guest: stored in the daemon, delivered to the agent.
    d.ok(&["kvp", "set", "web1", "color", "blue"]);
    let got = guest_kvp(&socket, &["get", "color"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "blue",
        "{got:?}"
    );
    // Guest to host.
    assert!(guest_kvp(&socket, &["set", "build", "42"]).status.success());
    assert_eq!(
        d.ok(&["kvp", "get", "web1", "--pool", "guest", "build"])
            .trim(),
        "42"
    );
    // Guest programs cannot write the host's pool.
    let out = guest_kvp(&socket, &["set", "--pool", "external", "x", "y"]);
    assert!(!out.status.success());

    // The daemon restarts: its pool is in SQLite.
    d.kill9_and_restart();
    assert_eq!(d.ok(&["kvp", "get", "web1", "color"]).trim(), "blue");

    // The agent restarts: both pools come back from its state directory.
    drop(agent);
    agent = AgentAt::start_with(&socket, &["--state-dir", &state_arg]);
    assert_eq!(
        d.ok(&["kvp", "get", "web1", "--pool", "guest", "build"])
            .trim(),
        "42"
    );
    assert_eq!(
        String::from_utf8_lossy(&guest_kvp(&socket, &["get", "color"]).stdout).trim(),
        "blue"
    );

    // A change while the agent is down is stored, then delivered when it
    // comes back (here without its state, so only the push can bring it).
    drop(agent);
    let out = d.run(&["kvp", "set", "web1", "size", "xl"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("next answers"));
    let _agent = AgentAt::start(&socket);
    assert!(
        wait_until(POLL_DEADLINE, || {
            String::from_utf8_lossy(&guest_kvp(&socket, &["get", "size"]).stdout).trim() == "xl"
        }),
        "the pool was not delivered when the agent came back"
    );
    let all = guest_kvp(&socket, &["list", "--json"]);
    let all: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(all["color"], "blue");

    d.ok(&["kvp", "rm", "web1", "color"]);
    assert!(!guest_kvp(&socket, &["get", "color"]).status.success());

    // A disabled service is refused for the VM.
    d.ok(&["service", "disable", "kvp", "--vm", "web1"]);
    let out = d.run(&["kvp", "get", "web1", "size"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is disabled for VM web1"));
}

#[test]
fn shutdown_is_acknowledged_then_runs_the_injected_command() {
    let d = Daemon::start("off");
    let (script, record) = util::fake_shutdown_command(d.dir.path());
    let _agent = d.agent_vm_with("web1", &["--shutdown-command", script.to_str().unwrap()]);
    let out = d.ok(&["shutdown", "web1", "--reboot", "--reason", "kernel update"]);
    assert!(out.contains("reboot (graceful)"), "{out}");
    assert!(
        wait_until(POLL_DEADLINE, || std::fs::read_to_string(&record)
            .is_ok_and(|t| t == "reboot graceful kernel update\n")),
        "the shutdown command did not run"
    );

    d.add_unreachable_vm("gone");
    let out = d.run(&["shutdown", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent of VM gone"));
}

#[test]
fn freeze_thaw_and_status_with_a_simulated_freezer() {
    let agent = Agent::start_with(&["--simulate-fsfreeze"]);
    let addr = agent.addr();
    let not_mount = agent.dir.path().to_str().unwrap().to_string();
    fails_with(
        cli(&["fs", "freeze", &addr, &not_mount]),
        "is not a mount point",
    );
    let frozen: Value = serde_json::from_str(&ok(cli(&[
        "fs",
        "freeze",
        &addr,
        "--json",
        "--timeout",
        "600",
        "/",
    ])))
    .unwrap();
    assert_eq!(frozen["frozen"][0], "/");
    assert!(frozen["auto_thaw_in_s"].as_u64().is_some());
    let status: Value = serde_json::from_str(&ok(cli(&["fs", "status", &addr, "--json"]))).unwrap();
    assert_eq!(status["frozen"][0], "/");
    let thawed: Value = serde_json::from_str(&ok(cli(&["fs", "thaw", &addr, "--json"]))).unwrap();
    assert_eq!(thawed["thawed"][0], "/");
    assert!(thawed["frozen"].as_array().unwrap().is_empty());
    fails_with(
        cli(&["fs", "freeze", &addr, "--timeout", "601"]),
        "expected 1 to 600",
    );
}

#[test]
fn integration_services_are_management_objects_and_a_disabled_one_is_refused() {
    let d = Daemon::start("off");
    d.ok(&[
        "vm",
        "add",
        "web1",
        "--endpoint",
        "unix:///nonexistent/a.sock",
    ]);
    d.ok(&["service", "disable", "shutdown", "--vm", "web1"]);
    // Refused by policy before any connection to the (absent) agent.
    let out = d.run(&["shutdown", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("guestcomm Shutdown") && err.contains("disabled for VM web1"),
        "{err}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = guestcomm_api::ApiClient::new(&d.api()).unwrap();
    let objects: Value = rt
        .block_on(client.get("/v1/vms/web1/integration-services"))
        .unwrap();
    let class_of = |class: &str| {
        objects
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["CreationClassName"] == class)
            .unwrap_or_else(|| panic!("no {class} in {objects}"))
            .clone()
    };
    assert_eq!(class_of("Guestcomm_ShutdownService")["EnabledState"], 3);
    let kvp = class_of("Guestcomm_KvpExchangeService");
    assert_eq!(kvp["EnabledState"], 2);
    assert_eq!(kvp["Name"], "00004746-facb-11e6-bd58-64006a7986d3");
    for class in [
        "Guestcomm_TimeSyncService",
        "Guestcomm_GuestInfoService",
        "Guestcomm_FsFreezeService",
    ] {
        class_of(class);
    }
    let doc: Value = rt.block_on(client.get("/openapi.json")).unwrap();
    for path in [
        "/v1/vms/{name}/info",
        "/v1/vms/{name}/time",
        "/v1/vms/{name}/time/sync",
        "/v1/vms/{name}/kvp/{pool}",
        "/v1/vms/{name}/kvp/{pool}/{key}",
        "/v1/vms/{name}/shutdown",
        "/v1/vms/{name}/fs",
        "/v1/vms/{name}/fs/freeze",
        "/v1/vms/{name}/fs/thaw",
        "/v1/vms/{name}/integration-services",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
}

#[test]
fn the_daemons_periodic_time_sync_steps_a_clock_that_is_off() {
    let d = Daemon::start_with("200ms", &["--time-sync-interval", "300ms"]);
    let _agent = d.agent_vm_with("web1", &["--simulated-clock-offset", "-7200"]);
    let offset_s = || {
        let report = d.json(&["time", "web1"]);
        report["offset_ns"].as_i64().unwrap() as f64 / 1e9
    };
    assert!(
        wait_until(POLL_DEADLINE, || offset_s().abs() < 60.0),
        "the periodic sync never stepped the clock: offset {} s",
        offset_s()
    );
}

#[test]
fn time_sync_without_cap_sys_time_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("agent.sock");
    let mut cmd = Command::new(bin("guestcomm-agent"));
    cmd.arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .args(["--kvp-socket", "off"])
        .env("GUESTCOMM_LOG", "warn")
        .stdin(Stdio::null());
    // As root, the agent runs as nobody: it has no CAP_SYS_TIME, so the
    // real clock_settime is refused (this machine's clock never moves).
    if nix::unistd::Uid::effective().is_root() {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().unwrap();
    let up = wait_until(POLL_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let addr = format!("unix://{}", socket.display());
    let out = cli(&["time", &addr, "--sync"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the agent did not start");
    fails_with(out, "CAP_SYS_TIME");
}
