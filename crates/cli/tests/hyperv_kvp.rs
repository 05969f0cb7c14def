//! Hyper-V's key-value pool files in the guest, driven as a program written
//! for Hyper-V's KVP drives them: a Python script that reads and appends
//! hv_kvp_daemon's 512 + 2,048-byte records under fcntl locks (as
//! Microsoft's sample KVP client does), beside the real agent, CLI and
//! daemon (which fills pool 3 with the host's data).

#![allow(clippy::unwrap_used)]

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use util::daemon::Daemon;
use util::{bin, kvp_socket_of, output_within, wait_until, Agent};

/// Generous: only a bound on how long a broken test hangs.
const DEADLINE: Duration = Duration::from_secs(60);

/// A program written for Hyper-V's KVP: `read FILE` prints each record as
/// `key=value`; `append FILE KEY VALUE` adds a record; `hold FILE` takes the
/// exclusive lock, says "held" and keeps it until its stdin ends.
const HYPERV_TOOL: &str = r#"
import fcntl, sys
KEY, VALUE = 512, 2048
op, path = sys.argv[1], sys.argv[2]
if op == "read":
    with open(path, "rb") as f:
        fcntl.lockf(f, fcntl.LOCK_SH)
        data = f.read()
    for i in range(0, len(data) - len(data) % (KEY + VALUE), KEY + VALUE):
        key = data[i:i + KEY].split(b"\0")[0].decode()
        value = data[i + KEY:i + KEY + VALUE].split(b"\0")[0].decode()
        print(f"{key}={value}")
elif op == "append":
    with open(path, "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.seek(0, 2)
        f.write(sys.argv[3].encode().ljust(KEY, b"\0") + sys.argv[4].encode().ljust(VALUE, b"\0"))
elif op == "hold":
    with open(path, "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
"#;

fn tool(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(HYPERV_TOOL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn pool(dir: &Path, n: u8) -> String {
    dir.join(format!(".kvp_pool_{n}"))
        .to_str()
        .unwrap()
        .to_string()
}

fn cli(args: &[&str]) -> Output {
    let child = Command::new(bin("guestcomm"))
        .args(args)
        .env_remove("GUESTCOMM_API")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (exited, out) = output_within(child, DEADLINE);
    assert!(exited, "guestcomm {args:?} did not finish");
    out
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn agent_with_pool_files(dir: &Path) -> Agent {
    Agent::start_with(&[
        "--hyperv-kvp",
        "on",
        "--hyperv-kvp-dir",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn programs_written_for_hyper_v_read_the_hosts_items_and_write_their_own() {
    let work = tempfile::tempdir().unwrap();
    let pools = work.path().join("hyperv");
    let agent = agent_with_pool_files(&pools);
    let addr = agent.addr();
    // All five files exist from the start, as hv_kvp_daemon makes them.
    for n in 0..5 {
        assert!(Path::new(&pool(&pools, n)).is_file(), "pool {n}");
    }

    // The host's item reaches pool 0, where such a program reads it.
    ok(cli(&["kvp", "set", &addr, "color", "blue"]));
    assert_eq!(tool(&["read", &pool(&pools, 0)]), "color=blue\n");

    // The program's item in pool 1 reaches the host.
    tool(&["append", &pool(&pools, 1), "build", "42"]);
    let got = ok(cli(&["kvp", "get", &addr, "--pool", "guest", "build"]));
    assert_eq!(got.trim_end(), "42");

    // A guest program using the agent's socket adds to the same file,
    // keeping what the other program wrote.
    let out = Command::new(bin("guestcomm-agent"))
        .args(["kvp", "--socket"])
        .arg(kvp_socket_of(&agent.socket))
        .args(["set", "role", "web"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut records: Vec<String> = tool(&["read", &pool(&pools, 1)])
        .lines()
        .map(str::to_string)
        .collect();
    records.sort();
    assert_eq!(records, ["build=42", "role=web"]);
    let listed = ok(cli(&["kvp", "list", &addr, "--pool", "guest"]));
    assert!(
        listed.contains("build=42") && listed.contains("role=web"),
        "{listed}"
    );

    // The auto pool is published in pool 2 when computed.
    ok(cli(&["kvp", "list", &addr, "--pool", "auto"]));
    let auto = tool(&["read", &pool(&pools, 2)]);
    assert!(
        auto.contains("IntegrationServicesVersion=guestcomm-agent"),
        "{auto}"
    );

    // The host's pool is the host's: the program's write there is replaced
    // by the host's next one.
    tool(&["append", &pool(&pools, 0), "forged", "1"]);
    ok(cli(&["kvp", "set", &addr, "size", "xl"]));
    let external = tool(&["read", &pool(&pools, 0)]);
    assert!(!external.contains("forged"), "{external}");
    assert!(external.contains("size=xl"), "{external}");
}

#[test]
fn a_program_holding_a_pool_files_lock_costs_a_clear_error_not_a_stuck_agent() {
    let work = tempfile::tempdir().unwrap();
    let pools = work.path().join("hyperv");
    let agent = agent_with_pool_files(&pools);
    let addr = agent.addr();
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(HYPERV_TOOL)
        .args(["hold", &pool(&pools, 1)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");

    let out = cli(&["kvp", "list", &addr, "--pool", "guest"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is locked by another program"), "{err}");
    // The agent serves everything else meanwhile.
    ok(cli(&["kvp", "set", &addr, "color", "blue"]));

    // Released, the pool reads again.
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    ok(cli(&["kvp", "list", &addr, "--pool", "guest"]));
}

#[test]
fn the_daemon_fills_pool_3_with_the_host_name_and_the_vms_id_and_name() {
    let d = Daemon::start("200ms");
    let pools = d.dir.path().join("hyperv");
    let dir = pools.to_str().unwrap();
    let (_agent, _) = d.agent_vm_with("web1", &["--hyperv-kvp", "on", "--hyperv-kvp-dir", dir]);
    let id = d.json(&["vm", "show", "web1"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim_end();
    let expected = format!("HostName={host}\nVirtualMachineId={id}\nVirtualMachineName=web1\n");
    // The health monitor's first answer from the agent brings the host's
    // data, though the host's pool is empty.
    assert!(
        wait_until(DEADLINE, || tool(&["read", &pool(&pools, 3)]) == expected),
        "pool 3 holds {:?}",
        tool(&["read", &pool(&pools, 3)])
    );
    assert_eq!(tool(&["read", &pool(&pools, 0)]), "");

    // A host item goes to pool 0; pool 3 keeps the host's data.
    d.ok(&["kvp", "set", "web1", "color", "blue"]);
    assert_eq!(tool(&["read", &pool(&pools, 0)]), "color=blue\n");
    assert_eq!(tool(&["read", &pool(&pools, 3)]), expected);
    // Host data is not one of the agent's pools: the host's pool has only
    // its own item.
    let external = d.ok(&["kvp", "list", "web1"]);
    assert!(!external.contains("HostName"), "{external}");
}
