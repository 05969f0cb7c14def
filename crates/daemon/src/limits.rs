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
pub(crate) const PROBE_TIMEOUT_MS: u64 = 3_000;
/// Most connections the health monitor keeps open to one agent endpoint
/// for its next probes (docs/PROTOCOL.md 2.6): a quarter of an agent's
/// default connection slots (256), so that VMs registered on one shared
/// agent never fill it with the daemon's idle heartbeats. One VM per agent,
/// the usual case, keeps one.
pub(crate) const MAX_KEPT_PROBES_PER_AGENT: usize = 64;
/// Most probe connections kept open in all: one per VM up to 16,384 VMs
/// (counted in [`OPEN_FILES_WANTED`]); VMs past it are probed with a
/// connection each time, as without reuse.
pub(crate) const MAX_KEPT_PROBES: usize = 16_384;
/// The health probes ask the agents for their counters (`heartbeat`) one
/// round in this many (every 30 s at the default 5 s heartbeat), and only
/// while the metrics are read ([`METRICS_READ_RECENTLY_S`]): at 10,000
/// VMs, asking on every probe costs the daemon a third more CPU.
pub(crate) const AGENT_COUNTERS_EVERY_ROUNDS: u64 = 6;
/// Metrics scraped within this many seconds are "being read".
pub(crate) const METRICS_READ_RECENTLY_S: u64 = 600;

/// Buffer of each direction of a relayed connection: a data frame
/// ([`DATA_CHUNK_BYTES`](guestcomm_protocol::limits::DATA_CHUNK_BYTES)) moves
/// in one read, and a relay holds at most twice this much per connection.
pub(crate) const RELAY_BUFFER_BYTES: usize = 256 * 1024;

/// First size of a relay buffer: it doubles while reads fill it, up to
/// [`RELAY_BUFFER_BYTES`], so a short exchange (an exec of `true`) does not
/// allocate and zero the bulk size.
pub(crate) const RELAY_BUFFER_START_BYTES: usize = 8 * 1024;

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
pub(crate) const API_SOCKET_MODE: u32 = 0o660;

/// Most relayed connections (exec through the daemon) at once; the next
/// one gets HTTP 503 and the daemon keeps serving. Each holds two sockets and
/// two [`RELAY_BUFFER_BYTES`] buffers: 1,024 of them stay near 512 MiB at the
/// very worst and far fewer file descriptors than the default limit of systemd
/// services (524,288).
pub(crate) const MAX_RELAYS: usize = 1024;

/// Most API calls asking one VM's agent at once (info, time, kvp, fs,
/// shutdown: one agent connection each); the next is answered 503. Far
/// below an agent's connection slots (256 by default), so reads cannot
/// crowd out the operators' exec and cp.
pub(crate) const MAX_AGENT_CALLS_PER_VM: usize = 8;

/// Most guest-initiated connections (a guest program connecting to a
/// host service over hybrid vsock) relayed at once for one VM; the next
/// is closed at once. A budget of their own, apart from [`MAX_RELAYS`]:
/// a hostile guest can neither take the operators' relay slots nor
/// another VM's.
pub(crate) const MAX_GUEST_RELAYS_PER_VM: usize = 64;

/// Most guest-initiated connections relayed at once over all VMs, apart
/// from [`MAX_RELAYS`]; each VM is held to [`MAX_GUEST_RELAYS_PER_VM`] of them.
pub(crate) const MAX_GUEST_RELAYS: usize = 1024;

/// File descriptors the daemon may hold at its caps: two sockets per relay
/// ([`MAX_RELAYS`] and [`MAX_GUEST_RELAYS`]), a warm agent connection per
/// VM for a few thousand VMs, the health probes and the database, the
/// probes' kept connections ([`MAX_KEPT_PROBES`]), the API connections at
/// the default caps ([`HTTP_CONNECTIONS_AT_CAPS`]) and the TLS handshakes:
/// 36,928, well below the unit's `LimitNOFILE=65536`. At
/// start the daemon raises its soft limit to the hard one and warns when
/// that is lower than this.
pub const OPEN_FILES_WANTED: u64 = 2 * (MAX_RELAYS + MAX_GUEST_RELAYS) as u64
    + 8_192
    + MAX_KEPT_PROBES as u64
    + HTTP_CONNECTIONS_AT_CAPS as u64
    + MAX_TLS_HANDSHAKES as u64;

/// API connections open at the default caps, at worst: the API listener's
/// and the `--wbem` listener's totals (the admins' own, root's and the
/// daemon user's, are theirs to bound).
pub(crate) const HTTP_CONNECTIONS_AT_CAPS: usize = 2 * DEFAULT_MAX_HTTP_CONNECTIONS;

/// Mode of the Unix sockets where the VMM delivers guest-initiated
/// connections (`<vm socket>_<port>`): its owner only. The daemon gives
/// them to the user that owns the VM's own socket (the VMM's), and checks
/// each connection's peer credentials as well.
pub(crate) const GUEST_LISTENER_MODE: u32 = 0o600;

/// Default most audit records kept (`[audit] max_records`): a year of a busy
/// host's operations at a few hundred bytes each stays under a gigabyte.
pub(crate) const DEFAULT_AUDIT_MAX_RECORDS: u64 = 1_000_000;

/// Default age after which audit records are dropped (`[audit] max_age_days`).
pub(crate) const DEFAULT_AUDIT_MAX_AGE_DAYS: u64 = 365;

/// Longest arguments text kept in an audit record, in bytes; longer ones are
/// cut and followed by the SHA-256 of the whole text, so the record stays
/// small and still identifies what ran.
pub(crate) const MAX_AUDIT_ARGUMENTS_BYTES: usize = 1024;

/// Most bytes of environment variable names kept in an exec's audit
/// record (the names that fit, in order; the count and the digest still
/// cover them all), for the same reason.
pub(crate) const MAX_AUDIT_ENV_NAMES_BYTES: usize = 1024;

/// Most audit records one `GET /v1/audit` returns (the newest ones).
pub(crate) const MAX_AUDIT_QUERY_RECORDS: u32 = 10_000;

/// Interval between two prunings of the audit log to its retention, in seconds.
pub(crate) const AUDIT_PRUNE_INTERVAL_SECS: u64 = 600;

/// Most TLS handshakes of the TCP API in progress at once. A newcomer past
/// it closes the oldest handshake of the peer holding the most (and past
/// [`MAX_TLS_HANDSHAKES_PER_PEER`], its own peer's oldest), so a flood of
/// stalled handshakes costs bounded memory and only ever evicts itself: a
/// client that finishes its handshake in milliseconds gets through.
pub(crate) const MAX_TLS_HANDSHAKES: usize = 64;

/// Most TLS handshakes in progress from one peer (an address; the whole
/// loopback range is one peer, since a local user can connect from any of
/// 127.0.0.0/8): one address cannot fill [`MAX_TLS_HANDSHAKES`].
pub(crate) const MAX_TLS_HANDSHAKES_PER_PEER: usize = 16;

/// How long a TLS client may take to finish its handshake, in ms: a few
/// round trips, so seconds even over a slow link.
pub(crate) const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Default longest wait for a request's whole header on an API connection
/// (`--http-header-timeout`), in ms: from the moment the daemon waits for a
/// request (a new connection, or a kept-alive one after its last answer)
/// until the header's last byte. The CLI sends its request at once and
/// uses one connection per call, so this only ends idle or slow peers.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 15_000;

/// Default most HTTP connections of one peer on an API listener
/// (`--max-http-connections-per-peer`): a uid on the Unix socket, an
/// address on TCP (the loopback range is one). Upgraded connections (exec,
/// cp through the daemon) no longer count; they are bounded by
/// [`MAX_RELAYS`]. Room for a fleet tool's hundreds of parallel execs from
/// one operator account (each connection counts only until its upgrade).
pub const DEFAULT_MAX_HTTP_CONNECTIONS_PER_PEER: usize = 256;

/// Default most HTTP connections of one API listener in all
/// (`--max-http-connections`), not counting root's and the daemon user's on
/// the Unix socket, which no cap holds: however many users fill it, an
/// admin still gets in.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 4096;

/// Most VMs whose admission data (module `cache`) is kept in memory; past
/// it the cache starts over. Each entry is a few hundred bytes.
pub(crate) const MAX_CACHED_VMS: usize = 16_384;

/// Most CopyFilesToGuest jobs kept (WBEM, module `wbem::jobs`); when full,
/// the oldest finished job makes room, and a new call is refused while all
/// are running. Each holds a few hundred bytes and its setting data.
pub(crate) const MAX_WBEM_JOBS: usize = 256;

/// Most files in one CopyFilesToGuest call: the request is bounded by the
/// 1 MiB CIM-XML limit anyway; this keeps one job's audit record and
/// setting data small.
pub(crate) const MAX_COPY_FILES_PER_CALL: usize = 64;

/// Most bytes of a refused (oversized) WBEM request read and dropped before
/// the connection is closed: enough for a client that sent a few MiB too
/// many to read its 413; bounded so a huge upload is cut off.
pub(crate) const MAX_WBEM_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Longest time spent dropping a refused WBEM request's body, in ms.
pub(crate) const WBEM_DRAIN_TIMEOUT_MS: u64 = 5_000;

/// How long a WBEM read waits for a VM's agent to list its guest and
/// intrinsic key-value pools (Msvm_KvpExchangeComponent's item arrays):
/// below the 3 s health probe, so an agent that stopped answering since its
/// last probe costs an enumeration at most this, and the arrays are NULL.
pub(crate) const WBEM_KVP_READ_TIMEOUT_MS: u64 = 2_000;

/// VMs whose key-value pools one WBEM read lists at once (each takes one of
/// its VM's [`MAX_AGENT_CALLS_PER_VM`] slots).
pub(crate) const MAX_WBEM_KVP_READS_AT_ONCE: usize = 16;

/// Most problems one audit log verification lists (`GET /v1/audit/verify`);
/// beyond, they are counted.
pub(crate) const MAX_AUDIT_VERIFY_PROBLEMS: usize = 100;

/// Refusals of one caller without a role recorded in full per window
/// ([`REFUSAL_WINDOW_SECS`]); the rest are counted in one summary record.
pub(crate) const REFUSALS_RECORDED_PER_WINDOW: u32 = 10;

/// The window of [`REFUSALS_RECORDED_PER_WINDOW`], in seconds.
pub(crate) const REFUSAL_WINDOW_SECS: u64 = 60;

/// Most callers without a role with a window of their own; the others
/// share one, so a flood of identities costs bounded memory and records.
pub(crate) const MAX_REFUSING_CALLERS: usize = 256;

/// How often the summary records of counted refusals are brought up to
/// date, in milliseconds.
pub(crate) const REFUSAL_FLUSH_INTERVAL_MS: u64 = 1000;

/// Audit records one step of a verification walks while it holds the store
/// (about 0.15 s in a release build); the next step lets other calls in first.
pub(crate) const MAX_AUDIT_VERIFY_BATCH: usize = 10_000;

/// Longest ElementName of a registered service, in characters (CIM's
/// Caption is limited to 64 characters; names longer than that do not
/// display anywhere).
pub(crate) const MAX_ELEMENT_NAME_CHARS: usize = 256;

/// How long a spare agent connection waits for an operation before it is
/// closed: well inside the agent's own wait for a first request.
pub(crate) const SPARE_MAX_AGE_MS: u64 = 5_000;

/// Spare agent connections kept at most, over all VMs.
pub(crate) const MAX_SPARES: usize = 64;

/// How far a guest clock may be from the host's before the periodic sync
/// steps it: below this, a step would only add jitter.
pub(crate) const PERIODIC_SYNC_TOLERANCE_NS: u64 = 1_000_000;

/// Bound of one VM's periodic sync (a dozen connections at most).
pub(crate) const PERIODIC_SYNC_TIMEOUT_MS: u64 = 30_000;

/// Largest control body the relay's watcher decodes; larger ones are
/// skipped (the messages it looks for, `Exited` and `Error`, are far smaller).
pub(crate) const MAX_WATCHED_CONTROL_BYTES: usize = 16 * 1024;

/// How long a listener pauses after an accept error (out of file
/// descriptors), so that it does not spin.
pub(crate) const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// Largest configuration file read, in bytes: a real one is a few lines.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Largest domain XML `--libvirt` reads (libvirt's own bound on an XML
/// document is 10 MiB; a domain with hundreds of devices stays well under
/// 1 MiB): a larger one is refused, naming the domain.
#[cfg(any(test, feature = "libvirt"))]
pub(crate) const MAX_DOMAIN_XML_BYTES: usize = 4 * 1024 * 1024;

/// Deepest element nesting read in a domain XML (libvirt's own schema nests
/// under 10 levels; metadata may nest more, but not this much).
#[cfg(any(test, feature = "libvirt"))]
pub(crate) const MAX_DOMAIN_XML_DEPTH: usize = 64;

/// Mode of the key files guestcommd writes for the libvirt domains it
/// follows (`[libvirt] key_dir`): read by the daemon's user and the
/// directory's group (QEMU's), no one else.
#[cfg(any(test, feature = "libvirt"))]
pub(crate) const DOMAIN_KEY_FILE_MODE: u32 = 0o640;

/// First wait before reconnecting to libvirt after it went away or refused
/// the connection, in milliseconds; it doubles up to
/// [`LIBVIRT_RECONNECT_MAX_MS`], so a restarted libvirtd is found again at
/// once and a long-gone one costs one attempt every 30 s.
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_RECONNECT_FIRST_MS: u64 = 250;

/// Longest wait between two attempts to reconnect to libvirt.
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_RECONNECT_MAX_MS: u64 = 30_000;

/// Lifecycle events queued between libvirt's event loop and the thread that
/// applies them: past it, events are dropped and the whole inventory is read
/// again instead (nothing is lost, the queue stays bounded).
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_EVENT_QUEUE: usize = 1024;

/// How often the libvirt follower checks that its connection is alive when
/// no event comes (libvirt's keepalive finds a dead peer within
/// [`LIBVIRT_KEEPALIVE_INTERVAL_S`] × [`LIBVIRT_KEEPALIVE_COUNT`]).
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_IDLE_CHECK_MS: u64 = 2_000;

/// Seconds between libvirt keepalive messages on the daemon's connection.
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_KEEPALIVE_INTERVAL_S: i32 = 5;

/// Keepalive messages without an answer before libvirt closes the connection.
#[cfg(feature = "libvirt")]
pub(crate) const LIBVIRT_KEEPALIVE_COUNT: u32 = 3;

/// Most items in one call of a WBEM method that takes an array (DataItems,
/// GuestServiceSettings, ResourceSettings): Microsoft documents 128 for
/// the key-value methods, the size of a whole pool.
pub(crate) const MAX_WBEM_ITEMS_PER_CALL: usize = 128;
