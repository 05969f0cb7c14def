//! The middleware of every API route: who the caller is, what the route
//! needs ([`ROUTES`](crate::access::ROUTES)), whether a read-only VM lets it through, a slot of the
//! VM's agent calls, and the audit record of the call.
//!
//! ```text
//! accept -> SO_PEERCRED (uid, gid, pid) or certificate -> Caller
//! request -> matched route -> ROUTES: operation, role needed, audited?
//!         -> caller's role: root and the daemon's uid are admin, else the
//!            highest role whose users or groups name the caller, else none
//!         -> 403 permission_denied naming the role
//!         -> operator routes but reads on a read-only VM: 403 policy_denied
//!         -> the handler
//! ```

use std::sync::Arc;

use axum::extract::rejection::{MatchedPathRejection, RawPathParamsRejection};
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State as AxumState};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use guestcomm_api::Role::{Admin, Operator, Viewer};

use crate::access::{route_rule, Audited::Always, Authorized, Grants, Identity};
use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::error::{Error, ErrorKind};
use crate::metrics::Cap;
use crate::state::State;

/// Audits a refusal and answers it: a caller without a role's refusal
/// goes to its own chain, counted past a bound (module `refusals`).
async fn refuse(
    state: &State,
    caller: Caller,
    mut record: audit::Record,
    err: Error,
    started: std::time::Instant,
) -> Response {
    audit::finish(
        &mut record,
        Outcome::Refused,
        Some(err.to_string()),
        started,
    );
    match &err {
        Error::Forbidden { has: None, .. } => {
            state.audit_unaccountable_refusal(caller, record).await
        }
        _ => {
            state.audit_refusal(record, err.kind()).await;
        }
    }
    err.into_response()
}

/// The middleware of every route: decides access from [`ROUTES`](crate::access::ROUTES), then
/// records the call in the audit log when the table says so. Relayed
/// operations that were let through (HTTP 101) are recorded by the relay.
pub(crate) async fn authorize(
    AxumState(state): AxumState<Arc<State>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    matched: Result<MatchedPath, MatchedPathRejection>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let path = matched.as_ref().map_or("?", |m| m.as_str());
    let rule = route_rule(req.method(), path);
    let param = |key: &str| {
        params.as_ref().ok().and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    };
    let mut record = audit::record(caller, rule.operation.as_str());
    record.vm = param("name");
    record.service = param("id");
    // Other path parameters (a key-value pool and key) and the query.
    let mut arguments: Vec<String> = params
        .iter()
        .flat_map(|p| p.iter())
        .filter(|(k, _)| !matches!(*k, "name" | "id"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    arguments.extend(req.uri().query().map(str::to_string));
    record.arguments = audit::arguments(&arguments.join(" "));
    let (who, grants) = match (caller.uid, caller.fingerprint()) {
        // Admin whatever the configuration says: no user database lookup
        // (a blocking hand-off and NSS reads) on their every call.
        (Some(uid), _) if state.access.always_admin(uid) => {
            let admin = Grants {
                host: Some(Admin),
                vms: Vec::new(),
            };
            (format!("uid {uid}"), admin)
        }
        (Some(uid), _) => {
            match tokio::task::spawn_blocking(move || Identity::lookup(uid, caller.gid)).await {
                Ok(who) => (who.describe(), state.access.grants_of(&who)),
                Err(_) => (format!("uid {uid}"), Grants::default()),
            }
        }
        (None, Some(fp)) => {
            let grants = state.access.grants_of_certificate(&fp);
            (format!("client certificate {fp}"), grants)
        }
        (None, None) => ("an unidentified caller".into(), Grants::default()),
    };
    let role = grants.for_call(rule, record.vm.as_deref());
    if role.is_none_or(|r| r < rule.role) {
        let err = Error::Forbidden {
            operation: rule.operation.as_str(),
            required: rule.role,
            who,
            has: role,
            config: state.access.config_path.clone(),
        };
        return refuse(&state, caller, record, err, started).await;
    }
    // A read-only VM (host policy) lets no operator call through but reads,
    // unless the route's handler checks that itself (one store call).
    if rule.role == Operator && rule.method != Method::GET && !rule.checks_read_only {
        if let Some(vm) = record.vm.clone() {
            if let Err(err) = crate::admission::writable(&state, vm).await {
                return refuse(&state, caller, record, err, started).await;
            }
        }
    }
    let note = audit::Note::default();
    req.extensions_mut().insert(note.clone());
    req.extensions_mut().insert(Authorized {
        caller,
        // Checked just above.
        role: role.unwrap_or(Viewer),
        grants,
    });
    let slot = match (&record.vm, rule.reaches_agent()) {
        (Some(vm), true) => Some(state.agent_calls.take(vm)),
        _ => None,
    };
    let response = match slot {
        Some(Err(busy)) => {
            state.metrics.refused_at(Cap::AgentCalls);
            busy.into_response()
        }
        Some(Ok(_slot)) => next.run(req).await,
        None => next.run(req).await,
    };
    let status = response.status();
    let failed = !(status.is_success() || status.is_informational());
    if status != axum::http::StatusCode::SWITCHING_PROTOCOLS && (failed || rule.audited == Always) {
        let (outcome, error) = if failed {
            let error = response
                .extensions()
                .get::<crate::error::ErrorText>()
                .map(|e| e.0.clone());
            let outcome = if status == axum::http::StatusCode::FORBIDDEN {
                Outcome::Refused
            } else {
                Outcome::Failed
            };
            (outcome, error)
        } else {
            (Outcome::Ok, None)
        };
        note.apply(&mut record);
        audit::finish(&mut record, outcome, error, started);
        match response.extensions().get::<ErrorKind>() {
            Some(kind) if outcome == Outcome::Refused => {
                state.audit_refusal(record, *kind).await;
            }
            _ => state.audit(record).await,
        }
    }
    response
}
