//! What every QGA command handler shares: its answer ([`Reply`]), qemu-ga's
//! argument errors ([`arg`], [`opt`]), the early return on an error reply
//! ([`tri!`]) and a lock that tolerates poisoning ([`locked`]). A leaf: the
//! handlers (`commands`, `exec`, `files`, `accounts`, `fsinfo`) import it,
//! it imports none of them.

use guestcomm_protocol::integration::ShutdownRequest;
use serde_json::{Map, Value};

/// A command's arguments: the request's `arguments` object.
pub(super) type Args = Map<String, Value>;

/// What a command answers.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// `{"return": value}`.
    Return(Value),
    /// `{"error": {"class": class, "desc": desc}}`.
    Error(&'static str, String),
    /// Nothing on success (guest-shutdown); the shutdown to run after.
    Shutdown(ShutdownRequest),
}

/// `GenericError` with `desc`.
pub(super) fn generic(desc: impl Into<String>) -> Reply {
    Reply::Error("GenericError", desc.into())
}

/// Argument `name` of `args` as `T`, with qemu-ga's errors.
pub(super) fn arg<T: serde::de::DeserializeOwned>(
    args: &Args,
    name: &str,
    expected: &str,
) -> Result<T, Reply> {
    match args.get(name) {
        None => Err(generic(format!("Parameter '{name}' is missing"))),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            generic(format!(
                "Invalid parameter type for '{name}', expected: {expected}"
            ))
        }),
    }
}

/// An optional argument.
pub(super) fn opt<T: serde::de::DeserializeOwned>(
    args: &Args,
    name: &str,
    expected: &str,
) -> Result<Option<T>, Reply> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => arg(args, name, expected).map(Some),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return reply,
        }
    };
}
pub(super) use tri;

/// A mutex's guard, also after a panic elsewhere poisoned it (the state
/// it guards stays consistent: each holder finishes its change or none).
pub(super) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
