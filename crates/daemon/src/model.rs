//! The rows the daemon works with, as every layer sees them: a VM of the
//! inventory (its endpoint parsed once, when the row is read) and a service
//! registration, and the enablement model over them, as Hyper-V's:
//!
//! ```text
//! effective state of service S on VM V =
//!   Disabled  if V's guest service interface is off
//!   Disabled  if S's host-wide switch is off (registration disabled)
//!   S's policy on V           if it is Enabled or Disabled
//!   V's DefaultEnabledStatePolicy   if S's policy on V is Deferred
//! ```
//!
//! [`effective_state`] is the one place this is computed; the relay and the
//! management objects both call it.

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::ServiceId;
use guestcomm_transport::Address;
use uuid::Uuid;

/// A VM row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VmRow {
    /// Identity.
    pub(crate) id: Uuid,
    /// Unique name.
    pub(crate) name: String,
    /// Where its agent is reached: parsed once, when the row is read.
    pub(crate) endpoint: Address,
    /// Guest service interface on.
    pub(crate) interface_enabled: bool,
    /// DefaultEnabledStatePolicy (Enabled or Disabled).
    pub(crate) default_policy: Policy,
    /// Seconds since the epoch.
    pub(crate) created_at: i64,
    /// The key the agent requires, if it has credentials.
    pub(crate) psk: Option<Psk>,
}

#[cfg(test)]
impl VmRow {
    /// A VM named `name` at `endpoint`, with no key, for tests.
    pub(crate) fn for_test(name: &str, endpoint: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            name: name.into(),
            endpoint: endpoint.parse().expect("an address"),
            interface_enabled: true,
            default_policy: Policy::Enabled,
            created_at: 0,
            psk: None,
        }
    }
}

/// A service registration row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServiceRow {
    /// GUID.
    pub(crate) id: ServiceId,
    /// ElementName.
    pub(crate) element_name: String,
    /// Description.
    pub(crate) description: String,
    /// Built in.
    pub(crate) builtin: bool,
    /// Host-wide switch.
    pub(crate) enabled: bool,
    /// Seconds since the epoch.
    pub(crate) installed_at: i64,
    /// Host address guest-initiated connections are relayed to, if any:
    /// parsed once, when the row is read.
    pub(crate) host_endpoint: Option<Address>,
}

/// A change of the names the inventory holds, as the store made it: what
/// the metrics follow to bound their labels without reading the whole
/// inventory after every change ([`crate::metrics`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InventoryChange {
    /// A VM of this name was added (or renamed to it).
    VmAdded(String),
    /// The VM of this name was removed (or renamed from it).
    VmRemoved(String),
    /// A service of this id was registered.
    ServiceAdded(ServiceId),
    /// The service of this id was unregistered.
    ServiceRemoved(ServiceId),
}

/// CIM EnabledState: enabled.
pub(crate) const ENABLED: u16 = 2;
/// CIM EnabledState: disabled.
pub(crate) const DISABLED: u16 = 3;
/// CIM RequestedState / EnabledStatePolicy: deferred (follow the VM's default).
pub(crate) const DEFERRED: u16 = 8;

/// An EnabledStatePolicy value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// 2: enabled.
    Enabled,
    /// 3: disabled.
    Disabled,
    /// 8: follow the VM's DefaultEnabledStatePolicy.
    Deferred,
}

impl Policy {
    /// The CIM value.
    pub(crate) const fn value(self) -> u16 {
        match self {
            Self::Enabled => ENABLED,
            Self::Disabled => DISABLED,
            Self::Deferred => DEFERRED,
        }
    }

    /// From a CIM value.
    pub(crate) const fn from_value(value: u16) -> Option<Self> {
        match value {
            ENABLED => Some(Self::Enabled),
            DISABLED => Some(Self::Disabled),
            DEFERRED => Some(Self::Deferred),
            _ => None,
        }
    }
}

/// The effective state (2 or 3) of a service on a VM: see the module doc.
pub(crate) fn effective_state(
    interface_enabled: bool,
    registration_enabled: bool,
    vm_policy: Policy,
    vm_default: Policy,
) -> Policy {
    if !interface_enabled || !registration_enabled {
        return Policy::Disabled;
    }
    match vm_policy {
        Policy::Deferred if vm_default == Policy::Disabled => Policy::Disabled,
        Policy::Deferred => Policy::Enabled,
        explicit => explicit,
    }
}

/// [`effective_state`] of `service` on `vm`, given its policy there.
pub(crate) fn effective_on(vm: &VmRow, service: &ServiceRow, vm_policy: Policy) -> Policy {
    effective_state(
        vm.interface_enabled,
        service.enabled,
        vm_policy,
        vm.default_policy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Policy::*;

    #[test]
    fn explicit_vm_policy_wins_over_the_vm_default() {
        assert_eq!(effective_state(true, true, Enabled, Disabled), Enabled);
        assert_eq!(effective_state(true, true, Disabled, Enabled), Disabled);
    }

    #[test]
    fn deferred_follows_the_vm_default() {
        assert_eq!(effective_state(true, true, Deferred, Enabled), Enabled);
        assert_eq!(effective_state(true, true, Deferred, Disabled), Disabled);
    }

    #[test]
    fn interface_off_or_registration_off_disables_everything() {
        for policy in [Enabled, Disabled, Deferred] {
            for default in [Enabled, Disabled] {
                assert_eq!(effective_state(false, true, policy, default), Disabled);
                assert_eq!(effective_state(true, false, policy, default), Disabled);
            }
        }
    }

    #[test]
    fn policy_values_are_the_cim_ones() {
        for p in [Enabled, Disabled, Deferred] {
            assert_eq!(Policy::from_value(p.value()), Some(p));
        }
        assert_eq!(Policy::from_value(4), None);
    }
}
