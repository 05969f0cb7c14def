//! `guestcomm cp` against the real agent: round trips in both directions
//! with byte comparison, the CopyFilesToGuest options, and hostile senders
//! on either side (a test double speaking the protocol to the agent, and a
//! fake agent serving a hostile tree to the CLI) that must write nothing
//! outside the destination and leave no temporary file.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use guestcomm_protocol::files::{CopyToGuest, EntryKind};
use guestcomm_protocol::{BuiltinService, Call, Control, ErrorCode, Frame, StreamId};
use util::copy::{copy_to_guest_request, cp_within_deadline, data, entry, entry_for, temp_files};
use util::wire::{encode, exchange_until_final, hello, hostile_agent, request};
use util::{bin, pseudo_random, Agent};

fn cp(args: &[&str]) -> Output {
    Command::new(bin("guestcomm"))
        .arg("cp")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run guestcomm cp")
}

fn remote(agent: &Agent, path: &Path) -> String {
    format!("{}:{}", agent.addr(), path.display())
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a tree holds: per relative path, its kind and content or target.
fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", meta.mode() & 0o777)
            } else {
                let hash = blake3::hash(&fs::read(&path).unwrap());
                format!("file {:o} {} {}", meta.mode() & 0o777, meta.len(), hash)
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn single_files_round_trip_both_ways_byte_for_byte_with_mode_and_mtime() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, guest, back) = (
        dir.path().join("src"),
        dir.path().join("guest"),
        dir.path().join("back"),
    );
    for d in [&src, &guest, &back] {
        fs::create_dir(d).unwrap();
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0x5a]),
        ("binary é ü.bin", pseudo_random(3 * 1024 * 1024 + 7, 42)),
        ("all bytes", (0..=255u8).cycle().take(70_000).collect()),
    ];
    for (name, content) in &cases {
        let file = src.join(name);
        fs::write(&file, content).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let out = cp(&["--json", s(&file), &remote(&agent, &guest)]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["bytes"], content.len(), "{name}");
        assert_eq!(summary["files"], 1);
        assert_eq!(summary["blake3"], blake3::hash(content).to_hex().as_str());
        let out = cp(&[&remote(&agent, &guest.join(name)), s(&back)]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let returned = back.join(name);
        assert_eq!(&fs::read(&returned).unwrap(), content, "{name}");
        let (a, b) = (
            fs::metadata(&file).unwrap(),
            fs::metadata(&returned).unwrap(),
        );
        assert_eq!(b.mode() & 0o777, 0o640, "{name}");
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{name}"
        );
    }
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_200_mb_file_round_trips_intact() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    // Sparse-ish: zeros with a random MiB every 16 MiB, so it is cheap to make.
    let file = fs::File::create(&src).unwrap();
    file.set_len(200 * 1024 * 1024).unwrap();
    for i in 0..13u64 {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&pseudo_random(1024 * 1024, i + 1), i * 16 * 1024 * 1024)
            .unwrap();
    }
    drop(file);
    let guest = dir.path().join("in guest");
    let out = cp(&[s(&src), &remote(&agent, &guest)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = dir.path().join("back");
    let out = cp(&["--json", &remote(&agent, &guest), s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = blake3::hash(&fs::read(&src).unwrap());
    assert_eq!(blake3::hash(&fs::read(&guest).unwrap()), want);
    assert_eq!(blake3::hash(&fs::read(&back).unwrap()), want);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["bytes"], 200 * 1024 * 1024);
}

#[test]
fn a_tree_with_symlinks_and_an_empty_dir_round_trips() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub dir/deeper")).unwrap();
    fs::create_dir(tree.join("empty")).unwrap();
    fs::write(tree.join("a.txt"), "hello\n").unwrap();
    fs::write(tree.join("sub dir/naïve file"), pseudo_random(300_000, 7)).unwrap();
    fs::write(tree.join("sub dir/deeper/z"), "").unwrap();
    std::os::unix::fs::symlink("../a.txt", tree.join("sub dir/rel link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", tree.join("abs link")).unwrap();
    fs::set_permissions(tree.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();

    let guest = dir.path().join("guest");
    fs::create_dir(&guest).unwrap();
    let out = cp(&["-r", "--json", s(&tree), &remote(&agent, &guest)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["files"].as_u64(), summary["symlinks"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(listing(&guest.join("tree")), listing(&tree));

    let back = dir.path().join("back");
    let out = cp(&["-r", &remote(&agent, &guest.join("tree")), s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(&back), listing(&tree));
    assert!(temp_files(dir.path()).is_empty());
}

/// Owner, group and mode of `path` (not following a symlink).
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn preserve_owner_keeps_numeric_owners_both_ways_and_never_set_id_bits() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("tool", tree.join("link")).unwrap();
    if !nix::unistd::geteuid().is_root() {
        // Only the refusal can be checked without root.
        let out = cp(&[
            "-r",
            "--preserve-owner",
            &remote(&agent, &tree),
            s(&dir.path().join("back")),
        ]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("needs the receiving side to run as root"),
            "{}",
            stderr(&out)
        );
        eprintln!("not root: only the refusal of --preserve-owner was tested");
        return;
    }
    let chown = |path: &Path, uid: u32, gid: u32| {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    };
    chown(&tree, 4321, 8765);
    chown(&tree.join("tool"), 1234, 5678);
    chown(&tree.join("link"), 2345, 6789);
    // Set-user-ID root program: the owner travels, the bit does not.
    fs::set_permissions(tree.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();

    let guest = dir.path().join("guest");
    fs::create_dir(&guest).unwrap();
    let out = cp(&["-r", "--preserve-owner", s(&tree), &remote(&agent, &guest)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let landed = guest.join("tree");
    assert_eq!(owner_and_mode(&landed.join("tool")), (1234, 5678, 0o755));
    assert_eq!(owner_and_mode(&landed.join("link")).0, 2345);
    assert_eq!(owner_and_mode(&landed.join("link")).1, 6789);
    assert_eq!(owner_and_mode(&landed).0, 4321);

    let back = dir.path().join("back");
    let out = cp(&["-r", "--preserve-owner", &remote(&agent, &landed), s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(owner_and_mode(&back.join("tool")), (1234, 5678, 0o755));
    assert_eq!(owner_and_mode(&back.join("link")).0, 2345);
    assert_eq!(owner_and_mode(&back).1, 8765);

    // Without the flag, the receiver owns what it writes.
    let plain = dir.path().join("plain");
    let out = cp(&["-r", &remote(&agent, &landed), s(&plain)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(owner_and_mode(&plain.join("tool")), (0, 0, 0o755));

    // A receiver that is not root refuses the flag before connecting.
    if Path::new("/usr/bin/setpriv").exists() {
        let out = Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("guestcomm"))
            .args([
                "cp",
                "-r",
                "--preserve-owner",
                &remote(&agent, &landed),
                "/tmp/guestcomm-never",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("needs the receiving side to run as root"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn the_receivers_umask_limits_the_permission_bits_a_sender_asks_for_both_ways() {
    // The agent and the CLI inherit this process's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let open_tree = |at: &Path| {
        fs::create_dir(at).unwrap();
        fs::write(at.join("open"), "x").unwrap();
        fs::write(at.join("setid"), "#!/bin/sh\n").unwrap();
        for (path, mode) in [
            (at.to_path_buf(), 0o777),
            (at.join("open"), 0o777),
            (at.join("setid"), 0o6777),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    let modes = |at: &Path| ["", "open", "setid"].map(|name| owner_and_mode(&at.join(name)).2);
    let expected = [0o755; 3];

    // Into the guest: the agent receives.
    let tree = dir.path().join("tree");
    open_tree(&tree);
    let guest = dir.path().join("guest");
    fs::create_dir(&guest).unwrap();
    let out = cp(&["-r", s(&tree), &remote(&agent, &guest)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(modes(&guest.join("tree")), expected);

    // Out of the guest: the CLI receives.
    let in_guest = dir.path().join("in_guest");
    open_tree(&in_guest);
    let back = dir.path().join("back");
    let out = cp(&["-r", &remote(&agent, &in_guest), s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(modes(&back), expected);
}

#[test]
fn overwrite_is_refused_without_force_in_both_directions_with_or_without_resume() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (new, old) = (dir.path().join("new"), dir.path().join("old"));
    fs::write(&new, "new content").unwrap();
    fs::write(&old, "old content").unwrap();
    // With --resume the sender waits for an answer to its entry: the
    // refusal must be that answer, at once (the idle timeout is far beyond
    // the deadline, so a copy that waits for it fails here).
    for resume in [&[][..], &["--resume", "--idle-timeout", "600"]] {
        for (from, to) in [
            (s(&new).to_string(), remote(&agent, &old)),
            (remote(&agent, &new), s(&old).to_string()),
        ] {
            let out = cp_within_deadline(&[resume, &[from.as_str(), &to]].concat());
            assert_eq!(out.status.code(), Some(1), "{resume:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("already exists (use --force"),
                "{resume:?}: {}",
                stderr(&out)
            );
            assert_eq!(fs::read_to_string(&old).unwrap(), "old content");
            // Nothing was received, so no partial file is kept either.
            assert!(util::wait_until(util::STARTUP_DEADLINE, || temp_files(
                dir.path()
            )
            .is_empty()));
            let out = cp_within_deadline(&[resume, &["--force", &from, &to]].concat());
            assert!(out.status.success(), "{resume:?}: {}", stderr(&out));
            assert_eq!(fs::read_to_string(&old).unwrap(), "new content");
            fs::write(&old, "old content").unwrap();
        }
    }
}

#[test]
fn parents_are_created_only_with_create_full_path() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    fs::write(&src, "x").unwrap();
    for (i, to_guest) in [true, false].into_iter().enumerate() {
        let dst = dir.path().join(format!("missing{i}/a/b/f"));
        let (from, to) = if to_guest {
            (s(&src).to_string(), remote(&agent, &dst))
        } else {
            (remote(&agent, &src), s(&dst).to_string())
        };
        let out = cp(&[&from, &to]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("does not exist (use --create-full-path"),
            "{}",
            stderr(&out)
        );
        assert!(!dir.path().join(format!("missing{i}")).exists());
        let out = cp(&["--create-full-path", &from, &to]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(fs::read_to_string(&dst).unwrap(), "x");
    }
}

#[test]
fn clear_errors_for_missing_sources_directories_without_r_and_special_files() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let cases = [
        (
            s(&missing).to_string(),
            remote(&agent, dir.path()),
            "does not exist",
        ),
        (
            remote(&agent, &missing),
            s(dir.path()).to_string(),
            "does not exist",
        ),
        (
            s(dir.path()).to_string(),
            remote(&agent, &missing),
            "is a directory (use -r",
        ),
        (
            remote(&agent, dir.path()),
            s(&missing).to_string(),
            "is a directory (use -r",
        ),
        (
            remote(&agent, Path::new("/dev/null")),
            s(&missing).to_string(),
            "is a device file",
        ),
    ];
    for (from, to, text) in cases {
        let out = cp(&[&from, &to]);
        assert_eq!(out.status.code(), Some(1), "{from} {to}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{from} {to}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert!(!missing.exists());
    let out = cp(&["a", "b"]);
    assert_eq!(out.status.code(), Some(2));
    // A VM name goes through guestcommd; with none listening, a one-line 125.
    let present = agent.dir.path().join("present.txt");
    std::fs::write(&present, b"x").unwrap();
    let no_daemon = format!("unix://{}/no-daemon.sock", agent.dir.path().display());
    let out = cp(&["--api", &no_daemon, s(&present), "web1:/tmp"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cannot reach guestcommd"),
        "{}",
        stderr(&out)
    );
}

fn entry_end(content: &[u8]) -> Frame {
    Frame::Control(Control::EntryEnd {
        blake3: blake3::hash(content).to_hex().to_string(),
    })
}

/// Hostile entry streams, what the refusal must say, and its code.
fn hostile_streams(outside: &Path) -> Vec<(&'static str, Vec<Frame>, &'static str, ErrorCode)> {
    use EntryKind::{Dir, File, Symlink};
    let outside = outside.to_str().unwrap().to_string();
    let escape: &'static str = Box::leak(outside.into_boxed_str());
    vec![
        (
            "dot-dot root",
            vec![entry("../x", File, 1, None), data(b"x"), entry_end(b"x")],
            "'..'",
            ErrorCode::InvalidArgument,
        ),
        (
            "dot-dot below the root",
            vec![
                entry("r", Dir, 0, None),
                entry("r/../../x", File, 1, None),
                data(b"x"),
                entry_end(b"x"),
            ],
            "'..'",
            ErrorCode::InvalidArgument,
        ),
        (
            "absolute path",
            vec![entry(&format!("{escape}/x"), File, 1, None)],
            "absolute path",
            ErrorCode::InvalidArgument,
        ),
        (
            "symlink escape",
            vec![
                entry("r", Dir, 0, None),
                entry("r/l", Symlink, 0, Some(escape)),
                entry("r/l/evil", File, 3, None),
                data(b"bad"),
                entry_end(b"bad"),
            ],
            "goes through a symlink",
            ErrorCode::InvalidArgument,
        ),
        (
            "wrong checksum",
            vec![entry("f", File, 3, None), data(b"abc"), entry_end(b"abd")],
            "checksum mismatch",
            ErrorCode::InvalidArgument,
        ),
        (
            "size larger than declared",
            vec![entry("f", File, 2, None), data(b"abc"), entry_end(b"abc")],
            "size mismatch",
            ErrorCode::InvalidArgument,
        ),
        (
            "size smaller than declared",
            vec![entry("f", File, 5, None), data(b"abc"), entry_end(b"abc")],
            "size mismatch",
            ErrorCode::InvalidArgument,
        ),
    ]
    .into_iter()
    .map(|(name, mut frames, text, code)| {
        frames.push(Frame::Control(Control::CopyEnd));
        (name, frames, text, code)
    })
    .collect()
}

/// After a refused copy: nothing outside, no file stored, no temporary file.
fn assert_nothing_written(name: &str, root: &Path, dst: &Path, outside: &Path) {
    assert!(
        fs::read_dir(outside).unwrap().next().is_none(),
        "{name}: wrote outside"
    );
    let top: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top.len(), 2, "{name}: {top:?}");
    assert!(temp_files(root).is_empty(), "{name}: temporary file left");
    let stored = listing(dst);
    assert!(
        stored.values().all(|v| !v.starts_with("file")),
        "{name}: stored {stored:?}"
    );
}

#[test]
fn a_hostile_sender_to_the_agent_is_refused_and_nothing_lands_outside() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (dst, outside) = (dir.path().join("dst"), dir.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    for (name, frames, text, code) in hostile_streams(&outside) {
        fs::create_dir(&dst).unwrap();
        let mut all = vec![hello(), copy_to_guest_request(&dst, true)];
        all.extend(frames);
        let reply = exchange_until_final(&agent, &encode(all));
        match reply.last() {
            Some(Frame::Control(Control::Error(e))) => {
                assert_eq!(e.code, code, "{name}: {}", e.message);
                assert!(e.message.contains(text), "{name}: {}", e.message);
            }
            other => panic!("{name}: expected an error, got {other:?}"),
        }
        assert_nothing_written(name, dir.path(), &dst, &outside);
        fs::remove_dir_all(&dst).unwrap();
    }
}

#[test]
fn a_hostile_agent_serving_a_tree_is_refused_by_the_cli_and_nothing_lands_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (dst, outside) = (dir.path().join("dst"), dir.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    for (name, frames, text, _) in hostile_streams(&outside) {
        fs::create_dir(&dst).unwrap();
        let (_sock_dir, addr, thread) = hostile_agent(encode(frames));
        let out = cp(&["-r", &format!("{addr}:/tree"), s(&dst)]);
        thread.join().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{name}: {}", stderr(&out));
        assert_nothing_written(name, dir.path(), &dst, &outside);
        fs::remove_dir_all(&dst).unwrap();
    }
}

#[test]
fn a_connection_dropped_mid_file_leaves_no_temporary_file_and_the_old_file() {
    use std::io::Write;
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("f");
    fs::write(&dst, "old").unwrap();
    let request = request(
        BuiltinService::Files.id(),
        Call::CopyToGuest(CopyToGuest {
            dst: s(&dst).into(),
            overwrite: true,
            ..Default::default()
        }),
    );
    let mut sock = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    let frames = vec![
        hello(),
        request,
        entry("f", EntryKind::File, 10, None),
        data(b"abc"),
    ];
    sock.write_all(&encode(frames)).unwrap();
    // The agent has started the file once its temporary file exists.
    assert!(util::wait_until(util::STARTUP_DEADLINE, || !temp_files(
        dir.path()
    )
    .is_empty()));
    drop(sock);
    assert!(util::wait_until(util::STARTUP_DEADLINE, || temp_files(
        dir.path()
    )
    .is_empty()));
    assert_eq!(fs::read_to_string(&dst).unwrap(), "old");
}

/// The first `mib` MiB of `content` as file data frames.
fn first_mib(content: &[u8], mib: usize) -> Vec<Frame> {
    content[..mib << 20]
        .chunks(1 << 20)
        .map(|c| Frame::Data(StreamId::File, bytes::Bytes::copy_from_slice(c)))
        .collect()
}

/// True once nobody holds the lock of the partial file at `path`.
fn unlocked(path: &Path) -> bool {
    let file = fs::File::open(path).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
}

/// The name under which a receiver keeps the partial copy of `src`, landing as `name`.
fn partial_name(name: &str, src: &Path) -> String {
    let meta = fs::metadata(src).unwrap();
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&meta.len().to_le_bytes());
    h.update(&meta.mtime().to_le_bytes());
    h.update(&u32::try_from(meta.mtime_nsec()).unwrap().to_le_bytes());
    format!(".guestcomm-partial-{}.tmp", &h.finalize().to_hex()[..32])
}

#[test]
fn resume_never_continues_a_partial_file_planted_by_another_user_or_through_a_link() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.bin"), dir.path().join("dst"));
    let content = pseudo_random((2 << 20) + 3, 11);
    fs::write(&src, &content).unwrap();
    fs::create_dir(&dst).unwrap();
    let partial = dst.join(partial_name("src.bin", &src));
    let landed = dst.join("src.bin");
    let resume = |what: &str| {
        let out = cp(&[
            "--resume",
            "--force",
            "--json",
            s(&src),
            &remote(&agent, &dst),
        ]);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            summary["resumed_bytes"], 0,
            "{what}: resumed from a planted file"
        );
        assert_eq!(fs::read(&landed).unwrap(), content, "{what}");
        assert_eq!(owner_and_mode(&landed).0, 0, "{what}");
        assert!(!partial.exists(), "{what}");
    };

    // A matching prefix, but owned by someone else (who could still write
    // it after the check) and writable by all.
    fs::write(&partial, &content[..1 << 20]).unwrap();
    std::os::unix::fs::chown(&partial, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o666)).unwrap();
    resume("a foreign partial file");

    // A hard link to a file elsewhere.
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, &content[..1 << 20]).unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(&elsewhere, &partial).unwrap();
    resume("a hard link");
    assert_eq!(fs::read(&elsewhere).unwrap(), &content[..1 << 20]);

    // A symlink to a file elsewhere.
    std::os::unix::fs::symlink(&elsewhere, &partial).unwrap();
    resume("a symlink");
    assert_eq!(fs::read(&elsewhere).unwrap(), &content[..1 << 20]);
}

#[test]
fn a_copy_into_the_guest_killed_halfway_resumes_from_what_was_received() {
    use std::io::{Read, Write};
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.bin"), dir.path().join("dst"));
    let content = pseudo_random((3 << 20) + 5, 9);
    fs::write(&src, &content).unwrap();
    fs::create_dir(&dst).unwrap();

    // A sender that dies after 2 MiB: it waits for resume_from (nothing
    // held yet), sends two chunks, and its connection drops.
    let req = request(
        BuiltinService::Files.id(),
        Call::CopyToGuest(CopyToGuest {
            dst: s(&dst).into(),
            resume: true,
            ..Default::default()
        }),
    );
    let mut sock = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    sock.write_all(&encode(vec![hello(), req, entry_for(&src, "src.bin")]))
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("resume_from") {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "the agent closed before resume_from");
        seen.extend_from_slice(&chunk[..n]);
    }
    sock.write_all(&encode(first_mib(&content, 2))).unwrap();
    let partial = || temp_files(&dst).pop();
    assert!(util::wait_until(util::STARTUP_DEADLINE, || {
        partial().is_some_and(|p| fs::metadata(p).unwrap().len() == 2 << 20)
    }));
    drop(sock);
    let kept = partial().unwrap();
    assert!(util::wait_until(util::STARTUP_DEADLINE, || unlocked(&kept)));
    assert!(!dst.join("src.bin").exists());

    let out = cp(&["--resume", "--json", s(&src), &remote(&agent, &dst)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_bytes"], 2 << 20);
    assert_eq!(summary["bytes"], content.len());
    assert_eq!(fs::read(dst.join("src.bin")).unwrap(), content);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_copy_out_of_the_guest_cut_halfway_resumes_and_without_resume_keeps_nothing() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.bin"), dir.path().join("dst"));
    let content = pseudo_random((3 << 20) + 5, 11);
    fs::write(&src, &content).unwrap();
    fs::create_dir(&dst).unwrap();
    let mut cut = vec![entry_for(&src, "src.bin")];
    cut.extend(first_mib(&content, 2));

    // Cut without --resume: the CLI keeps nothing.
    let (_sock_dir, addr, thread) = hostile_agent(encode(cut.clone()));
    let out = cp(&[&format!("{addr}:/src.bin"), s(&dst)]);
    thread.join().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection closed"),
        "{}",
        stderr(&out)
    );
    assert!(temp_files(dir.path()).is_empty());

    // Cut with --resume: the partial file stays, and the next copy from the
    // real agent continues it.
    let (_sock_dir, addr, thread) = hostile_agent(encode(cut));
    let out = cp(&["--resume", &format!("{addr}:/src.bin"), s(&dst)]);
    thread.join().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let kept = temp_files(&dst);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::metadata(&kept[0]).unwrap().len(), 2 << 20);

    let out = cp(&["--resume", "--json", &remote(&agent, &src), s(&dst)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_bytes"], 2 << 20);
    assert_eq!(fs::read(dst.join("src.bin")).unwrap(), content);
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_partial_file_that_does_not_match_the_source_is_refused() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.bin"), dir.path().join("dst"));
    let content = pseudo_random((2 << 20) + 1, 12);
    fs::write(&src, &content).unwrap();
    fs::create_dir(&dst).unwrap();
    // A partial copy of other bytes, under the name this source maps to.
    let mut other = content.clone();
    other[0] ^= 0xff;
    let mut cut = vec![entry_for(&src, "src.bin")];
    cut.extend(first_mib(&other, 1));
    let (_sock_dir, addr, thread) = hostile_agent(encode(cut));
    let _ = cp(&["--resume", &format!("{addr}:/src.bin"), s(&dst)]);
    thread.join().unwrap();
    assert_eq!(temp_files(&dst).len(), 1);

    let out = cp(&["--resume", &remote(&agent, &src), s(&dst)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match the source"),
        "{}",
        stderr(&out)
    );
    assert!(!dst.join("src.bin").exists());
}

#[test]
fn a_copy_over_the_receivers_byte_limit_is_refused_before_those_bytes_land() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for name in ["a", "b"] {
        std::fs::write(src.join(name), pseudo_random(600 * 1024, 7)).unwrap();
    }

    // Out of the guest: this side's --max-bytes.
    let agent = Agent::start();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = cp(&[
        "-r",
        "--max-bytes",
        "1MiB",
        &remote(&agent, &src),
        s(&out_dir),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("over the 1048576-byte limit"), "{err}");
    let landed: Vec<_> = std::fs::read_dir(out_dir.join("src")).unwrap().collect();
    assert_eq!(
        landed.len(),
        1,
        "the first file only, no temporary file: {landed:?}"
    );
    assert!(temp_files(&out_dir.join("src")).is_empty());
    let out = cp(&[
        "-r",
        "--max-bytes",
        "2MiB",
        &remote(&agent, &src),
        s(&dir.path().join("all")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Into the guest: the agent's --max-copy-bytes.
    let bounded = Agent::start_with(&["--max-copy-bytes", "1MiB"]);
    let guest_dst = dir.path().join("guest");
    let out = cp(&["-r", s(&src), &remote(&bounded, &guest_dst)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("over the 1048576-byte limit"), "{err}");
    assert!(temp_files(&guest_dst).is_empty());

    // This side's bound says nothing of a copy into a guest: refused as usage.
    let out = cp(&[
        "-r",
        "--max-bytes",
        "1MiB",
        s(&src),
        &remote(&bounded, &guest_dst),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--max-copy-bytes"), "{err}");
}
