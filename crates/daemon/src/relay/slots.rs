//! The operators' relay slots: at most [`MAX_RELAYS`] exec, cp and service
//! streams at once, each holding one slot until it ends; past that a new
//! one is refused (503), logged, and the others keep going.

use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::error::Error;
use crate::limits::MAX_RELAYS;
use crate::metrics::Cap;
use crate::state::State;

/// A relay slot, or [`Error::Busy`] at [`MAX_RELAYS`].
pub(crate) fn acquire_relay(state: &State, vm: &str) -> Result<OwnedSemaphorePermit, Error> {
    state.relays.clone().try_acquire_owned().map_err(|_| {
        state.metrics.refused_at(Cap::Relays);
        warn!(vm, "relay limit reached, refusing a connection");
        Error::Busy(format!(
            "guestcommd is relaying its maximum of {MAX_RELAYS} connections; retry later"
        ))
    })
}
