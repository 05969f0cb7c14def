//! The VMs that follow a libvirt domain (table `libvirt_domains`, schema
//! migration 9): such a VM's id is its domain's UUID, and the row names the
//! libvirt URI it came from, so a domain undefined while the daemon was not
//! listening is found missing at the next connection. VMs added by hand
//! have no row here and are never changed by what libvirt reports.

use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::error::StoreError;
use super::{duplicate, insert_vm, vm_row, Store};
use crate::model::{InventoryChange, VmRow};

impl Store {
    /// The VM with id `id`, if any, and whether it follows a libvirt domain.
    pub(crate) fn vm_by_id(&self, id: Uuid) -> Result<Option<(VmRow, bool)>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, name, endpoint, interface_enabled, default_policy, created_at, psk FROM vms WHERE id = ?1",
                [id.to_string()],
                vm_row,
            )
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let follows = self
            .conn
            .query_row(
                "SELECT 1 FROM libvirt_domains WHERE vm = ?1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        Ok(Some((row, follows)))
    }

    /// Adds `row`, a VM that follows a domain of libvirt at `uri` (its id is
    /// the domain's UUID); its name must be free.
    pub(crate) fn add_domain_vm(&mut self, row: &VmRow, uri: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        insert_vm(&tx, row)?;
        tx.execute(
            "INSERT INTO libvirt_domains (vm, uri) VALUES (?1, ?2)",
            params![row.id.to_string(), uri],
        )?;
        tx.commit()?;
        self.inventory_changes
            .push(InventoryChange::VmAdded(row.name.clone()));
        Ok(())
    }

    /// Gives the VM `row.id` (one that follows a domain) `row`'s name and
    /// endpoint; the new name must be free.
    pub(crate) fn update_domain_vm(&mut self, row: &VmRow) -> Result<(), StoreError> {
        let taken = self
            .conn
            .query_row(
                "SELECT 1 FROM vms WHERE name = ?1 AND id != ?2",
                params![row.name, row.id.to_string()],
                |_| Ok(()),
            )
            .optional()?;
        if taken.is_some() {
            return Err(duplicate(&self.conn, &row.name));
        }
        let old_name: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM vms WHERE id = ?1",
                [row.id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let updated = self.conn.execute(
            "UPDATE vms SET name = ?2, endpoint = ?3 WHERE id = ?1",
            params![row.id.to_string(), row.name, row.endpoint.to_string()],
        )?;
        match old_name {
            Some(old) if updated > 0 && old != row.name => {
                self.inventory_changes.push(InventoryChange::VmRemoved(old));
                self.inventory_changes
                    .push(InventoryChange::VmAdded(row.name.clone()));
            }
            _ => {}
        }
        Ok(())
    }

    /// The VMs that follow a domain of libvirt at `uri`.
    pub(crate) fn domain_vms(&self, uri: &str) -> Result<Vec<VmRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, endpoint, interface_enabled, default_policy, created_at, psk
             FROM vms JOIN libvirt_domains ON libvirt_domains.vm = vms.id
             WHERE libvirt_domains.uri = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([uri], vm_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Policy, VmRow};
    use crate::store::{Store, StoreError};

    fn row(id: uuid::Uuid, name: &str) -> VmRow {
        VmRow {
            id,
            name: name.into(),
            endpoint: "hvsock-uds:///run/a.vsock".parse().unwrap(),
            interface_enabled: true,
            default_policy: Policy::Enabled,
            created_at: 1,
            psk: None,
        }
    }

    #[test]
    fn a_domain_vm_keeps_its_id_and_is_told_apart_from_vms_added_by_hand() {
        let mut s = Store::in_memory().unwrap();
        let by_hand = s.add_vm("a", &"unix:///a".parse().unwrap(), None).unwrap();
        let id = uuid::Uuid::new_v4();
        s.add_domain_vm(&row(id, "b"), "qemu:///system").unwrap();
        assert_eq!(s.vm("b").unwrap().id, id);
        assert_eq!(s.vm_by_id(id).unwrap().map(|(_, f)| f), Some(true));
        assert_eq!(s.vm_by_id(by_hand.id).unwrap().map(|(_, f)| f), Some(false));
        assert_eq!(s.vm_by_id(uuid::Uuid::new_v4()).unwrap(), None);
        let names = |s: &Store, uri| -> Vec<String> {
            s.domain_vms(uri)
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(&s, "qemu:///system"), ["b"]);
        assert!(names(&s, "qemu:///session").is_empty());

        let clash = s.add_domain_vm(&row(uuid::Uuid::new_v4(), "a"), "qemu:///system");
        assert!(matches!(clash, Err(StoreError::DuplicateVm(n)) if n == "a"));
        assert!(names(&s, "qemu:///system") == ["b"], "nothing half-added");

        let mut renamed = row(id, "c");
        renamed.endpoint = "vsock://7".parse().unwrap();
        s.update_domain_vm(&renamed).unwrap();
        assert_eq!(s.vm("c").unwrap().endpoint.to_string(), "vsock://7:18243");
        let clash = s.update_domain_vm(&row(id, "a"));
        assert!(matches!(clash, Err(StoreError::DuplicateVm(n)) if n == "a"));
        // A name a domain's VM holds: the error names the domain.
        let clash = s.add_vm("c", &"unix:///c".parse().unwrap(), None);
        match clash {
            Err(StoreError::DuplicateDomainVm { name, domain, uri }) => {
                assert_eq!(
                    (name.as_str(), domain, uri.as_str()),
                    ("c", id, "qemu:///system")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.vm("c").unwrap().endpoint.to_string(),
            "vsock://7:18243",
            "untouched"
        );

        s.remove_vm("c").unwrap();
        assert!(names(&s, "qemu:///system").is_empty(), "cascaded");
    }
}
