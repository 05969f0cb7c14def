//! The VM inventory in step with libvirt's domains: what the follower
//! (`connection.rs`) reads of a domain becomes a VM (its id the domain's
//! UUID, its name the domain's, a key made as `vm add` makes one), a
//! changed endpoint or name, a power state, or a VM removed (its audit
//! records stay: they name the VM, not its row). A VM added by hand is
//! never changed: a domain that clashes with one is logged, naming both.
//! Each add, change and removal is audited as the daemon's own
//! (`libvirt.vm.add`, `libvirt.vm.update`, `libvirt.vm.remove`, no caller).

use guestcomm_api::{validate_vm_name, NewCredentials};
use guestcomm_protocol::error_chain;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use guestcomm_protocol::auth::Psk;

use super::domain_key::{delivery, key_of};
use super::domain_xml::{Credential, DomainXmlError, Endpoint};
use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::clock::now_secs;
use crate::health::Power;
use crate::model::{Policy, VmRow};
use crate::ops::vms::new_vm_key;
use crate::state::State;
use crate::store::StoreError;

/// What was read of one domain.
#[derive(Debug)]
pub(crate) struct Domain {
    /// Its UUID: the VM's id.
    pub(crate) uuid: Uuid,
    /// Its name: the VM's name.
    pub(crate) name: String,
    /// Where its agent is reached, from its (live) XML.
    pub(crate) endpoint: Result<Endpoint, DomainXmlError>,
    /// Running, paused or off.
    pub(crate) power: Power,
    /// The key's fwcfg entry in its live XML.
    pub(crate) live_key: Option<Credential>,
    /// Its persistent definition, as far as the key goes.
    pub(crate) definition: Definition,
}

/// A domain's persistent definition, as far as the key goes.
#[derive(Debug)]
pub(crate) enum Definition {
    /// A transient domain: never changed.
    Transient,
    /// Persistent, with its fwcfg credential entry if it has one.
    Persistent(Option<Credential>),
    /// Persistent, but its XML could not be read (why): never changed.
    Unreadable(String),
}

impl Domain {
    /// Whether the domain carries the key (`vm show`).
    fn key_delivery(&self) -> guestcomm_api::DomainKey {
        let defined = matches!(self.definition, Definition::Persistent(Some(_)));
        delivery(self.power, self.live_key.is_some(), defined)
    }
}

/// Records the daemon's own `operation` on VM `vm` (no caller) in the
/// audit log, with `arguments` and, when it failed, `error`.
pub(crate) async fn audit_own(
    state: &State,
    operation: &str,
    vm: &str,
    arguments: String,
    error: Option<String>,
) {
    let mut record = audit::record(Caller::default(), operation);
    record.vm = Some(vm.to_string());
    record.arguments = audit::arguments(&arguments);
    let outcome = if error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    audit::finish(&mut record, outcome, error, std::time::Instant::now());
    state.audit(record).await;
}

/// What a full read changed: the keys of VMs just added whose domains are
/// to get the entry, and the VMs (id, name) whose domains are gone.
#[derive(Default)]
pub(crate) struct FullRead {
    pub(crate) keys: Vec<(Uuid, Psk)>,
    pub(crate) gone: Vec<(Uuid, String)>,
}

/// Brings the VMs of libvirt at `uri` in step with `domains`, all of its
/// domains (at each connection): each is applied as by [`seen`], and the
/// VMs whose domain is gone are removed.
pub(crate) async fn all(state: &State, uri: &str, domains: Vec<Domain>) -> FullRead {
    let present: Vec<Uuid> = domains.iter().map(|d| d.uuid).collect();
    let mut read = FullRead::default();
    for domain in domains {
        let uuid = domain.uuid;
        if let Some(psk) = seen(state, uri, domain).await {
            read.keys.push((uuid, psk));
        }
    }
    let owned = uri.to_string();
    let followed = match state.db(move |s| s.domain_vms(&owned)).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %error_chain(&e), "cannot list the VMs of libvirt domains");
            return read;
        }
    };
    for row in followed.into_iter().filter(|r| !present.contains(&r.id)) {
        let (id, name) = (row.id, row.name.clone());
        if remove(state, row, "its libvirt domain is gone").await {
            read.gone.push((id, name));
        }
    }
    read
}

/// Applies what was read of one domain to its VM; returns the key of a VM
/// just added whose persistent definition lacks the entry (to be added to it).
pub(crate) async fn seen(state: &State, uri: &str, domain: Domain) -> Option<Psk> {
    let uuid = domain.uuid;
    let existing = match state.db(move |s| s.vm_by_id(uuid)).await {
        Ok(existing) => existing,
        Err(e) => {
            warn!(domain = %domain.name, error = %error_chain(&e), "cannot read the VM of a libvirt domain");
            return None;
        }
    };
    match existing {
        Some((row, false)) => {
            error!(
                domain = %domain.name, %uuid, vm = %row.name,
                "libvirt domain {:?} ({uuid}) is not followed: VM {:?} was added by hand with its UUID as id",
                domain.name, row.name
            );
            None
        }
        Some((row, true)) => {
            update(state, uri, row, domain).await;
            None
        }
        None => add(state, uri, domain).await,
    }
}

/// The domain `uuid` was undefined: its VM goes (if it follows it); the
/// name of the VM removed.
pub(crate) async fn undefined(state: &State, uuid: Uuid) -> Option<String> {
    match state.db(move |s| s.vm_by_id(uuid)).await {
        Ok(Some((row, true))) => {
            let name = row.name.clone();
            remove(state, row, "its libvirt domain was undefined")
                .await
                .then_some(name)
        }
        Ok(_) => None,
        Err(e) => {
            warn!(%uuid, error = %error_chain(&e), "cannot read the VM of a libvirt domain");
            None
        }
    }
}

/// A domain seen for the first time: a VM if it has a guestcomm endpoint,
/// with the key of the domain's fwcfg entry if it has one, else a new key
/// (returned when the domain's definition is to get the entry).
async fn add(state: &State, uri: &str, domain: Domain) -> Option<Psk> {
    let endpoint = match &domain.endpoint {
        Ok(Endpoint::At(address)) => address.clone(),
        Ok(Endpoint::CidNotAssigned) => {
            debug!(domain = %domain.name, "libvirt domain waits for its vsock CID (assigned at start)");
            return None;
        }
        Ok(Endpoint::None) => {
            debug!(domain = %domain.name, "libvirt domain has no guestcomm endpoint");
            return None;
        }
        Err(e) => {
            error!(domain = %domain.name, error = %error_chain(e), "libvirt domain {:?} is not followed", domain.name);
            return None;
        }
    };
    if let Err(why) = validate_vm_name(&domain.name) {
        error!(domain = %domain.name, "libvirt domain is not followed: {why}");
        return None;
    }
    let entry = match &domain.definition {
        Definition::Persistent(Some(entry)) => Some(entry),
        _ => domain.live_key.as_ref(),
    };
    let psk = match entry.map(key_of) {
        Some(Ok(psk)) => Ok(Some(psk)),
        Some(Err(e)) => {
            warn!(domain = %domain.name, error = %error_chain(&e), "the libvirt domain's fwcfg entry is kept, but its key is not the VM's: the VM gets a new key");
            new_vm_key(NewCredentials::Auto, &endpoint)
        }
        None => new_vm_key(NewCredentials::Auto, &endpoint),
    };
    let psk = match psk {
        Ok(psk) => psk,
        Err(e) => {
            error!(domain = %domain.name, error = %error_chain(&e), "cannot make the key of a libvirt domain's VM");
            return None;
        }
    };
    let row = VmRow {
        id: domain.uuid,
        name: domain.name.clone(),
        endpoint,
        interface_enabled: true,
        default_policy: Policy::Enabled,
        created_at: now_secs(),
        psk,
    };
    let (stored, owned) = (row.clone(), uri.to_string());
    match state.db(move |s| s.add_domain_vm(&stored, &owned)).await {
        Ok(()) => {
            info!(vm = %row.name, id = %row.id, endpoint = %row.endpoint, "VM added for its libvirt domain");
            state.health.set_power(&row, domain.power);
            state.domain_keys.set(row.id, domain.key_delivery());
            state.changed.notify_one();
            let arguments = format!("domain {} at {uri} endpoint {}", row.id, row.endpoint);
            audit_own(state, "libvirt.vm.add", &row.name, arguments, None).await;
            let needs_entry = matches!(domain.definition, Definition::Persistent(None));
            match &domain.definition {
                Definition::Transient => {
                    info!(vm = %row.name, "a transient libvirt domain is never changed: deliver the VM's key otherwise (vm credentials)")
                }
                Definition::Unreadable(why) => {
                    warn!(vm = %row.name, error = %why, "the libvirt domain's definition is not changed: it could not be read")
                }
                Definition::Persistent(_) => {}
            }
            row.psk.filter(|_| needs_entry)
        }
        Err(StoreError::DuplicateVm(name)) => {
            clash(state, &name, row.id).await;
            None
        }
        Err(StoreError::DuplicateDomainVm { name, domain, uri }) => {
            error!(domain = %name, uuid = %row.id, other = %domain, "libvirt domain {name:?} ({}) is not followed: VM {name:?} follows libvirt domain {domain} of {uri}; rename one of the domains", row.id);
            None
        }
        Err(e) => {
            warn!(vm = %row.name, error = %error_chain(&e), "cannot add the VM of a libvirt domain");
            None
        }
    }
}

/// A domain its VM follows: a new name or endpoint, and its power state.
async fn update(state: &State, uri: &str, row: VmRow, domain: Domain) {
    let key = domain.key_delivery();
    let endpoint = match domain.endpoint {
        Ok(Endpoint::At(address)) => address,
        // Off, its CID is no longer in its XML: the last one stays.
        Ok(Endpoint::CidNotAssigned) => row.endpoint.clone(),
        Ok(Endpoint::None) => {
            remove(
                state,
                row,
                "its libvirt domain no longer has a guestcomm endpoint",
            )
            .await;
            return;
        }
        Err(e) => {
            error!(vm = %row.name, error = %error_chain(&e), "libvirt domain's endpoint is unreadable; the VM keeps its endpoint");
            row.endpoint.clone()
        }
    };
    state.domain_keys.set(row.id, key);
    let changed = VmRow {
        name: domain.name,
        endpoint,
        ..row.clone()
    };
    if changed != row {
        if let Err(why) = validate_vm_name(&changed.name) {
            error!(vm = %row.name, "libvirt domain renamed, the VM keeps its name: {why}");
            return;
        }
        let stored = changed.clone();
        match state.db(move |s| s.update_domain_vm(&stored)).await {
            Ok(()) => {
                info!(vm = %changed.name, was = %row.name, endpoint = %changed.endpoint, "VM follows its libvirt domain's new name or endpoint");
                state.changed.notify_one();
                let arguments = format!(
                    "domain {} at {uri} name {} (was {}) endpoint {}",
                    row.id, changed.name, row.name, changed.endpoint
                );
                audit_own(state, "libvirt.vm.update", &changed.name, arguments, None).await;
            }
            Err(StoreError::DuplicateVm(name)) => return clash(state, &name, row.id).await,
            Err(StoreError::DuplicateDomainVm { name, domain, uri }) => {
                return error!(vm = %row.name, other = %domain, "libvirt domain renamed to {name:?}, the VM keeps its name {:?}: VM {name:?} follows libvirt domain {domain} of {uri}", row.name)
            }
            Err(e) => {
                return warn!(vm = %row.name, error = %error_chain(&e), "cannot update the VM of a libvirt domain")
            }
        }
    }
    state.health.set_power(&changed, domain.power);
}

/// Removes `row`, a VM that follows a domain, for `why`; whether it did.
async fn remove(state: &State, row: VmRow, why: &str) -> bool {
    let name = row.name.clone();
    match state.db(move |s| s.remove_vm(&name)).await {
        Ok(()) => {
            info!(vm = %row.name, id = %row.id, "VM removed: {why}");
            state.domain_keys.forget(row.id);
            state.changed.notify_one();
            let arguments = format!("domain {}: {why}", row.id);
            audit_own(state, "libvirt.vm.remove", &row.name, arguments, None).await;
            true
        }
        Err(e) => {
            warn!(vm = %row.name, error = %error_chain(&e), "cannot remove the VM of a libvirt domain");
            false
        }
    }
}

/// Logs a domain (`uuid`) whose name `name` is that of a VM added by hand.
async fn clash(state: &State, name: &str, uuid: Uuid) {
    let owned = name.to_string();
    let other = match state.db(move |s| s.vm(&owned)).await {
        Ok(vm) => vm.id.to_string(),
        Err(_) => "?".into(),
    };
    error!(
        domain = %name, %uuid, vm_id = %other,
        "libvirt domain {name:?} ({uuid}) is not followed: VM {name:?} ({other}) was added by hand with that name; rename the domain or remove that VM"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_api::{DomainKey, HealthStatus};

    const URI: &str = "qemu:///system";

    fn domain(uuid: Uuid, name: &str, endpoint: Endpoint, power: Power) -> Domain {
        Domain {
            uuid,
            name: name.into(),
            endpoint: Ok(endpoint),
            power,
            live_key: None,
            definition: Definition::Persistent(None),
        }
    }

    fn at(text: &str) -> Endpoint {
        Endpoint::At(text.parse().unwrap())
    }

    async fn names(state: &State) -> Vec<String> {
        let rows = state.db(|s| s.vms()).await.unwrap();
        rows.into_iter().map(|r| r.name).collect()
    }

    #[tokio::test]
    async fn a_domain_becomes_a_vm_with_its_uuid_a_key_and_its_power_state() {
        let state = State::new(crate::store::Store::in_memory().unwrap());
        let uuid = Uuid::new_v4();
        let endpoint = "hvsock-uds:///run/vm1.vsock?port=18243";
        seen(&state, URI, domain(uuid, "vm1", at(endpoint), Power::Off)).await;
        let row = state.db(|s| s.vm("vm1")).await.unwrap();
        assert_eq!(row.id, uuid);
        assert!(row.psk.is_some(), "a key, as vm add makes one");
        assert_eq!(state.health.get(uuid).status, HealthStatus::Off);

        seen(
            &state,
            URI,
            domain(uuid, "vm1", at(endpoint), Power::Paused),
        )
        .await;
        assert_eq!(state.health.get(uuid).status, HealthStatus::Paused);
        let key = row.psk.map(|k| k.secret_hex());
        let again = state.db(|s| s.vm("vm1")).await.unwrap();
        assert_eq!(again.psk.map(|k| k.secret_hex()), key, "the key stays");

        seen(
            &state,
            URI,
            domain(uuid, "vm2", Endpoint::CidNotAssigned, Power::Running),
        )
        .await;
        let renamed = state.db(|s| s.vm("vm2")).await.unwrap();
        assert_eq!(
            renamed.endpoint.to_string(),
            endpoint,
            "an unassigned CID keeps the endpoint"
        );
        assert_eq!(state.health.get(uuid).status, HealthStatus::NoContact);

        let gone = undefined(&state, uuid).await;
        assert_eq!(gone.as_deref(), Some(renamed.name.as_str()));
        assert!(names(&state).await.is_empty());
    }

    #[tokio::test]
    async fn a_vm_added_by_hand_is_never_touched() {
        let state = State::new(crate::store::Store::in_memory().unwrap());
        let by_hand = state
            .db(|s| s.add_vm("web", &"unix:///web".parse().unwrap(), None))
            .await
            .unwrap();
        let uuid = Uuid::new_v4();
        seen(
            &state,
            URI,
            domain(uuid, "web", at("vsock://5"), Power::Running),
        )
        .await;
        let row = state.db(|s| s.vm("web")).await.unwrap();
        assert_eq!(row, by_hand, "the hand-made VM is untouched");
        // Its id as a domain's UUID: still untouched, and never removed.
        seen(
            &state,
            URI,
            domain(by_hand.id, "other", at("vsock://5"), Power::Off),
        )
        .await;
        assert_eq!(undefined(&state, by_hand.id).await, None);
        assert!(all(&state, URI, Vec::new()).await.gone.is_empty());
        assert_eq!(names(&state).await, ["web"]);
        assert_eq!(state.health.get(by_hand.id).status, HealthStatus::NoContact);
    }

    #[tokio::test]
    async fn a_full_read_removes_the_vms_of_domains_gone_meanwhile_and_skips_others() {
        let state = State::new(crate::store::Store::in_memory().unwrap());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        seen(&state, URI, domain(a, "a", at("vsock://3"), Power::Running)).await;
        seen(
            &state,
            "qemu:///session",
            domain(b, "b", at("vsock://4"), Power::Running),
        )
        .await;
        let none = domain(Uuid::new_v4(), "plain", Endpoint::None, Power::Running);
        let waiting = domain(Uuid::new_v4(), "auto", Endpoint::CidNotAssigned, Power::Off);
        let read = all(&state, URI, vec![none, waiting]).await;
        assert_eq!(read.gone, [(a, "a".to_string())], "a's domain is gone");
        assert_eq!(names(&state).await, ["b"], "another URI's VM stays");
        let bad = Domain {
            uuid: Uuid::new_v4(),
            name: "bad name!".into(),
            endpoint: Ok(at("vsock://6")),
            power: Power::Running,
            live_key: None,
            definition: Definition::Transient,
        };
        seen(&state, URI, bad).await;
        assert_eq!(names(&state).await, ["b"]);
    }

    #[tokio::test]
    async fn a_new_domain_without_the_entry_gets_its_key_once_and_one_with_it_keeps_its_own() {
        let state = State::new(crate::store::Store::in_memory().unwrap());
        let uuid = Uuid::new_v4();
        let key = seen(
            &state,
            URI,
            domain(uuid, "vm1", at("vsock://3"), Power::Off),
        )
        .await;
        let row = state.db(|s| s.vm("vm1")).await.unwrap();
        assert_eq!(
            key.map(|k| k.secret_hex()),
            row.psk.map(|k| k.secret_hex()),
            "the new VM's key, for its domain"
        );
        assert_eq!(state.domain_keys.get(uuid), Some(DomainKey::NotInDomain));
        let again = seen(
            &state,
            URI,
            domain(uuid, "vm1", at("vsock://3"), Power::Off),
        )
        .await;
        assert!(again.is_none(), "never twice");
        let records = state
            .db(|s| s.audit_records(None, None, 100))
            .await
            .unwrap();
        assert!(records
            .iter()
            .any(|r| r.operation == "libvirt.vm.add" && r.uid.is_none()));

        let own = Psk::from_hex(&"ef".repeat(32)).unwrap();
        let mut with_entry = domain(Uuid::new_v4(), "vm2", at("vsock://4"), Power::Running);
        let text = guestcomm_protocol::auth::credentials_text(&own);
        with_entry.definition = Definition::Persistent(Some(Credential::Value(text.clone())));
        with_entry.live_key = Some(Credential::Value(text));
        let vm2 = with_entry.uuid;
        assert!(seen(&state, URI, with_entry).await.is_none());
        let row = state.db(|s| s.vm("vm2")).await.unwrap();
        assert_eq!(
            row.psk.unwrap().secret_hex(),
            own.secret_hex(),
            "the entry's key"
        );
        assert_eq!(state.domain_keys.get(vm2), Some(DomainKey::InRunningDomain));

        let mut transient = domain(Uuid::new_v4(), "vm3", at("vsock://5"), Power::Running);
        transient.definition = Definition::Transient;
        assert!(
            seen(&state, URI, transient).await.is_none(),
            "never changed"
        );
        let mut unreadable = domain(Uuid::new_v4(), "vm4", at("vsock://6"), Power::Off);
        unreadable.definition = Definition::Unreadable("too large".into());
        assert!(
            seen(&state, URI, unreadable).await.is_none(),
            "never changed"
        );
    }
}
