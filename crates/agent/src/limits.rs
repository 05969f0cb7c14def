//! Bounds of the guest agent, each with the reason for its value.

/// Most connections served at once; the next one gets a `resource_limit`
/// error frame and is closed, and the agent keeps serving the others.
///
/// Each exec connection holds a process, a few pipes and one
/// [`DATA_CHUNK_BYTES`](guestcomm_protocol::limits::DATA_CHUNK_BYTES) buffer
/// per output stream; 256 of them stay within ~130 MiB at full load and far
/// less in practice (buffers grow only as output arrives).
pub const MAX_CONNECTIONS: usize = 256;

/// Most host connections still in their handshake (not authenticated yet)
/// at once, apart from [`MAX_CONNECTIONS`]: a newcomer past it closes the
/// oldest of them. Anyone on the host can connect to a guest's vsock, and
/// this is all that keyless connections can hold: each costs a task and a
/// read buffer of at most
/// [`MAX_HANDSHAKE_FRAME_BYTES`](guestcomm_protocol::limits::MAX_HANDSHAKE_FRAME_BYTES),
/// and a flood of them only ever evicts itself, since the daemon's handshake
/// is done in milliseconds (it is evicted only if this many newer
/// connections arrive during it).
pub(crate) const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 64;

/// How long a connection may take to finish its handshake (hello, and the
/// key exchange) before it is closed: a real client needs two round trips,
/// milliseconds even under TCG emulation; shorter than the protocol's
/// [`HANDSHAKE_TIMEOUT_MS`](guestcomm_protocol::limits::HANDSHAKE_TIMEOUT_MS)
/// so a silent peer holds its place for less time.
pub(crate) const UNAUTHENTICATED_TIMEOUT_MS: u64 = 5_000;

/// Most connections of the local key-value socket served at once (guest
/// programs reading or writing a key, each a single short request). It has
/// its own budget, so local programs cannot take the host's slots, nor the
/// host theirs.
pub(crate) const MAX_LOCAL_CONNECTIONS: usize = 32;

/// Most local key-value socket connections still in their handshake; as
/// for the host, a newcomer past it closes the oldest.
pub(crate) const MAX_UNAUTHENTICATED_LOCAL_CONNECTIONS: usize = 16;

/// File descriptors the agent may hold at its caps: per authenticated
/// connection (host or local) the socket, three pipes (six ends, three kept) or a pty pair, and the files
/// of a copy; one socket per connection in its handshake; at start the agent raises its soft limit to the hard one and
/// warns when that is lower than this.
pub const OPEN_FILES_WANTED: u64 = 8 * MAX_CONNECTIONS as u64
    + 8 * MAX_LOCAL_CONNECTIONS as u64
    + (MAX_UNAUTHENTICATED_CONNECTIONS + MAX_UNAUTHENTICATED_LOCAL_CONNECTIONS) as u64
    + 64;

/// Stdin chunks queued between the socket reader and the process.
pub(crate) const STDIN_QUEUE_FRAMES: usize = 4;

/// How long an exec's output `eof`s wait in the writer for the process's
/// exit, to go out with `exited` in one write: the pipes' end and the exit
/// come microseconds apart when a command ends, so this is reached by a
/// command that closed its stdout and stderr and runs on (its host then
/// learns of their end this much later), or by one descheduled in the
/// middle of its exit on a loaded guest (then the `eof`s go first, as
/// before). Long enough for the latter to be rare, short against what a
/// person notices.
pub(crate) const OUTPUT_EOF_GRACE_MS: u64 = 100;

/// Pipe buffer size asked for on the child's stdout and stderr.
///
/// The Linux default (64 KiB) makes bulk output cost one read per 64 KiB;
/// 1 MiB (the unprivileged maximum by default) cuts that syscall rate.
pub(crate) const PIPE_BUFFER_BYTES: i32 = 1024 * 1024;

/// Largest QGA request (`--qga`): qemu-ga's own JSON limit is larger (64
/// MiB), but a guest-file-write of more should be split anyway.
pub(crate) const MAX_QGA_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes one guest-file-read returns (qemu-ga allows 48 MB; an agent
/// in every guest keeps less in memory at once).
pub(crate) const MAX_QGA_FILE_READ_BYTES: usize = 16 * 1024 * 1024;

/// Most files open through guest-file-open at once.
pub(crate) const MAX_QGA_OPEN_FILES: usize = 64;

/// Most guest-exec processes whose status has not been collected.
pub(crate) const MAX_QGA_EXECS: usize = 64;

/// Most output guest-exec keeps of each stream (qemu-ga's 16 MB); the rest
/// is dropped and reported as truncated.
pub(crate) const MAX_QGA_EXEC_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
