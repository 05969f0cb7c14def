//! Applies the audit log's retention (`[audit]` in the configuration file)
//! at start and at a fixed interval.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::AuditSection;
use crate::limits::AUDIT_PRUNE_INTERVAL_SECS;
use crate::state::State;

/// Applies the retention now and every [`AUDIT_PRUNE_INTERVAL_SECS`].
pub(crate) async fn prune_task(state: Arc<State>, retention: AuditSection) {
    let mut tick = tokio::time::interval(Duration::from_secs(AUDIT_PRUNE_INTERVAL_SECS));
    loop {
        tick.tick().await;
        match state.db(move |s| s.prune_audit(retention, now_ms())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "audit log pruned to its retention"),
            Err(e) => {
                tracing::warn!(error = %guestcomm_protocol::error_chain(&e), "cannot prune the audit log")
            }
        }
    }
}
