//! The operations the front ends call (the HTTP/JSON API in `api`, WBEM in
//! `wbem`): each takes typed arguments and returns the API's types or an
//! [`crate::error::Error`], and knows nothing of HTTP or CIM-XML.
//!
//! [`vms`]: the inventory; [`policy`]: a VM's host policy document;
//! [`audit`]: the audit log's records and check; [`services`]: the registry,
//! per-VM enablement and the service instances with their
//! RequestStateChange; [`integration`]: the integration services of a VM
//! (guest info, time, key-value pools, shutdown, freeze); [`metrics`]: the
//! Prometheus exposition.

pub(crate) mod audit;
pub(crate) mod integration;
pub(crate) mod metrics;
pub(crate) mod policy;
pub(crate) mod services;
pub(crate) mod vms;
