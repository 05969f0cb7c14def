//! Test support for copies: `guestcomm cp` with a deadline, the frames a
//! hand-driven sender sends, and the temporary files a copy must never
//! leave behind.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use guestcomm_protocol::files::{CopyToGuest, Entry, EntryKind};
use guestcomm_protocol::{BuiltinService, Call, Control, Frame, StreamId};

/// Longest a `guestcomm cp` in the tests may run: far below any default
/// idle timeout, so a copy that waits for a timeout instead of an answer
/// fails the test instead of hanging it.
pub const CP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `guestcomm cp ARGS` within [`CP_DEADLINE`].
pub fn cp_within_deadline(args: &[&str]) -> Output {
    let child = Command::new(super::bin("guestcomm"))
        .arg("cp")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within_deadline(child)
}

/// The output of `child` once it exits; killed (by PID) and the test failed
/// if it is still running after [`CP_DEADLINE`]. (Its output is a line or
/// two, so the pipes never fill while it runs.)
pub fn output_within_deadline(mut child: Child) -> Output {
    let ended = super::wait_until(CP_DEADLINE, || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "guestcomm still ran after {CP_DEADLINE:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

/// Every temporary file left anywhere under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    // The daemon or agent may remove a temporary file between the listing
    // and the look at it: an entry gone by then is simply not left behind.
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".guestcomm-")
        {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            found.extend(temp_files(&path));
        }
    }
    found
}

/// An entry of `kind` named `path`, of `size` bytes.
pub fn entry(path: &str, kind: EntryKind, size: u64, target: Option<&str>) -> Frame {
    Frame::Control(Control::Entry(Entry {
        path: path.into(),
        kind,
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
        size,
        target: target.map(Into::into),
        uid: None,
        gid: None,
    }))
}

/// A file data frame.
pub fn data(bytes: &'static [u8]) -> Frame {
    Frame::Data(StreamId::File, bytes.into())
}

/// The entry a sender sends for the local file `path`, named `name`.
pub fn entry_for(path: &Path, name: &str) -> Frame {
    let meta = fs::metadata(path).unwrap();
    Frame::Control(Control::Entry(Entry {
        path: name.into(),
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap(),
        size: meta.len(),
        target: None,
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
    }))
}

/// The request of a copy into the guest, to `dst`.
pub fn copy_to_guest_request(dst: &Path, recursive: bool) -> Frame {
    super::wire::request(
        BuiltinService::Files.id(),
        Call::CopyToGuest(CopyToGuest {
            dst: dst.to_str().unwrap().into(),
            recursive,
            ..Default::default()
        }),
    )
}
