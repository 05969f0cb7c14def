//! The audit log for its readers: records by VM and time, and the check of
//! its hash chains.

use guestcomm_api::AuditVerification;

use crate::audit::Record;
use crate::error::Error;
use crate::limits::{MAX_AUDIT_QUERY_RECORDS, MAX_AUDIT_VERIFY_BATCH};
use crate::state::State;
use crate::store::audit_chain;

/// The newest records (of `vm`, from `since_ms` on), at most `limit`, capped
/// at [`MAX_AUDIT_QUERY_RECORDS`].
pub(crate) async fn records(
    state: &State,
    vm: Option<String>,
    since_ms: Option<i64>,
    limit: Option<u32>,
) -> Result<Vec<Record>, Error> {
    let limit = limit
        .unwrap_or(MAX_AUDIT_QUERY_RECORDS)
        .min(MAX_AUDIT_QUERY_RECORDS);
    Ok(state
        .db(move |s| s.audit_records(vm.as_deref(), since_ms, limit))
        .await?)
}

/// The chains checked from their anchors, a batch of records per hold of
/// the store, so that other calls go on meanwhile.
pub(crate) async fn verify(state: &State) -> Result<AuditVerification, Error> {
    let mut walk = audit_chain::Walk::default();
    loop {
        let (next, done) = state
            .db(move |s| {
                let done = s.verify_audit_batch(&mut walk, MAX_AUDIT_VERIFY_BATCH)?;
                Ok((walk, done))
            })
            .await?;
        walk = next;
        if done {
            return Ok(walk.report);
        }
    }
}
