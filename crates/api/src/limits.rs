//! Bounds of the API client, each with the reason for its value. Both can
//! be changed per client with [`ApiClient::with_timeouts`](crate::ApiClient::with_timeouts).

/// Longest time to connect to guestcommd, the TLS handshake included (over
/// TCP). A local daemon accepts in microseconds; a TCP peer that does not
/// answer at all would otherwise hold the CLI for the kernel's SYN retries
/// (about two minutes).
pub const API_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Longest time the client waits for guestcommd to say anything: the answer
/// to a request, each later piece of its body, the answer to an upgrade.
/// The slowest answers are the integration calls, which the daemon bounds
/// by connecting to the agent (10 s), its handshake (10 s) and the agent's
/// answer (60 s): 120 s leaves room for those and still ends the wait on a
/// daemon that accepted the connection and then said nothing. (A relayed
/// stream, once upgraded, is not bounded here: an exec may be silent for
/// hours; copies bound their own waits.)
pub const API_IDLE_TIMEOUT_MS: u64 = 120_000;
