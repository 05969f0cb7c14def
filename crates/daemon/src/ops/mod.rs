//! The operations the front ends call (the HTTP/JSON API in `api`, WBEM in
//! `wbem`): each takes typed arguments and returns the API's types or an
//! [`crate::error::Error`], and knows nothing of HTTP or CIM-XML.
//!
//! [`vms`]: the inventory; [`services`]: the registry, per-VM enablement and
//! the service instances with their RequestStateChange.

pub(crate) mod services;
pub(crate) mod vms;
