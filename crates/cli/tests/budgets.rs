//! What peers without a key or a role can exhaust, with the real binaries:
//! the agent's connections still in their handshake have a budget of their
//! own (the daemon holding the VM's key gets through a keyless flood), a
//! hello is bounded before authentication, and the local key-value socket
//! does not share the host's slots.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use guestcomm_protocol::limits::{MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES};
use guestcomm_protocol::ErrorCode;
use util::daemon::Daemon;
use util::wire::{encode, final_error, hello, read_until_final};
use util::Agent;

/// More half-open connections than the agent's default `--max-connections`
/// (256), so that before the unauthenticated budget they held every slot.
const FLOOD: usize = 300;

/// The test opens hundreds of sockets at once.
fn enough_descriptors() {
    guestcomm_observability::raise_open_files_limit(4096);
}

#[test]
fn a_keyless_flood_of_half_open_connections_does_not_keep_the_daemon_out() {
    enough_descriptors();
    // No warm connections: each exec connects and authenticates anew, while
    // the flood is held (a warm one, made before the flood, would hide it).
    let d = Daemon::start_with("off", &["--no-warm-connections"]);
    let (_agent, socket, _) = d.keyed_agent_vm("keyed");
    assert_eq!(d.ok(&["exec", "keyed", "--", "echo", "up"]), "up\n");
    // A host user without the key: connections that never finish their
    // handshake, half of them with a part of a hello.
    let partial = encode(vec![hello()]);
    let flood: Vec<UnixStream> = (0..FLOOD)
        .map(|i| {
            let mut sock = UnixStream::connect(&socket).unwrap();
            if i % 2 == 1 {
                sock.write_all(&partial[..3]).unwrap();
            }
            sock
        })
        .collect();
    let mut served = 0;
    for i in 0..8 {
        let out = d.run(&["exec", "keyed", "--", "echo", &format!("exec {i}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "exec {i} during the flood: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("exec {i}\n"));
        served += 1;
    }
    assert_eq!(served, 8);
    drop(flood);
}

#[test]
fn an_oversized_hello_is_refused_at_its_header() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("vm.key");
    let out = Command::new(util::bin("guestcomm"))
        .args(["identity", "new"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let agent = Agent::start_with(&["--credentials", key.to_str().unwrap()]);
    // A control frame header announcing the protocol's largest body, and
    // no body: refused at once, nothing reserved for it.
    let mut header = (MAX_FRAME_BYTES as u32).to_be_bytes().to_vec();
    header.push(0);
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock.write_all(&header).unwrap();
    let (frames, _) = read_until_final(&mut sock);
    let (code, message) = final_error(&frames);
    assert_eq!(code, ErrorCode::MalformedFrame, "{message}");
    assert!(
        message.contains(&format!(
            "frame of {MAX_FRAME_BYTES} bytes exceeds the {MAX_HANDSHAKE_FRAME_BYTES}-byte limit"
        )),
        "{message}"
    );
}

#[test]
fn the_local_key_value_socket_has_slots_of_its_own() {
    let agent = Agent::start_with(&["--max-connections", "1"]);
    // The host's one slot, held by a running exec.
    let started = agent.dir.path().join("started");
    let script = format!("touch {}; exec sleep 60", started.display());
    let mut holder = agent
        .exec_cmd(&[], &["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = util::wait_until(Duration::from_secs(30), || started.exists());
    let mut sock = UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![hello()])).unwrap();
    let (frames, _) = read_until_final(&mut sock);
    // Guest programs still reach their pools.
    let kvp = Command::new(util::bin("guestcomm-agent"))
        .args(["kvp", "--socket"])
        .arg(util::kvp_socket_of(&agent.socket))
        .args(["set", "from-guest", "yes"])
        .output()
        .unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(running, "the exec holding the host's slot did not start");
    let (code, message) = final_error(&frames);
    assert_eq!(code, ErrorCode::ResourceLimit, "{message}");
    assert!(
        kvp.status.success(),
        "{}",
        String::from_utf8_lossy(&kvp.stderr)
    );
}

/// The bytes of `sock` until the daemon closes it; `None` if it is still
/// open after 30 s.
fn until_closed(sock: &mut UnixStream) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    std::io::Read::read_to_end(sock, &mut seen)
        .ok()
        .map(|_| seen)
}

/// Run as a test user: holds CAP connections to the API socket at PATH,
/// opens one more, prints whether the daemon closed that one unanswered,
/// then holds them all until its stdin closes.
const FLOOD_SCRIPT: &str = "
import socket, sys
path, cap = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(cap):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
extra = socket.socket(socket.AF_UNIX)
extra.connect(path)
extra.settimeout(30)
try:
    data = extra.recv(100)
except ConnectionResetError:
    data = b''
print('closed' if data == b'' else 'answered', flush=True)
sys.stdin.read()
";

#[test]
fn idle_api_connections_are_capped_per_user_and_an_admin_still_gets_in() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    enough_descriptors();
    let (Some(flooder), Some(admin)) = (
        util::users::TestUser::create("fl"),
        util::users::TestUser::create("adm"),
    ) else {
        return;
    };
    let config = format!("[roles]\nadmin = {{ users = [\"{}\"] }}\n", admin.name);
    let d = Daemon::start_with_args_and_config(
        "off",
        &["--max-http-connections-per-peer", "16"],
        &config,
    );
    // Both users may connect; the roles decide the rest.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A user with no role holds as many idle connections as the cap, then
    // one more: that one is closed at once, before any request.
    let socket = d.socket.display().to_string();
    let mut flood = flooder
        .command(
            std::path::Path::new("/usr/bin/python3"),
            &["-c", FLOOD_SCRIPT, &socket, "16"],
            &[],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(
        said.trim(),
        "closed",
        "the connection past the cap was not closed"
    );
    // Meanwhile another user, an admin by the configuration, is served,
    // and so is root, whom no cap holds.
    let api = d.api();
    let out = admin.run(
        &util::bin("guestcomm"),
        &["vm", "list"],
        &[("GUESTCOMM_API", &api)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root_held: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    d.ok(&["vm", "list"]);
    drop(root_held);
    drop(flood.stdin.take());
    flood.wait().unwrap();
}

#[test]
fn a_half_sent_header_and_an_idle_kept_alive_connection_are_closed() {
    let d = Daemon::start_with("off", &["--http-header-timeout", "500ms"]);
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(b"GET /v1/vms HTTP/1.1\r\nHost: guestco")
        .unwrap();
    assert!(
        until_closed(&mut half).is_some(),
        "a connection with half a header stayed open"
    );
    // A whole request is answered; the connection, kept alive, is closed
    // once it has been idle for the header timeout.
    let mut idle = UnixStream::connect(&d.socket).unwrap();
    idle.write_all(b"GET /v1/vms HTTP/1.1\r\nHost: guestcommd\r\n\r\n")
        .unwrap();
    let answer = until_closed(&mut idle).expect("the idle connection stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The admin's CLI still works with the short bound.
    d.ok(&["vm", "list"]);
}
