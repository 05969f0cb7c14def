//! A VM's host policy document: show it, or check and replace it. The
//! document type and its checks are `guestcomm_policy`'s, its SQL the
//! store's (`store/policy_docs.rs`), its enforcement admission's.

use guestcomm_policy::PolicyDocument;

use crate::error::Error;
use crate::state::State;

/// VM `name`'s document (the default, empty one: no restriction).
pub(crate) async fn show(state: &State, name: String) -> Result<PolicyDocument, Error> {
    let doc = state
        .db(move |s| {
            let vm = s.vm(&name)?;
            s.policy_document(vm.id)
        })
        .await?;
    Ok(doc.unwrap_or_default())
}

/// Checks `document` (the policy's text) and makes it VM `name`'s; returns
/// it as stored.
pub(crate) async fn set(
    state: &State,
    name: String,
    document: &str,
) -> Result<PolicyDocument, Error> {
    let doc = PolicyDocument::parse(document).map_err(|source| Error::InvalidPolicy {
        vm: name.clone(),
        source,
    })?;
    let stored = doc.clone();
    let logged = name.clone();
    state
        .db(move |s| s.set_policy_document(&name, &stored))
        .await?;
    tracing::info!(vm = %logged, read_only = doc.read_only, "VM policy changed");
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::store::Store;

    #[tokio::test]
    async fn a_document_is_checked_before_it_is_stored() {
        let mut store = Store::in_memory().unwrap();
        store
            .add_vm("web1", &"unix:///a".parse().unwrap(), None)
            .unwrap();
        let state = State::new(store);
        assert_eq!(
            show(&state, "web1".into()).await.unwrap(),
            PolicyDocument::default()
        );

        let err = set(&state, "web1".into(), "read_only = 3")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let message = guestcomm_protocol::error_chain(&err);
        assert!(
            message.starts_with("invalid policy for VM web1: "),
            "{message}"
        );
        assert_eq!(
            show(&state, "web1".into()).await.unwrap(),
            PolicyDocument::default()
        );

        let stored = set(&state, "web1".into(), "read_only = true")
            .await
            .unwrap();
        assert!(stored.read_only);
        assert_eq!(show(&state, "web1".into()).await.unwrap(), stored);

        let missing = show(&state, "web2".into()).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }
}
