//! Faults with real processes: guestcommd SIGKILLed while an
//! exec, a copy and a connect go through it; the agent SIGKILLed in the
//! middle of a copy and started again; the receiving side's disk full.
//! Each must end promptly with a clear error, lose nothing already there,
//! leave no partial file behind, and let the next operation succeed.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use util::daemon::{fake_vmm, AgentAt, Daemon};
use util::{bin, process_alive, pseudo_random, wait_until};

/// A bound on how long a broken test hangs, never a measure of speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// The temporary and partial files of copies left under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".guestcomm-")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The size of the one partial file under `dir`, if there is one.
fn partial_size(dir: &Path) -> Option<u64> {
    leftovers(dir)
        .first()
        .and_then(|p| fs::metadata(p).ok())
        .map(|m| m.len())
}

/// Waits (bounded) for `child` to exit and returns its output.
fn finish(child: Child, what: &str) -> Output {
    let (exited, out) = util::output_within(child, DEADLINE);
    assert!(
        exited,
        "{what} did not end within {DEADLINE:?} after its peer died"
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A sparse file of `bytes`: a copy of it takes long enough to be cut.
fn sparse_file(path: &Path, bytes: u64) {
    fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

#[test]
fn a_daemon_killed_during_an_exec_a_copy_and_a_connect_fails_each_cleanly_and_restarts_whole() {
    let mut d = Daemon::start("off");
    let (_agent, _) = d.agent_vm("web1");
    let vmm = d.dir.path().join("vmm.sock");
    d.ok(&[
        "vm",
        "add",
        "fc1",
        "--endpoint",
        &format!("hvsock-uds://{}", vmm.display()),
    ]);
    // Port 2761 = 0xac9.
    d.ok(&[
        "service",
        "register",
        "00000ac9-facb-11e6-bd58-64006a7986d3",
        "--name",
        "Echo",
    ]);
    let echo = fake_vmm(&vmm);
    let work = tempfile::tempdir().unwrap();
    let (big, into) = (work.path().join("big.img"), work.path().join("into"));
    sparse_file(&big, 8 << 30);
    fs::create_dir(&into).unwrap();
    let pidfile = work.path().join("sleep.pid");

    // An exec whose command runs until it is killed.
    let script = format!(
        "echo $$ > {}; echo started; exec sleep 600",
        pidfile.display()
    );
    let mut exec = d
        .cli(&["exec", "web1", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(exec.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    let guest_pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A connect with a line already echoed back.
    let mut connect = d
        .cli(&["connect", "fc1", "Echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connect
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"ping\n")
        .unwrap();
    line.clear();
    BufReader::new(connect.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ping\n");

    // A copy of 8 GiB, under way once its temporary file exists.
    let copy = d
        .cli(&[
            "cp",
            big.to_str().unwrap(),
            &format!("web1:{}/", into.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(DEADLINE, || partial_size(&into).is_some_and(|n| n > 0)),
        "the copy did not start"
    );

    d.kill9();
    for (child, what) in [(exec, "exec"), (copy, "cp"), (connect, "connect")] {
        let out = finish(child, what);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{what}: {err}");
        assert!(err.starts_with("guestcomm: "), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    }
    assert_eq!(echo.join().unwrap(), "CONNECT 2761\n");
    // Nothing is left of the operations in the guest: the command's process
    // is killed, the copy's temporary file removed, no destination made.
    assert!(
        wait_until(DEADLINE, || !process_alive(guest_pid)),
        "the guest command outlived its caller"
    );
    assert!(
        wait_until(DEADLINE, || leftovers(&into).is_empty()),
        "{:?}",
        leftovers(&into)
    );
    assert!(!into.join("big.img").exists());

    d.restart();
    let list = d.json(&["vm", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fc1", "web1"]);
    assert_eq!(d.ok(&["exec", "web1", "--", "echo", "back"]), "back\n");
    let records = d.audit_settled(&[]);
    for operation in ["exec", "cp.to_guest", "service.connect"] {
        assert!(
            records
                .iter()
                .any(|r| r["operation"] == operation && r["outcome"] == "interrupted"),
            "no interrupted {operation} record: {records:#?}"
        );
    }
}

/// Kills the agent once the partial file under `dir` has some data, and
/// checks that the cut copy failed as it should.
fn kill_agent_mid_copy(agent: AgentAt, copy: Child, dir: &Path) {
    assert!(
        wait_until(DEADLINE, || partial_size(dir).is_some_and(|n| n >= 4 << 20)),
        "no partial file of 4 MiB under {}",
        dir.display()
    );
    drop(agent); // SIGKILL, by PID
    let out = finish(copy, "cp");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(
        leftovers(dir).len(),
        1,
        "the partial file is kept for --resume"
    );
}

/// `guestcomm cp --resume [--json] FROM TO`, not yet run.
fn cp_resume(json: bool, from: &str, to: &str) -> Command {
    let mut c = Command::new(bin("guestcomm"));
    c.args(["cp", "--resume"]);
    if json {
        c.arg("--json");
    }
    c.args([from, to])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn an_agent_killed_mid_copy_and_restarted_lets_resume_finish_byte_exact_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("agent.sock");
    let addr = format!("unix://{}", socket.display());
    let content = pseudo_random(256 << 20, 15);
    let src = work.path().join("src.bin");
    fs::write(&src, &content).unwrap();
    let (into, back) = (work.path().join("into"), work.path().join("back"));
    let ways = [
        (
            src.display().to_string(),
            format!("{addr}:{}/", into.display()),
            &into,
        ),
        (
            format!("{addr}:{}", src.display()),
            format!("{}/", back.display()),
            &back,
        ),
    ];
    for (from, to, dir) in ways {
        fs::create_dir(dir).unwrap();
        let agent = AgentAt::start(&socket);
        let copy = cp_resume(false, &from, &to).spawn().unwrap();
        kill_agent_mid_copy(agent, copy, dir);
        let _agent = AgentAt::start(&socket);
        let out = cp_resume(true, &from, &to).output().unwrap();
        assert!(out.status.success(), "{from} -> {to}: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            summary["resumed_bytes"].as_u64().unwrap() >= 4 << 20,
            "{summary}"
        );
        assert!(
            fs::read(dir.join("src.bin")).unwrap() == content,
            "{from} -> {to}: the resumed copy differs"
        );
        assert!(leftovers(dir).is_empty());
    }
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one; `None` (the test skips, loudly) when not root.
    fn mount(size: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "guestcomm-test",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_on_the_receiving_side_fails_the_copy_and_keeps_the_old_file_both_ways() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("agent.sock");
    let addr = format!("unix://{}", socket.display());
    let _agent = AgentAt::start(&socket);
    let big = work.path().join("big.bin");
    fs::write(&big, pseudo_random(8 << 20, 16)).unwrap();
    let old = pseudo_random(1 << 20, 17);
    let dst = disk.path().join("big.bin");

    for (from, to) in [
        (
            big.display().to_string(),
            format!("{addr}:{}", dst.display()),
        ),
        (
            format!("{addr}:{}", big.display()),
            dst.display().to_string(),
        ),
    ] {
        fs::write(&dst, &old).unwrap();
        let out = Command::new(bin("guestcomm"))
            .args(["cp", "--force", &from, &to])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        // Exit 1: the copy failed (cp --help), not guestcomm itself.
        assert_eq!(out.status.code(), Some(1), "{from} -> {to}: {err}");
        assert!(
            err.to_lowercase().contains("no space left"),
            "{from} -> {to}: {err}"
        );
        assert!(
            fs::read(&dst).unwrap() == old,
            "the old destination changed"
        );
        assert!(
            wait_until(DEADLINE, || leftovers(disk.path()).is_empty()),
            "{:?}",
            leftovers(disk.path())
        );
    }
}

#[test]
fn status_tells_an_unreachable_transport_from_an_absent_or_refusing_agent() {
    let d = Daemon::start("200ms");
    let dir = d.dir.path();
    let agent_socket = dir.join("keyed.sock");
    let keyed = format!("unix://{}", agent_socket.display());
    // An agent holding another key than the daemon's for this VM.
    d.ok(&[
        "vm",
        "add",
        "refused",
        "--endpoint",
        &keyed,
        "--generate-credentials",
    ]);
    let other = dir.join("other.key");
    d.ok(&["identity", "new", other.to_str().unwrap()]);
    let _agent = AgentAt::start_with(&agent_socket, &["--credentials", other.to_str().unwrap()]);
    let absent = format!("unix://{}", dir.join("absent.sock").display());
    d.ok(&["vm", "add", "absent", "--endpoint", &absent]);
    let gone = format!("hvsock-uds://{}", dir.join("gone-vmm.sock").display());
    d.ok(&["vm", "add", "gone", "--endpoint", &gone]);

    for (vm, detail, words) in [
        ("refused", "agent_refusing", "agent refusing"),
        ("absent", "agent_not_listening", "agent not listening"),
        ("gone", "transport_unreachable", "transport unreachable"),
    ] {
        let mut health = serde_json::Value::Null;
        let classed = wait_until(DEADLINE, || {
            health = d.json(&["status", vm]);
            health["detail"] == detail
        });
        assert!(classed, "{vm}: {health}");
        assert_eq!(health["status"], "No Contact", "{vm}: never answered");
        let text = d.ok(&["status", vm]);
        assert!(text.contains(&format!("Detail:        {words}")), "{text}");
    }
}
