//! The daemon's background tasks, each started by `Daemon::run` and
//! stopped with it: the health monitor ([`health`]), the periodic time sync
//! ([`time_sync`]), the audit log's retention ([`audit_prune`]) and the
//! summaries of counted refusals ([`refusals_flush`]).

pub(crate) mod audit_prune;
pub(crate) mod health;
pub(crate) mod refusals_flush;
pub(crate) mod time_sync;
