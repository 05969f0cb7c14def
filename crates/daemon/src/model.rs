//! The rows the daemon works with, as every layer sees them: a VM of the
//! inventory (its endpoint parsed once, when the row is read) and a service
//! registration. The enablement model over them is in [`crate::policy`].

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::ServiceId;
use guestcomm_transport::Address;
use uuid::Uuid;

use crate::policy::Policy;

/// A VM row.
#[derive(Clone, Debug, PartialEq)]
pub struct VmRow {
    /// Identity.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Where its agent is reached: parsed once, when the row is read.
    pub endpoint: Address,
    /// Guest service interface on.
    pub interface_enabled: bool,
    /// DefaultEnabledStatePolicy (Enabled or Disabled).
    pub default_policy: Policy,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// The key the agent requires, if it has credentials.
    pub psk: Option<Psk>,
}

/// A service registration row.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRow {
    /// GUID.
    pub id: ServiceId,
    /// ElementName.
    pub element_name: String,
    /// Description.
    pub description: String,
    /// Built in.
    pub builtin: bool,
    /// Host-wide switch.
    pub enabled: bool,
    /// Seconds since the epoch.
    pub installed_at: i64,
    /// Host address guest-initiated connections are relayed to, if any.
    pub host_endpoint: Option<String>,
}
