//! The metrics' exposition (`GET /metrics` on the API and on `--metrics`):
//! the counters as the layers left them, and the gauges read now (each VM's
//! health from the monitor, the relay slots in use, the warm connections).

use guestcomm_api::HealthStatus;

use crate::error::Error;
use crate::limits::MAX_RELAYS;
use crate::metrics::Format;
use crate::state::State;

/// Every metric, in `format`.
pub(crate) async fn exposition(state: &State, format: Format) -> Result<String, Error> {
    if !state.metrics.enabled() {
        return Err(Error::ServiceDisabled(
            "metrics are off in this guestcommd (--no-metrics, or [metrics] enabled = false)"
                .into(),
        ));
    }
    let vms = state.db(|s| s.vms()).await?;
    let health: Vec<(String, HealthStatus, Option<std::time::Duration>)> = vms
        .into_iter()
        .map(|vm| {
            let health = state.health.get(vm.id);
            let rtt = health.rtt_us.map(std::time::Duration::from_micros);
            (vm.name, health.status, rtt)
        })
        .collect();
    let relays = MAX_RELAYS.saturating_sub(state.relays.available_permits());
    state
        .metrics
        .render(&health, relays, state.spares.len(), format)
        .map_err(|e| Error::Internal(format!("cannot encode the metrics: {e}").into()))
}
