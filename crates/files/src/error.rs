//! Why a copy failed, and the error frame that tells the peer.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use guestcomm_protocol::error_chain;
use guestcomm_protocol::{ErrorCode, ErrorFrame, FrameError};

/// Every way a copy can fail, on either side.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The sender named an entry this receiver refuses (hostile or broken sender).
    #[error("refused entry {path:?}: {reason}")]
    BadEntry {
        /// The name as sent.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A path component on the receiving side is a symlink or not a directory.
    #[error("refused entry {path:?}: its path goes through a symlink or a non-directory")]
    ThroughSymlink {
        /// The name as sent.
        path: String,
    },
    /// The destination exists and overwriting was not asked for.
    #[error("{} already exists (use --force to overwrite)", .0.display())]
    Exists(PathBuf),
    /// An existing destination is of the wrong kind.
    #[error("{} already exists and is {what}", .path.display())]
    WrongKind {
        /// The destination.
        path: PathBuf,
        /// What it is ("a directory", "not a directory").
        what: &'static str,
    },
    /// A directory where only a file is accepted.
    #[error("{} is a directory (use -r to copy directories)", .0.display())]
    IsADirectory(PathBuf),
    /// The destination's parent directory does not exist.
    #[error("directory {} does not exist (use --create-full-path to create it)", .0.display())]
    MissingParent(PathBuf),
    /// The source does not exist.
    #[error("{} does not exist", .0.display())]
    SourceNotFound(PathBuf),
    /// A source that is neither a regular file, a directory nor a symlink.
    #[error("{} is {what}: only regular files, directories and symlinks can be copied", .path.display())]
    Unsupported {
        /// The source.
        path: PathBuf,
        /// What it is ("a FIFO", "a device file", "a socket").
        what: &'static str,
    },
    /// A file's content does not match the sender's checksum.
    #[error("checksum mismatch for {path:?}: the sender says {expected}, the received content is {actual}; nothing was written")]
    Checksum {
        /// The entry.
        path: String,
        /// Sender's BLAKE3.
        expected: String,
        /// Receiver's BLAKE3.
        actual: String,
    },
    /// A file's content is longer or shorter than its declared size.
    #[error("size mismatch for {path:?}: declared {declared} bytes, received {received}")]
    Size {
        /// The entry.
        path: String,
        /// Size in the entry.
        declared: u64,
        /// Bytes received (so far, when too many).
        received: u64,
    },
    /// The source changed while it was being read.
    #[error("{} changed while it was being copied", .0.display())]
    Changed(PathBuf),
    /// Another copy is writing the same partial file.
    #[error("another copy is writing {} right now", .0.display())]
    Busy(PathBuf),
    /// A kept partial file does not match the start of the source.
    #[error("the partial copy of {} does not match the source: remove the destination's .guestcomm-partial-* file or copy without --resume", .0.display())]
    ResumeMismatch(PathBuf),
    /// More entries than the receiver accepts.
    #[error("the copy has more than {0} entries")]
    TooManyEntries(u64),
    /// The tree's directories need more bookkeeping than the receiver keeps.
    #[error("the copy's directories exceed the receiver's {0}-byte bookkeeping limit; copy the tree in parts")]
    TooManyDirectories(usize),
    /// The copy would write more than the receiver allows one copy.
    #[error("{path}: the copy would write {needed} bytes, over the {max}-byte limit of the receiving side for one copy")]
    OverLimit {
        /// The file that would pass the limit.
        path: PathBuf,
        /// Bytes the copy would hold with this file.
        needed: u64,
        /// The limit.
        max: u64,
    },
    /// Owners can be preserved only by a receiver running as root.
    #[error("--preserve-owner needs the receiving side to run as root")]
    OwnerNeedsRoot,
    /// A guest path is not beneath any directory the policy allows.
    #[error("guest path {path:?} is outside the paths allowed for this copy (allowed: {allowed})")]
    NotAllowed {
        /// The path as requested.
        path: String,
        /// The allowed prefixes, comma-separated.
        allowed: String,
    },
    /// Opening a guest path beneath the directory the policy allows would
    /// leave it (a symbolic link, or a magic link, on the way).
    #[error("{} leads outside {root}, the directory the policy allows for this copy (through a symbolic link); refused", .path.display())]
    Escapes {
        /// The path as requested.
        path: PathBuf,
        /// The allowed directory it must stay beneath.
        root: String,
    },
    /// An operating-system call failed.
    #[error("cannot {op} {}", .path.display())]
    Fs {
        /// What was attempted ("create", "write", "read", ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The peer reported an error (and closed).
    #[error("{}", .0.message)]
    Peer(ErrorFrame),
    /// A message that has no place in a copy.
    #[error("protocol error: unexpected {0} in a copy")]
    Protocol(String),
    /// The connection closed before the copy ended.
    #[error("the connection closed before the copy finished; nothing partial was kept")]
    Disconnected,
    /// The connection failed.
    #[error("connection failed")]
    Frame(#[from] FrameError),
    /// The peer stopped: nothing moved for the idle timeout while this side
    /// waited on it.
    #[error("the copy stalled: {wait} for {after:?} (the idle timeout)")]
    Stalled {
        /// What this side was waiting for.
        wait: Stall,
        /// How long it waited.
        after: Duration,
    },
    /// The other half of this side stopped (internal; another error explains why).
    #[error("the copy was interrupted")]
    Interrupted,
}

/// What a stalled copy was waiting for, named by role so that the message
/// reads the same on either side of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stall {
    /// The receiver waited for the sender's next frame.
    #[error("the receiver got nothing from the sender")]
    Frame,
    /// A write to the peer was not taken: the peer stopped reading.
    #[error("one side stopped reading the frames of the other")]
    Write,
    /// The sender waited for the receiver's `resume_from`.
    #[error("the sender got no resume_from from the receiver")]
    ResumeAnswer,
    /// The sender waited for the receiver's `copy_summary`.
    #[error("the sender got no copy_summary from the receiver")]
    Summary,
    /// The client waited for the agent's `copy_ready`.
    #[error("the client got no copy_ready from the agent")]
    Ready,
}

impl CopyError {
    /// A filesystem error on `path`.
    pub fn fs(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        Self::Fs {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The copy stalled on `wait` for `after`.
    pub fn stalled(wait: Stall, after: Duration) -> Self {
        Self::Stalled { wait, after }
    }

    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadEntry { .. }
            | Self::ThroughSymlink { .. }
            | Self::IsADirectory(_)
            | Self::Unsupported { .. }
            | Self::Checksum { .. }
            | Self::Size { .. } => ErrorCode::InvalidArgument,
            Self::Exists(_) | Self::WrongKind { .. } => ErrorCode::AlreadyExists,
            Self::MissingParent(_) | Self::SourceNotFound(_) => ErrorCode::NotFound,
            Self::OwnerNeedsRoot => ErrorCode::PermissionDenied,
            Self::NotAllowed { .. } | Self::Escapes { .. } => ErrorCode::PolicyDenied,
            Self::TooManyEntries(_) | Self::TooManyDirectories(_) | Self::OverLimit { .. } => {
                ErrorCode::ResourceLimit
            }
            Self::Fs { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorCode::NotFound,
                io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
                _ => ErrorCode::Io,
            },
            Self::Changed(_) | Self::Busy(_) => ErrorCode::Io,
            Self::ResumeMismatch(_) => ErrorCode::InvalidArgument,
            Self::Protocol(_) => ErrorCode::UnexpectedMessage,
            Self::Frame(_) => ErrorCode::MalformedFrame,
            Self::Peer(frame) => frame.code,
            Self::Stalled { .. } => ErrorCode::Timeout,
            Self::Disconnected | Self::Interrupted => ErrorCode::Internal,
        }
    }

    /// The error frame to send the peer, or `None` when the peer already
    /// knows (it sent the error, or the connection is gone).
    pub fn to_error_frame(&self) -> Option<ErrorFrame> {
        match self {
            Self::Peer(_) | Self::Disconnected | Self::Interrupted => None,
            Self::Frame(FrameError::Io(_)) => None,
            _ => Some(ErrorFrame::new(self.code(), error_chain(self))),
        }
    }
}
