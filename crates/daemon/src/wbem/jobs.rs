//! CopyFilesToGuest jobs (Msvm_CopyFileToGuestJob): the table clients poll
//! with GetInstance, and the task that copies each file to the guest
//! through the agent's files service, as `guestcomm cp` does.
//!
//! ```text
//! CopyFilesToGuest -> start: a job (JobState 3 Starting), 4096 + its reference
//!   task: for each file: stat the source, connect to the agent, copy_to_guest
//!         (PercentComplete follows the bytes sent) -> 7 Completed
//!         | 10 Exception with ErrorDescription (the first failure ends the job,
//!           described as Hyper-V does: "The file exists. (0x80070050)")
//!         | 8 Terminated, 9 Killed by RequestStateChange (the copy is
//!           dropped; the guest removes its unfinished temporary file)
//! ```
//!
//! The jobs' table is [`crate::copy_jobs`].

use std::path::PathBuf;
use std::sync::Arc;

use guestcomm_cim::value::{CimValue, Instance, InstanceName};
use guestcomm_cim::{CimError, ReturnValue};
use guestcomm_policy::Direction;
use guestcomm_protocol::error_chain;
use guestcomm_protocol::error_code::ErrorCode;
use guestcomm_protocol::files::CopyToGuest;

use crate::audit::{self, Outcome};
use crate::caller::Caller;
use crate::copy_jobs::{
    Job, Jobs, Stop, COMPLETED, EXCEPTION, KILLED, RUNNING, STARTING, TERMINATED,
};
use crate::model::VmRow;
use crate::policy::cim_datetime;
use crate::state::State;

/// The job class.
pub(crate) const JOB_CLASS: &str = "Msvm_CopyFileToGuestJob";

/// One file of a CopyFilesToGuest call (Msvm_CopyFileToGuestSettingData).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyFile {
    /// On the host, read by guestcommd.
    pub(crate) source: PathBuf,
    /// The copy's options, destination included.
    pub(crate) request: CopyToGuest,
    /// The setting data as the client embedded it (the job's
    /// CopyFileToGuestSettingData[]).
    pub(crate) embedded: String,
}

/// Starts copying `files` to `vm` in the background; the job's name.
pub(crate) fn start(
    state: &Arc<State>,
    vm: VmRow,
    files: Vec<CopyFile>,
    caller: Caller,
) -> Result<InstanceName, CimError> {
    let settings = files.iter().map(|f| f.embedded.clone()).collect();
    let (number, id) = state
        .wbem_jobs
        .add(&vm, settings)
        .map_err(|e| super::refusal::cim_error(&e))?;
    tokio::spawn(run(state.clone(), number, vm, files, caller));
    Ok(job_name(&id))
}

/// Every job as an instance.
pub(crate) fn instances(jobs: &Jobs) -> Vec<Instance> {
    jobs.list().iter().map(instance).collect()
}

/// The name of job `id`.
fn job_name(id: &str) -> InstanceName {
    InstanceName::new(
        JOB_CLASS,
        vec![("InstanceID".into(), CimValue::String(id.into()))],
    )
}

/// The CIM_Error of job `id` (its InstanceID, any case), if it failed.
pub(crate) fn error_of(jobs: &Jobs, id: &str) -> Option<Instance> {
    jobs.list()
        .into_iter()
        .find(|j| j.id.eq_ignore_ascii_case(id))
        .and_then(|j| Some(error_instance(&j.id, j.error.as_deref()?, j.hresult)))
}

/// RequestStateChange of job `id`, as CIM_ConcreteJob documents it:
/// Terminate (4) and Kill (5) stop a running job (Terminated, Killed);
/// on a job that has ended, Invalid State Transition; other states, Not
/// Supported.
pub(crate) fn request_state_change(jobs: &Jobs, id: &str, requested: u16) -> ReturnValue {
    let to = match requested {
        4 => TERMINATED,
        5 => KILLED,
        _ => return ReturnValue::NotSupported,
    };
    match jobs.stop(id, to) {
        Stop::Stopped => ReturnValue::Completed,
        Stop::Finished | Stop::Unknown => ReturnValue::InvalidStateTransition,
    }
}

/// A failed job's error as a CIM_Error instance (its GetError): the
/// description, what failed (the job) and that it is the failure's end.
pub(crate) fn error_instance(job_id: &str, description: &str, hresult: Option<u32>) -> Instance {
    let text = |s: &str| CimValue::String(s.into());
    let message_id =
        hresult.map_or_else(|| "guestcomm:copy-failed".into(), |h| format!("0x{h:08X}"));
    Instance {
        class: "CIM_Error".into(),
        properties: vec![
            ("ErrorType".into(), CimValue::Uint(1)),
            ("OtherErrorType".into(), text("CopyFilesToGuest failed")),
            ("OwningEntity".into(), text("guestcomm")),
            ("MessageID".into(), text(&message_id)),
            ("Message".into(), text(description)),
            ("PerceivedSeverity".into(), CimValue::Uint(5)),
            ("CIMStatusCode".into(), CimValue::Uint(1)),
            ("CIMStatusCodeDescription".into(), text("CIM_ERR_FAILED")),
            ("ErrorSource".into(), text(job_id)),
        ],
    }
}

/// CIM_Job's default TimeBeforeRemoval: five minutes.
const TIME_BEFORE_REMOVAL_SECS: u64 = 300;

/// A CIM interval (DSP0004): `ddddddddhhmmss.mmmmmm:000`.
fn cim_interval(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    format!(
        "{days:08}{:02}{:02}{:02}.000000:000",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn instance(job: &Job) -> Instance {
    let text = |s: &str| CimValue::String(s.into());
    // Until it ends, a job's ElapsedTime runs on.
    let end = if job.finished() {
        job.changed
    } else {
        crate::clock::now_secs()
    };
    let elapsed = u64::try_from(end.saturating_sub(job.submitted)).unwrap_or(0);
    let mut properties = vec![
        ("InstanceID".into(), text(&job.id)),
        ("Name".into(), text("CopyFilesToGuest")),
        ("ElementName".into(), text("CopyFilesToGuest")),
        ("JobState".into(), CimValue::Uint(job.state.into())),
        ("PercentComplete".into(), CimValue::Uint(job.percent.into())),
        (
            "ErrorCode".into(),
            CimValue::Uint(u64::from(job.error.is_some())),
        ),
        ("Cancellable".into(), CimValue::Boolean(!job.finished())),
        // Kept after it ends, until a new job needs its place
        // (copy_jobs); CIM's default TimeBeforeRemoval, unused so.
        ("DeleteOnCompletion".into(), CimValue::Boolean(false)),
        (
            "TimeBeforeRemoval".into(),
            CimValue::Datetime(cim_interval(TIME_BEFORE_REMOVAL_SECS)),
        ),
        ("VirtualSystemName".into(), text(&job.vm_id)),
        (
            "TimeOfLastStateChange".into(),
            CimValue::Datetime(cim_datetime(job.changed)),
        ),
        (
            "TimeSubmitted".into(),
            CimValue::Datetime(cim_datetime(job.submitted)),
        ),
        (
            "StartTime".into(),
            CimValue::Datetime(cim_datetime(job.submitted)),
        ),
        (
            "ElapsedTime".into(),
            CimValue::Datetime(cim_interval(elapsed)),
        ),
        (
            "CopyFileToGuestSettingData".into(),
            CimValue::Array(job.settings.iter().map(|s| text(s)).collect()),
        ),
    ];
    if let Some(e) = &job.error {
        properties.push(("ErrorDescription".into(), text(e)));
        properties.push(("ErrorSummaryDescription".into(), text(e)));
    }
    Instance {
        class: JOB_CLASS.into(),
        properties,
    }
}

/// Moves PercentComplete with the bytes sent (99 at most until the agent
/// confirms the end).
struct JobProgress {
    state: Arc<State>,
    number: u64,
    done: u64,
    total: u64,
    shown: u16,
}

impl guestcomm_client::Progress for JobProgress {
    fn bytes(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        let percent = (self.done.saturating_mul(100) / self.total.max(1)).min(99) as u16;
        if percent != self.shown {
            self.shown = percent;
            self.state
                .wbem_jobs
                .update(self.number, |j| j.percent = percent);
        }
    }
}

/// The job's task: each file in turn; the first failure ends it, and so
/// does a client's RequestStateChange (Terminate, Kill: [`Jobs::stop`]).
async fn run(state: Arc<State>, number: u64, vm: VmRow, files: Vec<CopyFile>, caller: Caller) {
    let started = std::time::Instant::now();
    let mut record = audit::record(caller, "cp.to_guest");
    record.vm = Some(vm.name.clone());
    record.arguments = audit::arguments(
        &files
            .iter()
            .map(|f| format!("{} {}:{}", f.source.display(), vm.name, f.request.dst))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let audit_id = state.audit_start(&record).await;
    let mut stopper = None;
    state.wbem_jobs.update(number, |j| {
        if j.state == STARTING {
            j.state = RUNNING;
        }
        stopper = Some(j.stopper.clone());
    });
    let stopper = stopper.unwrap_or_default();
    let outcome = tokio::select! {
        outcome = copy_all(&state, number, &vm, files) => outcome,
        () = stopper.notified() => Err(Failure::text("stopped by RequestStateChange".into())),
    };
    let error = outcome.as_ref().err().map(|f| f.description.clone());
    state.wbem_jobs.update(number, |j| {
        if j.finished() {
            return; // Terminated or killed meanwhile: that state stays.
        }
        match &outcome {
            Ok(_) => {
                j.state = COMPLETED;
                j.percent = 100;
            }
            Err(f) => {
                j.state = EXCEPTION;
                j.error = Some(f.description.clone());
                j.hresult = f.hresult;
            }
        }
    });
    let result = match outcome {
        Ok(bytes) => {
            record.bytes = Some(bytes);
            Outcome::Ok
        }
        Err(_) => Outcome::Failed,
    };
    audit::finish(&mut record, result, error, started);
    state.audit_end(audit_id, record).await;
}

/// Why a copy failed, as Hyper-V describes it: Microsoft's text of the
/// Win32 error and its HRESULT where one fits.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    description: String,
    hresult: Option<u32>,
}

/// Win32 errors a copy ends with, as HRESULTs, and Microsoft's text of each.
const FILE_NOT_FOUND: (u32, &str) = (0x8007_0002, "The system cannot find the file specified.");
const PATH_NOT_FOUND: (u32, &str) = (0x8007_0003, "The system cannot find the path specified.");
const ACCESS_DENIED: (u32, &str) = (0x8007_0005, "Access is denied.");
const FILE_EXISTS: (u32, &str) = (0x8007_0050, "The file exists.");
const DISK_FULL: (u32, &str) = (0x8007_0070, "There is not enough space on the disk.");

impl Failure {
    fn text(description: String) -> Self {
        Self {
            description,
            hresult: None,
        }
    }

    /// Copying `source` to `dst` in the guest failed with `win32`, or, without
    /// one, with `detail` (its command-line hints left out).
    fn of(source: &std::path::Path, dst: &str, win32: Option<(u32, &str)>, detail: &str) -> Self {
        let what = format!(
            "Failed to copy the source file '{}' to the destination '{dst}' in the guest",
            source.display()
        );
        match win32 {
            Some((code, text)) => Self {
                description: format!("{what}: {text} (0x{code:08X})"),
                hresult: Some(code),
            },
            None => Self::text(format!("{what}: {}", without_cli_hints(detail))),
        }
    }
}

/// The Win32 error of a host-side I/O failure on the source, if one fits.
fn source_error(e: &std::io::Error) -> Option<(u32, &'static str)> {
    match e.kind() {
        std::io::ErrorKind::NotFound => Some(FILE_NOT_FOUND),
        std::io::ErrorKind::PermissionDenied => Some(ACCESS_DENIED),
        _ => None,
    }
}

/// The Win32 error of a copy the guest refused or failed, if one fits.
fn guest_error(e: &guestcomm_client::CopyError) -> Option<(u32, &'static str)> {
    let text = error_chain(e);
    match e.code() {
        ErrorCode::AlreadyExists => Some(FILE_EXISTS),
        ErrorCode::NotFound => Some(PATH_NOT_FOUND),
        ErrorCode::PermissionDenied => Some(ACCESS_DENIED),
        _ if text.contains("No space left on device") || text.contains("os error 28") => {
            Some(DISK_FULL)
        }
        _ => None,
    }
}

/// `text` without the command-line hints the CLI's errors carry
/// (" (use --force to overwrite)").
fn without_cli_hints(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(" (use -") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find(')')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Copies every file; the bytes sent, or the first failure.
async fn copy_all(
    state: &Arc<State>,
    number: u64,
    vm: &VmRow,
    files: Vec<CopyFile>,
) -> Result<u64, Failure> {
    let mut total = 0u64;
    for f in &files {
        let dst = &f.request.dst;
        let meta = tokio::fs::metadata(&f.source)
            .await
            .map_err(|e| Failure::of(&f.source, dst, source_error(&e), &e.to_string()))?;
        if !meta.is_file() {
            return Err(Failure::of(
                &f.source,
                dst,
                None,
                "the source is not a regular file (CopyFilesToGuest copies files)",
            ));
        }
        total = total.saturating_add(meta.len());
    }
    let mut progress = JobProgress {
        state: state.clone(),
        number,
        done: 0,
        total,
        shown: 0,
    };
    for f in files {
        let unreachable = |e: &dyn std::error::Error| {
            Failure::of(&f.source, &f.request.dst, None, &error_chain(e))
        };
        let session = crate::agent::connect(vm)
            .await
            .map_err(|e| unreachable(&e))?;
        // The host policy's prefixes travel with the request, for the
        // agent to keep the path beneath them (or the copy is refused).
        let mut request = f.request.clone();
        request.host_prefixes = crate::admission::copy_prefixes(
            state,
            vm,
            Direction::ToGuest,
            &session.welcome.features,
        )
        .await
        .map_err(|e| unreachable(&e))?;
        let idle = guestcomm_client::DEFAULT_COPY_IDLE_TIMEOUT;
        guestcomm_client::copy_to_guest(session.conn, &f.source, request, idle, &mut progress)
            .await
            .map_err(|e| {
                Failure::of(&f.source, &f.request.dst, guest_error(&e), &error_chain(&e))
            })?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_are_dsp0004_intervals() {
        assert_eq!(cim_interval(0), "00000000000000.000000:000");
        assert_eq!(cim_interval(90_061), "00000001010101.000000:000");
    }

    #[test]
    fn failures_read_as_hyper_v_describes_them_without_cli_hints() {
        let src = std::path::Path::new("/h/a");
        let exists = Failure::of(src, "/g/a", Some(FILE_EXISTS), "x");
        assert_eq!(
            exists.description,
            "Failed to copy the source file '/h/a' to the destination '/g/a' in the guest: The file exists. (0x80070050)"
        );
        assert_eq!(exists.hresult, Some(0x8007_0050));
        let other = Failure::of(
            src,
            "/g",
            None,
            "/g is a directory (use -r to copy directories)",
        );
        assert!(
            other.description.ends_with(": /g is a directory"),
            "{other:?}"
        );
        assert_eq!(other.hresult, None);
        assert_eq!(without_cli_hints("a (use --force) b (use -r"), "a b");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(source_error(&missing), Some(FILE_NOT_FOUND));
    }
}
