//! The VM inventory: list, add (with the VM's key), show, change, remove,
//! and read the key a guest's agent is given.

use guestcomm_api::{validate_vm_name, Credentials, NewCredentials, Vm};
use guestcomm_protocol::auth::{Psk, AUTH_PSK};
use guestcomm_transport::Address;

use crate::error::Error;
use crate::model::Policy;
use crate::model::VmRow;
use crate::state::State;

/// A VM as the API shows it, with its health.
pub(crate) fn view(state: &State, row: VmRow) -> Vm {
    Vm {
        health: state.health.get(row.id),
        domain_key: state.domain_keys.get(row.id),
        id: row.id,
        name: row.name,
        endpoint: row.endpoint,
        interface_enabled: row.interface_enabled,
        default_enabled_state_policy: row.default_policy.value(),
        created_at: row.created_at,
        authenticated: row.psk.is_some(),
    }
}

/// The key a new VM gets, from the request and the endpoint's kind.
pub(crate) fn new_vm_key(choice: NewCredentials, endpoint: &Address) -> Result<Option<Psk>, Error> {
    let needs_key = matches!(
        endpoint,
        Address::Vsock { .. } | Address::HybridVsock { .. }
    );
    let generate = || {
        // Never blocks: a host whose random pool is not initialized yet
        // gets the error that says so and what to do.
        Psk::generate()
            .map(Some)
            .map_err(|e| Error::Internal(e.into()))
    };
    match choice {
        NewCredentials::Auto if needs_key => generate(),
        NewCredentials::Auto => Ok(None),
        NewCredentials::Generate => generate(),
        NewCredentials::Import { key } => Psk::from_hex(&key)
            .map(Some)
            .map_err(Error::InvalidKey),
        NewCredentials::None if needs_key => Err(Error::BadRequest(format!(
            "{endpoint} is a vsock endpoint: its agent must have credentials, so the VM needs a key (drop --no-credentials)"
        ))),
        NewCredentials::None => Ok(None),
    }
}

/// The key of VM `name`, for its guest's agent.
pub(crate) async fn credentials(state: &State, name: String) -> Result<Credentials, Error> {
    let row = state.db(move |s| s.vm(&name)).await?;
    let Some(psk) = row.psk else {
        return Err(Error::BadRequest(format!(
            "VM {:?} has no key: add it with credentials (vm add --generate-credentials or --credentials FILE)",
            row.name
        )));
    };
    tracing::info!(vm = %row.name, "guest credentials read");
    Ok(Credentials {
        method: AUTH_PSK.into(),
        key: psk.secret_hex(),
    })
}

/// Every VM for which `sees` holds.
pub(crate) async fn list(state: &State, sees: impl Fn(&str) -> bool) -> Result<Vec<Vm>, Error> {
    let rows = state.db(|s| s.vms()).await?;
    Ok(rows
        .into_iter()
        .filter(|r| sees(&r.name))
        .map(|r| view(state, r))
        .collect())
}

/// Adds VM `name` at `endpoint` with the key `credentials` asks for.
pub(crate) async fn add(
    state: &State,
    name: String,
    endpoint: &str,
    credentials: NewCredentials,
) -> Result<Vm, Error> {
    validate_vm_name(&name).map_err(Error::BadRequest)?;
    let endpoint: Address = endpoint.parse()?;
    let psk = new_vm_key(credentials, &endpoint)?;
    // Stored in its canonical form (defaults made explicit).
    let row = state.db(move |s| s.add_vm(&name, &endpoint, psk)).await?;
    tracing::info!(vm = %row.name, id = %row.id, endpoint = %row.endpoint, "VM added");
    state.changed.notify_one();
    Ok(view(state, row))
}

/// VM `name`.
pub(crate) async fn show(state: &State, name: String) -> Result<Vm, Error> {
    let row = state.db(move |s| s.vm(&name)).await?;
    Ok(view(state, row))
}

/// Turns VM `name`'s guest service interface on or off, and sets its
/// DefaultEnabledStatePolicy (2 enabled, 3 disabled); `None` keeps each.
pub(crate) async fn update(
    state: &State,
    name: String,
    interface_enabled: Option<bool>,
    default_policy: Option<u16>,
) -> Result<Vm, Error> {
    let default = match default_policy {
        None => None,
        Some(v) => match Policy::from_value(v) {
            Some(p @ (Policy::Enabled | Policy::Disabled)) => Some(p),
            _ => {
                return Err(Error::BadRequest(format!(
                    "invalid DefaultEnabledStatePolicy {v}: expected 2 (enabled) or 3 (disabled)"
                )))
            }
        },
    };
    let row = state
        .db(move |s| s.update_vm(&name, interface_enabled, default))
        .await?;
    tracing::info!(vm = %row.name, interface_enabled = row.interface_enabled, default_policy = row.default_policy.value(), "VM settings changed");
    state.changed.notify_one();
    Ok(view(state, row))
}

/// Removes VM `name`.
pub(crate) async fn remove(state: &State, name: String) -> Result<(), Error> {
    let logged = name.clone();
    state.db(move |s| s.remove_vm(&name)).await?;
    tracing::info!(vm = %logged, "VM removed");
    state.changed.notify_one();
    Ok(())
}
