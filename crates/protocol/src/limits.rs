//! Every bound of the wire protocol, in one place.
//!
//! Each value says why it was chosen. A peer that exceeds one gets an error
//! frame naming the limit; nothing is allocated before the check.

/// Largest frame body accepted from a peer, control or data.
///
/// Control messages are small (an exec request with a large environment is a
/// few KiB); 1 MiB leaves room while bounding what a hostile peer can make us
/// buffer per connection.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Largest frame body a server accepts before the client has authenticated
/// (its `hello` and `auth_response`): both are a few hundred bytes, so a
/// peer without the key can make the server buffer no more than this per
/// connection, instead of [`MAX_FRAME_BYTES`]. The server's own frames in
/// the handshake are not bounded by it (an error frame's message alone may
/// be [`MAX_ERROR_MESSAGE_BYTES`]).
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 8 * 1024;

/// Size of the data chunks a sender puts in one data frame.
///
/// Large enough that the 5-byte header is noise and a pipe's whole default
/// buffer (64 KiB) moves in one frame; small enough to interleave stdout and
/// stderr fairly.
pub const DATA_CHUNK_BYTES: usize = 256 * 1024;

/// How long either side waits for the handshake to complete.
///
/// Generous for a guest under TCG emulation; short enough that a silent peer
/// does not hold a connection slot for long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// How long a client waits for the first answer to its request (an exec's
/// `exec_started` or `error`): the agent answers as soon as the process is
/// spawned, so only a paused or hung guest (or a stuck agent) takes longer;
/// generous for a guest under TCG emulation and heavy load.
pub const REQUEST_ANSWER_TIMEOUT_MS: u64 = 30_000;

/// Most arguments an exec request may carry (Linux allows far more, but a
/// request is one control frame, so the frame limit binds first anyway).
pub const MAX_EXEC_ARGS: usize = 16 * 1024;

/// Most environment variables an exec request may set.
pub const MAX_EXEC_ENV: usize = 4 * 1024;

/// Largest message text in an error frame; longer text is truncated.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

/// Longest relative path in a copy, and longest symlink target (Linux's
/// `PATH_MAX`): a longer name could not be created anyway.
pub const MAX_COPY_PATH_BYTES: usize = 4096;

/// Longest path component in a copy (Linux's `NAME_MAX`).
pub const MAX_COPY_NAME_BYTES: usize = 255;

/// Most entries (files, directories, symlinks) in one copy: bounds the
/// receiver's bookkeeping (one record per directory) against a hostile sender.
pub const MAX_COPY_ENTRIES: u64 = 1_000_000;

/// Most bytes of directory bookkeeping a receiver keeps during one copy
/// (each directory's path, to set its mode and mtime at the end). Without
/// it a hostile sender could make [`MAX_COPY_ENTRIES`] directories with
/// 4 KiB paths, gigabytes of bookkeeping; 64 MiB is ~100,000 directories at
/// typical path lengths.
pub const MAX_COPY_DIR_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Size of the file data frames a sender sends: the frame limit, so a
/// gigabyte costs a thousand frames and the 5-byte header is noise.
pub const FILE_CHUNK_BYTES: usize = MAX_FRAME_BYTES;

/// Longest key-value key, in bytes of UTF-8 (Hyper-V's KVP limit).
pub const MAX_KVP_KEY_BYTES: usize = 512;

/// Longest key-value value, in bytes of UTF-8 (Hyper-V's KVP limit).
pub const MAX_KVP_VALUE_BYTES: usize = 2048;

/// Most keys in one pool. A whole pool travels in one frame (a list, or the
/// host's push): 128 × (512 + 2,048) bytes, doubled for the worst JSON
/// escaping of the characters values may hold, is 640 KiB, within
/// [`MAX_FRAME_BYTES`].
pub const MAX_KVP_KEYS_PER_POOL: usize = 128;

/// Longest shutdown reason, in bytes (Hyper-V's shutdown message limit).
pub const MAX_SHUTDOWN_REASON_BYTES: usize = 2048;

/// Most entries in each list of a guest information answer (filesystems,
/// interfaces, addresses of one interface, user sessions): the answer stays
/// far below [`MAX_FRAME_BYTES`] on any guest.
pub const MAX_INFO_ITEMS: usize = 256;

/// Most mount points one freeze or thaw request names.
pub const MAX_FREEZE_MOUNTPOINTS: usize = 256;

/// Longest safety timeout of a freeze, seconds: a filesystem frozen longer
/// stalls every writer in the guest; backups snapshot in seconds.
pub const MAX_FREEZE_TIMEOUT_S: u64 = 600;

/// Safety timeout of a freeze when the host names none, seconds (Hyper-V's
/// VSS waits about as long for a snapshot).
pub const DEFAULT_FREEZE_TIMEOUT_S: u64 = 60;

/// How long the side that sent an operation's last frame waits for its peer
/// to close first (reading and dropping whatever still arrives) before it
/// closes itself: the closing rule of `docs/PROTOCOL.md` section 2.5. Over
/// hybrid vsock a close before the peer has read the last frame can turn
/// into a reset that loses it; 5 s is far more than any peer needs to read
/// one frame, and a peer that never closes holds the connection no longer.
pub const LINGER_AFTER_LAST_FRAME_MS: u64 = 5_000;

/// How long a copy waits on its peer (the next frame from the sender, a
/// write the receiver does not take, a `resume_from` or `copy_summary` that
/// does not come) before it fails as stalled, when not configured otherwise
/// (`guestcomm cp --idle-timeout`, `guestcomm-agent --copy-idle-timeout`).
/// Long enough for a receiver syncing a large file to a slow disk, or
/// hashing a partial file before its `resume_from`, under TCG emulation;
/// short enough that a vanished peer does not hold a copy for minutes.
pub const DEFAULT_COPY_IDLE_TIMEOUT_MS: u64 = 60_000;

/// Samples of a time measurement unless the caller asks otherwise
/// (`guestcomm time --samples`, the daemon's time routes and its periodic
/// sync): enough for one sample with a short round trip.
pub const DEFAULT_TIME_SAMPLES: u32 = 4;

/// Most samples of one time measurement: each is a session to the agent.
pub const MAX_TIME_SAMPLES: u32 = 32;
