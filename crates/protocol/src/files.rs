//! The file service's messages: copy a file or a tree into or out of the
//! guest (the counterpart of Hyper-V's `Msvm_GuestFileService`).
//!
//! Whichever side holds the files is the *sender*, the other the
//! *receiver*; the byte stream between them is the same in both directions:
//!
//! ```text
//! sender                                         receiver
//!   | -- Entry {path, kind, mode, mtime, size} -->  |  root first: path = its name
//!   | -- data(file) ... (size bytes in all) ----->  |  kind file only, 0x04 frames
//!   | -- EntryEnd {blake3} --------------------->  |  kind file only
//!   | -- Entry ... (parents before children) ---->  |
//!   | -- CopyEnd -------------------------------->  |
//!   | <-- CopySummary {files, bytes, ...} | Error   |  either may send Error at any time
//! ```
//!
//! With `resume`, the receiver answers every file entry with
//! `ResumeFrom {offset, blake3}` (what a kept partial file holds) and the
//! sender, once it has checked that prefix, sends only the rest.
//!
//! Host to guest, the client sends `Request {copy_to_guest}`, waits for
//! `CopyReady` (the agent checked the destination) and is the sender. Guest to
//! host, the client sends `Request {copy_from_guest}` and is the receiver.
//! The receiver trusts nothing: see `docs/PROTOCOL.md` section 13.

use serde::{Deserialize, Serialize};

/// The handshake feature of an agent that opens every copy path at the
/// moment of use beneath the allowed prefixes (the host's, sent in
/// `host_prefixes`, and its own policy's), never following a symbolic link
/// out of them. guestcommd relays no copy with restricted paths to an agent
/// without it.
pub const FEATURE_COPY_BENEATH: &str = "copy-beneath";

/// Options of a copy into the guest, as `Msvm_CopyFileToGuestSettingData`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyToGuest {
    /// Destination path in the guest; an existing directory receives the
    /// source under its own name.
    pub dst: String,
    /// Replace existing files (`OverwriteExisting`).
    #[serde(default)]
    pub overwrite: bool,
    /// Create missing parent directories of `dst` (`CreateFullPath`).
    #[serde(default)]
    pub create_full_path: bool,
    /// Accept a directory tree, not only one file.
    #[serde(default)]
    pub recursive: bool,
    /// Keep partial files of an interrupted copy, and continue them.
    #[serde(default)]
    pub resume: bool,
    /// Give each entry the owner (numeric uid and gid) it has at the source;
    /// needs the agent to run as root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_owner: bool,
    /// The host policy's allowed prefixes for this copy's direction, set by
    /// guestcommd when the VM's host policy restricts copy paths (absent:
    /// the host does not restrict them). An agent that advertises
    /// [`FEATURE_COPY_BENEATH`] opens the guest path beneath one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_prefixes: Option<Vec<String>>,
}

/// A copy out of the guest; the destination options stay on the client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFromGuest {
    /// Source path in the guest.
    pub src: String,
    /// Send a directory tree, not only one file.
    #[serde(default)]
    pub recursive: bool,
    /// The client keeps partial files and continues them (it answers each
    /// file entry with `ResumeFrom`).
    #[serde(default)]
    pub resume: bool,
    /// The host policy's allowed prefixes for this copy's direction, set by
    /// guestcommd when the VM's host policy restricts copy paths (absent:
    /// the host does not restrict them). An agent that advertises
    /// [`FEATURE_COPY_BENEATH`] opens the guest path beneath one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_prefixes: Option<Vec<String>>,
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file; its content follows as file data frames.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, kept as a link (never followed by the receiver).
    Symlink,
}

/// One file, directory or symlink of the copied tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path, `/`-separated; the first component is the root's name.
    pub path: String,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Permission bits (the receiver keeps `mode & 0o777`).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Content length in bytes (files only; 0 otherwise).
    #[serde(default)]
    pub size: u64,
    /// Where the link points (symlinks only).
    #[serde(default)]
    pub target: Option<String>,
    /// Numeric owner at the source; applied only when the receiver was
    /// asked to preserve owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Numeric group at the source (as `uid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// What the receiver stored, sent in answer to `CopyEnd`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySummary {
    /// Regular files written.
    pub files: u64,
    /// Directories created or merged into.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// BLAKE3 of the content, when the copy was one file.
    #[serde(default)]
    pub blake3: Option<String>,
    /// Bytes taken from partial files of an earlier attempt (resume).
    #[serde(default)]
    pub resumed_bytes: u64,
}
