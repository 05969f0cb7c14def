//! Writes the summaries of counted refusals (module `refusals`) at a
//! fixed interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::Outcome;
use crate::limits::REFUSAL_FLUSH_INTERVAL_MS;
use crate::state::State;
use crate::store::audit_chain::Chain;

/// Writes the summary records every [`REFUSAL_FLUSH_INTERVAL_MS`].
pub(crate) async fn flush_task(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_millis(REFUSAL_FLUSH_INTERVAL_MS));
    loop {
        tick.tick().await;
        for (mut record, summary, key) in state.refusals.due(Instant::now()) {
            record.id = summary.unwrap_or(0);
            let running = record.outcome == Outcome::Running;
            if let Some(id) = state.audit_in(record, Chain::Refusals).await {
                if running {
                    state.refusals.written(key, id);
                }
            }
        }
    }
}
