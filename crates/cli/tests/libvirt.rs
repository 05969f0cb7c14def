//! `guestcommd --libvirt` against a real libvirtd: the test starts Debian's
//! libvirtd itself, as a session daemon of a throw-away user with its
//! runtime, configuration and cache under the test's temporary directory
//! (no systemd, nothing shared with a system libvirtd), defines TCG
//! domains (`type='qemu'`, no disk, no vsock device: the guestcomm
//! endpoint is declared in the domain's metadata) and follows the VM
//! inventory through `virsh` define, start, suspend, resume, destroy,
//! domrename, metadata, undefine and a restart of libvirtd; name clashes
//! with VMs added by hand; the key's fwcfg entry the daemon adds to a new
//! domain's definition (`--libvirt-key-dir`), once; and an outage logged
//! once. Skipped (SKIPPED on stderr) without
//! libvirt or a guestcommd built with the `libvirt` feature; a failure
//! when GUESTCOMM_LIBVIRT_REQUIRED is set (CI, after installing libvirt).

#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::daemon::Daemon;
use util::libvirtd::{listed, wait_for_status, Libvirtd, LIBVIRTD, VIRSH};
use util::{bin, wait_until, STARTUP_DEADLINE};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const METADATA_NAMESPACE: &str = "https://guestcomm.dev/xmlns/libvirt/1";

/// Says SKIPPED with `why`, or fails when libvirt is required.
fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("GUESTCOMM_LIBVIRT_REQUIRED").is_none(),
        "{test}: {why}"
    );
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}

/// Whether libvirt, QEMU and a guestcommd with the feature are here.
fn libvirt_ready(test: &str) -> bool {
    for tool in [LIBVIRTD, QEMU, VIRSH] {
        if !Path::new(tool).exists() {
            skip(test, &format!("no {tool} (apt-get install libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)"));
            return false;
        }
    }
    let probe = Command::new(bin("guestcommd"))
        // A state directory that cannot be made: a build with the feature
        // fails there, one without it before.
        .args(["--state", "/dev/null/state", "--libvirt", "test:///default"])
        .args(["--api", "unix:///dev/null/api.sock"])
        .stdin(Stdio::null())
        .output()
        .expect("run guestcommd");
    let stderr = String::from_utf8_lossy(&probe.stderr);
    if stderr.contains("built without libvirt") {
        skip(
            test,
            "guestcommd was built without the libvirt feature (cargo build --features guestcommd/libvirt)",
        );
        return false;
    }
    true
}

/// Defines domain `name`, with the guestcomm metadata endpoint
/// `endpoint` if given, from a file in the test's directory.
fn define(libvirt: &Libvirtd, name: &str, endpoint: Option<&str>) {
    let path = domain_file(libvirt, name, endpoint, "");
    libvirt.ok(&["define", &path]);
}

/// Writes the XML of domain `name` (with `extra` as children of
/// `<domain>`) into the test's directory; returns its path.
fn domain_file(libvirt: &Libvirtd, name: &str, endpoint: Option<&str>, extra: &str) -> String {
    let metadata = match endpoint {
        Some(endpoint) => format!(
            "<metadata>
<guestcomm:agent xmlns:guestcomm='{METADATA_NAMESPACE}' endpoint='{endpoint}'/>
  </metadata>"
        ),
        None => String::new(),
    };
    let xml = format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  {metadata}
  {extra}
  <devices>
<emulator>{QEMU}</emulator>
<video><model type='none'/></video>
<memballoon model='none'/>
  </devices>
</domain>"
    );
    let path = libvirt.dir.join(format!("{name}.xml"));
    std::fs::write(&path, xml).unwrap();
    path.display().to_string()
}

/// A directory for the daemon's key files: root's, the test user's
/// group (QEMU's here), mode 0750.
fn key_dir(libvirt: &Libvirtd) -> PathBuf {
    let dir = libvirt.dir.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(libvirt.user.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    dir
}

/// VM `name`'s key (`vm credentials --guest-file`, an audited read).
fn key_of(d: &Daemon, name: &str, tag: &str) -> Vec<u8> {
    let path = d.dir.path().join(format!("{name}.{tag}.key"));
    d.ok(&[
        "vm",
        "credentials",
        name,
        "--guest-file",
        path.to_str().unwrap(),
    ]);
    std::fs::read(path).unwrap()
}

#[test]
fn the_inventory_follows_libvirts_domains_through_their_lifecycle_and_a_libvirtd_restart() {
    let test = "libvirt inventory";
    if !libvirt_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mut libvirt) = Libvirtd::start(dir.path(), "lv") else {
        return skip(test, "a session libvirtd needs a test user (root, useradd)");
    };
    let d = Daemon::start_logging_with("200ms", &["--libvirt", &libvirt.uri()]);
    let name = format!("gclv{}", std::process::id());
    let endpoint = format!(
        "hvsock-uds://{}/{name}.vsock?port=18243",
        dir.path().display()
    );

    // Defined: the VM appears, its id the domain's UUID, off.
    define(&libvirt, &name, Some(&endpoint));
    let uuid = libvirt.ok(&["domuuid", &name]);
    let vm = wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);
    assert_eq!(vm["id"], uuid.as_str(), "{vm:#?}");
    assert_eq!(vm["endpoint"], endpoint.as_str());
    assert_eq!(vm["authenticated"], true, "a key made as vm add makes one");
    let key = key_of(&d, &name, "before");

    // A VM added by hand with the domain's name: refused, the error (to the
    // caller, and in the audit log) naming the domain; its VM untouched.
    let out = d.run(&[
        "vm",
        "add",
        &name,
        "--endpoint",
        "unix:///nonexistent/agent.sock",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let clash = format!(
        "it follows libvirt domain \"{name}\" ({uuid}) of {}",
        libvirt.uri()
    );
    assert!(!out.status.success() && stderr.contains(&clash), "{stderr}");
    let same = listed(&d, &name).unwrap();
    assert_eq!(
        (&same["id"], &same["endpoint"]),
        (&vm["id"], &vm["endpoint"])
    );
    assert_eq!(key_of(&d, &name, "clash"), key, "the same key");
    let records = d.audit_settled(&["--vm", &name]);
    assert!(
        records.iter().any(|r| r["operation"] == "vm.add"
            && r["outcome"] == "failed"
            && r["error"].as_str().is_some_and(|e| e.contains(&clash))),
        "{records:#?}"
    );

    // Started: probed again (no agent behind the endpoint: No Contact).
    libvirt.ok(&["start", &name]);
    wait_for_status(&d, &name, "No Contact", STARTUP_DEADLINE);
    libvirt.ok(&["suspend", &name]);
    wait_for_status(&d, &name, "Paused", STARTUP_DEADLINE);

    // libvirtd goes away and comes back: the daemon reconnects, reads every
    // domain again and follows the events again; nothing was lost.
    libvirt.stop();
    assert!(
        wait_until(STARTUP_DEADLINE, || d
            .log()
            .contains("the connection to libvirt closed")),
        "the daemon did not see libvirtd go: {}",
        d.log()
    );
    libvirt.spawn();
    // Defined as soon as libvirtd is back, maybe before the daemon is: the
    // full read at reconnection finds it, else its event does.
    let late = format!("gclvlate{}", std::process::id());
    let late_endpoint = format!("unix://{}/{late}.sock", dir.path().display());
    define(&libvirt, &late, Some(&late_endpoint));
    assert!(
        wait_until(STARTUP_DEADLINE, || d
            .log()
            .matches("following libvirt's domains")
            .count()
            >= 2),
        "the daemon did not reconnect: {}",
        d.log()
    );
    let vm = wait_for_status(&d, &late, "Off", STARTUP_DEADLINE);
    assert_eq!(vm["id"], libvirt.ok(&["domuuid", &late]).as_str());
    // The outage was logged once, by its close.
    assert_eq!(
        d.log().matches("the connection to libvirt closed").count(),
        1
    );
    assert!(
        !d.log().contains("cannot connect to libvirt"),
        "{}",
        d.log()
    );
    let vm = wait_for_status(&d, &name, "Paused", STARTUP_DEADLINE);
    assert_eq!(vm["id"], uuid.as_str());
    assert_eq!(key_of(&d, &name, "after"), key, "the same key");
    libvirt.ok(&["resume", &name]);
    wait_for_status(&d, &name, "No Contact", STARTUP_DEADLINE);
    libvirt.ok(&["destroy", &name]);
    wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);

    // A domain defined after the restart: events still come.
    let after = format!("gclvafter{}", std::process::id());
    define(
        &libvirt,
        &after,
        Some(&format!("unix://{}/{after}.sock", dir.path().display())),
    );
    wait_for_status(&d, &after, "Off", STARTUP_DEADLINE);
    libvirt.ok(&["undefine", &after]);
    libvirt.ok(&["undefine", &late]);
    assert!(
        wait_until(STARTUP_DEADLINE, || listed(&d, &after).is_none()
            && listed(&d, &late).is_none()),
        "undefined after the restart, still listed"
    );

    // Renamed (libvirt renames only inactive domains): the same VM, its key
    // kept, under the new name.
    let old_name = name;
    let name = format!("{old_name}r");
    libvirt.ok(&["domrename", &old_name, &name]);
    let vm = wait_for_status(&d, &name, "Off", STARTUP_DEADLINE);
    assert_eq!(vm["id"], uuid.as_str());
    assert!(listed(&d, &old_name).is_none());
    assert_eq!(key_of(&d, &name, "renamed"), key, "the same key");

    // A domain without guestcomm metadata is no VM until the element is set.
    let plain = format!("gclvplain{}", std::process::id());
    define(&libvirt, &plain, None);
    let plain_endpoint = format!("unix://{}/{plain}.sock", dir.path().display());
    libvirt.ok(&[
        "metadata",
        &plain,
        METADATA_NAMESPACE,
        "--key",
        "guestcomm",
        "--set",
        &format!("<agent endpoint='{plain_endpoint}'/>"),
        "--config",
    ]);
    let vm = wait_for_status(&d, &plain, "Off", STARTUP_DEADLINE);
    assert_eq!(vm["endpoint"], plain_endpoint.as_str());
    assert_eq!(vm["id"], libvirt.ok(&["domuuid", &plain]).as_str());
    libvirt.ok(&["undefine", &plain]);

    // A VM added by hand with a domain's name is left alone, and the log
    // names both.
    let hand = format!("gclvhand{}", std::process::id());
    d.ok(&[
        "vm",
        "add",
        &hand,
        "--endpoint",
        "unix:///nonexistent/agent.sock",
    ]);
    let before = listed(&d, &hand).unwrap();
    define(&libvirt, &hand, Some(&endpoint));
    let hand_uuid = libvirt.ok(&["domuuid", &hand]);
    let clash = format!(
        "libvirt domain \"{hand}\" ({hand_uuid}) is not followed: VM \"{hand}\" ({}) was added by hand",
        before["id"].as_str().unwrap()
    );
    assert!(
        wait_until(STARTUP_DEADLINE, || d.log().contains(&clash)),
        "no {clash:?} in the log: {}",
        d.log()
    );
    let after = listed(&d, &hand).unwrap();
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["endpoint"], "unix:///nonexistent/agent.sock");
    libvirt.ok(&["undefine", &hand]);

    // Undefined: the VM goes, its audit records stay.
    libvirt.ok(&["undefine", &name]);
    assert!(
        wait_until(STARTUP_DEADLINE, || listed(&d, &name).is_none()),
        "VM {name} stayed after its domain was undefined"
    );
    let records = d.audit_settled(&["--vm", &old_name]);
    assert!(
        records.iter().any(|r| r["vm"] == old_name.as_str()),
        "the audit records of {old_name} went with it: {records:#?}"
    );
    assert!(listed(&d, &plain).is_none());
    assert!(listed(&d, &hand).is_some(), "the hand-made VM stays");
    drop(d);
    drop(libvirt);
}

#[test]
fn without_a_libvirtd_the_daemon_serves_and_keeps_trying_logging_once() {
    let test = "libvirt reconnect";
    if !libvirt_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hangs-up");
    // Something that accepts and hangs up at once, counting the attempts.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let uri = format!("qemu:///session?socket={}", socket.display());
    let d = Daemon::start_logging_with("off", &["--libvirt", &uri]);
    let mut attempts = 0;
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            while let Ok((conn, _)) = listener.accept() {
                drop(conn);
                attempts += 1;
            }
            attempts >= 3
        }),
        "{attempts} attempts: {}",
        d.log()
    );
    // The API serves meanwhile.
    assert_eq!(d.json(&["vm", "list"]), serde_json::json!([]));
    // Attempts go on, logged once.
    assert!(
        wait_until(STARTUP_DEADLINE, || d
            .log()
            .contains("cannot connect to libvirt")),
        "{}",
        d.log()
    );
    assert_eq!(
        d.log().matches("cannot connect to libvirt").count(),
        1,
        "{}",
        d.log()
    );
}

const FW_CFG_CREDENTIAL: &str = "opt/io.systemd.credentials/guestcomm.key";

/// The `file=` of the key's fwcfg entry in `xml`, if it has the entry.
fn credential_file(xml: &str) -> Option<String> {
    let entry = &xml[xml.find(&format!("name='{FW_CFG_CREDENTIAL}'"))?..];
    let file = &entry[entry.find("file='")? + "file='".len()..];
    Some(file[..file.find('\'')?].to_string())
}

/// VM `name`'s `domain_key` (vm show --json), once it is `want`. The VM
/// may not be registered yet when the wait starts (the daemon learns of a
/// defined domain from libvirt's event, a moment later): until it is,
/// `vm show` fails, and that is "not yet".
fn wait_for_domain_key(d: &Daemon, name: &str, want: &str) {
    let mut last = serde_json::Value::Null;
    let reached = wait_until(STARTUP_DEADLINE, || {
        let out = d.run(&["vm", "show", name, "--json"]);
        last = if out.status.success() {
            serde_json::from_slice(&out.stdout).expect("JSON output")
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned().into()
        };
        last["domain_key"] == want
    });
    assert!(
        reached,
        "VM {name}'s domain_key never became {want:?}: {last:#?}\n{}",
        d.log()
    );
}

#[test]
fn a_new_domain_gets_its_vms_key_in_its_definition_once() {
    let test = "libvirt keys";
    if !libvirt_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(libvirt) = Libvirtd::start(dir.path(), "lk") else {
        return skip(test, "a session libvirtd needs a test user (root, useradd)");
    };
    let keys = key_dir(&libvirt);
    let keys_arg = keys.display().to_string();
    let mut d = Daemon::start_logging_with(
        "200ms",
        &["--libvirt", &libvirt.uri(), "--libvirt-key-dir", &keys_arg],
    );
    let name = format!("gclvkey{}", std::process::id());
    // A vsock endpoint: its VM gets a key (a Unix socket's gets none).
    let endpoint = |tag: &str| {
        format!(
            "hvsock-uds://{}/{name}{tag}.vsock?port=18243",
            dir.path().display()
        )
    };
    // Something of everything the redefinition must keep.
    let extra = "<description>kept as it was</description>\
                 <sysinfo type='smbios'><oemStrings><entry>kept-oem</entry></oemStrings></sysinfo>";
    let path = domain_file(&libvirt, &name, Some(&endpoint("")), extra);
    libvirt.ok(&["define", &path]);

    // The definition gets the entry, naming a file with the VM's key
    // (the same text `vm credentials --guest-file` writes), group QEMU's.
    let mut inactive = String::new();
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            inactive = libvirt.ok(&["dumpxml", "--inactive", &name]);
            credential_file(&inactive).is_some()
        }),
        "no key entry in the definition: {inactive}\n{}",
        d.log()
    );
    let file = credential_file(&inactive).unwrap();
    let uuid = libvirt.ok(&["domuuid", &name]);
    assert_eq!(file, keys.join(format!("{uuid}.key")).display().to_string());
    assert_eq!(std::fs::read(&file).unwrap(), key_of(&d, &name, "fwcfg"));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), libvirt.user.gid);
    for kept in [
        "kept as it was",
        "kept-oem",
        METADATA_NAMESPACE,
        &endpoint(""),
    ] {
        assert!(inactive.contains(kept), "{kept:?} lost: {inactive}");
    }
    wait_for_domain_key(&d, &name, "at-next-start");
    let shown = d.ok(&["vm", "show", &name]);
    assert!(shown.contains("Domain key: at-next-start"), "{shown}");

    // Started, QEMU reads the file: the running domain carries the key.
    libvirt.ok(&["start", &name]);
    wait_for_domain_key(&d, &name, "in-running-domain");

    // The daemon's own acts are audited, with no caller.
    let records = d.audit_settled(&["--vm", &name]);
    for operation in ["libvirt.vm.add", "libvirt.key"] {
        let found: Vec<_> = records
            .iter()
            .filter(|r| r["operation"] == operation)
            .collect();
        assert_eq!(found.len(), 1, "{operation}: {records:#?}");
        assert!(found[0]["uid"].is_null(), "{:#?}", found[0]);
        assert_eq!(found[0]["outcome"], "ok");
    }

    // A second start of the daemon adds nothing again.
    d.kill9_and_restart();
    wait_for_domain_key(&d, &name, "in-running-domain");
    let again = libvirt.ok(&["dumpxml", "--inactive", &name]);
    assert_eq!(again.matches(FW_CFG_CREDENTIAL).count(), 1, "{again}");
    assert_eq!(credential_file(&again).unwrap(), file);
    let records = d.audit_settled(&["--vm", &name]);
    let inserted = records.iter().filter(|r| r["operation"] == "libvirt.key");
    assert_eq!(inserted.count(), 1, "{records:#?}");

    // A domain that has the entry keeps it, and its VM takes its key.
    let own = dir.path().join("own.key");
    let own_text =
        "{\"method\":\"psk-hmac-sha256\",\"key\":\"".to_string() + &"5a".repeat(32) + "\"}\n";
    std::fs::write(&own, &own_text).unwrap();
    let owned = format!("{name}own");
    let entry = format!(
        "<sysinfo type='fwcfg'><entry name='{FW_CFG_CREDENTIAL}' file='{}'/></sysinfo>",
        own.display()
    );
    let path = domain_file(&libvirt, &owned, Some(&endpoint("own")), &entry);
    libvirt.ok(&["define", &path]);
    wait_for_domain_key(&d, &owned, "at-next-start");
    let xml = libvirt.ok(&["dumpxml", "--inactive", &owned]);
    assert_eq!(credential_file(&xml).unwrap(), own.display().to_string());
    assert_eq!(key_of(&d, &owned, "own"), own_text.as_bytes());

    // A transient domain is never changed.
    let transient = format!("{name}tr");
    let path = domain_file(&libvirt, &transient, Some(&endpoint("tr")), "");
    libvirt.ok(&["create", &path]);
    wait_for_domain_key(&d, &transient, "not-in-domain");
    let xml = libvirt.ok(&["dumpxml", &transient]);
    assert!(credential_file(&xml).is_none(), "{xml}");
    assert!(d
        .log()
        .contains("a transient libvirt domain is never changed"));

    // Undefined, the domain's key file goes (QEMU read it at start; a
    // domain defined again gets a new key), audited; the domain's own
    // file, named in its own entry, is never touched.
    libvirt.ok(&["destroy", &name]);
    libvirt.ok(&["undefine", &name]);
    assert!(
        wait_until(STARTUP_DEADLINE, || !Path::new(&file).exists()),
        "{file} left after undefine\n{}",
        d.log()
    );
    let records = d.audit_settled(&["--vm", &name]);
    let keyed: Vec<_> = records
        .iter()
        .filter(|r| r["operation"] == "libvirt.key")
        .collect();
    assert_eq!(keyed.len(), 2, "{records:#?}");
    assert!(
        keyed.iter().any(
            |r| r["outcome"] == "ok" && r["arguments"].to_string().contains("key file removed")
        ),
        "{keyed:#?}"
    );
    libvirt.ok(&["undefine", &owned]);
    assert!(wait_until(STARTUP_DEADLINE, || listed(&d, &owned).is_none()));
    assert!(own.exists(), "the domain's own key file is the operator's");
    drop(d);
    drop(libvirt);
}

/// A key that could not be delivered (here: the key directory not there
/// yet, a regular file in its place) is delivered once it can be, without
/// another event from libvirt; the failure is logged and audited once.
#[test]
fn a_failed_key_delivery_is_tried_again_until_it_works() {
    let test = "libvirt key retry";
    if !libvirt_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(libvirt) = Libvirtd::start(dir.path(), "lr") else {
        return skip(test, "a session libvirtd needs a test user (root, useradd)");
    };
    let keys = libvirt.dir.join("keys");
    std::fs::write(&keys, "not a directory").unwrap();
    let keys_arg = keys.display().to_string();
    let d = Daemon::start_logging_with(
        "200ms",
        &["--libvirt", &libvirt.uri(), "--libvirt-key-dir", &keys_arg],
    );
    let name = format!("gclvretry{}", std::process::id());
    let endpoint = format!(
        "hvsock-uds://{}/{name}.vsock?port=18243",
        dir.path().display()
    );
    let path = domain_file(&libvirt, &name, Some(&endpoint), "");
    libvirt.ok(&["define", &path]);

    // The first attempt fails: audited as failed, the domain unchanged.
    let mut records = Vec::new();
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            records = d.audit_settled(&["--vm", &name]);
            records.iter().any(|r| r["operation"] == "libvirt.key")
        }),
        "no libvirt.key record: {records:#?}\n{}",
        d.log()
    );
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r["operation"] == "libvirt.key")
        .collect();
    assert_eq!(failed[0]["outcome"], "failed", "{failed:#?}");
    assert!(
        failed[0]["error"]
            .to_string()
            .contains("is not a directory"),
        "{failed:#?}"
    );
    wait_for_domain_key(&d, &name, "not-in-domain");
    assert!(credential_file(&libvirt.ok(&["dumpxml", "--inactive", &name])).is_none());

    // The directory appears: the next idle check delivers the key.
    std::fs::remove_file(&keys).unwrap();
    let keys = key_dir(&libvirt);
    wait_for_domain_key(&d, &name, "at-next-start");
    let inactive = libvirt.ok(&["dumpxml", "--inactive", &name]);
    let uuid = libvirt.ok(&["domuuid", &name]);
    let file = keys.join(format!("{uuid}.key"));
    assert_eq!(
        credential_file(&inactive).unwrap(),
        file.display().to_string()
    );
    assert_eq!(std::fs::read(&file).unwrap(), key_of(&d, &name, "retry"));
    let records = d.audit_settled(&["--vm", &name]);
    let outcomes: Vec<_> = records
        .iter()
        .filter(|r| r["operation"] == "libvirt.key")
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["failed", "ok"], "{records:#?}");
    let log = d.log();
    assert_eq!(
        log.matches("cannot give the libvirt domain its VM's key")
            .count(),
        1,
        "{log}"
    );
    drop(d);
    drop(libvirt);
}
