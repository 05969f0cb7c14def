//! The keys guestcommd gives the libvirt domains it follows (`[libvirt]
//! key_dir`): the key file `KEY_DIR/UUID.key` and the fwcfg entry naming it,
//! added to the domain's persistent definition (defined again, nothing else
//! changed) when its VM is added; retried when that failed (on the domain's
//! next event, and on the follower's idle checks, until it works or the
//! domain goes); and the key file removed when the domain is undefined, so
//! a redefined domain gets a fresh one. Each act is logged and audited as
//! the daemon's own (`libvirt.key`); a retry that fails again is not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use guestcomm_protocol::auth::Psk;
use guestcomm_protocol::error_chain;
use tokio::runtime::Handle;
use tracing::{debug, error, info};
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use super::domain_key::{self, DomainKeyError};
use super::domain_xml::{self, DomainXmlError};
use super::inventory;
use crate::state::State;

/// Why a domain did not get its key's fwcfg entry.
#[derive(Debug, thiserror::Error)]
enum KeyEntryError {
    /// libvirt refused to read or define it.
    #[error("libvirt: {0}")]
    Libvirt(#[from] virt::error::Error),
    /// Its persistent XML could not be read.
    #[error("its persistent XML: {0}")]
    Xml(#[from] DomainXmlError),
    /// The key file could not be written.
    #[error(transparent)]
    Key(#[from] DomainKeyError),
    /// The key file's path cannot go into the XML.
    #[error(transparent)]
    Path(#[from] guestcomm_client::provision::ProvisionError),
    /// The XML has no `</domain>` to add the entry before.
    #[error("its persistent XML has no end tag to add the entry before")]
    NoPlace,
}

/// Where the daemon's libvirt acts are applied and audited.
pub(super) struct Context<'a> {
    pub(super) state: &'a State,
    pub(super) uri: &'a str,
    pub(super) runtime: &'a Handle,
}

impl Context<'_> {
    fn audit(&self, vm: &str, arguments: String, error: Option<String>) {
        self.runtime.block_on(inventory::audit_own(
            self.state,
            "libvirt.key",
            vm,
            arguments,
            error,
        ));
    }
}

/// The domains' keys: the directory, and the deliveries still to retry.
pub(super) struct DomainKeys {
    dir: Option<PathBuf>,
    /// Domains whose delivery failed, with their VM's key.
    pending: Mutex<HashMap<Uuid, Psk>>,
}

impl DomainKeys {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Psk>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `dom`, just added as a VM, the VM's key `psk`, unless its
    /// definition has an entry by now; without a key directory the domain is
    /// left alone. A failure is logged and audited once, and retried.
    pub(super) fn deliver(
        &self,
        cx: &Context<'_>,
        conn: &Connect,
        dom: &Domain,
        uuid: Uuid,
        psk: &Psk,
    ) {
        let name = dom.get_name().unwrap_or_else(|_| uuid.to_string());
        let Some(dir) = &self.dir else {
            info!(vm = %name, "no [libvirt] key_dir (--libvirt-key-dir): the domain is not changed; deliver the VM's key with `guestcomm vm credentials {name} --libvirt-xml --guest-file PATH`");
            return;
        };
        let retry = self.pending().contains_key(&uuid);
        let (path, error) = match add_key_entry(conn, dom, dir, uuid, psk) {
            Ok(Some(path)) => {
                self.pending().remove(&uuid);
                let again = if retry { " (tried again)" } else { "" };
                info!(vm = %name, key = %path.display(), "the libvirt domain's definition has the VM's key now{again} (fwcfg entry {}); the guest reads it from its next start", guestcomm_protocol::auth::FW_CFG_CREDENTIAL);
                (path.display().to_string(), None)
            }
            Ok(None) => {
                self.pending().remove(&uuid);
                return;
            }
            Err(e) => {
                let error = error_chain(&e);
                if retry {
                    debug!(vm = %name, error = %error, "the libvirt domain still cannot get its VM's key; trying again later");
                    return;
                }
                error!(vm = %name, error = %error, "cannot give the libvirt domain its VM's key; trying again at its next event and every few seconds, or deliver it with `guestcomm vm credentials {name} --libvirt-xml --guest-file PATH`");
                self.pending().insert(uuid, psk.clone());
                (String::new(), Some(error))
            }
        };
        let arguments = format!("domain {uuid} at {} file {path}", cx.uri);
        cx.audit(&name, arguments, error);
    }

    /// Tries again the deliveries that failed: `only` one domain, or all.
    pub(super) fn retry(&self, cx: &Context<'_>, conn: &Connect, only: Option<Uuid>) {
        let due: Vec<(Uuid, Psk)> = self
            .pending()
            .iter()
            .filter(|(uuid, _)| only.is_none_or(|o| o == **uuid))
            .map(|(uuid, psk)| (*uuid, psk.clone()))
            .collect();
        for (uuid, psk) in due {
            match Domain::lookup_by_uuid(conn, uuid) {
                Ok(dom) => self.deliver(cx, conn, &dom, uuid, &psk),
                Err(e) if e.code() == virt::error::ErrorNumber::NoDomain => {
                    self.pending().remove(&uuid);
                }
                Err(e) => debug!(%uuid, error = %e, "cannot find a libvirt domain to give its key"),
            }
        }
    }

    /// The domain `uuid` (its VM `vm`) was undefined: the key file written
    /// for it goes (QEMU read it when it started), and no retry is left.
    pub(super) fn forget(&self, cx: &Context<'_>, uuid: Uuid, vm: &str) {
        self.pending().remove(&uuid);
        let Some(dir) = &self.dir else { return };
        let error = match domain_key::remove_key_file(dir, uuid) {
            Ok(None) => return,
            Ok(Some(path)) => {
                info!(vm = %vm, key = %path.display(), "key file of an undefined libvirt domain removed");
                None
            }
            Err(e) => {
                let error = error_chain(&e);
                error!(vm = %vm, error = %error, "cannot remove the key file of an undefined libvirt domain");
                Some(error)
            }
        };
        let arguments = format!("domain {uuid} at {} undefined: key file removed", cx.uri);
        cx.audit(vm, arguments, error);
    }
}

/// Writes the key file and adds its entry to `dom`'s persistent XML;
/// `None` when the definition has an entry already.
fn add_key_entry(
    conn: &Connect,
    dom: &Domain,
    dir: &Path,
    uuid: Uuid,
    psk: &Psk,
) -> Result<Option<PathBuf>, KeyEntryError> {
    // SECURE: with the secrets in it (passwords of graphics consoles),
    // or defining it again would drop them.
    let xml = dom.get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)?;
    let read = domain_xml::read(&xml)?;
    if read.credential.is_some() {
        return Ok(None);
    }
    let path = domain_key::write_key_file(dir, uuid, psk)?;
    let entry = guestcomm_client::provision::libvirt_fw_cfg_entry(&path)?;
    let updated = read
        .with_credential_entry(&xml, &entry)
        .filter(|x| !x.contains('\0'))
        .ok_or(KeyEntryError::NoPlace)?;
    Domain::define_xml(conn, &updated)?;
    Ok(Some(path))
}
