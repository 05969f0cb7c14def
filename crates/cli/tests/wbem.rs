//! WBEM: guestcommd's CIM-XML endpoint driven by pywbem, an
//! unmodified CIM client, over `--wbem tcp://127.0.0.1:PORT`, and by
//! `guestcomm cim` over the API socket. The pywbem scripts are in
//! `tests/wbem/*.py`; without pywbem those tests say SKIPPED loudly, and
//! fail when GUESTCOMM_WBEM_REQUIRED is set (.ci/run sets it once pywbem
//! is installed). GUESTCOMM_PYTHON names the interpreter (default python3).
//! Stock clients, pywbemcli (pywbemtools) and SBLIM's wbemcli, read the
//! model too: SKIPPED when absent, required under
//! GUESTCOMM_WBEM_CLIENTS_REQUIRED.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::daemon::Daemon;
use util::{kvp_socket_of, wait_until, STARTUP_DEADLINE};

const EXEC_GUID: &str = "00004744-facb-11e6-bd58-64006a7986d3";

fn python() -> String {
    std::env::var("GUESTCOMM_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether pywbem can be imported; panics when it must be.
fn have_pywbem(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", "import pywbem"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("GUESTCOMM_WBEM_REQUIRED").is_none(),
            "GUESTCOMM_WBEM_REQUIRED is set but `{} -c 'import pywbem'` fails",
            python()
        );
        eprintln!(
            "*** {test}: SKIPPED: pywbem is not installed for {} (python3 -m pip install pywbem; .ci/run does) ***",
            python()
        );
    }
    ok
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// guestcommd with a WBEM listener whose callers get `role`, an agent, and
/// VM web1 on it.
struct Wbem {
    daemon: Daemon,
    agent: Option<util::daemon::AgentAt>,
    url: String,
}

impl Wbem {
    fn start(role: &str) -> Self {
        Self::start_with(role, "off", &[])
    }

    /// Same, with the health monitor's interval and agent arguments.
    fn start_with(role: &str, heartbeat: &str, agent_args: &[&str]) -> Self {
        let port = free_port();
        let wbem = format!("tcp://127.0.0.1:{port}");
        let daemon = Daemon::start_with(heartbeat, &["--wbem", &wbem, "--wbem-role", role]);
        assert!(
            wait_until(STARTUP_DEADLINE, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "the WBEM listener did not start"
        );
        let (agent, _) = daemon.agent_vm_with("web1", agent_args);
        Self {
            daemon,
            agent: Some(agent),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs `tests/wbem/SCRIPT URL ARGS...`, asserts it passed, returns stdout.
    fn script(&self, script: &str, args: &[&str]) -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wbem");
        let out = Command::new(python())
            .arg(dir.join(script))
            .arg(&self.url)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

#[test]
fn pywbem_enumerates_the_services_classes_and_registered_guest_service_associations() {
    if !have_pywbem("pywbem_enumerates") {
        return;
    }
    let w = Wbem::start("viewer");
    assert!(w.script("wbem_model.py", &["web1"]).contains("model ok"));
}

#[test]
fn keys_match_in_any_case_and_with_braced_guids_as_wmi_compares_them() {
    if !have_pywbem("keys_match") {
        return;
    }
    let w = Wbem::start("admin");
    assert!(w.script("wbem_keys.py", &["web1"]).contains("keys ok"));
    // The braced, upper-case TargetSystem reached the VM's host pool.
    let listed = w.daemon.json(&["kvp", "list", "web1"]);
    assert!(listed.to_string().contains("braced"), "{listed}");
}

#[test]
fn request_state_change_from_pywbem_closes_exec_and_connect_then_reopens_them() {
    if !have_pywbem("request_state_change") {
        return;
    }
    let w = Wbem::start("admin");
    let d = &w.daemon;
    assert_eq!(w.script("wbem_state.py", &["web1", "3"]).trim(), "0 3");
    let out = d.run(&["exec", "web1", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(
        err.contains("disabled for VM web1") && err.contains(EXEC_GUID),
        "{err}"
    );
    let out = d.run(&["connect", "web1", "exec"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disabled for VM web1"), "{err}");
    // The JSON API sees the same policy.
    let listed = d.json(&["service", "list", "--vm", "web1"]);
    let exec = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == EXEC_GUID)
        .unwrap()
        .clone();
    assert_eq!(
        (exec["EnabledState"].clone(), exec["RequestedState"].clone()),
        (3.into(), 3.into())
    );

    assert_eq!(w.script("wbem_state.py", &["web1", "2"]).trim(), "0 2");
    assert_eq!(
        d.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(0)
    );
    // Enabling cannot succeed while the interface is off (32775).
    d.ok(&["vm", "set", "web1", "--interface", "disabled"]);
    assert_eq!(w.script("wbem_state.py", &["web1", "2"]).trim(), "32775 3");
    let audit = d.audit_settled(&["--vm", "web1"]);
    let invokes = audit
        .iter()
        .filter(|r| r["operation"] == "wbem.invoke")
        .count();
    assert_eq!(invokes, 3, "{audit:#?}");
}

#[test]
fn copy_files_to_guest_runs_a_job_that_pywbem_polls_to_completion() {
    if !have_pywbem("copy_files_to_guest") {
        return;
    }
    let w = Wbem::start("admin");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let dst = dir.path().join("in-guest.bin");
    let missing: PathBuf = dir.path().join("no/such/dir/x.bin");
    let out = w.script(
        "wbem_copy.py",
        &[
            "web1",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
    );
    assert!(out.contains("copy ok"), "{out}");
    assert!(
        std::fs::read(&dst).unwrap() == data,
        "the guest's copy differs"
    );
    assert!(!missing.exists());
    let audit = w.daemon.audit_settled(&["--vm", "web1"]);
    let copies: Vec<_> = audit
        .iter()
        .filter(|r| r["operation"] == "cp.to_guest")
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(copies, ["ok", "failed", "failed", "ok"], "{audit:#?}");
}

/// A 64 KiB tmpfs mounted on a directory, unmounted when dropped.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mounts one on `dir`; `None` where mounting is not allowed.
    fn mount(dir: &Path) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn copy_jobs_fail_in_hyper_v_words_and_stop_on_terminate_or_kill() {
    if !have_pywbem("copy_jobs_fail") {
        return;
    }
    let w = Wbem::start("admin");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("payload.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    std::fs::write(dir.path().join("exists.bin"), b"old").unwrap();
    let pid = w.agent.as_ref().unwrap().pid().to_string();
    // A full disk: a 64 KiB tmpfs, where one can be mounted (root).
    let full = tempfile::tempdir().unwrap();
    let tmpfs = SmallTmpfs::mount(full.path());
    let full_dir = if tmpfs.is_some() {
        full.path().to_str().unwrap()
    } else {
        eprintln!(
            "*** copy_jobs_fail: no tmpfs could be mounted: the disk-full case is not run ***"
        );
        "-"
    };
    let out = w.script(
        "wbem_job.py",
        &[
            "web1",
            src.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &pid,
            full_dir,
        ],
    );
    drop(tmpfs);
    assert!(out.contains("job ok"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("exists.bin")).unwrap(),
        b"old"
    );
    // Nothing of the stopped copies in the guest: no file, no temporary file
    // (the agent, resumed, sees the dropped connections).
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "payload.bin" && n != "exists.bin")
            .collect()
    };
    assert!(
        wait_until(STARTUP_DEADLINE, || leftovers().is_empty()),
        "left in the guest: {:?}",
        leftovers()
    );
    // The agent still serves after being stopped.
    assert_eq!(
        w.daemon.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(0)
    );
}

/// Runs stock CIM client `program` with `args` in `dir`: its stdout, or
/// `None` when it is not installed (SKIPPED loudly; a failure under
/// GUESTCOMM_WBEM_CLIENTS_REQUIRED, which .ci/run sets once it installed
/// them).
fn stock_client(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = match Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("GUESTCOMM_WBEM_CLIENTS_REQUIRED").is_none(),
                "GUESTCOMM_WBEM_CLIENTS_REQUIRED is set but {program} cannot run: {e}"
            );
            eprintln!("*** stock CIM clients: SKIPPED: {program} is not installed ({e}; .ci/run installs pywbemtools and sblim-wbemcli) ***");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

/// Whether, in `pywbemcli class tree`'s drawing, `child` is drawn below
/// `parent` (deeper, before the next class at `parent`'s depth or above).
fn nested_under(tree: &str, parent: &str, child: &str) -> bool {
    let depth = |line: &str| line.find("+-- ").unwrap_or(0);
    let name = |line: &str| line.rsplit("+-- ").next().unwrap_or("").trim().to_string();
    let lines: Vec<&str> = tree.lines().collect();
    let Some(at) = lines.iter().position(|l| name(l) == parent) else {
        return false;
    };
    lines[at + 1..]
        .iter()
        .take_while(|l| depth(l) > depth(lines[at]))
        .any(|l| name(l) == child)
}

#[test]
fn stock_cim_clients_read_the_model() {
    let w = Wbem::start("viewer");
    let vm_id = w.daemon.json(&["vm", "show", "web1"])["id"]
        .as_str()
        .expect("the VM's id")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let ns = "root/virtualization/v2";
    let vm_path =
        format!(r#"Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="{vm_id}""#);
    let components = [
        "Msvm_GuestServiceInterfaceComponent",
        "Msvm_HeartbeatComponent",
        "Msvm_KvpExchangeComponent",
        "Msvm_ShutdownComponent",
        "Msvm_TimeSyncComponent",
        "Msvm_VssComponent",
    ];
    // pywbemcli (pywbemtools): -s the server, -d the namespace.
    let pywbemcli = |args: &[&str]| {
        let mut all = vec!["-s", w.url.as_str(), "-d", ns];
        all.extend(args);
        stock_client("pywbemcli", &all, dir.path())
    };
    if let Some(tree) = pywbemcli(&["class", "tree"]) {
        assert!(
            nested_under(&tree, "CIM_Service", "Msvm_GuestCommunicationService")
                && nested_under(&tree, "CIM_LogicalDevice", "Msvm_KvpExchangeComponent")
                && !nested_under(&tree, "CIM_Service", "Msvm_KvpExchangeComponent"),
            "{tree}"
        );
        let systems = pywbemcli(&["instance", "enumerate", "Msvm_ComputerSystem"]).unwrap();
        assert!(
            systems.contains(&format!("Name = \"{vm_id}\";"))
                && systems.contains("ElementName = \"web1\";"),
            "{systems}"
        );
        let linked = pywbemcli(&["instance", "associators", &vm_path]).unwrap();
        for class in components {
            assert!(
                linked.contains(&format!("instance of {class} {{")),
                "{class}: {linked}"
            );
        }
        assert!(
            linked
                .matches(&format!("SystemName = \"{vm_id}\";"))
                .count()
                >= components.len(),
            "{linked}"
        );
    }
    // SBLIM's wbemcli: URL/NAMESPACE:PATH; one line per object.
    let base = format!("{}/{ns}", w.url);
    let wbemcli = |op: &str, path: &str| {
        stock_client("wbemcli", &[op, &format!("{base}:{path}")], dir.path())
    };
    if let Some(ei) = wbemcli("ei", "Msvm_ComputerSystem") {
        assert!(
            ei.lines().any(
                |l| l.contains(&format!("Msvm_ComputerSystem.Name=\"{vm_id}\""))
                    && l.contains("ElementName=\"web1\"")
            ),
            "{ei}"
        );
        let services = wbemcli("ein", "Msvm_GuestService").unwrap();
        let lines: Vec<&str> = services.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 9, "one per service: {services}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains(&format!("SystemName=\"{vm_id}\"")))
                && services.contains(":Msvm_GuestFileService."),
            "{services}"
        );
        let linked = wbemcli("ai", &vm_path).unwrap();
        for class in components {
            assert!(
                linked.lines().any(|l| l.contains(&format!(":{class}."))
                    && l.contains(&format!("SystemName=\"{vm_id}\""))),
                "{class}: {linked}"
            );
        }
    }
}

#[test]
fn bad_requests_get_cim_errors_and_the_daemon_keeps_serving() {
    if !have_pywbem("bad_requests") {
        return;
    }
    let w = Wbem::start("admin");
    assert!(w
        .script("wbem_errors.py", &["web1", "admin"])
        .contains("errors ok"));
}

#[test]
fn a_viewer_on_the_wbem_port_reads_but_cannot_change_anything() {
    if !have_pywbem("viewer_reads_only") {
        return;
    }
    let w = Wbem::start("viewer");
    assert!(w
        .script("wbem_errors.py", &["web1", "viewer"])
        .contains("errors ok"));
    // Every method answers Access Denied (32769), and nothing changed.
    let before = w.daemon.json(&["kvp", "list", "web1"]);
    assert!(w
        .script("wbem_management.py", &["denied", "web1"])
        .contains("denied ok"));
    assert_eq!(guest_reads(&w.daemon, "viewer"), None);
    assert_eq!(w.daemon.json(&["kvp", "list", "web1"]), before);
}

/// OperationalStatus[0] and StatusDescriptions[0] of VM `vm`'s heartbeat
/// component, through `guestcomm cim` on the API socket.
fn heartbeat_status(d: &Daemon, vm: &str) -> (serde_json::Value, serde_json::Value) {
    let id = d.json(&["vm", "show", vm])["id"].clone();
    let all = d.json(&["cim", "enumerate", "Msvm_HeartbeatComponent"]);
    let mine = all
        .as_array()
        .expect("an array of instances")
        .iter()
        .find(|c| c["properties"]["SystemName"] == id)
        .expect("the VM's heartbeat component")
        .clone();
    let p = &mine["properties"];
    (
        p["OperationalStatus"][0].clone(),
        p["StatusDescriptions"][0].clone(),
    )
}

#[test]
fn hyper_v_scripts_walk_each_vms_devices_read_guest_pairs_and_shut_the_guest_down() {
    if !have_pywbem("integration_components") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (script, record) = util::fake_shutdown_command(dir.path());
    let mut w = Wbem::start_with(
        "admin",
        "200ms",
        &["--shutdown-command", script.to_str().unwrap()],
    );
    let d = &w.daemon;
    d.add_unreachable_vm("gone");
    // A guest program publishes a pair in the guest pool.
    let socket = d.dir.path().join("agent.sock");
    let out = Command::new(util::bin("guestcomm-agent"))
        .arg("kvp")
        .arg("--socket")
        .arg(kvp_socket_of(&socket))
        .args(["set", "build", "42"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(STARTUP_DEADLINE, || heartbeat_status(d, "web1").0 == 2),
        "web1's heartbeat never became OK"
    );

    let out = w.script("wbem_components.py", &["devices", "web1", "gone"]);
    assert!(out.contains("devices ok"), "{out}");
    // InitiateShutdown and InitiateReboot reach the guest's shutdown program.
    for (method, force, reason, ran) in [
        (
            "shutdown",
            "false",
            "wbem test",
            "poweroff graceful wbem test\n",
        ),
        (
            "reboot",
            "true",
            "kernel update",
            "reboot force kernel update\n",
        ),
    ] {
        let out = w.script("wbem_components.py", &[method, "web1", force, reason]);
        assert_eq!(out.trim(), "0", "{method}");
        assert!(
            wait_until(STARTUP_DEADLINE, || std::fs::read_to_string(&record)
                .is_ok_and(|t| t == ran)),
            "{method}: the guest's program did not run with {ran:?}"
        );
    }
    let out = w.script("wbem_components.py", &["errors", "web1", "gone"]);
    assert!(out.contains("errors ok"), "{out}");
    // A read-only VM (host policy) refuses it: Access Denied.
    let policy = |text: &str| {
        let out = d.run_with_stdin(&["policy", "set", "web1", "-"], text.as_bytes().to_vec());
        assert!(out.status.success(), "{out:?}");
    };
    policy("read_only = true\n");
    let out = w.script("wbem_components.py", &["shutdown", "web1", "false", "x"]);
    assert_eq!(out.trim(), "32769");
    policy("");
    let audit = w.daemon.audit_settled(&["--vm", "gone"]);
    assert!(
        audit.iter().any(|r| r["operation"] == "wbem.invoke"
            && r["outcome"] == "failed"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot reach the agent of VM gone"))),
        "{audit:#?}"
    );

    // The agent goes away: the heartbeat says Lost Communication.
    drop(w.agent.take());
    let d = &w.daemon;
    assert!(
        wait_until(STARTUP_DEADLINE, || heartbeat_status(d, "web1")
            == (13.into(), "Lost Communication".into())),
        "web1's heartbeat never became Lost Communication: {:?}",
        heartbeat_status(d, "web1")
    );
}

/// The value of `key` in the external pool as a guest program of `d`'s
/// agent reads it (`guestcomm-agent kvp get`); `None` without that key.
fn guest_reads(d: &Daemon, key: &str) -> Option<String> {
    let socket = d.dir.path().join("agent.sock");
    let out = Command::new(util::bin("guestcomm-agent"))
        .arg("kvp")
        .arg("--socket")
        .arg(kvp_socket_of(&socket))
        .args(["get", key])
        .output()
        .expect("run guestcomm-agent kvp get");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The items of Hyper-V pool file `path` (hv_kvp_daemon's records: a
/// 512-byte key and a 2,048-byte value, NUL-padded).
fn pool_file_items(path: &Path) -> Vec<(String, String)> {
    let text = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(512 + 2048)
        .map(|r| (text(&r[..512]), text(&r[512..])))
        .collect()
}

#[test]
fn add_kvp_items_reaches_the_guests_pool_file_and_kvp_get() {
    if !have_pywbem("add_kvp_items_reaches") {
        return;
    }
    let pools = tempfile::tempdir().unwrap();
    let dir = pools.path().to_str().unwrap();
    let w = Wbem::start_with(
        "admin",
        "off",
        &["--hyperv-kvp", "on", "--hyperv-kvp-dir", dir],
    );
    let m = |args: &[&str]| w.script("wbem_management.py", args).trim().to_string();
    let pool0 = pools.path().join(".kvp_pool_0");
    let want = vec![("color".to_string(), "blue".to_string())];
    assert_eq!(m(&["kvp", "web1", "add", "color", "blue"]), "0");
    assert!(
        wait_until(STARTUP_DEADLINE, || pool_file_items(&pool0) == want
            && guest_reads(&w.daemon, "color").as_deref() == Some("blue")),
        "pool 0 holds {:?}, kvp get reads {:?}",
        pool_file_items(&pool0),
        guest_reads(&w.daemon, "color")
    );
    assert_eq!(m(&["kvp", "web1", "remove", "color"]), "0");
    assert!(
        wait_until(STARTUP_DEADLINE, || pool_file_items(&pool0).is_empty()),
        "pool 0 still holds {:?}",
        pool_file_items(&pool0)
    );
}

/// `guestcomm exec web1 -- true`'s exit code and stderr.
fn exec_true(d: &Daemon) -> (Option<i32>, String) {
    let out = d.run(&["exec", "web1", "--", "true"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hyper_v_scripts_change_pairs_services_and_the_interface_through_the_management_service() {
    if !have_pywbem("management_service") {
        return;
    }
    const FILES_GUID: &str = "00004745-facb-11e6-bd58-64006a7986d3";
    const NEW_GUID: &str = "0000aaaa-facb-11e6-bd58-64006a7986d3";
    let w = Wbem::start("admin");
    let d = &w.daemon;
    let m = |args: &[&str]| {
        w.script("wbem_management.py", args)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    let guest_sees = |key: &str, value: Option<&str>| {
        assert!(
            wait_until(STARTUP_DEADLINE, || guest_reads(d, key).as_deref() == value),
            "the guest reads {key} = {:?}, not {value:?}",
            guest_reads(d, key)
        );
    };

    // Key-value pairs: added, changed and removed, as the guest reads them.
    assert_eq!(m(&["kvp", "web1", "add", "color", "blue"]), "0");
    guest_sees("color", Some("blue"));
    assert_eq!(m(&["kvp", "web1", "modify", "color", "green"]), "0");
    guest_sees("color", Some("green"));
    // Refused calls change nothing, neither on the host nor in the guest.
    let before = d.json(&["kvp", "list", "web1"]);
    assert_eq!(m(&["kvp-errors", "web1"]), "kvp errors ok");
    assert_eq!(d.json(&["kvp", "list", "web1"]), before);
    assert_eq!(guest_reads(d, "fine"), None);
    assert_eq!(guest_reads(d, "color").as_deref(), Some("green"));
    assert_eq!(m(&["kvp", "web1", "remove", "color"]), "0");
    guest_sees("color", None);

    // ModifyGuestServiceSettings disables exec on web1, then enables it.
    assert_eq!(m(&["policy", "web1", EXEC_GUID, "3"]), "0");
    let (code, err) = exec_true(d);
    assert_eq!(code, Some(126), "{err}");
    assert!(err.contains("disabled for VM web1"), "{err}");
    let out = d.run(&["connect", "web1", "exec"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disabled for VM web1"), "{err}");
    assert_eq!(m(&["policy", "web1", EXEC_GUID, "2"]), "0");
    assert_eq!(exec_true(d).0, Some(0));

    // AddGuestServiceSettings registers a service, disabled on web1;
    // again it fails; RemoveGuestServiceSettings unregisters it; a
    // built-in service cannot go.
    assert_eq!(m(&["register", "web1", NEW_GUID, "wbem test service"]), "0");
    let listed = d.json(&["service", "list", "--vm", "web1"]);
    let added = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == NEW_GUID)
        .expect("the new service")
        .clone();
    assert_eq!(added["RequestedState"], 3, "{added}");
    assert_eq!(
        m(&["register", "web1", NEW_GUID, "wbem test service"]),
        "32768"
    );
    assert_eq!(m(&["unregister", "web1", NEW_GUID]), "0");
    let listed = d.json(&["service", "list"]);
    assert!(
        !listed.to_string().contains(NEW_GUID),
        "still registered: {listed}"
    );
    assert_eq!(m(&["unregister", "web1", EXEC_GUID]), "32775");

    // ModifyResourceSettings turns the interface off: exec and copies are
    // refused (CopyFilesToGuest: 32775); on again, exec runs.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.txt");
    std::fs::write(&src, b"payload").unwrap();
    let dst = dir.path().join("dst.txt");
    let (src, dst) = (src.to_str().unwrap(), dst.to_str().unwrap());
    assert_eq!(m(&["interface", "web1", "3"]), "0");
    assert_eq!(d.json(&["vm", "show", "web1"])["interface_enabled"], false);
    let (code, err) = exec_true(d);
    assert_eq!(code, Some(126), "{err}");
    assert_eq!(m(&["copy", "web1", src, dst]), "32775");
    assert_eq!(m(&["interface", "web1", "2"]), "0");
    assert_eq!(exec_true(d).0, Some(0));
    // The file service disabled on the VM: 32775 too.
    assert_eq!(m(&["policy", "web1", FILES_GUID, "3"]), "0");
    assert_eq!(m(&["copy", "web1", src, dst]), "32775");
    assert_eq!(m(&["policy", "web1", FILES_GUID, "2"]), "0");
    assert_eq!(m(&["copy", "web1", src, dst]), "4096");

    // RequestStateChange's and CopyFilesToGuest's codes.
    assert_eq!(m(&["codes", "web1", src]), "codes ok");

    // Audited as the JSON API's changes are: the VM, what changed, and why
    // a refused call did not.
    let audit = d.audit_settled(&["--vm", "web1"]);
    let invokes: Vec<_> = audit
        .iter()
        .filter(|r| r["operation"] == "wbem.invoke")
        .collect();
    let with = |text: &str, outcome: &str| {
        invokes.iter().any(|r| {
            r["arguments"].as_str().is_some_and(|a| a.contains(text)) && r["outcome"] == outcome
        })
    };
    assert!(
        with("AddKvpItems on Msvm_VirtualSystemManagementService", "ok"),
        "{invokes:#?}"
    );
    assert!(with("keys: color", "ok"), "{invokes:#?}");
    assert!(with("ModifyResourceSettings", "ok"), "{invokes:#?}");
    assert!(
        invokes.iter().any(|r| r["outcome"] == "failed"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("exceeds the 512-byte limit"))),
        "{invokes:#?}"
    );
}

#[test]
fn hyper_v_scripts_walk_each_vms_settings_to_its_components_and_services_and_back() {
    if !have_pywbem("settings") {
        return;
    }
    let w = Wbem::start("viewer");
    let d = &w.daemon;
    d.add_unreachable_vm("gone");
    // An item of the host's pool, through the CLI and the JSON API.
    d.ok(&["kvp", "set", "web1", "color", "blue"]);
    let out = w.script("wbem_settings.py", &["walk", "web1", "gone"]);
    assert!(out.contains("settings ok"), "{out}");
    // EnabledState follows the VM's enablement: a service turned off, the
    // interface switched off, its default policy changed.
    let line = |out: &str, class: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{class}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {class} in {out}"))
    };
    let before = w.script("wbem_settings.py", &["state", "web1"]);
    let kvp = "Msvm_KvpExchangeComponentSettingData";
    let gsi = "Msvm_GuestServiceInterfaceComponentSettingData";
    assert_eq!(line(&before, gsi), "2", "{before}");
    let vss = "Msvm_VssComponentSettingData";
    d.ok(&["service", "disable", "kvp", "--vm", "web1"]);
    let after = w.script("wbem_settings.py", &["state", "web1"]);
    assert_eq!(line(&after, kvp), "3", "{after}");
    assert_eq!(
        line(&after, vss),
        line(&before, vss),
        "the others keep theirs"
    );
    d.ok(&["vm", "set", "web1", "--interface", "disabled"]);
    d.ok(&["vm", "set", "web1", "--default-policy", "disabled"]);
    let after = w.script("wbem_settings.py", &["state", "web1"]);
    assert_eq!(line(&after, gsi), "3", "{after}");
    assert_eq!(line(&after, "DefaultEnabledStatePolicy"), "3", "{after}");
}

#[test]
fn the_wbem_listener_serves_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(util::bin("guestcommd"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--api")
        .arg(format!("unix://{}", dir.path().join("api.sock").display()))
        .args(["--wbem", "tcp://0.0.0.0:5988"])
        .env("GUESTCOMM_LOG", "warn")
        .output()
        .expect("run guestcommd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loopback only"), "{err}");
}

#[test]
fn guestcomm_cim_reads_and_changes_the_model_over_the_api_socket() {
    let d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let services = d.json(&["cim", "enumerate", "Msvm_GuestCommunicationService"]);
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 9);
    assert!(services
        .iter()
        .all(|s| s["properties"]["SystemCreationClassName"] == "Msvm_ComputerSystem"));
    let names = d.ok(&[
        "cim",
        "enumerate",
        "Msvm_GuestServiceInterfaceComponent",
        "--names",
    ]);
    let component = names.trim();
    assert!(
        component.starts_with("Msvm_GuestServiceInterfaceComponent."),
        "{component}"
    );
    let linked = d.ok(&[
        "cim",
        "associators",
        component,
        "--assoc-class",
        "Msvm_RegisteredGuestService",
        "--result-class",
        "Msvm_GuestFileService",
        "--names",
    ]);
    assert_eq!(linked.lines().count(), 1, "{linked}");
    let query =
        format!("SELECT Name FROM Msvm_GuestCommunicationService WHERE Name = '{EXEC_GUID}'");
    let exec = d.ok(&["cim", "query", &query]);
    let exec_path = exec.lines().next().unwrap().to_string();
    assert!(exec_path.contains(EXEC_GUID), "{exec}");
    let out = d.ok(&[
        "cim",
        "invoke",
        &exec_path,
        "RequestStateChange",
        "RequestedState=3",
    ]);
    assert_eq!(out.trim(), "ReturnValue = 0");
    let got = d.json(&["cim", "get", &exec_path]);
    assert_eq!(got[0]["properties"]["EnabledState"], 3, "{got}");
    assert_eq!(
        d.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(126)
    );
    // A state a guest service does not take (32775) is printed and exits 1.
    let out = d.run(&[
        "cim",
        "invoke",
        &exec_path,
        "RequestStateChange",
        "RequestedState=4",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ReturnValue = 32775"
    );
    d.ok(&[
        "cim",
        "invoke",
        &exec_path,
        "RequestStateChange",
        "RequestedState=2",
    ]);
    assert_eq!(
        d.run(&["exec", "web1", "--", "true"]).status.code(),
        Some(0)
    );
    for (args, expected) in [
        (
            vec!["cim", "enumerate", "Nope"],
            "CIM_ERR_INVALID_CLASS: no class Nope",
        ),
        (
            vec!["cim", "query", "SELECT * FROM"],
            "CIM_ERR_INVALID_QUERY",
        ),
        (
            vec![
                "cim",
                "get",
                "Msvm_ComputerSystem.Name=\"x\",CreationClassName=\"Msvm_ComputerSystem\"",
            ],
            "CIM_ERR_NOT_FOUND",
        ),
        (vec!["cim", "get", "not a path"], "is not an instance path"),
    ] {
        let out = d.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}
