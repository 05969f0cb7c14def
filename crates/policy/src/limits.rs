//! The bounds on a policy document.

/// Largest policy document accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Most rules (programs plus prefixes) in one document.
pub const MAX_POLICY_RULES: usize = 1024;
