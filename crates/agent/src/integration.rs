//! Serving the integration services: guest info, time, key-value exchange,
//! shutdown and filesystem freeze, each one request and one answer.
//!
//! [`Services`] holds what they share (the pools, the clock, the shutdown
//! runner, the freeze state); [`answer`] turns a request into its answer or
//! an error frame, checking that the request's service matches its
//! operation (the daemon's policy is checked on the service, so an
//! operation must not travel under another service's GUID) and what the
//! caller's [`Origin`] may do; [`serve`] sends the answer and waits for the
//! client to close, then runs a shutdown if one was acknowledged.

use std::sync::Arc;

use futures::SinkExt;
use guestcomm_protocol::closing::linger;
use guestcomm_protocol::integration::{KvpSide, ShutdownRequest};
use guestcomm_protocol::{BuiltinService, Control, Frame, FramedConn};
use guestcomm_protocol::{Call, ErrorCode, ErrorFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use crate::clock::{Clock, ClockError};
use crate::freeze::{FreezeError, FreezeManager};
use crate::hyperv_kvp::PoolFileError;
use crate::kvp::{KvpStore, KvpStoreError};
use crate::shutdown::{self, ShutdownRunner};

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The host, through a listen address.
    Host,
    /// A guest program, through the local key-value socket: key-value
    /// requests only, writing the guest pool.
    Local,
}

/// The state the integration services share.
pub struct Services {
    /// The key-value pools.
    pub kvp: KvpStore,
    /// The guest clock.
    pub clock: Box<dyn Clock>,
    /// How to power off.
    pub shutdown: ShutdownRunner,
    /// What is frozen.
    pub freeze: Arc<FreezeManager>,
    /// The agent's name and version.
    pub agent: String,
    /// Short names of the services offered.
    pub offered: Vec<String>,
    /// The guest owner's policy (`--policy`), checked on every request from
    /// the host before any service sees it.
    pub policy: Option<guestcomm_policy::PolicyDocument>,
}

impl Services {
    fn info(&self) -> guestcomm_protocol::integration::GuestInfo {
        crate::info::collect(self.agent.clone(), self.offered.clone())
    }
}

/// The service an operation belongs to, if it is an integration one.
pub(crate) fn service_of(call: &Call) -> Option<BuiltinService> {
    match call.service() {
        service @ (BuiltinService::GuestInfo
        | BuiltinService::Time
        | BuiltinService::KeyValue
        | BuiltinService::Shutdown
        | BuiltinService::FsFreeze
        | BuiltinService::Heartbeat) => Some(service),
        BuiltinService::Agent | BuiltinService::Exec | BuiltinService::Files => None,
    }
}

fn kvp_error(e: KvpStoreError) -> ErrorFrame {
    let code = match &e {
        KvpStoreError::Kvp(k) => k.code(),
        KvpStoreError::Save(..) => ErrorCode::Io,
        KvpStoreError::PoolFile(PoolFileError::Locked { .. }) => ErrorCode::Timeout,
        KvpStoreError::PoolFile(PoolFileError::Io(..)) => ErrorCode::Io,
    };
    ErrorFrame::new(code, guestcomm_protocol::error_chain(&e))
}

fn clock_error(e: ClockError) -> ErrorFrame {
    let code = match e {
        ClockError::NotPermitted => ErrorCode::PermissionDenied,
        ClockError::OutOfRange(_) => ErrorCode::InvalidArgument,
        ClockError::Os(_) => ErrorCode::Io,
    };
    ErrorFrame::new(code, guestcomm_protocol::error_chain(&e))
}

fn freeze_error(e: FreezeError) -> ErrorFrame {
    let code = match e {
        FreezeError::NotMountPoint(_) | FreezeError::Invalid(_) => ErrorCode::InvalidArgument,
        FreezeError::Freeze(..) | FreezeError::Thaw(..) => ErrorCode::Io,
    };
    ErrorFrame::new(code, guestcomm_protocol::error_chain(&e))
}

/// The answer to an integration request; `service` is the one it named.
pub(crate) fn answer(
    services: &Arc<Services>,
    origin: Origin,
    service: BuiltinService,
    call: Call,
) -> Result<Control, ErrorFrame> {
    let owner = service_of(&call);
    if owner != Some(service) {
        return Err(ErrorFrame::new(
            ErrorCode::UnsupportedRequest,
            format!("service {} has no such operation", service.name()),
        ));
    }
    if origin == Origin::Local && service != BuiltinService::KeyValue {
        return Err(ErrorFrame::new(
            ErrorCode::UnsupportedRequest,
            "the local socket serves key-value requests only",
        ));
    }
    let side = match origin {
        Origin::Host => KvpSide::Host,
        Origin::Local => KvpSide::Guest,
    };
    let s = services;
    match call {
        Call::GuestInfo => Ok(Control::GuestInfo(Box::new(s.info()))),
        Call::TimeQuery => s
            .clock
            .now_ns()
            .map(|guest_unix_ns| Control::TimeSample { guest_unix_ns })
            .map_err(clock_error),
        Call::TimeStep { delta_ns } => {
            let now = s.clock.step(delta_ns).map_err(clock_error)?;
            info!(delta_ns, "guest clock stepped at the host's request");
            Ok(Control::TimeSample { guest_unix_ns: now })
        }
        Call::KvpGet { pool, key } => s
            .kvp
            .get(pool, &key, || s.info())
            .map(|value| Control::KvpValue { pool, key, value })
            .map_err(kvp_error),
        Call::KvpList { pool } => s
            .kvp
            .list(pool, || s.info())
            .map(|entries| Control::KvpEntries { pool, entries })
            .map_err(kvp_error),
        Call::KvpSet { pool, key, value } => s
            .kvp
            .set(side, pool, &key, &value)
            .map(|()| Control::Done)
            .map_err(kvp_error),
        Call::KvpDelete { pool, key } => s
            .kvp
            .delete(side, pool, &key)
            .map(|()| Control::Done)
            .map_err(kvp_error),
        Call::KvpReplace { entries, host_data } if side == KvpSide::Host => s
            .kvp
            .replace_external(entries, host_data)
            .map(|()| Control::Done)
            .map_err(kvp_error),
        Call::KvpReplace { .. } => Err(ErrorFrame::new(
            ErrorCode::PermissionDenied,
            "only the host replaces the external pool",
        )),
        Call::Shutdown(req) => {
            req.check()
                .map_err(|m| ErrorFrame::new(ErrorCode::InvalidArgument, m))?;
            s.shutdown
                .check(&req)
                .map_err(|e| ErrorFrame::new(ErrorCode::Io, guestcomm_protocol::error_chain(&e)))?;
            Ok(Control::ShutdownAck {
                action: req.action().into(),
                mode: shutdown::mode(&req).into(),
            })
        }
        Call::FsFreeze {
            mountpoints,
            timeout_s,
        } => s
            .freeze
            .freeze(&mountpoints, timeout_s)
            .map(Control::FsFreezeStatus)
            .map_err(freeze_error),
        Call::FsThaw { mountpoints } => s
            .freeze
            .thaw(&mountpoints)
            .map(Control::FsFreezeStatus)
            .map_err(freeze_error),
        Call::FsStatus => Ok(Control::FsFreezeStatus(s.freeze.status())),
        Call::Heartbeat { counters: true } => {
            Ok(Control::AgentCounters(crate::counters::snapshot()))
        }
        Call::Heartbeat { counters: false } => Ok(Control::Done),
        _ => Err(ErrorFrame::new(
            ErrorCode::UnsupportedRequest,
            "not an integration request",
        )),
    }
}

/// Answers `call` on `conn`. An answered `heartbeat` gives the connection
/// back (on a connection with `reuse` it may carry the next request:
/// docs/PROTOCOL.md 2.6); after any other answer this waits for the client
/// to close, and starts an acknowledged shutdown.
pub(crate) async fn serve<T>(
    mut conn: FramedConn<T>,
    services: Arc<Services>,
    origin: Origin,
    service: BuiltinService,
    call: Call,
) -> Option<FramedConn<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let shutdown: Option<ShutdownRequest> = match &call {
        Call::Shutdown(req) => Some(req.clone()),
        _ => None,
    };
    let heartbeat = matches!(call, Call::Heartbeat { .. });
    let answered = if heartbeat {
        // A copy of the counters: no reason to leave the async thread.
        answer(&services, origin, service, call)
    } else {
        // Guest info reads files and system calls: off the async threads.
        let worker = services.clone();
        tokio::task::spawn_blocking(move || answer(&worker, origin, service, call))
            .await
            .unwrap_or_else(|_| {
                Err(ErrorFrame::new(
                    ErrorCode::Internal,
                    "the agent failed while answering",
                ))
            })
    };
    let ok = answered.is_ok();
    let frame = match answered {
        Ok(answer) => Frame::Control(answer),
        Err(e) => {
            info!(service = service.name(), error = %e, "request refused");
            Frame::Control(Control::Error(e))
        }
    };
    if conn.send(frame).await.is_err() {
        return None;
    }
    if ok && heartbeat {
        return Some(conn);
    }
    // The host closes first; anything it still sends is dropped.
    linger(&mut conn).await;
    if let (true, Some(req)) = (ok, shutdown) {
        services.shutdown.run(&req).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimulatedClock;
    use crate::freeze::SimulatedFreezer;
    use guestcomm_protocol::integration::KvpPool;

    fn services() -> Arc<Services> {
        Arc::new(Services {
            kvp: KvpStore::in_memory(),
            clock: Box::new(SimulatedClock::new(0)),
            shutdown: ShutdownRunner::Command("/nonexistent/guestcomm-test-shutdown".into()),
            freeze: FreezeManager::new(Box::new(SimulatedFreezer)),
            agent: "agent".into(),
            offered: vec![],
            policy: None,
        })
    }

    fn code(result: Result<Control, ErrorFrame>) -> ErrorCode {
        result.map(|_| ()).unwrap_err().code
    }

    #[test]
    fn an_operation_under_another_services_guid_is_refused() {
        let s = services();
        let get = Call::KvpList {
            pool: KvpPool::External,
        };
        // The daemon admitted "info"; the operation is kvp's: refused.
        let refused = answer(&s, Origin::Host, BuiltinService::GuestInfo, get.clone());
        assert_eq!(code(refused), ErrorCode::UnsupportedRequest);
        assert!(answer_ok(&s, Origin::Host, BuiltinService::KeyValue, get));
    }

    #[test]
    fn a_heartbeat_answers_the_counters_only_when_asked_for_them() {
        let s = services();
        let beat = |counters| {
            answer(
                &s,
                Origin::Host,
                BuiltinService::Heartbeat,
                Call::Heartbeat { counters },
            )
        };
        assert!(matches!(beat(true), Ok(Control::AgentCounters(_))));
        assert_eq!(beat(false).unwrap(), Control::Done);
    }

    fn answer_ok(s: &Arc<Services>, origin: Origin, service: BuiltinService, call: Call) -> bool {
        answer(s, origin, service, call).is_ok()
    }

    #[test]
    fn the_local_socket_serves_key_value_requests_and_writes_only_the_guest_pool() {
        let s = services();
        let local = |service, call| answer(&s, Origin::Local, service, call);
        assert_eq!(
            code(local(BuiltinService::Time, Call::TimeStep { delta_ns: 1 })),
            ErrorCode::UnsupportedRequest
        );
        let set = |pool| Call::KvpSet {
            pool,
            key: "k".into(),
            value: "v".into(),
        };
        assert!(local(BuiltinService::KeyValue, set(KvpPool::Guest)).is_ok());
        assert_eq!(
            code(local(BuiltinService::KeyValue, set(KvpPool::External))),
            ErrorCode::PermissionDenied
        );
        let replace = Call::KvpReplace {
            entries: Default::default(),
            host_data: None,
        };
        assert_eq!(
            code(local(BuiltinService::KeyValue, replace)),
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn a_shutdown_that_cannot_start_is_not_acknowledged() {
        let s = services();
        let req = ShutdownRequest::default();
        let refused = answer(
            &s,
            Origin::Host,
            BuiltinService::Shutdown,
            Call::Shutdown(req),
        );
        assert_eq!(code(refused), ErrorCode::Io);
        let long = ShutdownRequest {
            reason: "r".repeat(2049),
            ..Default::default()
        };
        let refused = answer(
            &s,
            Origin::Host,
            BuiltinService::Shutdown,
            Call::Shutdown(long),
        );
        assert_eq!(code(refused), ErrorCode::InvalidArgument);
    }
}
