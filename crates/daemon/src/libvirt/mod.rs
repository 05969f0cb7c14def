//! guestcommd follows a libvirt host (`--libvirt URI`, `[libvirt] uri`):
//! every domain with a guestcomm endpoint is a VM of the inventory, kept in
//! step by libvirt's lifecycle events, not by polling.
//!
//! - `domain_xml.rs`: the endpoint in a domain's XML (the guestcomm element
//!   of its `<metadata>`, else its vsock device's CID);
//! - `domain_key.rs`: the key file written for a domain, the key of an
//!   entry it already has, and whether it carries its key;
//! - `inventory.rs`: what was read of a domain, applied to the store and the
//!   VM's power state (health);
//! - `keys.rs` (feature `libvirt`): the key file and fwcfg entry given to
//!   a domain, retried when that failed, the file removed on undefine;
//! - `connection.rs` (feature `libvirt`, which links libvirt.so): the
//!   connection, its event loop and callbacks, and reconnecting.
//!
//! A guestcommd built without the feature refuses `--libvirt` at start.

#[cfg(feature = "libvirt")]
mod connection;
#[cfg(any(test, feature = "libvirt"))]
mod domain_key;
#[cfg(any(test, feature = "libvirt"))]
mod domain_xml;
#[cfg(any(test, feature = "libvirt"))]
mod inventory;
#[cfg(feature = "libvirt")]
mod keys;

use std::path::PathBuf;
use std::sync::Arc;

use crate::state::State;

/// Following libvirt; it stops when dropped.
// Never made without the feature: `follow` refuses.
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
pub(crate) struct Follower {
    #[cfg(feature = "libvirt")]
    _connection: connection::Follower,
}

/// Refuses `--libvirt` in a build without libvirt (checked before the
/// daemon opens anything).
pub(crate) fn supported(uri: &str) -> Result<(), String> {
    if cfg!(feature = "libvirt") {
        Ok(())
    } else {
        Err(format!(
            "--libvirt {uri}: not supported: this guestcommd was built without libvirt (feature libvirt)"
        ))
    }
}

/// Starts following the domains of libvirt at `uri` (from a tokio runtime),
/// writing the keys of the domains it adds in `key_dir`.
#[cfg(feature = "libvirt")]
pub(crate) fn follow(
    state: Arc<State>,
    uri: &str,
    key_dir: Option<PathBuf>,
) -> Result<Follower, String> {
    let runtime = tokio::runtime::Handle::current();
    connection::follow(state, uri.to_string(), key_dir, runtime)
        .map(|c| Follower { _connection: c })
        .map_err(|e| guestcomm_protocol::error_chain(&e))
}

/// Refuses: this build has no libvirt.
#[cfg(not(feature = "libvirt"))]
pub(crate) fn follow(
    _state: Arc<State>,
    uri: &str,
    _key_dir: Option<PathBuf>,
) -> Result<Follower, String> {
    supported(uri).map(|()| Follower {})
}
