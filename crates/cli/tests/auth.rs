//! Mutual authentication between `guestcomm` and an agent started with
//! `--credentials`: the right key works, no key or a wrong key is refused
//! with a clear error, and bad credentials files are refused at start.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::process::{Command, Stdio};

use util::Agent;

fn new_identity(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = Command::new(util::bin("guestcomm"))
        .args(["identity", "new"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn only_a_client_holding_the_vms_key_gets_in() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_identity(keys.path(), "vm1.key");
    let other = new_identity(keys.path(), "other.key");
    let mut agent = Agent::start_with(&["--credentials", key.to_str().unwrap()]);
    let addr = agent.addr();
    let run = |opts: &[&str]| {
        Command::new(util::bin("guestcomm"))
            .arg("exec")
            .args(opts)
            .args([addr.as_str(), "--", "echo", "inside"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let ok = run(&["--identity", key.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "inside\n");

    let anonymous = run(&[]);
    assert_eq!(anonymous.status.code(), Some(125));
    assert!(anonymous.stdout.is_empty());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("auth_required"));

    let wrong = run(&["--identity", other.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(125));
    assert!(wrong.stdout.is_empty());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("authentication failed"));

    assert!(agent.is_running(), "refusals must not stop the agent");
    assert!(run(&["--identity", key.to_str().unwrap()]).status.success());
}

#[test]
fn a_keyed_client_refuses_an_agent_that_does_not_authenticate() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_identity(keys.path(), "vm1.key");
    let agent = Agent::start();
    let out = agent
        .exec_cmd(&["--identity", key.to_str().unwrap()], &["echo", "inside"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        out.stdout.is_empty(),
        "nothing may run on an unauthenticated agent"
    );
}

#[test]
fn a_keyed_agent_with_state_takes_a_new_nonce_epoch_at_every_start_even_after_a_kill() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_identity(keys.path(), "vm1.key");
    let key = key.to_str().unwrap();
    let state = keys.path().join("state");
    let epoch_file = state.join(guestcomm_protocol::nonce::EPOCH_FILE);
    let args = ["--credentials", key, "--state-dir", state.to_str().unwrap()];
    let exec = |agent: &Agent| {
        let out = agent
            .exec_cmd(&["--identity", key], &["echo", "inside"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "inside\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The epoch is on disk before the agent listens; dropping the agent
    // kills it (SIGKILL), a crash.
    for expected in ["1\n", "2\n", "3\n"] {
        let agent = Agent::start_with(&args);
        assert_eq!(std::fs::read_to_string(&epoch_file).unwrap(), expected);
        exec(&agent);
    }
    // A malformed epoch file costs the epoch, not the agent; it is kept.
    std::fs::write(&epoch_file, "garbage").unwrap();
    let agent = Agent::start_with(&args);
    exec(&agent);
    assert_eq!(std::fs::read_to_string(&epoch_file).unwrap(), "garbage");
}

#[test]
fn identity_files_are_never_overwritten_and_open_ones_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_identity(keys.path(), "vm1.key");
    let again = Command::new(util::bin("guestcomm"))
        .args(["identity", "new"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));

    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let agent = Command::new(util::bin("guestcomm-agent"))
        .args([
            "--listen",
            &format!("unix://{}/a.sock", keys.path().display()),
            "--credentials",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(agent.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&agent.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&agent.stderr)
    );
}

#[test]
fn cp_to_an_agent_with_credentials_needs_the_identity() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_identity(keys.path(), "vm1.key");
    let agent = Agent::start_with(&["--credentials", key.to_str().unwrap()]);
    let src = keys.path().join("file.txt");
    std::fs::write(&src, b"payload").unwrap();
    let dst = keys.path().join("copied.txt");
    let target = format!("{}:{}", agent.addr(), dst.display());
    let cp = |extra: &[&str]| {
        Command::new(util::bin("guestcomm"))
            .arg("cp")
            .args(extra)
            .arg(&src)
            .arg(&target)
            .output()
            .unwrap()
    };
    let refused = cp(&[]);
    assert_eq!(
        refused.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!dst.exists());
    let ok = cp(&["--identity", key.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(std::fs::read(&dst).unwrap(), b"payload");
}

#[test]
fn an_agent_takes_its_key_from_the_systemd_credentials_directory_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let key = new_identity(&credentials, "guestcomm.key");
    let other = new_identity(dir.path(), "other.key");
    let socket = dir.path().join("a.sock");
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(util::bin("guestcomm-agent"))
        .args(["--listen", &format!("unix://{}", socket.display())])
        .args(["--kvp-socket", "off", "--hyperv-kvp", "off"])
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("GUESTCOMM_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let listening = util::wait_until(util::STARTUP_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let exec = |identity: &std::path::Path| {
        Command::new(util::bin("guestcomm"))
            .arg("exec")
            .arg("--identity")
            .arg(identity)
            .args([&format!("unix://{}", socket.display()), "--", "echo", "in"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let (right, wrong) = (exec(&key), exec(&other));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(listening, "the agent did not start");
    assert!(right.status.success(), "{right:?}");
    assert_eq!(right.stdout, b"in\n");
    assert!(!wrong.status.success(), "{wrong:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("using the VM's key") && log.contains("systemd credential"),
        "{log}"
    );
    assert!(!log.contains("serving unauthenticated"), "{log}");
}
