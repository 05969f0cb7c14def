//! Bounds and defaults of the daemon, each with the reason for its value.

/// Default interval between two health probes of one VM, in milliseconds
/// (`--heartbeat-interval`). Hyper-V's heartbeat service reports every few
/// seconds; 5 s keeps 1,000 VMs at 200 probes per second.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5_000;

/// Default number of health probes in flight at once (`--max-concurrent-probes`):
/// 1,000 VMs must not mean 1,000 sockets opened in the same instant.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 64;

/// How long one probe (connect + handshake) may take before the VM counts as
/// unreachable. Shorter than the protocol's 10 s handshake bound, so that a
/// silent agent does not hold a probe slot for a whole round.
pub const PROBE_TIMEOUT_MS: u64 = 3_000;

/// Buffer of each direction of a relayed connection: a data frame
/// ([`DATA_CHUNK_BYTES`](guestcomm_protocol::limits::DATA_CHUNK_BYTES)) moves
/// in one read, and a relay holds at most twice this much per connection.
pub const RELAY_BUFFER_BYTES: usize = 256 * 1024;

/// First size of a relay buffer: it doubles while reads fill it, up to
/// [`RELAY_BUFFER_BYTES`], so a short exchange (an exec of `true`) does not
/// allocate and zero the bulk size.
pub const RELAY_BUFFER_START_BYTES: usize = 8 * 1024;

/// Default idle bound of a relayed copy, in milliseconds
/// (`--copy-idle-timeout`): when no byte has moved either way for this
/// long, the relay closes both connections, releases its slot and closes
/// the copy's audit record as `stalled`. Twice the copy idle timeout of the
/// CLI and the agent
/// ([`DEFAULT_COPY_IDLE_TIMEOUT_MS`](guestcomm_protocol::limits::DEFAULT_COPY_IDLE_TIMEOUT_MS)),
/// so that with default settings the ends give their own, clearer error
/// first; the relay's bound is the backstop for ends that never do.
/// Exec and raw service connections have no idle bound: an interactive
/// shell may rightly be silent for hours.
pub const DEFAULT_RELAY_COPY_IDLE_TIMEOUT_MS: u64 =
    2 * guestcomm_protocol::limits::DEFAULT_COPY_IDLE_TIMEOUT_MS;

/// Mode of the API socket: owner and group (the `guestcomm` group) only.
pub const API_SOCKET_MODE: u32 = 0o660;

/// Most relayed connections (exec through the daemon) at once; the next
/// one gets HTTP 503 and the daemon keeps serving. Each holds two sockets and
/// two [`RELAY_BUFFER_BYTES`] buffers: 1,024 of them stay near 512 MiB at the
/// very worst and far fewer file descriptors than the default limit of systemd
/// services (524,288).
pub const MAX_RELAYS: usize = 1024;

/// File descriptors the daemon may hold at its caps: two sockets per relay
/// ([`MAX_RELAYS`]), a warm agent connection per VM for a few thousand VMs,
/// the health probes and the database. At start the daemon raises its soft
/// limit to the hard one and warns when that is lower than this.
pub const OPEN_FILES_WANTED: u64 = 2 * MAX_RELAYS as u64 + 8_192;

/// Default most audit records kept (`[audit] max_records`): a year of a busy
/// host's operations at a few hundred bytes each stays under a gigabyte.
pub const DEFAULT_AUDIT_MAX_RECORDS: u64 = 1_000_000;

/// Default age after which audit records are dropped (`[audit] max_age_days`).
pub const DEFAULT_AUDIT_MAX_AGE_DAYS: u64 = 365;

/// Longest arguments text kept in an audit record, in bytes; longer ones are
/// cut and followed by the SHA-256 of the whole text, so the record stays
/// small and still identifies what ran.
pub const MAX_AUDIT_ARGUMENTS_BYTES: usize = 1024;

/// Most audit records one `GET /v1/audit` returns (the newest ones).
pub const MAX_AUDIT_QUERY_RECORDS: u32 = 10_000;

/// Interval between two prunings of the audit log to its retention, in seconds.
pub const AUDIT_PRUNE_INTERVAL_SECS: u64 = 600;

/// Most TLS handshakes of the TCP API in progress at once; the next
/// connection is closed (and logged), so a flood of stalled handshakes costs
/// bounded memory and never blocks clients that finish theirs.
pub const MAX_TLS_HANDSHAKES: usize = 64;

/// Most VMs whose admission data (module `cache`) is kept in memory; past
/// it the cache starts over. Each entry is a few hundred bytes.
pub const MAX_CACHED_VMS: usize = 16_384;

/// Most CopyFilesToGuest jobs kept (WBEM, module `wbem::jobs`); when full,
/// the oldest finished job makes room, and a new call is refused while all
/// are running. Each holds a few hundred bytes and its setting data.
pub const MAX_WBEM_JOBS: usize = 256;

/// Most files in one CopyFilesToGuest call: the request is bounded by the
/// 1 MiB CIM-XML limit anyway; this keeps one job's audit record and
/// setting data small.
pub const MAX_COPY_FILES_PER_CALL: usize = 64;

/// Most bytes of a refused (oversized) WBEM request read and dropped before
/// the connection is closed: enough for a client that sent a few MiB too
/// many to read its 413; bounded so a huge upload is cut off.
pub const MAX_WBEM_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Longest time spent dropping a refused WBEM request's body, in ms.
pub const WBEM_DRAIN_TIMEOUT_MS: u64 = 5_000;

/// Most problems one audit log verification lists (`GET /v1/audit/verify`);
/// beyond, they are counted.
pub const MAX_AUDIT_VERIFY_PROBLEMS: usize = 100;

/// Refusals of one caller without a role recorded in full per window
/// ([`REFUSAL_WINDOW_SECS`]); the rest are counted in one summary record.
pub const REFUSALS_RECORDED_PER_WINDOW: u32 = 10;

/// The window of [`REFUSALS_RECORDED_PER_WINDOW`], in seconds.
pub const REFUSAL_WINDOW_SECS: u64 = 60;

/// Most callers without a role with a window of their own; the others
/// share one, so a flood of identities costs bounded memory and records.
pub const MAX_REFUSING_CALLERS: usize = 256;

/// How often the summary records of counted refusals are brought up to
/// date, in milliseconds.
pub const REFUSAL_FLUSH_INTERVAL_MS: u64 = 1000;

/// Audit records one step of a verification walks while it holds the store
/// (about 0.15 s in a release build); the next step lets other calls in first.
pub const MAX_AUDIT_VERIFY_BATCH: usize = 10_000;
