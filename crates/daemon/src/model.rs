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
    /// Host address guest-initiated connections are relayed to, if any.
    pub(crate) host_endpoint: Option<String>,
}
