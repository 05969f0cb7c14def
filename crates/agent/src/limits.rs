//! Bounds of the guest agent, each with the reason for its value.

/// Most connections served at once; the next one gets a `resource_limit`
/// error frame and is closed, and the agent keeps serving the others.
///
/// Each exec connection holds a process, a few pipes and one
/// [`DATA_CHUNK_BYTES`](guestcomm_protocol::limits::DATA_CHUNK_BYTES) buffer
/// per output stream; 256 of them stay within ~130 MiB at full load and far
/// less in practice (buffers grow only as output arrives).
pub const MAX_CONNECTIONS: usize = 256;

/// File descriptors the agent may hold at its caps: per connection the
/// socket, three pipes (six ends, three kept) or a pty pair, and the files
/// of a copy; at start the agent raises its soft limit to the hard one and
/// warns when that is lower than this.
pub const OPEN_FILES_WANTED: u64 = 8 * MAX_CONNECTIONS as u64 + 64;

/// Stdin chunks queued between the socket reader and the process.
pub const STDIN_QUEUE_FRAMES: usize = 4;

/// Pipe buffer size asked for on the child's stdout and stderr.
///
/// The Linux default (64 KiB) makes bulk output cost one read per 64 KiB;
/// 1 MiB (the unprivileged maximum by default) cuts that syscall rate.
pub const PIPE_BUFFER_BYTES: i32 = 1024 * 1024;
