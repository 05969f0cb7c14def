//! Each VM's argument-level policy document (table `vm_policies`, schema
//! migration 6), stored as validated JSON (the document type and its checks
//! are `guestcomm_policy`'s); shown and set by `ops/policy.rs`, its
//! enforcement `admission`.

use guestcomm_policy::PolicyDocument;
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::error::StoreError;
use super::Store;
use crate::clock::now_secs;

impl Store {
    /// The policy document of VM `vm` (none: everything passes).
    pub(crate) fn policy_document(&self, vm: Uuid) -> Result<Option<PolicyDocument>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT document FROM vm_policies WHERE vm = ?1",
                [vm.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        // Stored as validated JSON; a row that no longer parses refuses
        // everything rather than nothing.
        Ok(text.map(|t| {
            serde_json::from_str(&t).unwrap_or(PolicyDocument {
                read_only: true,
                ..PolicyDocument::default()
            })
        }))
    }

    /// Replaces the policy document of the VM named `name`.
    pub(crate) fn set_policy_document(
        &mut self,
        name: &str,
        doc: &PolicyDocument,
    ) -> Result<(), StoreError> {
        let vm = self.vm(name)?;
        let json = serde_json::to_string(doc).map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        self.conn.execute(
            "INSERT INTO vm_policies (vm, document, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(vm) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            params![vm.id.to_string(), json, now_secs()],
        )?;
        Ok(())
    }
}
