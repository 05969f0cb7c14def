//! An upgrade keeps the state: the database an older guestcommd wrote
//! (`tests/fixtures/state-0460acb.sql`, made by
//! `scripts/make-upgrade-fixture` with that release's own binaries) opens
//! under this guestcommd, which migrates it, and everything in it is still
//! there and still in force: the VMs with their ids, keys and interface
//! settings, a registered service and per-VM enablement, host policies,
//! external key-value items, and the audit records, now hash-chained and
//! verifiable.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use guestcomm_protocol::auth::load_credentials;
use util::daemon::{AgentAt, Daemon};

/// The fixture's stand-in for its agent's socket.
const FIXTURE_AGENT: &str = "/run/guestcomm-fixture/agent.sock";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A VM row as the old release stored it.
struct OldVm {
    id: String,
    name: String,
    psk: Option<String>,
}

/// Writes the fixture as `<state>/guestcommd.db`, its agent socket moved
/// to `agent`, and returns its VMs, audit record count and schema version.
fn install_fixture(state: &Path, agent: &Path) -> (Vec<OldVm>, i64, u32) {
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-0460acb.sql"),
    )
    .unwrap()
    .replace(FIXTURE_AGENT, agent.to_str().unwrap());
    std::fs::create_dir_all(state).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = state.join("guestcommd.db");
    for stale in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{stale}", db.display()));
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&sql).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vms = conn
        .prepare("SELECT id, name, psk FROM vms ORDER BY name")
        .unwrap()
        .query_map([], |r| {
            Ok(OldVm {
                id: r.get(0)?,
                name: r.get(1)?,
                psk: r.get(2)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let records: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    (vms, records, version)
}

#[test]
fn the_previous_releases_state_opens_migrated_with_nothing_lost() {
    let mut d = Daemon::start("off");
    d.kill9();
    let agent_sock = d.dir.path().join("agent.sock");
    let state = d.dir.path().join("state");
    let (old_vms, old_records, old_version) = install_fixture(&state, &agent_sock);
    assert_eq!(old_vms.len(), 3);
    let _agent = AgentAt::start(&agent_sock);
    d.restart();

    // Every VM, under its id; the removed one stays removed.
    let list = d.ok(&["vm", "list"]);
    for vm in &old_vms {
        let row = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(vm.name.as_str()))
            .unwrap_or_else(|| panic!("{} missing from\n{list}", vm.name));
        assert!(row.contains(&vm.id), "{row}");
    }
    assert!(!list.contains("gone"), "{list}");

    // Settings of the guest service interface.
    let db1 = d.ok(&["vm", "show", "db1"]);
    assert!(db1.contains("Interface:  disabled"), "{db1}");
    let web1 = d.ok(&["vm", "show", "web1"]);
    assert!(web1.contains("(default policy 3)"), "{web1}");

    // The keys: the one the guest holds still authenticates.
    for vm in old_vms.iter().filter(|v| v.psk.is_some()) {
        let file = d.dir.path().join(format!("{}.key", vm.name));
        d.ok(&[
            "vm",
            "credentials",
            &vm.name,
            "--guest-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(
            Some(load_credentials(&file).unwrap().secret_hex()),
            vm.psk,
            "{}",
            vm.name
        );
    }

    // The registered service, and enablement per VM.
    let services = d.ok(&["service", "list"]);
    assert!(services.contains("Backup agent"), "{services}");
    let on_web1 = d.ok(&["service", "list", "--vm", "web1"]);
    let state_of = |name: &str| {
        on_web1
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{on_web1}"))
            .to_string()
    };
    assert!(state_of("Backup agent").contains("Enabled"), "{on_web1}");
    assert!(state_of("File Copy").contains("Disabled"), "{on_web1}");

    // Host policies, still in force.
    let policy = d.ok(&["policy", "show", "web1"]);
    assert!(
        policy.contains("/usr/bin/uptime") && policy.contains("/srv/in"),
        "{policy}"
    );
    let ran = d.run(&["exec", "local", "--", "true"]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let refused = d.run(&["exec", "local", "--", "sh", "-c", "id"]);
    assert_eq!(
        refused.status.code(),
        Some(126),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        text(&refused.stderr).contains("host policy of VM local"),
        "{}",
        text(&refused.stderr)
    );

    // The host's key-value items.
    let kvp = d.ok(&["kvp", "list", "local"]);
    assert!(
        kvp.contains("site=lab-3") && kvp.contains("owner=ops team"),
        "{kvp}"
    );

    // The audit log: the old records first, as they were, then today's;
    // the migration chained them, so the whole log verifies.
    let records = d.audit_settled(&[]);
    let operations: Vec<&str> = records
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert!(records.len() as i64 >= old_records + 2, "{records:?}");
    for op in [
        "vm.add",
        "vm.set",
        "service.register",
        "policy.set",
        "kvp.set",
        "exec",
        "vm.rm",
    ] {
        assert!(operations.contains(&op), "{op} missing from {operations:?}");
    }
    assert!(
        records.iter().any(|r| r["outcome"] == "refused"
            && r["arguments"].as_str() == Some("sh -c id")
            && r["vm"] == "local"),
        "{records:?}"
    );
    let verify = d.run(&["audit", "--verify"]);
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");

    // The schema moved on from the old release's.
    d.kill9();
    let conn = rusqlite::Connection::open(state.join("guestcommd.db")).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version > old_version, "{version} after {old_version}");
}
