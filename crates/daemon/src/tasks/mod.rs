//! The daemon's background tasks, each started by `Daemon::run` and
//! stopped with it: the health monitor ([`health`]), the periodic time sync
//! ([`time_sync`]) and the audit log's retention ([`audit_prune`]).

pub(crate) mod audit_prune;
pub(crate) mod health;
pub(crate) mod time_sync;
