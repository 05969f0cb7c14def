//! The daemon's optional periodic time sync (`guestcommd
//! --time-sync-interval`).

use std::sync::Arc;
use std::time::Duration;

use guestcomm_api::HealthStatus;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::BuiltinService;
use tracing::{info, warn};

use crate::admission;
use crate::limits::PERIODIC_SYNC_TIMEOUT_MS;
use crate::ops::integration::sync_if_off;
use crate::state::State;
use crate::tasks::health::Rounds;

/// The daemon's optional periodic time sync (`guestcommd
/// --time-sync-interval`): every interval, each VM whose agent the health
/// monitor sees answering and whose time service is enabled gets its clock
/// stepped when it is off. One VM at a time, each bounded.
pub(crate) async fn time_sync_loop(state: Arc<State>, interval: Duration) {
    let mut rounds = Rounds::new(interval, "time sync");
    loop {
        let vms = rounds.next(&state).await;
        for vm in vms.iter() {
            if state.health.get(vm.id).status != HealthStatus::Ok
                || admission::integration(&state, vm, BuiltinService::Time)
                    .await
                    .is_err()
            {
                continue;
            }
            match tokio::time::timeout(
                Duration::from_millis(PERIODIC_SYNC_TIMEOUT_MS),
                sync_if_off(vm),
            )
            .await
            {
                Ok(Ok((offset_ns, true))) => {
                    info!(vm = %vm.name, offset_ns, "guest clock stepped by the periodic time sync")
                }
                Ok(Ok((_, false))) => {}
                Ok(Err(e)) => {
                    warn!(vm = %vm.name, error = %error_chain(&e), "periodic time sync failed")
                }
                Err(_) => warn!(vm = %vm.name, "periodic time sync timed out"),
            }
        }
    }
}
