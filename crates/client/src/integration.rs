//! The integration services, host side: one request and one answer per
//! connection (see `guestcomm_protocol::integration`); a `heartbeat` on a
//! reusable connection may be followed by the next request ([`call_on`]).
//!
//! Each helper takes a [`Session`] past its handshake (opened directly or
//! through the daemon), sends the request, waits a bounded time for the
//! answer and checks its type. The time measurement opens one session per
//! sample through the caller's `open` function, so the round trip of each
//! sample covers only the request and its answer.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use guestcomm_protocol::integration::{
    sample_offset, FreezeStatus, GuestInfo, KvpEntries, KvpPool, ShutdownRequest, TimeReport,
};
use guestcomm_protocol::{Call, ErrorFrame, Request};
use guestcomm_protocol::{Control, Frame, FrameError, FramedConn};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Session;

/// How long an agent may take to answer: generous for a guest under TCG
/// emulation, and a freeze of many filesystems.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an integration request failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The agent (or the daemon's relay) refused with an error frame.
    #[error("{}", .0.message)]
    Refused(ErrorFrame),
    /// The connection failed.
    #[error("connection to the agent failed")]
    Frame(#[from] FrameError),
    /// The connection closed before the answer.
    #[error("the connection to the agent closed before it answered")]
    Disconnected,
    /// No answer within this bound (the request's sending included).
    #[error("the agent did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// An answer of the wrong type.
    #[error("protocol error: unexpected {0} from the agent")]
    Protocol(String),
}

/// Sends `call` to its service and returns the answer (any control message but an error).
pub async fn call<T>(session: Session<T>, call: Call) -> Result<Control, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    call_on(session.conn, call).await.map(|(answer, _)| answer)
}

/// [`call`] on a framed connection, which is given back with the answer:
/// after a `heartbeat` on a connection that agreed to reuse
/// ([`Session::reusable`]), it may carry the next request
/// (docs/PROTOCOL.md 2.6); otherwise the caller closes it.
pub async fn call_on<T>(
    conn: FramedConn<T>,
    call: Call,
) -> Result<(Control, FramedConn<T>), CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    call_on_within(conn, call, ANSWER_TIMEOUT).await
}

/// [`call_on`] with the request sent and answered within `bound` (one
/// timer for both: the daemon's health probe asks thousands of these a
/// second).
pub async fn call_on_within<T>(
    mut conn: FramedConn<T>,
    call: Call,
    bound: Duration,
) -> Result<(Control, FramedConn<T>), CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        conn.send(Frame::Control(Control::Request(Request::new(call))))
            .await?;
        match conn.next().await {
            None => Err(CallError::Disconnected),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(Frame::Control(Control::Error(e)))) => Err(CallError::Refused(e)),
            Some(Ok(Frame::Control(answer))) => Ok(answer),
            Some(Ok(other)) => Err(CallError::Protocol(other.describe())),
        }
    };
    match tokio::time::timeout(bound, exchange).await {
        Err(_) => Err(CallError::Timeout(bound)),
        Ok(answer) => answer.map(|answer| (answer, conn)),
    }
}

fn unexpected(answer: &Control) -> CallError {
    CallError::Protocol(Frame::Control(answer.clone()).describe())
}

/// `guest_info`.
pub async fn guest_info<T>(session: Session<T>) -> Result<GuestInfo, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match call(session, Call::GuestInfo).await? {
        Control::GuestInfo(info) => Ok(*info),
        other => Err(unexpected(&other)),
    }
}

/// Nanoseconds since the Unix epoch on this host.
pub fn host_unix_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// One time sample on `session`: (host send time, guest time, host receive time).
async fn time_sample<T>(session: Session<T>, call_: Call) -> Result<(i64, i64, i64), CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let t0 = host_unix_ns();
    let answer = call(session, call_).await?;
    let t1 = host_unix_ns();
    match answer {
        Control::TimeSample { guest_unix_ns } => Ok((t0, guest_unix_ns, t1)),
        other => Err(unexpected(&other)),
    }
}

/// Measures the guest clock's offset from this host's with `samples`
/// samples (each on a session from `open`), keeping the one with the
/// shortest round trip, as NTP does.
pub async fn measure_time<T, E, F, Fut>(mut open: F, samples: u32) -> Result<TimeReport, E>
where
    T: AsyncRead + AsyncWrite + Unpin,
    E: From<CallError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Session<T>, E>>,
{
    let mut best: Option<TimeReport> = None;
    for _ in 0..samples.max(1) {
        let (t0, guest, t1) = time_sample(open().await?, Call::TimeQuery).await?;
        let (offset_ns, rtt_ns) = sample_offset(t0, guest, t1);
        if best.is_none_or(|b| rtt_ns < b.rtt_ns) {
            best = Some(TimeReport {
                offset_ns,
                rtt_ns,
                guest_unix_ns: guest,
                samples: 0,
                synced: false,
            });
        }
    }
    let mut report = best.unwrap_or_default();
    report.samples = samples.max(1);
    Ok(report)
}

/// Measures the offset, steps the guest clock by its opposite, and measures
/// again: the report is the one after the step, with `synced` set.
pub async fn sync_time<T, E, F, Fut>(mut open: F, samples: u32) -> Result<TimeReport, E>
where
    T: AsyncRead + AsyncWrite + Unpin,
    E: From<CallError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Session<T>, E>>,
{
    let before = measure_time(&mut open, samples).await?;
    let step = Call::TimeStep {
        delta_ns: before.offset_ns.saturating_neg(),
    };
    time_sample(open().await?, step).await?;
    let mut after = measure_time(&mut open, samples).await?;
    after.synced = true;
    Ok(after)
}

/// `kvp_get`: one value.
pub async fn kvp_get<T>(session: Session<T>, pool: KvpPool, key: &str) -> Result<String, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let req = Call::KvpGet {
        pool,
        key: key.into(),
    };
    match call(session, req).await? {
        Control::KvpValue { value, .. } => Ok(value),
        other => Err(unexpected(&other)),
    }
}

/// `kvp_list`: a whole pool.
pub async fn kvp_list<T>(session: Session<T>, pool: KvpPool) -> Result<KvpEntries, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match call(session, Call::KvpList { pool }).await? {
        Control::KvpEntries { entries, .. } => Ok(entries),
        other => Err(unexpected(&other)),
    }
}

/// A request answered by `done`: `kvp_set`, `kvp_delete`, `kvp_replace`.
pub async fn kvp_change<T>(session: Session<T>, change: Call) -> Result<(), CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match call(session, change).await? {
        Control::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// `shutdown`: returns once the guest acknowledged.
pub async fn shutdown<T>(session: Session<T>, req: ShutdownRequest) -> Result<String, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match call(session, Call::Shutdown(req)).await? {
        Control::ShutdownAck { action, mode } => Ok(format!("{action} ({mode})")),
        other => Err(unexpected(&other)),
    }
}

/// `fs_freeze`, `fs_thaw` or `fs_status`.
pub async fn fs<T>(session: Session<T>, req: Call) -> Result<FreezeStatus, CallError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match call(session, req).await? {
        Control::FsFreezeStatus(status) => Ok(status),
        other => Err(unexpected(&other)),
    }
}
