//! The QEMU guest agent protocol of `guestcomm-agent --qga`, driven over a
//! Unix socket as libvirt drives qemu-ga's channel: resynchronisation, the
//! commands libvirt calls with qemu-ga's answer shapes (guest-get-disks,
//! guest-fstrim and guest-get-load among them), guest-exec and
//! guest-file-*, the guest policy, bad input, and the native protocol
//! still serving beside it. Nothing on this machine is frozen, set or
//! powered off (simulated freezer and clock, an injected shutdown command).

#![allow(clippy::unwrap_used)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use util::{wait_until, Agent};

/// Generous: only a bound on how long a broken test hangs.
const DEADLINE: Duration = Duration::from_secs(60);

/// A QGA client on one connection.
struct Qga {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qga {
    fn connect(socket: &Path) -> Self {
        assert!(
            wait_until(DEADLINE, || UnixStream::connect(socket).is_ok()),
            "the QGA socket never answered"
        );
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Qga {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next reply line, without a leading 0xFF (returned apart).
    fn reply(&mut self) -> (bool, Value) {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\n"), "no whole reply: {line:?}");
        let delimited = line.first() == Some(&0xFF);
        let body = if delimited { &line[1..] } else { &line[..] };
        (delimited, serde_json::from_slice(body).unwrap())
    }

    fn call(&mut self, request: Value) -> Value {
        self.send_raw(format!("{request}\n").as_bytes());
        self.reply().1
    }

    fn ok(&mut self, request: Value) -> Value {
        let reply = self.call(request.clone());
        reply
            .get("return")
            .cloned()
            .unwrap_or_else(|| panic!("{request} failed: {reply}"))
    }

    fn error(&mut self, request: Value) -> (String, String) {
        let reply = self.call(request.clone());
        let error = reply
            .get("error")
            .unwrap_or_else(|| panic!("{request} succeeded: {reply}"));
        (
            error["class"].as_str().unwrap().to_string(),
            error["desc"].as_str().unwrap().to_string(),
        )
    }
}

/// An agent serving QGA on a socket in `dir`, with a simulated freezer and clock.
fn qga_agent(dir: &Path, extra: &[&str]) -> (Agent, PathBuf) {
    let socket = dir.join(format!("qga-{}.sock", extra.len()));
    let channel = format!("unix://{}", socket.display());
    let mut args = vec![
        "--qga",
        channel.as_str(),
        "--simulate-fsfreeze",
        "--simulated-clock-offset",
        "0",
    ];
    args.extend_from_slice(extra);
    (Agent::start_with(&args), socket)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn libvirts_agent_calls_get_qemu_ga_shaped_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, socket) = qga_agent(dir.path(), &[]);
    let mut q = Qga::connect(&socket);
    // QGA runs anything as root and has no authentication: root's socket only.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // libvirt's opening: 0xFF, then guest-sync-delimited; a stale half
    // request before the 0xFF is thrown away.
    q.send_raw(b"{\"execute\": \"guest-ping\", \"argu\xff");
    q.send_raw(b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":123456}}\n");
    let (delimited, reply) = q.reply();
    assert!(delimited);
    assert_eq!(reply, json!({"return": 123456}));
    assert_eq!(
        q.call(json!({"execute": "guest-sync", "arguments": {"id": 9}, "id": "req-1"})),
        json!({"return": 9, "id": "req-1"})
    );
    assert_eq!(q.ok(json!({"execute": "guest-ping"})), json!({}));

    let info = q.ok(json!({"execute": "guest-info"}));
    assert!(info["version"].is_string());
    let commands = info["supported_commands"].as_array().unwrap();
    for name in ["guest-exec", "guest-fsfreeze-freeze", "guest-get-osinfo"] {
        let c = commands.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["enabled"], true, "{c}");
    }
    let shutdown = commands
        .iter()
        .find(|c| c["name"] == "guest-shutdown")
        .unwrap();
    assert_eq!(shutdown["success-response"], false);

    let os = q.ok(json!({"execute": "guest-get-osinfo"}));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(os["kernel-release"], release.trim());
    assert!(os["id"].is_string() && os["machine"].is_string(), "{os}");

    let host = q.ok(json!({"execute": "guest-get-host-name"}));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host["host-name"], hostname.trim());

    let interfaces = q.ok(json!({"execute": "guest-network-get-interfaces"}));
    let lo = interfaces
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .unwrap();
    assert!(
        lo["ip-addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8})),
        "{lo}"
    );

    let vcpus = q.ok(json!({"execute": "guest-get-vcpus"}));
    let online = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_str().unwrap();
            name.starts_with("cpu") && name[3..].parse::<u32>().is_ok()
        })
        .count();
    assert_eq!(vcpus.as_array().unwrap().len(), online, "{vcpus}");
    assert_eq!(vcpus[0]["logical-id"], 0);

    // guest-get-load (QEMU 10's GuestLoadAverage: load1, load5, load15,
    // numbers): /proc/loadavg's first three fields, read around the call
    // until they did not change meanwhile.
    let loadavg = || -> Value {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .map(|f| f.parse().unwrap())
            .collect();
        json!({"load1": v[0], "load5": v[1], "load15": v[2]})
    };
    let mut load = Value::Null;
    assert!(
        wait_until(DEADLINE, || {
            let before = loadavg();
            load = q.ok(json!({"execute": "guest-get-load"}));
            before == loadavg() && load == before
        }),
        "{load} against {}",
        loadavg()
    );
    assert!(
        load.as_object().unwrap().values().all(Value::is_f64),
        "{load}"
    );

    // guest-get-disks: every sized block device of /sys/block, a disk.
    let disks = q.ok(json!({"execute": "guest-get-disks"}));
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = std::fs::read_to_string(entry.path().join("size")).unwrap();
        let found = disks
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == format!("/dev/{name}"));
        if size.trim() == "0" {
            assert!(found.is_none(), "{disks}");
        } else {
            assert_eq!(found.unwrap()["partition"], false, "{disks}");
        }
    }

    // Time: the agent's simulated clock is stepped, never this machine's.
    let later = q.ok(json!({"execute": "guest-get-time"})).as_i64().unwrap() + 3_600_000_000_000;
    assert_eq!(
        q.ok(json!({"execute": "guest-set-time", "arguments": {"time": later}})),
        json!({})
    );
    assert!(q.ok(json!({"execute": "guest-get-time"})).as_i64().unwrap() >= later);

    // Freeze (simulated): status, freeze, thaw, as libvirt's domfsfreeze does.
    assert_eq!(q.ok(json!({"execute": "guest-fsfreeze-status"})), "thawed");
    let frozen = q.ok(json!({"execute": "guest-fsfreeze-freeze"}));
    assert!(frozen.as_u64().unwrap() >= 1, "{frozen}");
    assert_eq!(q.ok(json!({"execute": "guest-fsfreeze-status"})), "frozen");
    // No trim while frozen (it would wait for the thaw).
    let refused = q.call(json!({"execute": "guest-fstrim"}));
    assert_eq!(refused["error"]["class"], "GenericError", "{refused}");
    assert!(
        refused["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("frozen"),
        "{refused}"
    );
    assert_eq!(q.ok(json!({"execute": "guest-fsfreeze-thaw"})), frozen);
    assert_eq!(q.ok(json!({"execute": "guest-fsfreeze-status"})), "thawed");
}

/// Waits for guest-exec's `pid` to exit and returns its status.
fn exec_status(q: &mut Qga, pid: &Value) -> Value {
    let mut status = Value::Null;
    let exited = wait_until(DEADLINE, || {
        status = q.ok(json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}));
        status["exited"] == true
    });
    assert!(exited, "{status}");
    status
}

#[test]
fn guest_exec_and_guest_files_work_and_the_guest_policy_applies_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, socket) = qga_agent(dir.path(), &[]);
    let mut q = Qga::connect(&socket);
    let started = q.ok(json!({"execute": "guest-exec", "arguments": {
        "path": "sh",
        "arg": ["-c", "read line; echo \"got $line\"; echo oops >&2; exit 3"],
        "input-data": b64(b"hello\n"),
        "capture-output": true,
    }}));
    let status = exec_status(&mut q, &started["pid"]);
    assert_eq!(status["exitcode"], 3, "{status}");
    let out = base64::engine::general_purpose::STANDARD
        .decode(status["out-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(out, b"got hello\n");
    assert_eq!(status["err-data"], json!(b64(b"oops\n")), "{status}");
    // Collected once: the pid is gone after.
    let (class, _) =
        q.error(json!({"execute": "guest-exec-status", "arguments": {"pid": started["pid"]}}));
    assert_eq!(class, "GenericError");
    let (_, desc) =
        q.error(json!({"execute": "guest-exec", "arguments": {"path": "/nonexistent/program"}}));
    assert!(desc.contains("/nonexistent/program"), "{desc}");

    let path = dir.path().join("f.txt");
    let handle =
        q.ok(json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "w+"}}));
    let wrote = q.ok(json!({"execute": "guest-file-write", "arguments": {"handle": handle, "buf-b64": b64(b"0123456789")}}));
    assert_eq!(wrote, json!({"count": 10, "eof": false}));
    let seek = q.ok(json!({"execute": "guest-file-seek", "arguments": {"handle": handle, "offset": 4, "whence": "set"}}));
    assert_eq!(seek["position"], 4);
    let read =
        q.ok(json!({"execute": "guest-file-read", "arguments": {"handle": handle, "count": 100}}));
    assert_eq!(
        read,
        json!({"count": 6, "buf-b64": b64(b"456789"), "eof": true})
    );
    assert_eq!(
        q.ok(json!({"execute": "guest-file-flush", "arguments": {"handle": handle}})),
        json!({})
    );
    assert_eq!(
        q.ok(json!({"execute": "guest-file-close", "arguments": {"handle": handle}})),
        json!({})
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
    let (_, desc) = q.error(json!({"execute": "guest-file-read", "arguments": {"handle": handle}}));
    assert_eq!(desc, format!("handle '{handle}' has not been found"));

    // The guest owner's policy allows only uptime, and copies in /srv: QGA
    // is held to it too.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[exec]\nallow = [{ program = \"/usr/bin/uptime\" }]\n\
         [cp]\nto_guest = [\"/srv/in\"]\nfrom_guest = [\"/srv/out\"]\n",
    )
    .unwrap();
    let (_strict, strict_socket) = qga_agent(dir.path(), &["--policy", policy.to_str().unwrap()]);
    let mut strict = Qga::connect(&strict_socket);
    let (class, desc) = strict
        .error(json!({"execute": "guest-exec", "arguments": {"path": "sh", "arg": ["-c", "id"]}}));
    assert_eq!(class, "GenericError");
    assert!(desc.contains("guest policy"), "{desc}");
    let (_, desc) =
        strict.error(json!({"execute": "guest-file-open", "arguments": {"path": "/etc/shadow"}}));
    assert!(desc.contains("guest policy"), "{desc}");
}

#[test]
fn bad_input_gets_qemu_gas_errors_and_both_protocols_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, socket) = qga_agent(
        dir.path(),
        &["--qga-block-rpcs", "guest-exec,guest-file-open"],
    );
    let mut q = Qga::connect(&socket);
    q.send_raw(b"this is not json\n");
    let (_, garbage) = q.reply();
    assert_eq!(garbage["error"]["class"], "GenericError", "{garbage}");
    assert!(garbage["error"]["desc"]
        .as_str()
        .unwrap()
        .contains("JSON parse error"));
    let cases = [
        (
            json!({"execute": "guest-teleport"}),
            "CommandNotFound",
            "The command guest-teleport has not been found",
        ),
        (
            json!({"execute": "guest-exec", "arguments": {"path": "id"}}),
            "CommandNotFound",
            "The command guest-exec has been disabled for this instance",
        ),
        (
            json!({"execute": "guest-sync", "arguments": {"id": "x"}}),
            "GenericError",
            "Invalid parameter type for 'id', expected: integer",
        ),
        (
            json!({"execute": "guest-sync"}),
            "GenericError",
            "Parameter 'id' is missing",
        ),
        (
            json!({"execute": "guest-ping", "arguments": {"x": 1}}),
            "GenericError",
            "Parameter 'x' is unexpected",
        ),
        (
            json!({"arguments": {}}),
            "GenericError",
            "QMP input lacks member 'execute'",
        ),
        (
            json!({"execute": 5}),
            "GenericError",
            "QMP input member 'execute' must be a string",
        ),
        (
            json!([1, 2]),
            "GenericError",
            "QMP input must be a JSON object",
        ),
    ];
    for (request, class, desc) in cases {
        assert_eq!(
            q.error(request.clone()),
            (class.to_string(), desc.to_string()),
            "{request}"
        );
    }
    let info = q.ok(json!({"execute": "guest-info"}));
    let exec = info["supported_commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "guest-exec")
        .unwrap()
        .clone();
    assert_eq!(exec["enabled"], false);
    // A request over the size limit is refused whole; the channel goes on.
    let mut huge = br#"{"execute": "guest-ping", "arguments": {"pad": ""#.to_vec();
    huge.resize(17 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}}\n");
    q.send_raw(&huge);
    let (_, too_large) = q.reply();
    assert!(
        too_large["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{too_large}"
    );
    assert_eq!(q.ok(json!({"execute": "guest-ping"})), json!({}));
    // The native protocol serves beside it.
    let out = agent.exec_cmd(&[], &["echo", "native"]).output().unwrap();
    assert_eq!(out.stdout, b"native\n");
    // A client that goes away mid-request costs nothing.
    let mut gone = UnixStream::connect(&socket).unwrap();
    gone.write_all(b"{\"execute\": \"guest-pi").unwrap();
    drop(gone);
    let mut again = Qga::connect(&socket);
    assert_eq!(again.ok(json!({"execute": "guest-ping"})), json!({}));
}

#[test]
fn guest_shutdown_answers_nothing_and_runs_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (script, marker) = util::fake_shutdown_command(dir.path());
    let (_agent, socket) = qga_agent(
        dir.path(),
        &["--shutdown-command", script.to_str().unwrap()],
    );
    let mut q = Qga::connect(&socket);
    q.send_raw(b"{\"execute\": \"guest-shutdown\", \"arguments\": {\"mode\": \"reboot\"}}\n");
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&marker)
            .is_ok_and(|t| t.ends_with('\n'))),
        "the shutdown command never ran"
    );
    let args = std::fs::read_to_string(&marker).unwrap();
    assert!(args.starts_with("reboot graceful"), "{args}");
    // Nothing was answered to guest-shutdown: the next reply is the ping's.
    assert_eq!(q.ok(json!({"execute": "guest-ping"})), json!({}));
    let mut rest = [0u8; 1];
    q.writer.set_nonblocking(true).unwrap();
    assert!(
        q.reader.get_mut().read(&mut rest).is_err(),
        "an extra reply"
    );
}

/// Debian's qemu-ga (`scripts/fetch-qemu-ga`), or `None` after saying
/// SKIPPED (a failure when GUESTCOMM_QGA_REQUIRED is set, as in CI).
fn real_qemu_ga(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("GUESTCOMM_QEMU_GA")
        .map(PathBuf::from)
        .into_iter()
        .chain([util::bin_dir().join("../tools/qemu-ga/usr/sbin/qemu-ga")])
        .find(|p| p.is_file());
    if found.is_none() {
        let why = "no qemu-ga (scripts/fetch-qemu-ga; .ci/run does)";
        assert!(
            std::env::var_os("GUESTCOMM_QGA_REQUIRED").is_none(),
            "{test}: {why}"
        );
        eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    }
    found
}

/// qemu-ga on a Unix socket, killed by PID when dropped.
struct RealQemuGa {
    child: std::process::Child,
    socket: PathBuf,
}

impl RealQemuGa {
    fn start(binary: &Path, dir: &Path) -> Self {
        let socket = dir.join("real-qga.sock");
        let state = dir.join("real-qga-state");
        std::fs::create_dir(&state).unwrap();
        let child = std::process::Command::new(binary)
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        RealQemuGa { child, socket }
    }
}

impl Drop for RealQemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer with its volatile members (counters) taken out.
fn steady(mut answer: Value) -> Value {
    if let Some(list) = answer.as_array_mut() {
        for item in list {
            if let Some(stats) = item.get_mut("statistics") {
                *stats = json!("present");
            }
        }
    }
    answer
}

#[test]
fn read_only_answers_match_the_real_qemu_ga_field_by_field() {
    let test = "read_only_answers_match_the_real_qemu_ga_field_by_field";
    let Some(binary) = real_qemu_ga(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let real = RealQemuGa::start(&binary, dir.path());
    let (_agent, socket) = qga_agent(dir.path(), &[]);
    let (mut theirs, mut ours) = (Qga::connect(&real.socket), Qga::connect(&socket));

    // The same machine, asked the same: the same answer, member by member.
    for command in [
        "guest-get-osinfo",
        "guest-get-host-name",
        "guest-get-timezone",
        "guest-fsfreeze-status",
        "guest-ping",
    ] {
        let request = json!({"execute": command});
        assert_eq!(
            ours.call(request.clone()),
            theirs.call(request),
            "{command}"
        );
    }
    let by_id = |mut v: Value| {
        let list = v.as_array_mut().unwrap();
        list.sort_by_key(|c| c["logical-id"].as_u64());
        v
    };
    let request = json!({"execute": "guest-get-vcpus"});
    assert_eq!(by_id(ours.ok(request.clone())), by_id(theirs.ok(request)));
    let users = json!({"execute": "guest-get-users"});
    let names = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].clone())
            .collect()
    };
    assert_eq!(names(ours.ok(users.clone())), names(theirs.ok(users)));

    // Filesystems: the same, but for the bytes in use (tests write beside).
    let request = json!({"execute": "guest-get-fsinfo"});
    let by_mountpoint = |v: Value| -> Vec<Value> {
        let mut list: Vec<Value> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|fs| {
                let mut fs = fs.clone();
                let object = fs.as_object_mut().unwrap();
                object.remove("used-bytes");
                object.remove("total-bytes");
                fs
            })
            .collect();
        list.sort_by_key(|fs| fs["mountpoint"].to_string());
        list
    };
    assert_eq!(
        by_mountpoint(ours.ok(request.clone())),
        by_mountpoint(theirs.ok(request))
    );

    // Disks: the same, member by member.
    let request = json!({"execute": "guest-get-disks"});
    let by_name = |mut v: Value| {
        let list = v.as_array_mut().unwrap();
        list.sort_by_key(|d| d["name"].to_string());
        v
    };
    assert_eq!(
        by_name(ours.ok(request.clone())),
        by_name(theirs.ok(request))
    );

    // Trim (of free extents of 1 GiB or more: little to do): the same
    // filesystems, minimum and errors; the bytes trimmed are each run's.
    let request = json!({"execute": "guest-fstrim", "arguments": {"minimum": 1u64 << 30}});
    let trimmed = |v: Value| -> Vec<Value> {
        let mut paths: Vec<Value> = v["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if let Some(t) = p.get_mut("trimmed") {
                    assert!(t.is_u64(), "{t}");
                    *t = json!("present");
                }
                p
            })
            .collect();
        paths.sort_by_key(|p| p["path"].to_string());
        paths
    };
    assert_eq!(
        trimmed(ours.ok(request.clone())),
        trimmed(theirs.ok(request))
    );

    // Interfaces: the same names, addresses, prefixes and counters present.
    let request = json!({"execute": "guest-network-get-interfaces"});
    let (mine, real_ifaces) = (steady(ours.ok(request.clone())), steady(theirs.ok(request)));
    for theirs_iface in real_ifaces.as_array().unwrap() {
        let name = &theirs_iface["name"];
        let mine_iface = mine
            .as_array()
            .unwrap()
            .iter()
            .find(|i| &i["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {mine}"));
        assert_eq!(
            mine_iface["ip-addresses"], theirs_iface["ip-addresses"],
            "{name}"
        );
        assert_eq!(
            mine_iface["statistics"], theirs_iface["statistics"],
            "{name}"
        );
        // The loopback's too: all zeros.
        assert_eq!(
            mine_iface["hardware-address"], theirs_iface["hardware-address"],
            "{name}"
        );
    }

    // guest-exec-status: the same members and values, `out-truncated`
    // beside output (false), neither for a stream without output.
    for script in ["echo out; echo err >&2; exit 2", "exit 0", "echo only-out"] {
        let request = json!({"execute": "guest-exec", "arguments": {
            "path": "sh", "arg": ["-c", script], "capture-output": true,
        }});
        let mine = ours.ok(request.clone());
        let real = theirs.ok(request);
        assert_eq!(
            exec_status(&mut ours, &mine["pid"]),
            exec_status(&mut theirs, &real["pid"]),
            "{script}"
        );
    }

    // Errors: the same classes and words.
    for request in [
        json!({"execute": "guest-teleport"}),
        json!({"execute": "guest-sync", "arguments": {"id": "x"}}),
        json!({"execute": "guest-sync"}),
        json!({"execute": "guest-ping", "arguments": {"x": 1}}),
        json!({"arguments": {}}),
        json!([1, 2]),
        json!({"execute": "guest-exec-status", "arguments": {"pid": 1}}),
        json!({"execute": "guest-file-read", "arguments": {"handle": 5}}),
        json!({"execute": "guest-fstrim", "arguments": {"minimum": "x"}}),
        json!({"execute": "guest-get-disks", "arguments": {"x": 1}}),
    ] {
        assert_eq!(
            ours.call(request.clone()),
            theirs.call(request.clone()),
            "{request}"
        );
    }
    for q in [&mut ours, &mut theirs] {
        q.send_raw(b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":42}}\n");
    }
    assert_eq!(ours.reply(), theirs.reply());

    // What this agent offers, qemu-ga offers under the same name.
    let names_of = |info: Value| -> Vec<String> {
        info["supported_commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let info = json!({"execute": "guest-info"});
    let (mine, real_names) = (names_of(ours.ok(info.clone())), names_of(theirs.ok(info)));
    // guest-get-load came with QEMU 10, after Debian's 7.2.
    for name in mine.into_iter().filter(|n| n != "guest-get-load") {
        assert!(real_names.contains(&name), "qemu-ga has no {name}");
    }
}

#[test]
fn ssh_keys_and_passwords_of_a_user_and_links_the_user_planted_lead_nowhere() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(user) = util::users::TestUser::create("qga") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    let moved = std::process::Command::new("usermod")
        .arg("-d")
        .arg(&home)
        .arg(&user.name)
        .status()
        .unwrap();
    assert!(moved.success());
    let (_agent, socket) = qga_agent(dir.path(), &[]);
    let mut q = Qga::connect(&socket);
    let name = user.name.as_str();
    let (k1, k2) = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@host",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo two@host",
    );

    assert_eq!(
        q.ok(json!({"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": name}})),
        json!({"keys": []})
    );
    q.ok(json!({"execute": "guest-ssh-add-authorized-keys", "arguments": {"username": name, "keys": [k1, k2]}}));
    q.ok(json!({"execute": "guest-ssh-remove-authorized-keys", "arguments": {"username": name, "keys": [k1]}}));
    assert_eq!(
        q.ok(json!({"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": name}})),
        json!({"keys": [k2]})
    );
    let ssh = home.join(".ssh");
    let file = ssh.join("authorized_keys");
    for (path, mode) in [(&ssh, 0o700), (&file, 0o600)] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (user.uid, mode),
            "{}",
            path.display()
        );
    }
    let (_, desc) = q.error(json!({"execute": "guest-ssh-add-authorized-keys", "arguments": {"username": name, "keys": ["two\nlines"]}}));
    assert!(desc.contains("invalid OpenSSH public key"), "{desc}");

    // The user links authorized_keys to a file of root's: it is neither
    // read through nor written through.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"root's secret\n").unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let (_, desc) = q.error(
        json!({"execute": "guest-ssh-get-authorized-keys", "arguments": {"username": name}}),
    );
    assert!(desc.contains("a link is not followed"), "{desc}");
    q.ok(json!({"execute": "guest-ssh-add-authorized-keys", "arguments": {"username": name, "keys": [k1], "reset": true}}));
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's secret\n");
    assert!(!std::fs::symlink_metadata(&file)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{k1}\n"));

    // The user links ~/.ssh itself to a directory of root's: refused.
    let roots = dir.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::fs::remove_dir_all(&ssh).unwrap();
    std::os::unix::fs::symlink(&roots, &ssh).unwrap();
    let (_, desc) = q.error(json!({"execute": "guest-ssh-add-authorized-keys", "arguments": {"username": name, "keys": [k2]}}));
    assert!(desc.contains("a link is not followed"), "{desc}");
    assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 0);

    // A password, already hashed (crypted), lands in /etc/shadow as given.
    let hash = "$6$guestcomm$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV/.0123456789abcdefghijklmnopqrstu";
    q.ok(json!({"execute": "guest-set-user-password", "arguments": {"username": name, "password": b64(hash.as_bytes()), "crypted": true}}));
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let entry = shadow
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap();
    assert_eq!(entry.split(':').nth(1), Some(hash));
    let (_, desc) = q.error(json!({"execute": "guest-set-user-password", "arguments": {"username": "gc-no-such-user", "password": b64(b"x"), "crypted": false}}));
    assert!(desc.contains("does not exist"), "{desc}");
}

/// QGA on vsock is refused unless the operator names the risk; the refusal
/// says how, and nothing listens. (The opt-in itself is not run here: this
/// host's vsock is its host's, never listened on.)
#[test]
fn qga_on_vsock_is_refused_without_the_opt_in_and_says_how() {
    let agent = util::bin_dir().join("guestcomm-agent");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}", dir.path().join("a.sock").display());
    for (channel, why) in [
        ("vsock://any:9999", "--qga-allow-unauthenticated-vsock"),
        ("tcp://127.0.0.1:4444", "no authentication"),
        ("hvsock-uds:///run/vm.vsock?port=5", "host-side address"),
    ] {
        let mut args = vec!["--listen", listen.as_str(), "--qga", channel];
        if channel.starts_with("hvsock") {
            args.push("--qga-allow-unauthenticated-vsock");
        }
        let out = guestcomm_vmtest::run_with_deadline(
            {
                let mut c = std::process::Command::new(&agent);
                c.args(&args);
                c
            },
            None,
            DEADLINE,
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{channel}: {stderr}");
        assert!(stderr.contains(why), "{channel}: {stderr}");
        assert!(!dir.path().join("a.sock").exists(), "{channel}");
    }
}

/// `--qga` repeated: every channel is served, with one QGA state (a
/// guest-exec started on one is collected on the other, as one qemu-ga).
#[test]
fn several_qga_channels_are_served_with_one_state() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.sock");
    let second_arg = format!("unix://{}", second.display());
    let (_agent, first) = qga_agent(dir.path(), &["--qga", &second_arg]);
    let mut one = Qga::connect(&first);
    let mut two = Qga::connect(&second);
    let started = one.ok(json!({"execute": "guest-exec", "arguments": {
        "path": "sh", "arg": ["-c", "echo both"], "capture-output": true,
    }}));
    let status = exec_status(&mut two, &started["pid"]);
    assert_eq!(status["out-data"], json!(b64(b"both\n")), "{status}");
    assert_eq!(status["out-truncated"], false, "{status}");
}
