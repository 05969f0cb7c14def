//! Bounds of the transport layer.

/// How long connecting (and the hybrid vsock handshake) may take.
///
/// A VMM's socket answers at once; the guest side may be slow under TCG
/// emulation, so leave room without hanging a CLI forever.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
